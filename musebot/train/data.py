"""Batches for training: random crops of whole events from the memmap dataset, augmented, length-bucketed.

A training item is a random window of at most ``max_len`` consecutive events of one training piece (pieces
shorter than that are used whole), augmented with the tokenizer's ``augment`` (spec 2.7: one random pitch,
velocity, tempo and channel shift per sequence). Validation items are the first ``max_len`` events of each
validation piece, unaugmented, so validation loss is comparable between runs. Batches are padded with pad
rows (id 0: ignored by the loss) to their longest item; items of similar length are batched together so
that short folk songs do not pay for a chorale's padding.
"""

from __future__ import annotations

import random
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from musebot.data.dataset import DatasetError, TokenDataset


class CropDataset(Dataset):
    """Items of one split: ``(n <= max_len, 8)`` int64 tensors; random crops + augmentation when training."""

    def __init__(self, data: TokenDataset, split: str, max_len: int, train: bool, tokenizer=None,
                 seed: int = 0, max_pitch_shift: int = 4) -> None:
        self.data = data
        self.indices = data.indices(split)
        self.lengths = data.lengths(split)
        self.max_len = max_len
        self.train = train
        self.tokenizer = tokenizer
        self.rng = random.Random(seed)
        self.max_pitch_shift = max_pitch_shift

    def __len__(self) -> int:
        return len(self.indices)

    def item_length(self, i: int) -> int:
        return int(min(self.lengths[i], self.max_len))

    def __getitem__(self, i: int) -> torch.Tensor:
        rows = self.data.piece(self.indices[i])
        if len(rows) > self.max_len:
            start = self.rng.randrange(0, len(rows) - self.max_len + 1) if self.train else 0
            rows = rows[start:start + self.max_len]
        if self.train and self.tokenizer is not None:
            rows = np.asarray(self.tokenizer.augment(rows.tolist(), max_pitch_shift=self.max_pitch_shift,
                                                         rng=self.rng), dtype=np.int64)
        return torch.from_numpy(np.ascontiguousarray(rows, dtype=np.int64))


def pad_batch(items: list[torch.Tensor], pad_id: int = 0) -> torch.Tensor:
    """Stack ``(n_i, 8)`` items into ``(B, max n_i, 8)``, padding with pad rows."""
    longest = max(len(x) for x in items)
    out = torch.full((len(items), longest, items[0].shape[1]), pad_id, dtype=torch.long)
    for b, x in enumerate(items):
        out[b, :len(x)] = x
    return out


class BucketBatchSampler(Sampler[list[int]]):
    """Shuffled batches of items of similar length: sort pools of ``pool`` batches by length, then shuffle
    the batches. Every item appears once per epoch. With DDP each rank takes every ``world``-th batch."""

    def __init__(self, lengths: list[int], batch_size: int, shuffle: bool, seed: int = 0, pool: int = 50,
                 rank: int = 0, world: int = 1) -> None:
        self.lengths = lengths
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.pool = pool
        self.rank, self.world = rank, world
        self.epoch = 0

    def _batches(self) -> list[list[int]]:
        order = list(range(len(self.lengths)))
        rng = random.Random(self.seed + self.epoch)
        if self.shuffle:
            rng.shuffle(order)
        batches: list[list[int]] = []
        span = self.batch_size * self.pool
        for start in range(0, len(order), span):
            chunk = sorted(order[start:start + span], key=lambda i: self.lengths[i])
            batches += [chunk[j:j + self.batch_size] for j in range(0, len(chunk), self.batch_size)]
        if self.shuffle:
            rng.shuffle(batches)
        if self.world > 1:
            if self.shuffle and len(batches) % self.world:
                # Training needs equal batch counts on every rank, or DDP waits forever for the rank with
                # one batch more: repeat a few batches rather than drop any.
                batches += batches[:self.world - len(batches) % self.world]
            while batches and len(batches) < self.world:
                batches += batches[:self.world - len(batches)]  # Lightning wants a batch on every rank
            batches = batches[self.rank::self.world]
        return batches

    def __iter__(self):
        batches = self._batches()
        self.epoch += 1
        return iter(batches)

    def __len__(self) -> int:
        return len(self._batches())


class TokenDataModule(L.LightningDataModule):
    """Train/valid loaders over a dataset folder built by ``musebot dataset build``."""

    def __init__(self, folder: str | Path, max_len: int = 512, batch_size: int = 8, tokenizer_config=None,
                 augment: bool = True, seed: int = 0, num_workers: int = 0, max_pitch_shift: int = 4) -> None:
        super().__init__()
        self.folder = Path(folder)
        self.max_len = max_len
        self.batch_size = batch_size
        self.augment = augment
        self.max_pitch_shift = max_pitch_shift
        self.seed = seed
        self.num_workers = num_workers
        self.data = TokenDataset(self.folder)
        if not self.data.indices("train"):
            raise DatasetError(f"{self.folder} has no training pieces: build it from more pieces")
        if tokenizer_config is not None:
            mine = self.data.tokenizer_config
            for key in ("version", "optimise_midi", "vocab_size"):
                if mine.get(key) != tokenizer_config.get(key):
                    raise DatasetError(
                        f"dataset {self.folder} was tokenized with {key}={mine.get(key)!r} but the model "
                        f"expects {tokenizer_config.get(key)!r}: rebuild the dataset with the model's tokenizer"
                    )

    def tokenizer(self):
        from musebot.tokenizers import MIDITokenizer

        return MIDITokenizer.from_dict(self.data.tokenizer_config)

    def _loader(self, split: str, train: bool) -> DataLoader:
        dataset = CropDataset(self.data, split, self.max_len, train,
                              self.tokenizer() if (train and self.augment) else None, self.seed,
                              self.max_pitch_shift)
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        sampler = BucketBatchSampler([dataset.item_length(i) for i in range(len(dataset))], self.batch_size,
                                     shuffle=train, seed=self.seed, rank=rank, world=world)
        return DataLoader(dataset, batch_sampler=sampler, collate_fn=pad_batch, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        split = "valid" if self.data.indices("valid") else "train"
        return self._loader(split, train=False)
