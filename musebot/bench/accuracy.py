"""``musebot bench accuracy``: what quantisation changes in what the model says about real music.

Each piece is teacher-forced through the engine at fp32 and at every other precision the model folder holds
(quantised base model, then quantised token model, as generation runs them). At every token position that
predicts a real token (the event type and each parameter, pad targets left out) we compare the two
next-token distributions over the whole vocabulary: top-1 agreement, KL(fp32 || quantised), and the
negative log-likelihood each gives the real token. A key-normalised model hears each piece moved to
C major / A minor first, as in its training and in the live daemon.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from musebot.engine.engine import Engine
from musebot.engine.precision import available_precisions

DEFAULT_PIECES = Path(__file__).resolve().parents[2] / "tests" / "data" / "reference" / "midi"
MAX_EVENTS = 512  # per piece: the live context, and it keeps the (events, 8, vocabulary) logits small


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    logits = logits.astype(np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def teacher_forced(engine: Engine, rows: np.ndarray) -> np.ndarray:
    """Log-probabilities ``(n - 1, 8, V)``: event t's state and the first 7 tokens of event t + 1 (spec 3.2)."""
    hidden = engine.hidden_uncached(rows[None])[0, :-1]
    return _log_softmax(engine.token_logits_uncached(hidden, rows[1:, :7]))


def piece_rows(paths: list[Path], tokenizer, key_normalised: bool) -> list[tuple[str, np.ndarray]]:
    """Token rows of each MIDI file (at most MAX_EVENTS), moved to C major / A minor for a key-normalised model."""
    from musebot.data.build import key_shift
    from musebot.tokenizers import load_score

    pieces = []
    for path in paths:
        rows = tokenizer.tokenize(load_score(path))[:MAX_EVENTS]
        if key_normalised:
            shift = key_shift(rows, tokenizer.vocab)
            rows = tokenizer.vocab.transpose_rows(np.array(rows), shift or 0).tolist()
        pieces.append((path.name, np.array(rows, np.int64)))
    return pieces


def compare(reference: np.ndarray, other: np.ndarray, targets: np.ndarray, pad_id: int) -> dict[str, np.ndarray]:
    """Per-position figures of ``other`` against ``reference`` (both log-probabilities), real targets only."""
    used = targets != pad_id
    ref, oth, tgt = reference[used], other[used], targets[used]
    kl = np.sum(np.exp(ref) * (ref - oth), axis=-1)
    pick = np.arange(len(tgt))
    return {
        "agree": ref.argmax(-1) == oth.argmax(-1),
        "kl": np.maximum(kl, 0.0),
        "nll_reference": -ref[pick, tgt],
        "nll": -oth[pick, tgt],
    }


def run_accuracy(model_dir: Path, precisions: tuple[str, ...] | None = None, threads: int = 1,
                 pieces: list[Path] | None = None) -> dict[str, Any]:
    """Figures per precision against fp32 over ``pieces`` (default: the reference MIDI files)."""
    from musebot.tokenizers import MIDITokenizer

    paths = pieces or sorted(DEFAULT_PIECES.glob("*.mid"))
    found = available_precisions(model_dir)
    with tempfile.TemporaryDirectory(prefix="musebot-accuracy-") as tmp:
        reference_dir = model_dir
        if "fp32" not in found:  # a folder shipped without fp32 graphs: export them from its weights
            from musebot.export.onnx_export import export_onnx

            reference_dir = Path(tmp)
            export_onnx(model_dir, reference_dir, check=False)
        reference = Engine.load(reference_dir, provider="cpu", threads=threads, precision="fp32")
        others = [p for p in (precisions or found) if p in found and p not in ("fp32", "fp16")]
        engines = {p: Engine.load(model_dir, provider="cpu", threads=threads, precision=p) for p in others}
        tokenizer = MIDITokenizer.from_dict(reference.config["tokenizer"])
        rows = piece_rows(paths, tokenizer, bool(reference.config.get("key_normalised")))
        collected: dict[str, dict[str, list[np.ndarray]]] = {p: {} for p in engines}
        for _, piece in rows:
            ref = teacher_forced(reference, piece)
            for precision, engine in engines.items():
                figures = compare(ref, teacher_forced(engine, piece), piece[1:], reference.vocab.pad_id)
                for key, value in figures.items():
                    collected[precision].setdefault(key, []).append(value)
    results: dict[str, Any] = {"model_dir": str(model_dir), "pieces": [name for name, _ in rows],
                               "events": int(sum(len(r) for _, r in rows)), "precisions": {}}
    for precision, figures in collected.items():
        values = {key: np.concatenate(parts) for key, parts in figures.items()}
        results["precisions"][precision] = {
            "positions": len(values["kl"]),
            "top1_agreement": float(values["agree"].mean()),
            "kl_median": float(np.median(values["kl"])),
            "kl_mean": float(values["kl"].mean()),
            "kl_p99": float(np.percentile(values["kl"], 99)),
            "nll_fp32": float(values["nll_reference"].mean()),
            "nll": float(values["nll"].mean()),
        }
    return results


def format_accuracy(r: dict[str, Any]) -> str:
    out = [
        (f"model {r['model_dir']}: {len(r['pieces'])} pieces, {r['events']} events, teacher-forced, every "
         "token position with a real target"),
        "| precision | positions | top-1 agreement with fp32 | KL median | KL mean | KL p99 | NLL (fp32 NLL) |",
        "|---|---|---|---|---|---|---|",
    ]
    for precision, f in r["precisions"].items():
        out.append(f"| {precision} | {f['positions']} | {100 * f['top1_agreement']:.2f} % | {f['kl_median']:.2e} | "
                   f"{f['kl_mean']:.2e} | {f['kl_p99']:.2e} | {f['nll']:.4f} ({f['nll_fp32']:.4f}) |")
    return "\n".join(out)
