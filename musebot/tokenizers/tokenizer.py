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

from musebot.tokenizers.score import Score
from musebot.tokenizers.vocab import Vocabulary

Row = list[int]

# Sort priority of event types at equal (t1, t2, track): spec 2.5 step 5.
_V1_ORDER = {"set_tempo": 0, "patch_change": 1, "control_change": 2, "note": 3}
_V2_ORDER = {"time_signature": 0, "key_signature": 1, "set_tempo": 2, "patch_change": 3, "control_change": 4,
             "note": 5}
DRUM_CHANNEL = 9
DETOKENIZE_TPB = 480


class MIDITokenizer:
    """One tokenizer: version ``"v1"`` or ``"v2"``; ``optimise`` is the reference's ``optimise_midi``."""

    def __init__(self, version: str = "v2", optimise: bool = True) -> None:
        self.vocab = Vocabulary.for_version(version)
        self.version = version
        self.optimise = optimise
        self._order = _V2_ORDER if version == "v2" else _V1_ORDER
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
        remap = self.optimise if remap_track_channel is None else remap_track_channel
        default_instr = self.optimise if add_default_instr is None else add_default_instr
        remove_empty = self.optimise if remove_empty_channels is None else remove_empty_channels
        state = _Collected.from_score(score, self.version, self._bpm_max, cc_eps, tempo_eps)
        events = list(state.events.values())
        empty = [c for c in state.channels if state.empty_channel[c]]
        channels = state.channels
        key_sigs = state.key_sigs
        track_channels = state.track_channels
        first_track = state.first_track
        patch_channels = state.patch_channels
        if remap:
            remapped = _remap(state, events, remove_empty, self.version == "v2")
            channels, empty, key_sigs = remapped.channels, remapped.empty, remapped.key_sigs
            track_channels, first_track, patch_channels = (remapped.track_channels, remapped.first_track,
                                                           remapped.patch_channels)
        if default_instr:
            for c in channels:
                if c not in patch_channels and c in first_track:
                    events.append(["patch_change", 0, 0, first_track[c], c, 0])
        if self.version == "v2":
            _fix_key_signatures(events, key_sigs, track_channels, state.pitch_class_hist, remap)
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
            score.append(_clip_overlaps(sorted(track_events, key=lambda e: e[1])))
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
                event[4:8] = [_rotate_channel(c, channel_shift), p, v, d]
            elif name == "control_change":
                c, cc, val = event[4:7]
                if cc in (1, 2, 7, 11):
                    val = max(1, min(127, val + cc_shift))
                event[4:7] = [_rotate_channel(c, channel_shift), cc, val]
            elif name == "patch_change":
                event[4] = _rotate_channel(event[4], channel_shift)
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


# ------------------------------------------------------------------------------------------------------ helpers
def tempo_to_bpm(tempo_us: int) -> int:
    return int(60 / (tempo_us / 1e6))


def bpm_to_tempo(bpm: int) -> int:
    return int(60 / (bpm or 1) * 1e6)


def sf_to_key(sf: int) -> int:
    """Key signature sharps/flats -> major-key root pitch class."""
    return (sf * 7) % 12


def key_to_sf(key: int, minor: int) -> int:
    sf = (key * 7) % 12
    if sf > 6 or (minor == 1 and sf >= 5):
        sf -= 12
    return sf


def detect_key(pitch_class_hist: list[int], threshold: float = 0.7) -> int | None:
    """Major-key root from a pitch-class histogram (spec 2.5 step 4), or None if the music is not diatonic."""
    total = sum(pitch_class_hist)
    if len(pitch_class_hist) != 12 or total == 0:
        return None
    top = sorted(range(12), key=lambda k: -pitch_class_hist[k])[:7]  # stable: ties keep the lower class
    if sum(pitch_class_hist[k] for k in top) / total < threshold:
        return None
    scale = sorted(top)
    semitones = [scale[i] for i in range(7) if (scale[i] - scale[i - 1]) in (1, -11)]
    if len(semitones) != 2:
        return None
    gap = semitones[1] - semitones[0]
    if gap == 5:
        return semitones[0]
    if gap == 7:
        return semitones[1]
    return None


def _rotate_channel(c: int, shift: int) -> int:
    if c == DRUM_CHANNEL:
        return c
    rotated = (c + shift) % 16
    return (DRUM_CHANNEL + shift) % 16 if rotated == DRUM_CHANNEL else rotated


def _clip_overlaps(track: list[list]) -> list[list]:
    """Clip each note to the next onset of the same (channel, pitch); drop notes left with no length."""
    next_onset: dict[tuple[int, int], int] = {}
    keep = []
    for event in reversed(track):
        if event[0] == "note":
            t, d, c, p = event[1:5]
            key = (c, p)
            if key in next_onset:
                d = min(d, max(next_onset[key] - t, 0))
            next_onset[key] = t
            event[2] = d
            if d == 0:
                continue
        keep.append(event)
    keep.reverse()
    return keep


class _Collected:
    """First pass of tokenize (spec 2.5 step 1): quantised, filtered, de-duplicated events plus bookkeeping."""

    def __init__(self) -> None:
        self.events: dict[tuple, list] = {}
        self.track_map: dict[int, dict[int, int]] = {c: {} for c in range(16)}  # channel -> {track: new}
        self.first_track: dict[int, int] = {}  # channel -> first track with its notes
        self.channels: list[int] = []
        self.patch_channels: list[int] = []
        self.empty_channel = [True] * 16
        self.note_tracks: dict[int, list[int]] = {c: [] for c in range(16)}
        self.pitch_class_hist = [0] * 12
        self.key_sigs: list[list] = []
        self.track_channels: dict[int, list[int]] = {}

    @classmethod
    def from_score(cls, score: Score, version: str, bpm_max: int, cc_eps: int, tempo_eps: int) -> _Collected:
        state = cls()
        tpb = score[0]
        if not tpb or tpb <= 0:
            raise ValueError(f"ticks per beat is {tpb}; it must be positive")
        supported = _V2_ORDER if version == "v2" else _V1_ORDER
        for track_idx, track in enumerate(score[1:129]):  # the reference reads at most 128 tracks
            state._collect_track(track_idx, track, tpb, supported, bpm_max, cc_eps, tempo_eps)
        return state

    def _collect_track(self, track_idx, track, tpb, supported, bpm_max, cc_eps, tempo_eps) -> None:
        last_notes: dict[tuple[int, int], tuple[tuple, list]] = {}
        last_patch: dict[int, int] = {}
        last_cc: dict[tuple[int, int], int] = {}
        last_bpm = 0
        track_channels: list[int] = []
        self.track_channels.setdefault(track_idx, track_channels)
        for raw in track:
            name = raw[0]
            if name not in supported:
                continue
            t = round(16 * raw[1] / tpb)
            event = [name, t // 16, t % 16, track_idx]
            c = -1
            if name == "note":
                d, c, p, v = raw[2:6]
                if not 0 <= c <= 15:
                    continue
                event += [c, p, v, max(1, round(16 * d / tpb))]
                self.empty_channel[c] = False
                self.first_track.setdefault(c, track_idx)
                if track_idx not in self.note_tracks[c]:
                    self.note_tracks[c].append(track_idx)
                if c != DRUM_CHANNEL:
                    self.pitch_class_hist[p % 12] += 1
                if c not in track_channels:
                    track_channels.append(c)
            elif name == "patch_change":
                c, program = raw[2:4]
                if not 0 <= c <= 15:
                    continue
                event += [c, program]
                if last_patch.get(c) == program:
                    continue
                last_patch[c] = program
                if c not in self.patch_channels:
                    self.patch_channels.append(c)
            elif name == "control_change":
                c, controller, value = raw[2:5]
                if not 0 <= c <= 15:
                    continue
                event += [c, controller, value]
                # Reference quirk: the last value starts at 0, so initial values below cc_eps are dropped.
                if abs(last_cc.get((c, controller), 0) - value) < cc_eps:
                    continue
                last_cc[(c, controller)] = value
            elif name == "set_tempo":
                if raw[2] == 0:
                    continue
                bpm = min(tempo_to_bpm(raw[2]), bpm_max)
                event.append(bpm)
                if abs(last_bpm - bpm) < tempo_eps:
                    continue
                last_bpm = bpm
            elif name == "time_signature":
                nn, dd = raw[2:4]
                if not (1 <= nn <= 16 and 1 <= dd <= 4):
                    continue
                event += [nn - 1, dd - 1]
            else:  # key_signature
                sf, mi = raw[2:4]
                if not (-7 <= sf <= 7 and 0 <= mi <= 1):
                    continue
                event += [sf + 7, mi]
                self.key_sigs.append(event)
            # De-duplication key: the event without its value field(s); a later duplicate overwrites.
            key = tuple(event[:-2]) if name in ("note", "time_signature", "key_signature") else tuple(event[:-1])
            if c != -1:
                if c not in self.channels:
                    self.channels.append(c)
                self.track_map[c].setdefault(track_idx, 0)
            if name == "note":
                # Quantisation can make notes of one (channel, pitch) overlap: clip the earlier one.
                cp = (c, event[5])
                if cp in last_notes:
                    last_key, last_note = last_notes[cp]
                    last_note[-1] = max(0, min(last_note[-1], t - (last_note[1] * 16 + last_note[2])))
                    if last_note[-1] == 0:
                        self.events.pop(last_key)
                last_notes[cp] = (key, event)
            self.events[key] = event


class _Remapped:
    def __init__(self) -> None:
        self.channels: list[int] = []
        self.empty: list[int] = []
        self.key_sigs: list[list] = []
        self.track_channels: dict[int, list[int]] = {}
        self.first_track: dict[int, int] = {}
        self.patch_channels: list[int] = []


def _remap(state: _Collected, events: list[list], remove_empty: bool, is_v2: bool) -> _Remapped:
    """Spec 2.5 step 2: renumber channels by first use (drums stay 9) and give each channel-track a track."""
    out = _Remapped()
    empty = [c for c in state.channels if state.empty_channel[c]]
    channels = sorted(state.channels, key=lambda c: c in empty) if remove_empty else state.channels
    channel_map = {DRUM_CHANNEL: DRUM_CHANNEL} if DRUM_CHANNEL in state.channels else {}
    count = 0
    for c in channels:
        if c == DRUM_CHANNEL:
            continue
        channel_map[c] = count
        count += 1
        if count == DRUM_CHANNEL:
            count += 1
    out.channels = list(channel_map.values())
    track_map, note_tracks = state.track_map, state.note_tracks
    track_count = 0
    for c in sorted(channel_map, key=lambda k: channel_map[k]):
        if remove_empty and c in empty:
            continue  # channels without notes get no track of their own (the reference never numbers them)
        for track_idx in track_map[c]:
            if note_tracks[c] and track_idx not in note_tracks[c]:
                continue
            track_count += 1
            track_map[c][track_idx] = track_count
    out.empty = [channel_map[c] for c in empty]

    to_add, to_remove = [], []
    for event in events:
        name, track_idx = event[0], event[3]
        if name == "note":
            c = event[4]
            event[4] = channel_map[c]
            event[3] = track_map[c][track_idx]
            out.first_track.setdefault(event[4], event[3])
        elif name in ("set_tempo", "time_signature"):
            event[3] = 0  # meta events live on track 0
        elif name == "key_signature":
            targets = []
            for c, tracks in track_map.items():
                if track_idx in tracks and tracks[track_idx] != 0:
                    target = (channel_map[c], tracks[track_idx])
                    if target not in targets:
                        targets.append(target)
            if not targets:
                if event[3] == 0:
                    out.key_sigs.append(event)  # kept on the meta track
                else:
                    event[3] = -1
                    to_remove.append(event)
                continue
            for i, (c, new_track) in enumerate(targets):
                copy = event if i == 0 else list(event)
                copy[3] = new_track
                if c == DRUM_CHANNEL:
                    copy[4] = 7  # sf = 0 on drum tracks
                out.key_sigs.append(copy)
                if i > 0:
                    to_add.append(copy)
        elif name in ("control_change", "patch_change"):
            c = event[4]
            event[4] = channel_map[c]
            # An event in a note-less track moves to the channel's first note track.
            if note_tracks[c] and track_idx not in note_tracks[c]:
                track_idx = note_tracks[c][0]
            event[3] = track_map[c][track_idx]
            if name == "patch_change" and event[4] not in out.patch_channels:
                out.patch_channels.append(event[4])
    for event in to_remove:
        events.remove(event)
    events.extend(to_add)
    if is_v2:
        for c, tracks in track_map.items():
            if c not in channel_map:
                continue
            for new_track in tracks.values():
                chans = out.track_channels.setdefault(new_track, [])
                if channel_map[c] not in chans:
                    chans.append(channel_map[c])
    return out


def _fix_key_signatures(events: list[list], key_sigs: list[list], track_channels: dict[int, list[int]],
                        pitch_class_hist: list[int], remapped: bool) -> None:
    """Spec 2.5 step 4 (v2): without key signatures other than C/Am, detect the key from the notes."""
    if key_sigs and any(k[4] != 7 for k in key_sigs):
        return
    root = detect_key(pitch_class_hist)
    if root is None:
        for key_sig in key_sigs:
            # The reference removes each default key signature with list.remove and raises ValueError when
            # one was already replaced by a duplicate (its non-optimised v2 path). musebot skips those instead,
            # which gives the ids the reference would give had it not crashed.
            if key_sig in events:
                events.remove(key_sig)
        return
    sf = key_to_sf(root, 0)
    if not key_sigs:
        for track, chans in track_channels.items():
            if remapped and track == 0:
                continue
            events.append(["key_signature", 0, 0, track, (0 if chans == [DRUM_CHANNEL] else sf) + 7, 0])
        return
    for key_sig in key_sigs:
        if track_channels.get(key_sig[3]) == [DRUM_CHANNEL]:
            continue
        key_sig[4] = sf + 7
        key_sig[5] = 0
