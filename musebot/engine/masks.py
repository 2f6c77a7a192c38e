"""Allowed-token masks for each of the 8 positions of an event row, built from musical constraints.

Implements the per-step masks of shared/spec/skytnt-format.md section 3.3 (position 0: event types and eos;
position i: the id block of the event's parameter i-1; past the last parameter: pad only) and extends them as
section 5 suggests: allowed event types, channels, tracks, a pitch range, a key (allowed pitch classes), a
maximum time gap from the previous event and a maximum duration.

Every id array is computed once when the table is built (the time-gap ones on first use, then kept), so asking
for a mask during generation is a dictionary lookup.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from musebot.tokenizers.vocab import STEPS_PER_BEAT, Vocabulary

DRUM_CHANNEL = 9


class ConstraintError(ValueError):
    """Constraints that allow nothing, or name values outside the vocabulary."""


@dataclass(frozen=True)
class Constraints:
    """What generated events may contain. ``None`` means "no limit" for every field.

    Pitch limits (``pitch_range``, ``pitch_classes``) apply to melodic channels only: on the drum channel (9)
    the pitch picks an instrument, not a note. ``max_time_gap`` is in grid steps (1/16 beat) from the previous
    event's onset; ``max_duration`` in grid steps as well.
    """

    event_types: frozenset[str] | None = None
    allow_eos: bool = True
    channels: frozenset[int] | None = None
    tracks: frozenset[int] | None = None
    pitch_range: tuple[int, int] | None = None  # inclusive MIDI pitches
    pitch_classes: frozenset[int] | None = None  # 0 = C ... 11 = B
    max_time_gap: int | None = None
    max_duration: int | None = None


def _ids(start: int, values: np.ndarray) -> np.ndarray:
    return (start + np.asarray(values, dtype=np.int64)).astype(np.int64)


class MaskTable:
    """Precomputed allowed-id arrays (sorted int64 vocabulary ids) for one vocabulary and constraint set."""

    def __init__(self, vocab: Vocabulary, constraints: Constraints | None = None) -> None:
        self.vocab = vocab
        self.constraints = constraints = constraints or Constraints()
        self.pad_only = np.array([vocab.pad_id], dtype=np.int64)

        if constraints.max_time_gap is not None and constraints.max_time_gap < 0:
            raise ConstraintError(f"max_time_gap must be >= 0 grid steps, got {constraints.max_time_gap}")
        names = list(vocab.events) if constraints.event_types is None else sorted(constraints.event_types)
        unknown = set(names) - set(vocab.events)
        if unknown:
            raise ConstraintError(f"unknown event types {sorted(unknown)}: choose from {list(vocab.events)}")
        self._kind_ids = {kind: self._kind_values(kind) for kind in vocab.event_parameters}
        self._melodic_pitch = self._kind_values("pitch", melodic=True)
        melodic_channels = set(range(16)) if constraints.channels is None else set(constraints.channels)
        if not len(self._melodic_pitch) and "note" in names and melodic_channels - {DRUM_CHANNEL}:
            # Otherwise a note on a melodic channel would reach its pitch token with nothing to sample.
            raise ConstraintError(f"the pitch range {constraints.pitch_range} holds none of the allowed pitch "
                                  f"classes {sorted(constraints.pitch_classes or range(12))}")
        # An event type can only be chosen if every one of its parameters has an allowed value.
        names = [n for n in names if all(len(self._kind_ids[k]) for k in vocab.events[n])]
        type_ids = [vocab.event_ids[n] for n in names] + ([vocab.eos_id] if constraints.allow_eos else [])
        if not type_ids:
            raise ConstraintError("the constraints allow no event type and no end of sequence")
        self.event_type_ids = np.array(sorted(type_ids), dtype=np.int64)
        self._time_cache: dict[tuple, np.ndarray] = {}

    def _kind_values(self, kind: str, melodic: bool = False) -> np.ndarray:
        """Allowed ids of one parameter kind, ignoring the per-event context (time gap, drum channel)."""
        c, size = self.constraints, self.vocab.event_parameters[kind]
        values = np.arange(size)
        keep = np.ones(size, dtype=bool)
        if kind == "channel" and c.channels is not None:
            keep &= np.isin(values, list(c.channels))
        elif kind == "track" and c.tracks is not None:
            keep &= np.isin(values, list(c.tracks))
        elif kind == "duration" and c.max_duration is not None:
            if c.max_duration < 1:
                raise ConstraintError(f"max_duration must be >= 1 grid step, got {c.max_duration}")
            keep &= (values >= 1) & (values <= c.max_duration)
        elif kind == "pitch" and melodic:
            if c.pitch_range is not None:
                low, high = c.pitch_range
                keep &= (values >= low) & (values <= high)
            if c.pitch_classes is not None:
                keep &= np.isin(values % 12, list(c.pitch_classes))
        return _ids(self.vocab.parameter_offsets[kind], values[keep])

    def allowed(self, position: int, row: np.ndarray, prev_time2: int = 0) -> np.ndarray:
        """Allowed ids for token ``position`` (0..7) of an event whose earlier tokens are ``row[:position]``.

        ``prev_time2`` is the previous event's time2 value (0..15), needed only by ``max_time_gap``.
        """
        if position == 0:
            return self.event_type_ids
        name = self.vocab.id_events.get(int(row[0]))
        if name is None:  # eos (or another special id) was chosen: the rest of the row is padding
            return self.pad_only
        kinds = self.vocab.events[name]
        if position > len(kinds):
            return self.pad_only
        kind = kinds[position - 1]
        gap = self.constraints.max_time_gap
        if gap is not None and kind in ("time1", "time2"):
            return self._time_ids(kind, row, position, prev_time2, gap)
        if kind == "pitch":
            channel_pos = kinds.index("channel") + 1 if "channel" in kinds else None
            if channel_pos is not None and channel_pos < position:
                channel = int(row[channel_pos]) - self.vocab.parameter_offsets["channel"]
                if channel == DRUM_CHANNEL:
                    return self._kind_ids["pitch"]
            return self._melodic_pitch
        return self._kind_ids[kind]

    def _time_ids(self, kind: str, row: np.ndarray, position: int, prev_time2: int, gap: int) -> np.ndarray:
        """time1 (whole beats later) and time2 (position in the beat) keeping the onset within ``gap`` steps.

        The onset is ``16 * time1 + time2`` steps after the start of the previous event's beat, i.e.
        ``16 * time1 + time2 - prev_time2`` steps after the previous event (spec 2.4: time2 is absolute).
        """
        if kind == "time1":
            key = ("time1", prev_time2)
            if key not in self._time_cache:
                top = min((gap + prev_time2) // STEPS_PER_BEAT, self.vocab.event_parameters["time1"] - 1)
                self._time_cache[key] = _ids(self.vocab.parameter_offsets["time1"], np.arange(top + 1))
            return self._time_cache[key]
        kinds = self.vocab.events[self.vocab.id_events[int(row[0])]]
        time1 = int(row[kinds.index("time1") + 1]) - self.vocab.parameter_offsets["time1"]
        key = ("time2", prev_time2, time1)
        if key not in self._time_cache:
            top = min(gap + prev_time2 - STEPS_PER_BEAT * time1, STEPS_PER_BEAT - 1)
            # top < 0 cannot happen when time1 came from the time1 mask; fall back to the earliest step.
            self._time_cache[key] = _ids(self.vocab.parameter_offsets["time2"], np.arange(max(top, 0) + 1))
        return self._time_cache[key]

    def row_obeys(self, row: np.ndarray, prev_time2: int = 0) -> bool:
        """Whether a finished 8-id row satisfies the table (used by tests and by callers checking input)."""
        row = np.asarray(row)
        for position in range(len(row)):
            if int(row[position]) not in self.allowed(position, row, prev_time2):
                return False
        return True


def time2_of(vocab: Vocabulary, row: np.ndarray) -> int:
    """The time2 value (0..15) of an event row, 0 for BOS/EOS/pad rows."""
    name = vocab.id_events.get(int(row[0]))
    if name is None or "time2" not in vocab.events[name]:
        return 0
    return int(row[vocab.events[name].index("time2") + 1]) - vocab.parameter_offsets["time2"]
