"""A built token dataset on disk, and helpers over token rows.

Layout of a dataset folder (written by :mod:`musebot.data.build`):

- ``tokens.bin``: every piece's rows, one after the other, raw little-endian int16, shape ``(n_rows, 8)``
  (ids fit: the v2 vocabulary has 3406 ids). Read with ``numpy.memmap``, so opening costs nothing.
- ``offsets.npy``: int64, ``n_pieces + 1`` entries; piece ``i`` is ``rows[offsets[i]:offsets[i+1]]``.
- ``pieces.json``: per piece, its name, source file and row count.
- ``split.json``: the seed and the piece indices of ``train``, ``valid`` and ``test``.
- ``dataset.json``: tokenizer dict, build options and the build's counts.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from musebot.tokenizers.vocab import Vocabulary

SPLITS = ("train", "valid", "test")


class DatasetError(ValueError):
    """A missing or malformed dataset folder, or a build with nothing to keep."""


class TokenDataset:
    """Read-only view of a dataset folder: ``piece(i)`` is an ``(n, 8)`` int64 array of rows."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        meta_path = self.folder / "dataset.json"
        if not meta_path.is_file():
            raise DatasetError(f"{self.folder} is not a musebot dataset (no dataset.json): "
                               "build one with `musebot dataset build SRC --out DIR`")
        self.meta = json.loads(meta_path.read_text())
        self.offsets = np.load(self.folder / "offsets.npy")
        n_rows = int(self.offsets[-1])
        self.rows = np.memmap(self.folder / "tokens.bin", dtype="<i2", mode="r", shape=(n_rows, 8))
        self.pieces: list[dict] = json.loads((self.folder / "pieces.json").read_text())
        self.split: dict = json.loads((self.folder / "split.json").read_text())

    @property
    def tokenizer_config(self) -> dict:
        return self.meta["tokenizer"]

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def piece(self, index: int) -> np.ndarray:
        return np.asarray(self.rows[self.offsets[index]:self.offsets[index + 1]], dtype=np.int64)

    def indices(self, split: str) -> list[int]:
        if split not in SPLITS:
            raise DatasetError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")
        return list(self.split[split])

    def lengths(self, split: str) -> np.ndarray:
        idx = np.asarray(self.indices(split), dtype=np.int64)
        return (self.offsets[idx + 1] - self.offsets[idx]) if len(idx) else np.zeros(0, dtype=np.int64)


def row_onsets(rows: np.ndarray, vocab: Vocabulary) -> np.ndarray:
    """Absolute grid time (16 steps per beat) of every row (spec 2.4: ``16*sum(time1) + time2``).

    Rows that are not events (BOS, EOS, pad) add no time and get the time of the row before them.
    """
    rows = np.asarray(rows)
    is_event = (rows[:, 0] >= 3) & (rows[:, 0] < 3 + len(vocab.events))
    t1_start = vocab.parameter_offsets["time1"]
    t2_start = vocab.parameter_offsets["time2"]
    time1 = np.where(is_event, rows[:, 1] - t1_start, 0)
    time2 = np.where(is_event, rows[:, 2] - t2_start, 0)
    beats = np.cumsum(time1)
    onsets = 16 * beats + time2
    # Carry the last event's time2 forward over special rows.
    last = 0
    for i in range(len(onsets)):
        if is_event[i]:
            last = onsets[i]
        else:
            onsets[i] = last
    return onsets


def first_time_signature(rows: np.ndarray, vocab: Vocabulary) -> tuple[int, int]:
    """(numerator, denominator) of the first time_signature row, 4/4 when there is none."""
    ts_id = vocab.event_ids.get("time_signature")
    if ts_id is not None:
        for row in rows:
            if row[0] == ts_id:
                event = vocab.row_to_event(list(row))
                if event is not None:
                    return event[4] + 1, 2 ** (event[5] + 1)
    return 4, 4
