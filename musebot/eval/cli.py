"""``musebot eval``: model continuations beside real ones and a Markov baseline, on held-out test pieces."""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from pathlib import Path

from musebot.cli import CommandError

LABELS = {
    "H1": "H1 (bits)",
    "H4": "H4 (bits)",
    "GS": "GS",
    "pitch_class_entropy": "pitch-class entropy (bits)",
    "scale_consistency": "scale consistency",
    "groove_consistency": "groove consistency",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "eval", help="score model continuations against real ones and a Markov baseline",
        description="For held-out test pieces, the first --prompt-bars bars are the prompt; the model (ONNX "
        "engine), the real piece and a first-order Markov chain over training events continue it, and six "
        "metrics (H1, H4, GS on the 16-steps-per-beat grid, pitch-class entropy, scale and groove "
        "consistency) are computed on the next --bars bars. Also reports next-token test loss/accuracy.")
    p.add_argument("--model", type=Path, default=None, help="exported model folder (default: the shipped model)")
    p.add_argument("--data", type=Path, required=True, help="dataset folder (its test split is used)")
    p.add_argument("--prompt-bars", type=int, default=8)
    p.add_argument("--bars", type=int, default=8, help="bars of continuation scored")
    p.add_argument("--n-pieces", type=int, default=100, help="most test pieces to use")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-p", type=float, default=0.98)
    p.add_argument("--top-k", type=int, default=20)
    p.add_argument("--threads", type=int, default=1, help="CPU threads for ONNX Runtime and torch")
    p.add_argument("--precision", choices=("fp32", "fp16", "int8", "int4"), default=None,
                   help="which graphs the model continues with (default: the best the folder has for the CPU); "
                   "a precision the folder lacks is exported from its model.safetensors to a temporary folder")
    p.add_argument("--no-loss", dest="loss", action="store_false", help="skip the test loss (needs torch)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--plot", type=Path, default=None, metavar="OUT.png", help="bar chart of the metrics")
    p.set_defaults(func=_eval)


def format_table(result) -> str:
    """Markdown table: metric, real, model, Markov, and the two verdicts."""
    verdicts = result.verdicts()
    lines = ["| metric | real | model | Markov | model within 10% of real | model closer than Markov |",
             "|---|---|---|---|---|---|"]
    for name, label in LABELS.items():
        cells = []
        for system in ("real", "model", "markov"):
            mean, sem = result.mean[system][name], result.sem[system][name]
            cells.append(f"{mean:.3f} ± {sem:.3f}" if not math.isnan(sem) else f"{mean:.3f}")
        v = verdicts[name]
        lines.append(f"| {label} | {' | '.join(cells)} | {'yes' if v['within_10pct'] else 'no'} | "
                     f"{'yes' if v['closer_than_markov'] else 'no'} |")
    within = sum(v["within_10pct"] for v in verdicts.values())
    closer = sum(v["closer_than_markov"] for v in verdicts.values())
    lines.append("")
    if "precision" in result.options:
        lines.append(f"Model graphs: {result.options['precision']}.")
    lines.append(f"{len(result.pieces)} test pieces; grid: {result.grid}; ± is the standard error over pieces. "
                 f"Model within 10% of real on {within}/6 metrics, closer to real than Markov on {closer}/6.")
    if result.model_loss:
        loss = result.model_loss
        lines.append(f"Test next-token loss {loss['test_loss']:.4f}, token accuracy {loss['test_token_acc']:.4f}, "
                     f"event accuracy {loss['test_event_acc']:.4f} ({loss['test_events']} events).")
    return "\n".join(lines)


def plot(result, path: Path) -> None:
    """One panel per metric, a bar per system with its standard error."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(11, 6))
    colours = {"real": "#4c72b0", "model": "#dd8452", "markov": "#8c8c8c"}
    for ax, (name, label) in zip(axes.flat, LABELS.items()):
        systems = ["real", "model", "markov"]
        means = [result.mean[s][name] for s in systems]
        errors = [0 if math.isnan(result.sem[s][name]) else result.sem[s][name] for s in systems]
        ax.bar(systems, means, yerr=errors, color=[colours[s] for s in systems], capsize=3)
        ax.set_title(label, fontsize=10)
        low = min(means) - 3 * max(errors)
        ax.set_ylim(max(0.0, low * 0.95), max(means) + 3 * max(errors) + 0.05 * max(means))
    fig.suptitle(f"musebot eval: {len(result.pieces)} test pieces (grid 16 steps/beat)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _eval(args: argparse.Namespace) -> int:
    from musebot.data.dataset import DatasetError, TokenDataset
    from musebot.engine.engine import ModelLoadError
    from musebot.engine.generate import DEFAULT_MODEL_DIR

    model_dir = args.model or DEFAULT_MODEL_DIR
    if not (model_dir / "config.json").is_file():
        raise CommandError(f"no model at {model_dir}: pass --model DIR (a folder made by `musebot export`)")
    if args.prompt_bars < 1 or args.bars < 1 or args.n_pieces < 1:
        raise CommandError("--prompt-bars, --bars and --n-pieces must be at least 1")
    try:
        data = TokenDataset(args.data)
    except DatasetError as exc:
        raise CommandError(str(exc)) from exc
    if not data.indices("test"):
        raise CommandError(f"{args.data} has no test pieces: rebuild it with --test > 0")
    with tempfile.TemporaryDirectory(prefix="musebot-eval-") as scratch:
        try:
            engine = open_engine(model_dir, args.precision, args.threads, Path(scratch))
        except ModelLoadError as exc:
            raise CommandError(str(exc)) from exc
        return _run(args, model_dir, data, engine)


def open_engine(model_dir: Path, precision: str | None, threads: int, scratch: Path):
    """The engine at ``precision``; graphs the folder lacks are exported from its weights into ``scratch``."""
    from musebot.engine.engine import Engine, ModelLoadError
    from musebot.engine.precision import available_precisions

    if precision is None or precision in available_precisions(model_dir):
        return Engine.load(model_dir, provider="cpu", threads=threads, precision=precision)
    if not (model_dir / "model.safetensors").is_file():
        raise ModelLoadError(f"{model_dir} has no {precision} graphs and no model.safetensors to export them from")
    from musebot.export.onnx_export import export_onnx

    export_onnx(model_dir, scratch, precisions=[precision], check=False)
    return Engine.load(scratch, provider="cpu", threads=threads, precision=precision)


def _run(args: argparse.Namespace, model_dir: Path, data, engine) -> int:
    from musebot.eval.evaluate import EvalOptions, evaluate, heldout_loss

    if engine.config["tokenizer"].get("version") != data.tokenizer_config.get("version"):
        raise CommandError(f"model tokenizer {engine.config['tokenizer'].get('version')} differs from the "
                           f"dataset's {data.tokenizer_config.get('version')}")
    options = EvalOptions(prompt_bars=args.prompt_bars, continuation_bars=args.bars,
                          min_continuation_bars=min(4, args.bars), n_pieces=args.n_pieces, seed=args.seed,
                          temperature=args.temperature, top_p=args.top_p, top_k=args.top_k)
    result = evaluate(data, engine, options, progress=not args.json)
    result.options["precision"] = engine.precision
    if args.loss:
        try:
            result.model_loss = heldout_loss(model_dir, data, threads=args.threads)
        except ImportError:
            result.model_loss = None  # torch not installed: the metrics stand alone
    if args.plot:
        plot(result, args.plot)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(format_table(result))
    return 0
