"""``musebot demo``: a built-in performance played into the real-time pipeline, recorded, rendered and drawn.

The performance goes through the same :class:`~musebot.realtime.modes.call.Duet`, scheduler and answerer as
``musebot serve`` (messages are handed to the listener's entry point at their due times, in real time);
only the ports are replaced by a memory output. Written to ``--out``: ``duet.mid`` (musician on track 1,
musebot on track 2, seed in a text meta event and ``duet.mid.json``), ``duet.wav`` (FluidSynth, rendered
offline from the recording) and ``duet.png`` (piano roll of both parts). ``--replay FILE.mid`` plays the
musician's part of a recorded session instead, with that session's seed, so it can be compared.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import mido

from musebot.audio import render_messages
from musebot.realtime import midi
from musebot.realtime.clock import now
from musebot.realtime.config import ServeConfig
from musebot.realtime.io.outputs import MemoryOutput
from musebot.realtime.io.recorder import PARTS, SessionRecorder, read_session_meta
from musebot.realtime.modes.answers import AnswerSlot, EchoAnswerer
from musebot.realtime.modes.call import Duet
from musebot.realtime.scheduler import Scheduler

log = logging.getLogger(__name__)

# Two short calls (pitch, beats); a musician lifts each key a little before the next one.
BUILTIN_PHRASES = (
    [(64, 0.5), (67, 0.5), (69, 0.5), (67, 0.5), (64, 0.5), (62, 0.5), (60, 1.0)],
    [(60, 0.5), (64, 0.5), (67, 0.5), (72, 1.0), (71, 0.5), (67, 0.5), (69, 1.0)],
)
Performance = list[tuple[float, midi.Message]]
FLUIDSYNTH_GAIN = 0.4  # as FluidSynthOutput plays it live


def builtin_performance(config: ServeConfig) -> Performance:
    """The built-in calls, each starting once the previous answer (as long as its call) has ended."""
    spb = config.seconds_per_beat
    performance: Performance = []
    t = 0.0
    for phrase in BUILTIN_PHRASES:
        start = t
        for pitch, beats in phrase:
            velocity = 70 + (pitch % 5) * 6  # a little dynamic shape, as a player would give
            performance.append((t, midi.note_on(0, pitch, velocity)))
            performance.append((t + beats * spb * 0.9, midi.note_off(0, pitch)))
            t += beats * spb
        release = t - phrase[-1][1] * spb * 0.1
        answer = min(max(release - start, config.min_answer_beats * spb), config.max_answer_beats * spb)
        t = release + config.silence_s + answer + spb
    return performance


def performance_from_session(path: Path) -> tuple[Performance, dict]:
    """The musician's part of a recorded session (seconds from its start) and the session's metadata."""
    meta = read_session_meta(path)
    midi_file = mido.MidiFile(path)
    performance: Performance = []
    track = next((tr for tr in midi_file.tracks if any(m.type == "track_name" and m.name == PARTS[0]
                                                        for m in tr)), None)
    if track is None:
        raise ValueError(f"{path} has no {PARTS[0]!r} track: record sessions with musebot serve --record")
    tempo = mido.bpm2tempo(meta.get("config", {}).get("bpm", 120.0))
    tick = 0
    for msg in track:
        tick += msg.time
        if not msg.is_meta:
            seconds = mido.tick2second(tick, midi_file.ticks_per_beat, tempo)
            performance.append((seconds, tuple(msg.bytes())))
    return performance, meta


def play_performance(config: ServeConfig, performance: Performance, model: str | None,
                     answer_kind: str | None) -> tuple[SessionRecorder, float, dict]:
    """Run the pipeline in real time over ``performance``; returns the recording, its origin and counts."""
    scheduler = Scheduler(late_s=config.late_ms / 1000, drop_late_s=config.drop_late_ms / 1000)
    out = MemoryOutput("demo")
    slot = AnswerSlot(scheduler, [out], config.answer_channel)
    recorder = SessionRecorder(config.bpm)
    scheduler.on_send = lambda due, sent, output, msg, tag: recorder.add(sent, "musebot", msg)
    kind = answer_kind or ("model" if model else "echo")
    if kind == "model":
        if not model:
            raise ValueError("--answer model needs --model DIR")
        from musebot.realtime.modes.call_worker import ModelAnswerer

        answerer = ModelAnswerer.load(model, slot, config)
    else:
        log.info("answering by echo: musebot plays each call back (no model given)")
        answerer = EchoAnswerer(slot)
    duet = Duet(config, scheduler, [out], slot, answerer, recorder)
    scheduler.start()
    origin = now() + 0.2
    try:
        for offset, msg in performance:
            due = origin + offset
            while now() < due:
                duet.tick(now())
                time.sleep(min(0.002, max(0.0, due - now())))
            duet.handle(due, msg)
        end = now() + config.silence_s + 0.2
        while now() < end or duet.state != "idle":  # let the last answer play out
            duet.tick(now())
            time.sleep(0.002)
            if now() > end + config.max_answer_beats * config.seconds_per_beat + 2:
                break
    finally:
        duet.panic(now(), "end of demo")
        answerer.close()
        scheduler.stop()
    counts = dict(duet.counts, late=scheduler.stats.late, dropped_late=scheduler.stats.dropped_late)
    return recorder, origin, counts


def render_wav(events: list[tuple[float, midi.Message]], path: Path, soundfont: str | None,
               tail_s: float = 1.5) -> float:
    """Render timed messages (seconds from 0) through FluidSynth offline; returns the peak level (0..1)."""
    return render_messages(events, path, soundfont, tail_s=tail_s, gain=FLUIDSYNTH_GAIN).peak


def notes_of(events: list[tuple[float, midi.Message]]) -> list[tuple[float, float, int]]:
    """``(start, end, pitch)`` of the notes in timed messages."""
    open_notes: dict[tuple[int, int], float] = {}
    notes = []
    for t, msg in sorted(events, key=lambda e: e[0]):
        key = (midi.channel_of(msg), msg[1]) if len(msg) > 1 else None
        if midi.is_note_on(msg):
            open_notes[key] = t
        elif midi.is_note_off(msg) and key in open_notes:
            notes.append((open_notes.pop(key), t, msg[1]))
    return notes


def draw_piano_roll(parts: dict[str, list[tuple[float, float, int]]], path: Path, title: str) -> None:
    """One bar per note, a colour per part (matplotlib, no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(12, 4), dpi=100)
    for (name, notes), colour in zip(parts.items(), ("tab:blue", "tab:orange")):
        for start, end, pitch in notes:
            ax.broken_barh([(start, max(end - start, 0.02))], (pitch - 0.4, 0.8), color=colour)
        ax.plot([], [], color=colour, linewidth=6, label=f"{name} ({len(notes)} notes)")
    ax.set_xlabel("seconds")
    ax.set_ylabel("MIDI pitch")
    ax.set_title(title)
    ax.legend(loc="upper right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def run_demo(config: ServeConfig, args: argparse.Namespace) -> int:
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    if getattr(args, "replay", None):
        performance, meta = performance_from_session(Path(args.replay))
        config.seed = int(meta.get("seed", config.seed))
        log.info("replaying the musician of %s with seed %d", args.replay, config.seed)
    else:
        performance = builtin_performance(config)
    print(f"musebot demo: playing {sum(1 for _, m in performance if midi.is_note_on(m))} notes "
          f"into the real-time pipeline (about {performance[-1][0]:.0f} s)...")
    recorder, origin, counts = play_performance(config, performance, args.model, args.answer)
    meta = {"seed": config.seed, "config": config.to_dict(), "mode": "call", "demo": True,
            "answer": "model" if (args.answer or ("model" if args.model else "echo")) == "model" else "echo",
            "model": str(Path(args.model).resolve()) if args.model else None}
    midi_path = recorder.save(out_dir / "duet.mid", meta, origin=origin)
    events = [(t - origin, m) for t, m in recorder.events()]
    wav_path = out_dir / "duet.wav"
    peak = render_wav(events, wav_path, args.soundfont)
    parts = {name: notes_of([(t - origin, m) for t, m in recorder.events(name)]) for name in PARTS}
    png_path = out_dir / "duet.png"
    draw_piano_roll(parts, png_path, f"musebot demo ({meta['answer']} answers, seed {config.seed})")
    print(f"musician {len(parts['musician'])} notes, musebot {len(parts['musebot'])} notes; "
          f"late {counts['late']}, dropped {counts['dropped_late']}; audio peak {peak:.2f}")
    for path in (midi_path, wav_path, png_path):
        print(f"  {path}")
    return 0
