"""Live constraints on every part musebot plays: key/scale lock, register, density, velocity, mute/solo.

Spec ``realtime-field.md`` §5 items 7 and 8: each part (bass, chords, melody, drums, pad) has its own channel,
program and register, and the musician changes its settings live by controller; the same settings come from
a JSON or TOML file (``--parts-config``). Register and key are hard constraints on the model's sampling
(:class:`PartMasks`, a per-part :class:`~musebot.engine.masks.MaskTable`); density, velocity, mute and solo
act on the planned notes before they are scheduled.

:class:`KeyTracker` is the key lock's "auto" mode: it follows the key of the musician's recent notes, so the
parts move with a key change (spec §6: within one beat).
"""

from __future__ import annotations

import json
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser as the tomli package
    import tomli as tomllib

from musebot.engine.masks import DRUM_CHANNEL, Constraints, MaskTable
from musebot.tokenizers.vocab import STEPS_PER_BEAT, Vocabulary

log = logging.getLogger(__name__)

NOTE_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
SCALES = {
    "major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10), "dorian": (0, 2, 3, 5, 7, 9, 10),
    "mixolydian": (0, 2, 4, 5, 7, 9, 10), "harmonic_minor": (0, 2, 3, 5, 7, 8, 11),
    "pentatonic": (0, 2, 4, 7, 9), "blues": (0, 3, 5, 6, 7, 10), "chromatic": tuple(range(12)),
}
ROLE_NAMES = ("bass", "chords", "melody", "drums", "pad")


class PartsConfigError(ValueError):
    """A parts configuration that cannot be used (unknown part or setting, value out of range)."""


@dataclass
class PartConfig:
    """One part: where it plays (channel, GM program), its register and its live settings."""

    name: str
    role: str
    channel: int
    program: int
    low: int
    high: int
    density: float = 1.0  # share of the planned notes that sound (0..1)
    polyphony: int = 4  # most notes of the part struck together
    velocity_scale: float = 1.0
    mute: bool = False
    solo: bool = False

    def validate(self) -> None:
        if self.role not in ROLE_NAMES:
            raise PartsConfigError(f"part {self.name}: role must be one of {', '.join(ROLE_NAMES)}")
        if not 0 <= self.channel <= 15:
            raise PartsConfigError(f"part {self.name}: channel must be 0..15, got {self.channel}")
        if not 0 <= self.program <= 127:
            raise PartsConfigError(f"part {self.name}: program must be 0..127, got {self.program}")
        if not 0 <= self.low <= self.high <= 127:
            raise PartsConfigError(f"part {self.name}: register needs 0 <= low <= high <= 127")
        if not 1 <= self.polyphony <= 16:
            raise PartsConfigError(f"part {self.name}: polyphony must be 1..16, got {self.polyphony}")
        if not 0.0 <= self.density <= 1.0:
            raise PartsConfigError(f"part {self.name}: density must be 0..1, got {self.density}")
        if not 0.0 <= self.velocity_scale <= 2.0:
            raise PartsConfigError(f"part {self.name}: velocity_scale must be 0..2, got {self.velocity_scale}")

    def velocity(self, velocity: int) -> int:
        return int(min(127, max(1, round(velocity * self.velocity_scale))))


# GM programs: fingered bass, electric piano, flute, drum kit (channel 10), warm pad.
DEFAULT_PARTS = {
    "bass": PartConfig("bass", "bass", 1, 33, 28, 55, polyphony=1),
    "chords": PartConfig("chords", "chords", 2, 4, 48, 79),
    "melody": PartConfig("melody", "melody", 3, 73, 60, 96, polyphony=1),
    "drums": PartConfig("drums", "drums", DRUM_CHANNEL, 0, 35, 81),
    "pad": PartConfig("pad", "pad", 4, 89, 48, 84),
}


@dataclass
class KeyLock:
    """``mode`` "off" (every pitch class), "fixed" (``tonic`` and ``scale``) or "auto" (follow the musician)."""

    mode: str = "auto"
    tonic: int = 0
    scale: str = "major"

    @classmethod
    def parse(cls, text: str) -> KeyLock:
        """``off``, ``auto``, or ``"<tonic> <scale>"`` such as ``"Eb major"``, ``"A minor"``."""
        text = text.strip()
        if text in ("off", "auto"):
            return cls(text)
        parts = text.split()
        names = {n.lower(): i for i, n in enumerate(NOTE_NAMES)}
        names.update({"db": 1, "d#": 3, "gb": 6, "g#": 8, "a#": 10})
        if len(parts) != 2 or parts[0].lower() not in names or parts[1] not in SCALES:
            raise PartsConfigError(f"key {text!r}: use off, auto, or e.g. 'Eb major' (scales: "
                                   f"{', '.join(SCALES)})")
        return cls("fixed", names[parts[0].lower()], parts[1])

    def pitch_classes(self) -> frozenset[int] | None:
        if self.mode == "off":
            return None
        return frozenset((self.tonic + step) % 12 for step in SCALES[self.scale])

    def __str__(self) -> str:
        return self.mode if self.mode == "off" else f"{NOTE_NAMES[self.tonic]} {self.scale} ({self.mode})"


@dataclass
class LiveSettings:
    """Parts, key lock and controller map of a session; ``lock`` guards live changes."""

    parts: dict[str, PartConfig] = field(default_factory=dict)
    key: KeyLock = field(default_factory=KeyLock)
    controls: dict[str, int] = field(default_factory=dict)  # "part.setting" or looper control -> CC number
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @classmethod
    def for_parts(cls, names: Iterable[str], config_file: str | Path | None = None) -> LiveSettings:
        """Default parts named ``names`` (overridden by ``config_file``, JSON or TOML), default controllers."""
        settings = cls()
        for name in names:
            if name not in DEFAULT_PARTS:
                raise PartsConfigError(f"unknown part {name!r}: choose from {', '.join(DEFAULT_PARTS)}")
            settings.parts[name] = replace(DEFAULT_PARTS[name])
        if config_file:
            settings.update(read_config(config_file))
        settings.controls = {**default_controls(list(settings.parts)), **settings.controls}
        for part in settings.parts.values():
            part.validate()
        return settings

    def update(self, data: dict) -> None:
        """Apply a parsed configuration (see :func:`read_config`)."""
        allowed = {f.name for f in fields(PartConfig)} - {"name"}
        for name, values in data.get("parts", {}).items():
            base = self.parts.get(name) or (replace(DEFAULT_PARTS[name]) if name in DEFAULT_PARTS else None)
            if base is None:
                base = PartConfig(name, values.get("role", "melody"), 0, 0, 0, 127)
            unknown = set(values) - allowed
            if unknown:
                raise PartsConfigError(f"part {name}: unknown settings {sorted(unknown)}; known: {sorted(allowed)}")
            self.parts[name] = replace(base, **values)
        if "key" in data:
            self.key = KeyLock.parse(str(data["key"]))
        for control, number in data.get("controls", {}).items():
            if not isinstance(number, int) or not 0 <= number <= 127:
                raise PartsConfigError(f"controller {control}: CC number must be 0..127, got {number!r}")
            self.controls[control] = number

    def audible(self, name: str) -> bool:
        """Mute and solo: a part sounds unless muted, or unless another part is soloed and it is not."""
        part = self.parts[name]
        if part.mute:
            return False
        soloed = [p for p in self.parts.values() if p.solo]
        return not soloed or part.solo

    def control(self, controller: int, value: int) -> str | None:
        """Apply a part controller (mute/solo toggle at >= 64, density and velocity 0..127); returns what
        changed, or None when ``controller`` is not a part controller."""
        for key, number in self.controls.items():
            if number != controller or "." not in key:
                continue
            name, setting = key.split(".", 1)
            part = self.parts.get(name)
            if part is None:
                continue
            with self.lock:
                if setting in ("mute", "solo"):
                    setattr(part, setting, value >= 64)
                elif setting == "density":
                    part.density = value / 127
                elif setting == "velocity":
                    part.velocity_scale = 2.0 * value / 127
                else:
                    continue
            return f"{name} {setting} -> {getattr(part, setting, value)}"
        return None


def default_controls(part_names: list[str]) -> dict[str, int]:
    """Undefined CCs 102..119: four per part in order (mute, solo, density, velocity)."""
    controls = {}
    for i, name in enumerate(part_names[:4]):
        for k, setting in enumerate(("mute", "solo", "density", "velocity")):
            controls[f"{name}.{setting}"] = 102 + 4 * i + k
    return controls


def read_config(path: str | Path) -> dict:
    """A parts configuration file: ``.toml`` (tomllib) or ``.json``; raises PartsConfigError when unreadable."""
    path = Path(path)
    if not path.is_file():
        raise PartsConfigError(f"{path}: no such parts configuration file")
    try:
        if path.suffix == ".toml":
            return tomllib.loads(path.read_text())
        return json.loads(path.read_text())
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise PartsConfigError(f"{path}: cannot parse it ({exc})") from exc


SURPRISE_NOTES = 16


def shift_to_c(tonic: int | None) -> int:
    """Semitones (-6..+5, the least register change) that move the major key on ``tonic`` (and its relative
    minor) to C major / A minor, the key of a ``key_normalised`` model; 0 while no key is known."""
    return 0 if tonic is None else (6 - tonic) % 12 - 6


class KeyTracker:
    """The key of the musician's recent notes, and the pitch classes the parts may use meanwhile.

    The key: each of the 12 major scales (their relative minors share the notes) scores the recency-weighted
    note-ons inside it minus those outside it; the best wins. Weights halve every ``half_life_beats``; a new
    key must beat the current one by ``margin`` (hysteresis, so one passing note does not move the band).

    That estimate needs a few notes of a new key to settle (F#, G#, A# fit three keys). Until it does, the
    parts are not left in the old key: from the first note outside the tracked key, the notes since then
    ("the surprise") admit only the keys that hold them all, and the parts may use just the pitch classes
    those keys share, which are in the new key whichever it turns out to be. When no key holds them all, the
    oldest is dropped (it was a passing note); when the tracked key holds them all, the surprise is over.
    """

    def __init__(self, half_life_beats: float = 1.5, margin: float = 0.5, memory: int = 32) -> None:
        self.half_life = half_life_beats
        self.margin = margin
        self.notes: deque[tuple[float, int]] = deque(maxlen=memory)  # (beat, pitch)
        self.tonic: int | None = None
        self.changes = 0
        self.history: deque[tuple[float, int]] = deque(maxlen=1024)  # (beat, tonic) of each key found
        self.surprise: list[int] = []  # pitch classes since the first one outside the tracked key
        self._member = np.array([[(pc - t) % 12 in SCALES["major"] for pc in range(12)] for t in range(12)])
        self._classes: frozenset[int] | None = None

    def hear(self, beat: float, pitch: int) -> bool:
        """Account for a note-on at ``beat``; True when the pitch classes the parts may use changed (the key
        estimate, or the surprise's shared classes)."""
        pc = pitch % 12
        previous = self.tonic
        self.notes.append((beat, pc))
        weights = np.zeros(12)
        for b, c in self.notes:
            weights[c] += 0.5 ** ((beat - b) / self.half_life)
        scores = self._member @ weights - (~self._member) @ weights * 2.0
        best = int(np.argmax(scores))
        if self.tonic is None or (best != self.tonic and scores[best] > scores[self.tonic] + self.margin):
            self.changes += self.tonic is not None
            self.tonic = best
            self.history.append((beat, best))
        if self.surprise or (previous is not None and not self._member[previous, pc]):
            self.surprise = (self.surprise + [pc])[-SURPRISE_NOTES:]
            while self.surprise and not self._keys_holding(self.surprise).any():
                self.surprise.pop(0)
            holding = np.flatnonzero(self._keys_holding(self.surprise))
            if len(holding) == 1 and holding[0] == self.tonic:
                self.surprise = []  # the notes name one key, and the estimate has reached it
        classes = self.pitch_classes()
        changed = classes != self._classes
        self._classes = classes
        return changed

    def _keys_holding(self, classes: list[int]) -> np.ndarray:
        return self._member[:, classes].all(axis=1)

    def scale(self) -> frozenset[int] | None:
        """The tracked key's scale (without the surprise's narrowing)."""
        if self.tonic is None:
            return None
        return frozenset((self.tonic + s) % 12 for s in SCALES["major"])

    def pitch_classes(self) -> frozenset[int] | None:
        if self.tonic is None:
            return None
        if self.surprise:
            shared = self._member[self._keys_holding(self.surprise)].all(axis=0)
            return frozenset(int(c) for c in np.flatnonzero(shared))
        return frozenset((self.tonic + s) % 12 for s in SCALES["major"])


class KeyFollower:
    """The musician's key, for a model trained in C major / A minor (``"key_normalised"`` in its
    config.json): the band's :class:`KeyTracker`, slower (a key holds for bars, not beats), and the
    transposition from it to C major (-6..+5 semitones, so the register moves least)."""

    def __init__(self) -> None:
        self.tracker = KeyTracker(half_life_beats=8.0, margin=1.0)

    def hear(self, beat: float, pitch: int) -> None:
        self.tracker.hear(beat, pitch)

    @property
    def shift(self) -> int:
        return shift_to_c(self.tracker.tonic)


class PartMasks(MaskTable):
    """A :class:`MaskTable` whose pitch choice depends on the channel chosen: each part's register and the key
    lock; each track is bound to one channel. ``tracks`` maps track -> channel (the musician's too).

    With ``classes_at`` (a chord chart or the tracked chord, :mod:`harmony_live`), the pitch classes also
    depend on the event's beat: ``classes_at(channel, beat)`` gives them (None: the key's) for a note starting
    at ``beat``, read from the event's time tokens counted from :attr:`origin_step` (the grid step of the
    previous event, which the caller sets before each step). So every event of a plan is masked by the chord
    in force at its own onset, however far ahead it lies."""

    def __init__(self, vocab: Vocabulary, tracks: dict[int, int], registers: dict[int, tuple[int, int]],
                 pitch_classes: frozenset[int] | None, max_time_gap: int | None = None,
                 max_duration: int | None = None,
                 classes_at: Callable[[int, float], frozenset[int] | None] | None = None) -> None:
        super().__init__(vocab, Constraints(
            event_types=frozenset({"note"}), allow_eos=False, channels=frozenset(tracks.values()),
            tracks=frozenset(tracks), max_time_gap=max_time_gap, max_duration=max_duration,
        ))
        self.track_channel = dict(tracks)
        kinds = vocab.events["note"]
        self._track_pos = kinds.index("track") + 1
        self._channel_pos = kinds.index("channel") + 1
        pitch_offset = vocab.parameter_offsets["pitch"]
        channel_offset = vocab.parameter_offsets["channel"]
        self._channel_ids = {t: np.array([channel_offset + c], np.int64) for t, c in tracks.items()}
        self._pitch_ids: dict[int, np.ndarray] = {}
        for channel in set(tracks.values()):
            low, high = registers.get(channel, (0, 127))
            values = np.arange(low, high + 1)
            if pitch_classes is not None and channel != DRUM_CHANNEL:
                values = values[np.isin(values % 12, list(pitch_classes))]
            if not len(values):
                raise PartsConfigError(f"channel {channel}: register {low}..{high} holds no note of the key")
            self._pitch_ids[channel] = (pitch_offset + values).astype(np.int64)
        self._track_offset = vocab.parameter_offsets["track"]
        self._channel_offset = channel_offset
        self.classes_at = classes_at
        self.origin_step = 0  # grid step of the event before the one being sampled (classes_at only)
        self._registers = {c: registers.get(c, (0, 127)) for c in set(tracks.values())}
        self._time_pos = kinds.index("time1") + 1
        self._time_offsets = (vocab.parameter_offsets["time1"], vocab.parameter_offsets["time2"])
        self._chord_ids: dict[tuple[int, frozenset[int]], np.ndarray] = {}

    def event_step(self, row: np.ndarray) -> int:
        """The grid step of the note whose time tokens are in ``row``, as the band's planners count it: whole
        beats after the previous event's beat, then the position in the beat, never before the previous."""
        time1 = int(row[self._time_pos]) - self._time_offsets[0]
        time2 = int(row[self._time_pos + 1]) - self._time_offsets[1]
        beat = self.origin_step // STEPS_PER_BEAT + time1
        return max(beat * STEPS_PER_BEAT + time2, self.origin_step)

    def allowed(self, position: int, row: np.ndarray, prev_time2: int = 0) -> np.ndarray:
        if position == self._channel_pos and self.vocab.id_events.get(int(row[0])) == "note":
            return self._channel_ids[int(row[self._track_pos]) - self._track_offset]
        if position == self._channel_pos + 1 and self.vocab.id_events.get(int(row[0])) == "note":
            channel = int(row[self._channel_pos]) - self._channel_offset
            if self.classes_at is not None and channel != DRUM_CHANNEL:
                classes = self.classes_at(channel, self.event_step(row) / STEPS_PER_BEAT)
                if classes is not None:
                    return self._chord_pitch_ids(channel, classes)
            return self._pitch_ids[channel]
        return super().allowed(position, row, prev_time2)

    def _chord_pitch_ids(self, channel: int, classes: frozenset[int]) -> np.ndarray:
        key = (channel, classes)
        if key not in self._chord_ids:
            low, high = self._registers[channel]
            values = np.arange(low, high + 1)
            values = values[np.isin(values % 12, list(classes))]
            # A register too narrow for the chord's few classes (a bass of a fifth) keeps the key's pitches.
            ids = (self.vocab.parameter_offsets["pitch"] + values).astype(np.int64)
            if len(self._chord_ids) > 1024:
                self._chord_ids.clear()
            self._chord_ids[key] = ids if len(values) else self._pitch_ids[channel]
        return self._chord_ids[key]
