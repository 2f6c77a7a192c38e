"""``musebot generate`` (continue a MIDI file offline) and ``musebot bench`` (engine latency figures)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from musebot.cli import CommandError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("generate", help="continue a MIDI prompt with the model; save MIDI (and WAV)")
    _model_args(p)
    p.add_argument("--prompt", type=Path, metavar="IN.mid", help="MIDI file to continue (default: start fresh)")
    p.add_argument("--prompt-events", type=int, default=128, metavar="N",
                   help="keep the first N events of the prompt, BOS included (default 128, as the reference app)")
    p.add_argument("--events", type=int, required=True, metavar="N", help="events to generate (stops at EOS)")
    p.add_argument("--out", type=Path, required=True, metavar="OUT.mid")
    p.add_argument("--wav", type=Path, metavar="OUT.wav", help="also render audio with FluidSynth")
    p.add_argument("--soundfont", type=Path, metavar="SF2", help="default: soundfonts/*.sf2 or /usr/share/sounds/sf2")
    p.add_argument("--seed", type=int, help="random seed: the same seed replays the same continuation")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-p", type=float, default=0.98)
    p.add_argument("--top-k", type=int, default=20)
    p.add_argument("--min-p", type=float, default=0.0)
    p.add_argument("--no-eos", action="store_true", help="never end the piece early: generate all N events")
    p.add_argument("--max-time-gap", type=int, metavar="STEPS",
                   help="longest silence between two events, in 1/16 beats (default: no limit)")
    p.add_argument("--max-duration", type=int, metavar="STEPS", help="longest note, in 1/16 beats")
    p.set_defaults(func=_generate)

    p = subparsers.add_parser(
        "bench", help="engine speed at each precision against the plain reference loop (or: bench accuracy)")
    p.add_argument("what", nargs="?", default="speed", choices=["speed", "accuracy"],
                   help="speed (default) or accuracy: each precision against fp32, teacher-forced on real music")
    _model_args(p)
    p.add_argument("--shape", metavar="NAME", help="time a random model of this shape instead (e.g. tv2o-medium)")
    p.add_argument("--context", type=int, nargs="+", default=[512], metavar="N",
                   help="context lengths in events (default 512)")
    p.add_argument("--events", type=int, default=100, metavar="N", help="timed events per figure (default 100)")
    p.add_argument("--generate", type=int, default=512, metavar="N",
                   help="also time a whole generation of N events from BOS (default 512; 0: skip)")
    p.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    p.set_defaults(func=_bench)


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=Path, metavar="DIR",
                   help="exported model folder (config.json, model_base.onnx, model_token.onnx); "
                        "default: the shipped model in musebot/assets/model")
    p.add_argument("--provider", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime CPU threads (default 1)")
    p.add_argument("--precision", default=None, metavar="P",
                   help="fp32, fp16, int8 or int4 graphs (default: the best the model has for the provider; "
                        "bench: a comma-separated list, default every precision the model has)")


def _model_dir(args: argparse.Namespace) -> Path:
    from musebot.engine.generate import DEFAULT_MODEL_DIR

    if args.model is not None:
        return args.model
    if not (DEFAULT_MODEL_DIR / "config.json").is_file():
        raise CommandError(
            f"no shipped model in {DEFAULT_MODEL_DIR} yet: pass --model DIR (an export made by `musebot export`)"
        )
    return DEFAULT_MODEL_DIR


def _load_engine(args: argparse.Namespace):
    from musebot.engine.engine import Engine, ModelLoadError

    if args.threads < 1:
        raise CommandError(f"--threads must be >= 1, got {args.threads}")
    try:
        return Engine.load(_model_dir(args), provider=args.provider, threads=args.threads,
                           precision=args.precision)
    except ModelLoadError as exc:
        raise CommandError(str(exc)) from exc


def _generate(args: argparse.Namespace) -> int:
    import numpy as np

    from musebot.engine.generate import RenderError, continue_rows, prompt_rows, render_wav
    from musebot.engine.masks import ConstraintError, Constraints, MaskTable
    from musebot.engine.sampling import SamplerSettings
    from musebot.tokenizers import MidiFileError, MIDITokenizer, load_score, save_score

    settings = SamplerSettings(args.temperature, args.top_p, args.top_k, args.min_p)
    engine = _load_engine(args)
    tokenizer = MIDITokenizer.from_dict(engine.config["tokenizer"])
    if args.prompt is not None:
        try:
            prompt = prompt_rows(tokenizer, load_score(args.prompt), args.prompt_events)
        except MidiFileError as exc:
            raise CommandError(str(exc)) from exc
    else:
        prompt = np.array([tokenizer.vocab.special_row(tokenizer.vocab.bos_id)], np.int64)
    try:
        masks = MaskTable(engine.vocab, Constraints(
            allow_eos=not args.no_eos, max_time_gap=args.max_time_gap, max_duration=args.max_duration
        ))
    except ConstraintError as exc:
        raise CommandError(str(exc)) from exc
    result = continue_rows(engine, prompt, args.events, settings, masks, args.seed)
    score = tokenizer.detokenize(result.rows.tolist())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_score(score, args.out)
    notes = int((result.rows[result.prompt_events:, 0] == tokenizer.vocab.event_ids["note"]).sum())
    rate = result.generated_events / result.seconds if result.seconds else float("inf")
    print(f"{args.out}: {result.prompt_events} prompt + {result.generated_events} generated events "
          f"({notes} notes) in {result.seconds:.2f} s ({rate:.0f} events/s)")
    if args.wav is not None:
        try:
            seconds = render_wav(score, args.wav, args.soundfont)
        except RenderError as exc:
            raise CommandError(str(exc)) from exc
        print(f"{args.wav}: {seconds:.1f} s of audio")
    return 0


def _bench(args: argparse.Namespace) -> int:
    if args.events < 1 or min(args.context) < 2 or args.threads < 1:
        raise CommandError("--events and --threads must be >= 1 and --context >= 2")
    precisions = None
    if args.precision:
        from musebot.export.cli import parse_precisions

        precisions = tuple(parse_precisions(args.precision))
    if args.what == "accuracy":
        from musebot.bench.accuracy import format_accuracy, run_accuracy

        results = run_accuracy(_model_dir(args), precisions, threads=args.threads)
        report = format_accuracy(results)
    else:
        from musebot.bench.engine import format_report, run_bench

        model_dir = None if args.shape else _model_dir(args)
        if model_dir is not None:
            from musebot.engine.engine import Engine, ModelLoadError

            try:  # fail early, with a clear message, on a bad folder
                Engine.load(model_dir, provider=args.provider, threads=args.threads)
            except ModelLoadError as exc:
                raise CommandError(str(exc)) from exc
        results = run_bench(model_dir, tuple(args.context), args.events, args.threads, args.provider, precisions,
                            args.shape, args.generate)
        report = format_report(results)
    if args.json:
        json.dump(results, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        print(report)
    return 0
