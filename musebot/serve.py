"""``musebot ports`` and ``musebot serve``: the one place that composes the daemon and its network face.

Flags map one to one onto :class:`~musebot.realtime.config.ServeConfig` and
:class:`~musebot.realtime.daemon.ServeOptions`. Nothing heavy is imported before a handler runs.
"""

from __future__ import annotations

import argparse

from musebot.realtime.config import ControlConfig, ServeConfig

API_CHOICES = ("alsa", "jack", "coremidi", "winmm")


def register(subparsers: argparse._SubParsersAction) -> None:
    ports = subparsers.add_parser("ports", help="list MIDI inputs and outputs of each MIDI system")
    ports.add_argument("--api", choices=API_CHOICES, help="only this MIDI system")
    ports.set_defaults(func=run_ports)

    serve = subparsers.add_parser(
        "serve", help="the real-time daemon: listen on a MIDI input, answer on MIDI outputs",
        description="Listen to a musician and answer (call and response). Default ports: a virtual input "
        "'musebot:in' and a virtual output 'musebot-out:out' (JACK client names; with JACK start a server "
        "first, e.g. jackd -d dummy). Several --output flags play to several outputs at once.",
    )
    add_session_arguments(serve, modes=("call", "listen", "accompany", "looper"))
    add_band_arguments(serve)
    serve.add_argument("--input", default="virtual",
                       help="'virtual' (default), an input port name, or 'none'")
    serve.add_argument(
        "--output", action="append", dest="outputs", metavar="NAME",
        help="'virtual' (default), 'fluidsynth', an output port name, or 'none' (with --port: the browser "
        "page plays); repeat for several",
    )
    serve.add_argument("--api", choices=API_CHOICES, help="MIDI system (default: JACK if running, else ALSA)")
    serve.add_argument("--record", metavar="FILE.mid",
                       help="record both sides of the session (with the seed)")
    serve.add_argument("--fluidsynth-driver", help="FluidSynth audio driver (jack, pulseaudio, alsa, file)")
    serve.add_argument("--fluidsynth-file", default="musebot-fluidsynth.wav",
                       help="WAV written by the 'file' audio driver")
    serve.add_argument("--port", type=int, metavar="N",
                       help="serve the HTTP/WebSocket API and the browser page on this TCP port (0: any free)")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address the API and OSC listen on (default %(default)s; others need a token)")
    serve.add_argument("--allow-host", action="append", dest="allow_hosts", default=[], metavar="NAME",
                       help="a Host name the API answers besides loopback and --host (repeatable)")
    serve.add_argument("--token", help="API token (off loopback one is generated and printed if not given)")
    serve.add_argument("--osc-port", type=int, metavar="N", help="OSC control on this UDP port")
    serve.set_defaults(func=run_serve)



def add_session_arguments(parser: argparse.ArgumentParser, modes: tuple[str, ...] = ("call", "listen"),
                          tempo: str = "follow") -> None:
    """Musical settings shared by ``serve`` and ``demo`` (ServeConfig fields); ``tempo``: the ``--tempo``
    default (the demo keeps a fixed grid, so a recorded session replays to the same answer)."""
    defaults, controls = ServeConfig(), ControlConfig()
    parser.add_argument("--mode", choices=modes, default="call",
                        help="call: call and response (default); listen: thru and recording only"
                        + ("; accompany: musebot plays --parts beside you; looper: musebot plays the roles "
                           "(bass, chords, melody) you are not playing" if "looper" in modes else ""))
    parser.add_argument("--model", metavar="DIR", help="exported model folder (config.json + ONNX graphs); "
                        "default: the shipped model in musebot/assets/model")
    parser.add_argument("--answer", choices=("model", "echo"),
                        help="who answers: the model (default) or echo (plays the call back)")
    parser.add_argument("--bpm", type=float, default=defaults.bpm,
                        help="tempo that maps seconds to the model's beat grid; with --tempo follow the first "
                        "guess (default %(default)s)")
    parser.add_argument("--tempo", choices=("follow", "fixed"), default=tempo,
                        help="follow: hear the musician's tempo and beat and answer on them; fixed: --bpm is "
                        "the grid (default %(default)s)")
    parser.add_argument("--answer-on", choices=("beat", "bar"), default=defaults.answer_on,
                        help="with --tempo follow the answer starts on the next beat (default) or downbeat after "
                        "the silence")
    parser.add_argument("--soundfont", metavar="SF2", help="SoundFont for FluidSynth (default: soundfonts/, "
                        "then /usr/share/sounds/sf2)")
    parser.add_argument("--thru", action="store_true", help="pass the musician's notes to the outputs")
    parser.add_argument("--silence-beats", type=float, default=defaults.silence_beats,
                        help="silence that ends a phrase, in beats (default %(default)s)")
    parser.add_argument("--silence-ms", type=float,
                        help="silence that ends a phrase, in ms (overrides beats)")
    parser.add_argument("--answer-beats", type=float,
                        help="answer length in beats (default: as long as the call)")
    parser.add_argument("--max-answer-beats", type=float, default=defaults.max_answer_beats,
                        help="longest answer, in beats (default %(default)s)")
    parser.add_argument("--answer-channel", type=int, default=defaults.answer_channel,
                        help="MIDI channel musebot plays on, 0..15 (default %(default)s)")
    parser.add_argument("--temperature", type=float, default=defaults.temperature,
                        help="sampling temperature (default %(default)s)")
    parser.add_argument("--top-p", type=float, default=defaults.top_p,
                        help="nucleus mass (default %(default)s)")
    parser.add_argument("--top-k", type=int, default=defaults.top_k, help="top-k (default %(default)s)")
    parser.add_argument("--seed", type=int, default=defaults.seed,
                        help="sampling seed, recorded with the session (default %(default)s)")
    parser.add_argument("--precision", choices=("fp32", "fp16", "int8", "int4"), default=None,
                        help="which of the model's graphs to run (default: the best it has for the provider: "
                        "int8 on a CPU, fp16 on CUDA)")
    parser.add_argument("--held-key-timeout", type=float, default=defaults.held_key_timeout_s, metavar="SECONDS",
                        help="forget a key or sustain pedal held this long, as if its release was lost, so "
                             "musebot answers again (default %(default)s; 0: never)")
    for name in ("temperature", "answer_length", "panic", "takeover"):
        flag = "--cc-" + name.replace("_", "-")
        parser.add_argument(flag, type=int, default=getattr(controls, name), metavar="CC",
                            help=f"CC number for {name.replace('_', ' ')} (default %(default)s; -1: off)")


def add_band_arguments(parser: argparse.ArgumentParser) -> None:
    """Settings of ``--mode accompany`` and ``--mode looper`` (BandConfig fields)."""
    from musebot.realtime.modes.band import BandConfig

    band = BandConfig()
    group = parser.add_argument_group("accompany and looper")
    group.add_argument("--parts", help="parts musebot plays, comma-separated, from bass, chords, melody, drums, "
                       "pad (default: bass,chords to accompany; bass,chords,melody in the looper)")
    group.add_argument("--parts-config", metavar="FILE",
                       help="JSON or TOML file: each part's channel, program, register, density, velocity, "
                       "mute/solo; the key; controller numbers")
    group.add_argument("--key", default=band.key,
                       help="key lock: auto (follow the musician, default), off, or e.g. 'Eb major'")
    group.add_argument("--meter", default=band.meter, help="time signature (default %(default)s)")
    group.add_argument("--clock", choices=("internal", "external", "follow"), default=band.clock,
                       help="internal: musebot's own clock at --bpm (default); external: follow MIDI clock; "
                       "follow: start with your first bar and drift with your tempo (--bpm: the first guess)")
    group.add_argument("--clock-in", default=band.clock_in, metavar="PORT",
                       help="where external MIDI clock comes from: 'virtual' (a port musebot-clock:in, "
                       "default) or a port name")
    group.add_argument("--clock-out", action="store_true", help="send MIDI clock, start/stop and song "
                       "position on the outputs (to drive a DAW)")
    group.add_argument("--metronome", action="store_true", help="click every beat (GM drum channel 10)")
    group.add_argument("--count-in", type=int, default=band.count_in, metavar="BARS",
                       help="bars of clicks before bar 1 (default %(default)s)")
    group.add_argument("--commit-beats", type=float, default=band.commit_beats,
                       help="accompany: planned notes this close are fixed (default %(default)s beat)")
    group.add_argument("--plan-beats", type=float, default=band.plan_beats,
                       help="accompany: how far ahead the parts are planned (default %(default)s beats)")
    group.add_argument("--looper-source", choices=("auto", "replay", "generate"), default=band.looper_source,
                       help="looper: replay your recorded bars, generate with the model, or auto (replay a "
                       "recorded role, generate the others; default)")
    group.add_argument("--interplay", choices=("mirror", "contrast"), default=band.interplay,
                       help="looper: replay the recorded bar closest to (mirror) or farthest from (contrast) "
                       "your density and energy (default %(default)s)")
    group.add_argument("--loop-bars", type=int, default=band.loop_bars,
                       help="looper: bars remembered per role (default %(default)s)")
    group.add_argument("--chords", metavar="CHART",
                       help="a chord chart the parts follow, looping from bar 1: bars split by |, e.g. "
                       "'Cm7 | F7 | Bbmaj7 | Ebmaj7 | Am7b5 D7b9 | Gm6 | %%'")
    group.add_argument("--chords-file", metavar="FILE",
                       help="the chart from a file: text as --chords, or a MusicXML/ABC lead sheet (music21)")
    group.add_argument("--harmony", choices=("chart", "follow", "key"),
                       help="what the parts follow: the chart (default with one), follow (the chords you "
                       "play, heard per beat), or key (the key only; default without a chart)")


def band_from_args(args: argparse.Namespace):
    """The BandConfig of ``--mode accompany|looper`` (None for the other modes)."""
    from musebot.realtime.modes.band import BAND_MODES, BandConfig

    if args.mode not in BAND_MODES:
        return None
    settings = {"parts": [p.strip() for p in args.parts.split(",") if p.strip()]} if args.parts else {}
    band = BandConfig.for_mode(
        args.mode, **settings, parts_config=args.parts_config, key=args.key, meter=args.meter,
        clock=args.clock, clock_in=args.clock_in, clock_out=args.clock_out, metronome=args.metronome,
        count_in=args.count_in, commit_beats=args.commit_beats, plan_beats=args.plan_beats,
        looper_source=args.looper_source, interplay=args.interplay, loop_bars=args.loop_bars,
        chords=args.chords, chords_file=args.chords_file, harmony=args.harmony,
    )
    band.validate()
    return band


def use_shipped_model(args: argparse.Namespace) -> None:
    """No --model and no --answer echo: the model that ships with musebot answers, when it is installed."""
    from musebot.engine.generate import DEFAULT_MODEL_DIR

    if args.model is None and args.answer != "echo" and (DEFAULT_MODEL_DIR / "config.json").is_file():
        args.model = str(DEFAULT_MODEL_DIR)


def config_from_args(args: argparse.Namespace) -> ServeConfig:
    def cc(value: int | None) -> int | None:
        if value is None or value < 0:
            return None
        if value > 127:
            raise ValueError(f"controller numbers are 0..127, got {value}")
        return value

    config = ServeConfig(
        bpm=args.bpm, tempo=args.tempo, answer_on=args.answer_on,
        silence_beats=args.silence_beats, silence_ms=args.silence_ms,
        answer_beats=args.answer_beats, max_answer_beats=args.max_answer_beats,
        temperature=args.temperature, top_p=args.top_p, top_k=args.top_k, seed=args.seed,
        answer_channel=args.answer_channel, thru=args.thru, held_key_timeout_s=args.held_key_timeout,
        precision=args.precision,
        controls=ControlConfig(cc(args.cc_temperature), cc(args.cc_answer_length), cc(args.cc_panic),
                               cc(args.cc_takeover)),
    )
    config.validate()
    return config


def run_ports(args: argparse.Namespace) -> int:
    from musebot.realtime.io.system import list_ports

    names = (args.api,) if args.api else API_CHOICES
    found_any = False
    for entry in list_ports(names):
        if entry.error:
            print(f"{entry.system}: not available: {entry.error}")
            continue
        found_any = True
        print(f"{entry.system}:")
        print("  inputs (musebot can read from):" if entry.inputs else "  inputs: none")
        for name in entry.inputs:
            print(f"    {name}")
        print("  outputs (musebot can play to):" if entry.outputs else "  outputs: none")
        for name in entry.outputs:
            print(f"    {name}")
    if not found_any:
        print("No MIDI system found: start JACK (jackd -d dummy) or install ALSA")
    return 0


class Service:
    """The daemon and its network face (``--port``, ``--osc-port``), composed: the one place that knows
    both (the daemon never imports the server). Reading any other attribute reads the daemon's."""

    def __init__(self, config: ServeConfig, options) -> None:
        from musebot.realtime.daemon import Daemon

        self.daemon = Daemon(config, options)
        self.server = None
        if options.port is not None or options.osc_port is not None:
            from musebot.server.app import ApiServer

            try:
                self.server = ApiServer(self.daemon)
            except BaseException:
                self.daemon.close()
                raise

    def __getattr__(self, name: str):
        return getattr(self.__dict__["daemon"], name)

    def start(self) -> Service:
        self.daemon.start()
        if self.server is not None:
            try:
                self.server.start()
            except BaseException:
                self.close()
                raise
        return self

    def close(self) -> None:
        """Panic first (no note hangs while the servers wind down), then stop the servers, then the daemon."""
        self.daemon.panic("shutdown")
        if self.server is not None:
            self.server.stop()
            self.server = None
        self.daemon.close()

    def run(self) -> int:
        return self.daemon.run(self.start, self.close)


def run_serve(args: argparse.Namespace) -> int:
    from musebot.cli import CommandError
    from musebot.realtime.daemon import ServeOptions
    from musebot.realtime.errors import RealtimeError

    config = config_from_args(args)
    use_shipped_model(args)
    try:
        band = band_from_args(args)
    except ValueError as exc:
        raise CommandError(str(exc)) from exc
    options = ServeOptions(
        input=args.input, outputs=args.outputs or ["virtual"], api=args.api, mode=args.mode,
        answer=args.answer, model=args.model, soundfont=args.soundfont,
        fluidsynth_driver=args.fluidsynth_driver,
        fluidsynth_file=args.fluidsynth_file, record=args.record,
        port=args.port, host=args.host, allow_hosts=args.allow_hosts, token=args.token,
        osc_port=args.osc_port, band=band,
    )
    for flag, port in (("--port", args.port), ("--osc-port", args.osc_port)):
        if port is not None and not 0 <= port <= 65535:
            raise CommandError(f"{flag} must be 0..65535, got {port}")
    try:
        service = Service(config, options)
    except RealtimeError as exc:
        raise CommandError(str(exc)) from exc
    try:
        return service.run()
    except RealtimeError as exc:  # the API could not start (port taken): the daemon has shut down
        raise CommandError(str(exc)) from exc
