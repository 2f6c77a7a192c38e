"""SkyTNT-compatible tokenizers v1 and v2, with and without "optimise".

Implements shared/spec/skytnt-format.md sections 2.4 to 2.9 so that musebot produces exactly the reference's ids
(tests compare against ids produced by the reference code). Several steps reproduce quirks of the reference
because the ids depend on them; each is marked "Reference quirk".

Internally an event is a list ``[name, t1, t2, track, *values]`` where t1 is the absolute beat index, t2 the
1/16-beat step inside the beat, and note values are always ``channel, pitch, velocity, duration`` (the v2
order); v1 rows are reordered at emission. Events are mutable lists on purpose: the pipeline edits them in place
(overlap fix, remapping) exactly where the reference does.
"""

from __future__ import annotations

import random
from typing import Any

from musebot.tokenizers.pipeline import (
    DRUM_CHANNEL,
    V1_ORDER,
    V2_ORDER,
    Collected,
    bpm_to_tempo,
    clip_overlaps,
    detect_key,
    fix_key_signatures,
    key_to_sf,
    remap,
    rotate_channel,
    sf_to_key,
    tempo_to_bpm,
)
from musebot.tokenizers.score import Score
from musebot.tokenizers.vocab import Vocabulary

Row = list[int]

DETOKENIZE_TPB = 480


class MIDITokenizer:
    """One tokenizer: version ``"v1"`` or ``"v2"``; ``optimise`` is the reference's ``optimise_midi``."""

    def __init__(self, version: str = "v2", optimise: bool = True) -> None:
        self.vocab = Vocabulary.for_version(version)
        self.version = version
        self.optimise = optimise
        self._order = V2_ORDER if version == "v2" else V1_ORDER
        self.dropped_events = 0  # events the last tokenize() dropped as out of range

    @classmethod
    def from_name(cls, name: str) -> MIDITokenizer:
        """``v1``, ``v1o``, ``v2`` or ``v2o`` (trailing o: optimise)."""
        if name not in ("v1", "v1o", "v2", "v2o"):
            raise ValueError(f"unknown tokenizer {name!r}: use v1, v1o, v2 or v2o")
        return cls(name[:2], name.endswith("o"))

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> MIDITokenizer:
        """Rebuild from the reference's ``to_dict()`` (as stored in a model's config.json)."""
        tok = cls(config.get("version", "v2"), bool(config.get("optimise_midi", False)))
        if config.get("vocab_size", tok.vocab.vocab_size) != tok.vocab.vocab_size:
            raise ValueError(f"tokenizer vocab_size {config['vocab_size']} does not match "
                             f"{tok.version}'s {tok.vocab.vocab_size}")
        return tok

    @property
    def name(self) -> str:
        return self.version + ("o" if self.optimise else "")

    @property
    def vocab_size(self) -> int:
        return self.vocab.vocab_size

    def to_dict(self) -> dict[str, Any]:
        return self.vocab.to_dict(self.optimise)

    # ------------------------------------------------------------------------------------------------ tokenize
    def tokenize(self, score: Score, add_bos_eos: bool = True, cc_eps: int = 4, tempo_eps: int = 4,
                 remap_track_channel: bool | None = None, add_default_instr: bool | None = None,
                 remove_empty_channels: bool | None = None) -> list[Row]:
        """Score -> rows of 8 ids (spec 2.5). The three None options default to ``optimise``."""
        remap_channels = self.optimise if remap_track_channel is None else remap_track_channel
        default_instr = self.optimise if add_default_instr is None else add_default_instr
        remove_empty = self.optimise if remove_empty_channels is None else remove_empty_channels
        state = Collected.from_score(score, self.version, self._bpm_max, cc_eps, tempo_eps)
        events = list(state.events.values())
        empty = [c for c in state.channels if state.empty_channel[c]]
        channels = state.channels
        key_sigs = state.key_sigs
        track_channels = state.track_channels
        first_track = state.first_track
        patch_channels = state.patch_channels
        if remap_channels:
            remapped = remap(state, events, remove_empty, self.version == "v2")
            channels, empty, key_sigs = remapped.channels, remapped.empty, remapped.key_sigs
            track_channels, first_track, patch_channels = (remapped.track_channels, remapped.first_track,
                                                           remapped.patch_channels)
        if default_instr:
            for c in channels:
                if c not in patch_channels and c in first_track:
                    events.append(["patch_change", 0, 0, first_track[c], c, 0])
        if self.version == "v2":
            fix_key_signatures(events, key_sigs, track_channels, state.pitch_class_hist, remap_channels)
        events.sort(key=self._sort_key)
        events = self._compact_setup(events)
        rows = self._emit(events, empty if remove_empty else ())
        if add_bos_eos:
            rows = [self.vocab.special_row(self.vocab.bos_id), *rows, self.vocab.special_row(self.vocab.eos_id)]
        return rows

    @property
    def _bpm_max(self) -> int:
        return self.vocab.event_parameters["bpm"] - 1

    def _sort_key(self, event: list) -> tuple:
        return event[1], event[2], event[3], self._order[event[0]]

    def _setup_key(self, event: list) -> tuple:
        name = event[0]
        if name == "note":
            if self.version == "v1":
                # Reference quirk: v1 keys setup notes on (track, duration, channel), from its row layout
                # [t1, t2, track, duration, channel, pitch, velocity]; chord notes sharing them collapse.
                return name, event[3], event[7], event[4]
            return name, event[3], event[4], event[5]
        if name in ("time_signature", "key_signature"):
            return name, event[3]
        return (name, *event[3:-1])

    def _compact_setup(self, events: list[list]) -> list[list]:
        """Spec 2.5 step 6: move the setup events before the first note to time 0, de-duplicated."""
        keep_time = ("note", "time_signature") if self.version == "v2" else ("note",)
        setup: dict[tuple, list] = {}
        notes_in_setup = False
        for i, event in enumerate(events):
            moved = list(event)
            if event[0] not in keep_time:
                moved[1] = moved[2] = 0
            # Reference quirk: "same time" compares t1 + t2 sums, not (t1, t2) pairs.
            here = event[1] + event[2]
            has_next = i + 1 < len(events) and here == events[i + 1][1] + events[i + 1][2]
            has_prev = notes_in_setup and i > 0 and here == events[i - 1][1] + events[i - 1][2]
            if (event[0] == "note" and not has_next) or (notes_in_setup and not has_prev):
                return sorted(setup.values(), key=self._sort_key) + events[i:]
            if event[0] == "note":
                notes_in_setup = True
            setup[self._setup_key(event)] = moved
        # Reference quirk: when the scan never reaches a lone note, the events are left as they were.
        return events

    def _emit(self, events: list[list], empty_channels) -> list[Row]:
        rows = []
        last_t1 = 0
        self.dropped_events = 0
        for event in events:
            if event[0] in ("control_change", "patch_change") and event[4] in empty_channels:
                continue
            row = self.vocab.event_to_row(self._to_params(event, event[1] - last_t1))
            if row is None:
                # A value out of range is dropped, as the reference does: a note of 128 beats or more, or any
                # event more than 127 beats after the last one kept -- so after such a gap everything that
                # follows is dropped too. ``dropped_events`` counts them so that callers can warn.
                self.dropped_events += 1
                continue
            rows.append(row)
            last_t1 = event[1]
        return rows

    def _to_params(self, event: list, t1_delta: int) -> list:
        if event[0] == "note" and self.version == "v1":
            c, p, v, d = event[4:8]
            return ["note", t1_delta, event[2], event[3], d, c, p, v]
        return [event[0], t1_delta, *event[2:]]

    # ---------------------------------------------------------------------------------------------- detokenize
    def row_to_event(self, row: Row) -> list | None:
        """One row -> ``[name, t1_delta, t2, track, *values]`` with notes as (channel, pitch, velocity,
        duration) in both versions, or None for special and invalid rows."""
        event = self.vocab.row_to_event(row)
        if event is not None and event[0] == "note" and self.version == "v1":
            d, c, p, v = event[4:8]
            event[4:8] = [c, p, v, d]
        return event

    def event_to_row(self, event: list) -> Row | None:
        """Inverse of :meth:`row_to_event` (t1 is the delta to the previous row)."""
        return self.vocab.event_to_row(self._to_params(event, event[1]))

    def detokenize(self, rows) -> Score:
        """Rows -> score at 480 ticks per beat (spec 2.6); special and invalid rows are skipped."""
        scale = DETOKENIZE_TPB // 16
        tracks: dict[int, list[list]] = {}
        t1 = 0
        for row in rows:
            event = self.row_to_event(row)
            if event is None:
                continue
            name, dt1, t2, track = event[:4]
            t1 += dt1
            tick = (t1 * 16 + t2) * scale
            if name == "note":
                c, p, v, d = event[4:8]
                out = ["note", tick, d * scale, c, p, v]
            elif name in ("control_change", "patch_change"):
                out = [name, tick, *event[4:]]
            elif name == "set_tempo":
                out = ["set_tempo", tick, bpm_to_tempo(event[4])]
            elif name == "time_signature":
                out = ["time_signature", tick, event[4] + 1, event[5] + 1, 24, 8]
            else:  # key_signature
                out = ["key_signature", tick, event[4] - 7, event[5]]
            tracks.setdefault(track, []).append(out)
        score: Score = [DETOKENIZE_TPB]
        for _, track_events in sorted(tracks.items()):
            score.append(clip_overlaps(sorted(track_events, key=lambda e: e[1])))
        return score

    # ------------------------------------------------------------------------------------------------- augment
    def augment(self, rows: list[Row], max_pitch_shift: int = 4, max_vel_shift: int = 10,
                max_cc_val_shift: int = 10, max_bpm_shift: int = 10, max_track_shift: int = 0,
                max_channel_shift: int = 16, rng: random.Random | None = None) -> list[Row]:
        """Training augmentation on rows (spec 2.7): one random draw per sequence."""
        rng = rng or random
        pitch_shift = rng.randint(-max_pitch_shift, max_pitch_shift)
        vel_shift = rng.randint(-max_vel_shift, max_vel_shift)
        cc_shift = rng.randint(-max_cc_val_shift, max_cc_val_shift)
        bpm_shift = rng.randint(-max_bpm_shift, max_bpm_shift)
        track_shift = rng.randint(0, max_track_shift)
        channel_shift = rng.randint(0, max_channel_shift)
        ids = self.vocab.parameter_offsets
        out: list[Row] = []
        key_sig_rows: list[tuple[Row, int]] = []
        track_channels: dict[int, list[int]] = {}
        for row in rows:
            event = self.row_to_event(row)
            if event is None:
                out.append(list(row))
                continue
            name, track = event[0], event[3]
            new_track = (track + track_shift) % 128
            if name == "note":
                c, p, v, d = event[4:8]
                if c != DRUM_CHANNEL:
                    p += pitch_shift
                if not 0 <= p < 128:
                    return rows
                v = max(1, min(127, v + vel_shift))
                track_channels.setdefault(track, [])
                if c not in track_channels[track]:
                    track_channels[track].append(c)
                event[4:8] = [rotate_channel(c, channel_shift), p, v, d]
            elif name == "control_change":
                c, cc, val = event[4:7]
                if cc in (1, 2, 7, 11):
                    val = max(1, min(127, val + cc_shift))
                event[4:7] = [rotate_channel(c, channel_shift), cc, val]
            elif name == "patch_change":
                event[4] = rotate_channel(event[4], channel_shift)
            elif name == "set_tempo":
                event[4] = max(1, min(self._bpm_max, event[4] + bpm_shift))
            elif name == "key_signature":
                sf, mi = event[4] - 7, event[5]
                event[4] = key_to_sf((sf_to_key(sf) + pitch_shift) % 12, mi) + 7
            event[3] = new_track
            new_row = self.event_to_row(event)
            out.append(new_row)
            if name == "key_signature":
                key_sig_rows.append((new_row, track))
        for row, original_track in key_sig_rows:
            if track_channels.get(original_track) == [DRUM_CHANNEL]:
                row[4] = ids["sf"] + 7  # drum-only tracks keep sf = 0
        return out

    # ------------------------------------------------------------------------------------------- check_quality
    def check_quality(self, rows, alignment_min: float = 0.3, tonality_min: float = 0.8,
                      piano_max: float = 0.7, notes_bandwidth_min: float = 3, notes_density_max: float = 50,
                      notes_density_min: float = 2.5, total_notes_max: int = 20000, total_notes_min: int = 256,
                      note_window_size: int = 16) -> tuple[bool, list[str]]:
        """The reference's dataset quality filter (spec 2.8). Returns (ok, reasons)."""
        total_notes = 0
        channels: list[int] = []
        time_hist = [0] * 16
        windows: dict[int, list[int]] = {}
        sounding: list[tuple[int, int]] = []
        bandwidths: list[int] = []
        instruments: dict[int, int] = {}
        piano_channels: list[int] = []
        abs_t1 = 0
        last_t = 0
        for row in rows:
            event = self.row_to_event(row)
            if event is None:
                continue
            name, t1, t2 = event[:3]
            abs_t1 += t1
            t = abs_t1 * 16 + t2
            c = None
            if name == "note":
                c, p, _, d = event[4:8]
                total_notes += 1
                time_hist[t2] += 1
                if c != DRUM_CHANNEL:
                    if c not in instruments:
                        instruments[c] = 0
                        if c not in piano_channels:
                            piano_channels.append(c)
                    windows.setdefault(abs_t1 // note_window_size, []).append(p)
                if last_t != t:
                    sounding = [(end, q) for end, q in sounding if end > last_t]
                    if sounding:
                        pitches = [q for _, q in sounding]
                        bandwidths.append(max(pitches) - min(pitches))
                sounding.append((t + d - 1, p))
            elif name == "patch_change":
                c, program = event[4:6]
                instruments[c] = program
                if program == 0 and c not in piano_channels:
                    piano_channels.append(c)
            if c is not None and c not in channels:
                channels.append(c)
            last_t = t
        reasons = []
        if total_notes < total_notes_min:
            reasons.append("total_min")
        if total_notes > total_notes_max:
            reasons.append("total_max")
        if not windows and total_notes > 0:
            reasons.append("drum_only")
        if reasons:
            return False, reasons
        alignment = sum(sorted(time_hist, reverse=True)[:2]) / total_notes
        tonality_list, density_list = [], []
        for pitches in windows.values():
            hist = [0] * 12
            for p in pitches:
                hist[p % 12] += 1
            tonality_list.append(sum(sorted(hist, reverse=True)[:7]) / len(pitches))
            density_list.append(len(pitches) / note_window_size)
        tonality = sum(tonality_list) / len(tonality_list)
        bandwidth = sum(bandwidths) / len(bandwidths) if bandwidths else 0
        density = max(density_list) if density_list else 0
        piano_ratio = len(piano_channels) / len(channels)
        if len(channels) <= 3:  # a solo piece: the piano check does not apply
            piano_max = 1
        if alignment < alignment_min:
            reasons.append("alignment")
        if tonality < tonality_min:
            reasons.append("tonality")
        if bandwidth < notes_bandwidth_min:
            reasons.append("bandwidth")
        if not notes_density_min < density < notes_density_max:
            reasons.append("density")
        if piano_ratio > piano_max:
            reasons.append("piano")
        return not reasons, reasons



__all__ = ["MIDITokenizer", "bpm_to_tempo", "detect_key", "key_to_sf", "sf_to_key", "tempo_to_bpm"]
