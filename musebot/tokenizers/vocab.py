"""The SkyTNT token vocabulary: event types, parameter kinds and their id blocks.

Implements shared/spec/skytnt-format.md sections 2.1 to 2.3. Ids are allocated in order: pad, bos, eos,
one id per event type, then one contiguous block per parameter kind. An event is a row of
``max_token_seq`` (8) ids: ``[type_id, param ids..., pad...]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Parameter order inside a row, per event type (the order decides the ids, keep it).
V1_EVENTS: dict[str, list[str]] = {
    "note": ["time1", "time2", "track", "duration", "channel", "pitch", "velocity"],
    "patch_change": ["time1", "time2", "track", "channel", "patch"],
    "control_change": ["time1", "time2", "track", "channel", "controller", "value"],
    "set_tempo": ["time1", "time2", "track", "bpm"],
}
V2_EVENTS: dict[str, list[str]] = {
    "note": ["time1", "time2", "track", "channel", "pitch", "velocity", "duration"],
    "patch_change": ["time1", "time2", "track", "channel", "patch"],
    "control_change": ["time1", "time2", "track", "channel", "controller", "value"],
    "set_tempo": ["time1", "time2", "track", "bpm"],
    "time_signature": ["time1", "time2", "track", "nn", "dd"],
    "key_signature": ["time1", "time2", "track", "sf", "mi"],
}
_COMMON_PARAMETERS = {
    "time1": 128, "time2": 16, "duration": 2048, "track": 128, "channel": 16, "pitch": 128,
    "velocity": 128, "patch": 128, "controller": 128, "value": 128,
}
V1_PARAMETERS: dict[str, int] = {**_COMMON_PARAMETERS, "bpm": 256}
V2_PARAMETERS: dict[str, int] = {**_COMMON_PARAMETERS, "bpm": 384, "nn": 16, "dd": 4, "sf": 15, "mi": 2}

MAX_TOKEN_SEQ = 8
STEPS_PER_BEAT = 16  # time2 resolution: a beat holds 16 grid steps (spec 2.4)
PAD_ID, BOS_ID, EOS_ID = 0, 1, 2


@dataclass
class Vocabulary:
    """Id layout of one tokenizer version; built from the event and parameter tables."""

    version: str
    events: dict[str, list[str]]
    event_parameters: dict[str, int]
    max_token_seq: int = MAX_TOKEN_SEQ
    pad_id: int = PAD_ID
    bos_id: int = BOS_ID
    eos_id: int = EOS_ID
    event_ids: dict[str, int] = field(init=False)
    id_events: dict[int, str] = field(init=False)
    parameter_offsets: dict[str, int] = field(init=False)
    vocab_size: int = field(init=False)

    def __post_init__(self) -> None:
        next_id = 3
        self.event_ids = {}
        for name in self.events:
            self.event_ids[name] = next_id
            next_id += 1
        self.id_events = {i: name for name, i in self.event_ids.items()}
        self.parameter_offsets = {}
        for kind, size in self.event_parameters.items():
            self.parameter_offsets[kind] = next_id
            next_id += size
        self.vocab_size = next_id

    @classmethod
    def for_version(cls, version: str) -> Vocabulary:
        if version == "v1":
            return cls("v1", V1_EVENTS, V1_PARAMETERS)
        if version == "v2":
            return cls("v2", V2_EVENTS, V2_PARAMETERS)
        raise ValueError(f"unknown tokenizer version {version!r}: use 'v1' or 'v2'")

    def parameter_id(self, kind: str, value: int) -> int:
        return self.parameter_offsets[kind] + value

    def parameter_range(self, kind: str) -> tuple[int, int]:
        """Half-open id range ``[start, stop)`` of a parameter kind."""
        start = self.parameter_offsets[kind]
        return start, start + self.event_parameters[kind]

    def event_to_row(self, event: list) -> list[int] | None:
        """``[name, t1, t2, track, params...]`` -> 8 ids, or None when a value is out of range."""
        kinds = self.events[event[0]]
        values = event[1:]
        for kind, value in zip(kinds, values):
            if not 0 <= value < self.event_parameters[kind]:
                return None
        row = [self.event_ids[event[0]]]
        row += [self.parameter_offsets[kind] + value for kind, value in zip(kinds, values)]
        return row + [self.pad_id] * (self.max_token_seq - len(row))

    def row_to_event(self, row: list[int]) -> list | None:
        """8 ids -> ``[name, t1, t2, track, params...]``, or None for special or malformed rows."""
        name = self.id_events.get(int(row[0]))
        if name is None:
            return None
        kinds = self.events[name]
        if len(row) <= len(kinds):
            return None
        event: list = [name]
        for kind, token in zip(kinds, row[1:]):
            value = int(token) - self.parameter_offsets[kind]
            if not 0 <= value < self.event_parameters[kind]:
                return None
            event.append(value)
        return event

    def transpose_rows(self, rows: np.ndarray, semitones: int) -> np.ndarray:
        """A copy of ``(n, 8)`` rows with every melodic note moved by ``semitones``; drum notes (channel 9)
        stay. A pitch pushed off the MIDI range moves back by whole octaves instead of being lost."""
        rows = np.array(rows, dtype=np.int64, copy=True).reshape(-1, self.max_token_seq)
        if not semitones or not len(rows):
            return rows
        kinds = self.events["note"]
        channel_col, pitch_col = kinds.index("channel") + 1, kinds.index("pitch") + 1
        drums = self.parameter_offsets["channel"] + 9
        notes = (rows[:, 0] == self.event_ids["note"]) & (rows[:, channel_col] != drums)
        pitch = rows[notes, pitch_col] - self.parameter_offsets["pitch"] + semitones
        pitch = np.where(pitch < 0, pitch % 12, pitch)
        pitch = np.where(pitch > 127, 116 + (pitch - 116) % 12, pitch)
        rows[notes, pitch_col] = pitch + self.parameter_offsets["pitch"]
        return rows

    def special_row(self, token_id: int) -> list[int]:
        return [token_id] + [self.pad_id] * (self.max_token_seq - 1)

    def to_dict(self, optimise_midi: bool) -> dict[str, Any]:
        """The reference's ``to_dict()`` layout, stored in every model config."""
        return {
            "version": self.version,
            "optimise_midi": optimise_midi,
            "vocab_size": self.vocab_size,
            "events": {k: list(v) for k, v in self.events.items()},
            "event_parameters": dict(self.event_parameters),
            "max_token_seq": self.max_token_seq,
            "pad_id": self.pad_id,
            "bos_id": self.bos_id,
            "eos_id": self.eos_id,
        }
