"""The evaluation protocol of ``musebot eval`` (spec ``music-metrics.md``: generated music beside real music
and a baseline).

For each held-out test piece long enough: the prompt is every event before bar ``prompt_bars`` (bars from
the piece's first time signature, 4/4 if none); the *real* continuation is what the piece does in the next
``continuation_bars`` bars; the *model* continuation is sampled by the ONNX engine from the prompt; the
*Markov* continuation is sampled by the first-order chain fitted on the training pieces. Each continuation
is cut to the same window of ``continuation_bars`` bars (onsets shifted so the window starts at 0, so bars
stay aligned) and scored with the six metrics of :mod:`musebot.eval.metrics`. Figures are means over pieces.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from musebot.data.dataset import TokenDataset, first_time_signature, row_onsets
from musebot.eval.markov import MarkovChain
from musebot.eval.metrics import METRIC_NAMES, NoteList, bar_steps_of, compute_all
from musebot.tokenizers.vocab import Vocabulary

SYSTEMS = ("real", "model", "markov")


@dataclass
class EvalOptions:
    """Options of ``musebot eval``."""

    prompt_bars: int = 8
    continuation_bars: int = 8
    min_continuation_bars: int = 4
    n_pieces: int = 100
    seed: int = 0
    temperature: float = 1.0
    top_p: float = 0.98
    top_k: int = 20
    max_events_per_bar: int = 64


@dataclass
class EvalResult:
    """Per-system metric means/standard errors, per-piece values and the pieces used."""

    pieces: list[str]
    per_piece: dict[str, list[dict[str, float]]]
    mean: dict[str, dict[str, float]] = field(default_factory=dict)
    sem: dict[str, dict[str, float]] = field(default_factory=dict)
    grid: str = "16 steps per beat (64 positions in a 4/4 bar)"
    model_loss: dict[str, float] | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def summarise(self) -> None:
        for system, rows in self.per_piece.items():
            self.mean[system], self.sem[system] = {}, {}
            for name in METRIC_NAMES:
                values = np.array([r[name] for r in rows], dtype=float)
                values = values[~np.isnan(values)]
                self.mean[system][name] = float(values.mean()) if len(values) else math.nan
                self.sem[system][name] = (float(values.std(ddof=1) / math.sqrt(len(values)))
                                          if len(values) > 1 else math.nan)

    def verdicts(self) -> dict[str, dict[str, bool]]:
        """Per metric: model within 10% of real, and model closer to real than the Markov baseline."""
        out = {}
        for name in METRIC_NAMES:
            real, model, markov = (self.mean[s].get(name, math.nan) for s in SYSTEMS)
            out[name] = {
                "within_10pct": bool(abs(model - real) <= 0.1 * abs(real)),
                "closer_than_markov": bool(abs(model - real) < abs(markov - real)),
            }
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"pieces": self.pieces, "grid": self.grid, "mean": self.mean, "sem": self.sem,
                "verdicts": self.verdicts(), "model_loss": self.model_loss, "options": self.options}


def notes_from_rows(rows: np.ndarray, vocab: Vocabulary, bar_steps: int) -> NoteList:
    """Pitched notes (drums left out) of token rows, onsets on the 16-steps-per-beat grid."""
    rows = np.asarray(rows, dtype=np.int64).reshape(-1, 8)
    onsets = row_onsets(rows, vocab) if len(rows) else np.zeros(0, np.int64)
    is_note = rows[:, 0] == vocab.event_ids["note"]
    layout = vocab.events["note"]
    channel = rows[:, 1 + layout.index("channel")] - vocab.parameter_offsets["channel"]
    pitch = rows[:, 1 + layout.index("pitch")] - vocab.parameter_offsets["pitch"]
    keep = is_note & (channel != 9) & (pitch >= 0) & (pitch < 128)
    return NoteList(onsets[keep].astype(np.int64), pitch[keep].astype(np.int64), bar_steps)


def split_prompt(rows: np.ndarray, vocab: Vocabulary, prompt_bars: int) -> tuple[int, int]:
    """(number of prompt rows, bar length in steps): the prompt is every row before bar ``prompt_bars``."""
    numerator, denominator = first_time_signature(rows, vocab)
    bar_steps = bar_steps_of(numerator, denominator)
    onsets = row_onsets(rows, vocab)
    is_event = (rows[:, 0] >= 3) & (rows[:, 0] < 3 + len(vocab.events))
    late = np.nonzero(is_event & (onsets >= prompt_bars * bar_steps))[0]
    return (int(late[0]) if len(late) else len(rows)), bar_steps


class _Clock:
    """Absolute onset of rows appended one by one after a prompt (spec 2.4: time1 delta, time2 absolute)."""

    def __init__(self, prompt: np.ndarray, vocab: Vocabulary) -> None:
        self.vocab = vocab
        self.t1 = vocab.parameter_offsets["time1"]
        self.t2 = vocab.parameter_offsets["time2"]
        onsets = row_onsets(prompt, vocab)
        is_event = (prompt[:, 0] >= 3) & (prompt[:, 0] < 3 + len(vocab.events))
        self.beats = int(np.sum(np.where(is_event, prompt[:, 1] - self.t1, 0)))
        self.last = int(onsets[-1]) if len(onsets) else 0

    def advance(self, row: np.ndarray) -> int:
        if 3 <= row[0] < 3 + len(self.vocab.events):
            self.beats += int(row[1] - self.t1)
            self.last = 16 * self.beats + int(row[2] - self.t2)
        return self.last


def select_pieces(data: TokenDataset, options: EvalOptions) -> list[int]:
    """Test pieces with at least ``prompt_bars + min_continuation_bars`` bars, at most ``n_pieces`` of them
    (a seeded random choice when there are more)."""
    vocab = Vocabulary.for_version(data.tokenizer_config["version"])
    chosen = []
    for index in data.indices("test"):
        rows = data.piece(index)
        n_prompt, bar_steps = split_prompt(rows, vocab, options.prompt_bars)
        last = int(row_onsets(rows, vocab)[-1])
        if n_prompt < len(rows) and last >= (options.prompt_bars + options.min_continuation_bars) * bar_steps:
            chosen.append(index)
    if len(chosen) > options.n_pieces:
        chosen = sorted(random.Random(options.seed).sample(chosen, options.n_pieces))
    return chosen


def evaluate(data: TokenDataset, engine, options: EvalOptions, markov: MarkovChain | None = None,
             progress: bool = True) -> EvalResult:
    """Run the protocol of the module docstring with an ``musebot.engine.Engine``."""
    from tqdm import tqdm

    from musebot.engine.sampling import SamplerSettings

    vocab = Vocabulary.for_version(data.tokenizer_config["version"])
    if markov is None:
        markov = MarkovChain.fit((data.piece(i) for i in data.indices("train")), vocab.eos_id)
    pieces = select_pieces(data, options)
    if not pieces:
        raise ValueError(f"no test piece of {data.folder} is longer than {options.prompt_bars} + "
                         f"{options.min_continuation_bars} bars: lower --prompt-bars")
    settings = SamplerSettings(temperature=options.temperature, top_p=options.top_p, top_k=options.top_k)
    rng = np.random.default_rng(options.seed)
    per_piece: dict[str, list[dict[str, float]]] = {s: [] for s in SYSTEMS}
    for index in tqdm(pieces, desc="evaluating", unit="piece", disable=not progress):
        rows = data.piece(index)
        n_prompt, bar_steps = split_prompt(rows, vocab, options.prompt_bars)
        start = options.prompt_bars * bar_steps
        stop = start + options.continuation_bars * bar_steps
        prompt = rows[:n_prompt]
        budget = options.continuation_bars * options.max_events_per_bar

        def window(continuation: np.ndarray, prompt=prompt, bar_steps=bar_steps, start=start, stop=stop):
            notes = notes_from_rows(np.concatenate([prompt, continuation]), vocab, bar_steps)
            return notes.window(start, stop)

        per_piece["real"].append(compute_all(window(rows[n_prompt:])))
        clock = _Clock(prompt, vocab)
        stop_markov = _stopper(prompt, vocab, stop)
        markov_rows = markov.continue_rows(prompt, budget, rng, stop_markov)
        per_piece["markov"].append(compute_all(window(markov_rows)))
        engine.reset()
        engine.append(prompt)
        generated = []
        for _ in range(budget):
            row = engine.step(settings, None, rng)[0]
            generated.append(row)
            if row[0] == vocab.eos_id or clock.advance(row) >= stop:
                break
        per_piece["model"].append(compute_all(window(np.asarray(generated).reshape(-1, 8))))
    result = EvalResult([data.pieces[i]["name"] for i in pieces], per_piece,
                        options=dict(options.__dict__))
    result.summarise()
    return result


def _stopper(prompt: np.ndarray, vocab: Vocabulary, stop: int):
    clock = _Clock(prompt, vocab)
    seen = [0]

    def done(new_rows: np.ndarray) -> bool:
        for row in new_rows[seen[0]:]:
            clock.advance(row)
        seen[0] = len(new_rows)
        return clock.last >= stop

    return done


def heldout_loss(model_dir, data: TokenDataset, max_len: int = 1024, batch_size: int = 8,
              threads: int | None = None) -> dict[str, float] | None:
    """Next-token cross-entropy and accuracy on the test split with the torch model (None without torch
    weights). Pieces longer than ``max_len`` events are scored on their first ``max_len`` events."""
    from pathlib import Path

    if not any(Path(model_dir).glob("*.safetensors")):
        return None
    import torch

    from musebot.models import load_model
    from musebot.train.data import pad_batch
    from musebot.train.module import next_token_stats

    if threads:
        torch.set_num_threads(threads)
    model = load_model(model_dir)
    indices = data.indices("test")
    totals = {"loss": 0.0, "tokens": 0, "correct": 0, "events": 0, "events_correct": 0}
    order = sorted(indices, key=lambda i: len(data.piece(i)))
    for start in range(0, len(order), batch_size):
        batch = pad_batch([torch.from_numpy(data.piece(i)[:max_len]) for i in order[start:start + batch_size]])
        for key, value in next_token_stats(model, batch).items():
            totals[key] += value
    tokens, events = max(totals["tokens"], 1), max(totals["events"], 1)
    return {"test_loss": totals["loss"] / tokens, "test_token_acc": totals["correct"] / tokens,
            "test_event_acc": totals["events_correct"] / events, "test_events": totals["events"]}
