"""The steps of SkyTNT tokenization (shared/spec/skytnt-format.md section 2.5) and its small helpers.

``MIDITokenizer.tokenize`` runs them in order: collect (quantise, filter, de-duplicate, fix overlaps), remap tracks
and channels ("optimise"), add default instruments, fix key signatures (v2), sort, compact the setup, emit. Events
are mutable lists ``[name, t1, t2, track, *values]`` (notes: channel, pitch, velocity, duration), edited in place
where the reference edits them, because its ids depend on that order of edits.
"""

from __future__ import annotations

from musebot.tokenizers.score import Score

DRUM_CHANNEL = 9
# Sort priority of event types at equal (t1, t2, track): spec 2.5 step 5.
V1_ORDER = {"set_tempo": 0, "patch_change": 1, "control_change": 2, "note": 3}
V2_ORDER = {"time_signature": 0, "key_signature": 1, "set_tempo": 2, "patch_change": 3, "control_change": 4,
            "note": 5}


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


def rotate_channel(c: int, shift: int) -> int:
    if c == DRUM_CHANNEL:
        return c
    rotated = (c + shift) % 16
    return (DRUM_CHANNEL + shift) % 16 if rotated == DRUM_CHANNEL else rotated


def clip_overlaps(track: list[list]) -> list[list]:
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


class Collected:
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
    def from_score(cls, score: Score, version: str, bpm_max: int, cc_eps: int, tempo_eps: int) -> Collected:
        state = cls()
        tpb = score[0]
        if not tpb or tpb <= 0:
            raise ValueError(f"ticks per beat is {tpb}; it must be positive")
        supported = V2_ORDER if version == "v2" else V1_ORDER
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


class Remapped:
    def __init__(self) -> None:
        self.channels: list[int] = []
        self.empty: list[int] = []
        self.key_sigs: list[list] = []
        self.track_channels: dict[int, list[int]] = {}
        self.first_track: dict[int, int] = {}
        self.patch_channels: list[int] = []


def remap(state: Collected, events: list[list], remove_empty: bool, is_v2: bool) -> Remapped:
    """Spec 2.5 step 2: renumber channels by first use (drums stay 9) and give each channel-track a track."""
    out = Remapped()
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


def fix_key_signatures(events: list[list], key_sigs: list[list], track_channels: dict[int, list[int]],
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
