"""The ``demo`` and ``fit-roles`` sub-commands."""

from __future__ import annotations

import argparse

from musebot.serve import add_session_arguments, config_from_args, use_shipped_model


def register(subparsers: argparse._SubParsersAction) -> None:
    demo = subparsers.add_parser(
        "demo", help="play a built-in phrase into the real-time pipeline; record, render WAV and piano roll",
    )
    add_session_arguments(demo, tempo="fixed")
    demo.add_argument("--out", default="musebot-demo", help="folder for duet.mid, duet.wav and duet.png")
    demo.add_argument("--replay", metavar="FILE.mid",
                      help="play the musician's part of a recorded session (with its seed) instead")
    demo.set_defaults(func=run_demo)

    fit = subparsers.add_parser(
        "fit-roles", help="fit the looper's bar-role classifier on Bach chorales (music21 corpus) and report "
        "its held-out accuracy",
    )
    fit.add_argument("--pieces", type=int, help="read only the first N chorales (default: all)")
    fit.add_argument("--test-every", type=int, default=5, help="hold out every Nth chorale (default 5)")
    fit.add_argument("--out", default=None, help="weights file (default: the shipped roles_model.json)")
    fit.set_defaults(func=run_fit_roles)


def run_fit_roles(args: argparse.Namespace) -> int:
    from musebot.realtime.roles import MODEL_FILE
    from musebot.tools.roles_fit import run_fit_roles as fit

    args.out = args.out or str(MODEL_FILE)
    return fit(args)


def run_demo(args: argparse.Namespace) -> int:
    from musebot.tools.demo import run_demo as demo

    config = config_from_args(args)
    use_shipped_model(args)
    return demo(config, args)
