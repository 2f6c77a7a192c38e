"""Offline generation: continue a MIDI prompt with the engine, and render a score to a WAV file with FluidSynth.

The prompt handling follows the reference apps' "midi prompt" (shared/spec/skytnt-format.md section 3.4):
tokenize the file with the model's tokenizer, keep the first N events (BOS included), then sample. The WAV
rendering follows section 3.4's audio step: FluidSynth at 44.1 kHz, 120 bpm until a tempo change, channel 9
on the percussion bank 128.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from musebot.audio import MAX_RENDER_SECONDS, AudioError, render_messages
from musebot.engine.engine import Engine
from musebot.engine.masks import MaskTable
from musebot.engine.sampling import SamplerSettings
from musebot.tokenizers import MIDITokenizer

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "assets" / "model"
DEFAULT_TEMPO_US = 500_000  # 120 bpm, the MIDI default
RELEASE_SECONDS = 1.0  # rendered after the last event so the final notes can ring out

RenderError = AudioError  # audio rendering is impossible here (no soundfont, FluidSynth missing)


def prompt_rows(tokenizer: MIDITokenizer, score: list, max_events: int | None = None) -> np.ndarray:
    """Token rows of a prompt score: BOS and the first ``max_events`` rows (BOS counted), no EOS row."""
    rows = tokenizer.tokenize(score)
    if rows and rows[-1][0] == tokenizer.vocab.eos_id:
        rows = rows[:-1]
    if max_events is not None:
        if max_events < 1:
            raise ValueError(f"--prompt-events must be >= 1, got {max_events}")
        rows = rows[:max_events]
    return np.array(rows, np.int64).reshape(-1, 8)


@dataclass
class GenerationResult:
    rows: np.ndarray  # prompt + continuation, (n, 8)
    prompt_events: int
    generated_events: int
    seconds: float


def continue_rows(
    engine: Engine,
    prompt: np.ndarray,
    n_events: int,
    settings: SamplerSettings,
    masks: MaskTable | None = None,
    seed: int | None = None,
) -> GenerationResult:
    """Prefill ``prompt`` (n, 8) and sample up to ``n_events`` more (stopping at EOS)."""
    if n_events < 1:
        raise ValueError(f"--events must be >= 1, got {n_events}")
    engine.reset()
    started = time.perf_counter()
    engine.append(prompt)
    new = engine.generate(n_events, settings, masks, np.random.default_rng(seed))[0]
    seconds = time.perf_counter() - started
    return GenerationResult(np.concatenate([prompt, new]), len(prompt), len(new), seconds)


def _timeline(score: list) -> list[tuple[float, int, str, tuple]]:
    """(seconds, order, kind, args) for every playable event, in playing order (tempo map applied)."""
    ticks_per_beat = score[0]
    tempos = sorted((e[1], e[2]) for track in score[1:] for e in track if e[0] == "set_tempo" and e[2] > 0)
    # Piecewise-linear tick -> seconds map through the tempo changes.
    marks = [(0, 0.0, DEFAULT_TEMPO_US)]
    for tick, tempo in tempos:
        last_tick, last_seconds, last_tempo = marks[-1]
        marks.append((tick, last_seconds + (tick - last_tick) * last_tempo / 1e6 / ticks_per_beat, tempo))
    mark_ticks = [m[0] for m in marks]

    def seconds(tick: int) -> float:
        i = int(np.searchsorted(mark_ticks, tick, side="right")) - 1
        base_tick, base_seconds, tempo = marks[i]
        return base_seconds + (tick - base_tick) * tempo / 1e6 / ticks_per_beat

    events = []
    for track in score[1:]:
        for e in track:
            # At equal times: note-offs first (0), then programme/controller changes (1), then note-ons (2).
            if e[0] == "note":
                _, start, duration, channel, pitch, velocity = e[:6]
                events.append((seconds(start), 2, "on", (channel, pitch, velocity)))
                events.append((seconds(start + duration), 0, "off", (channel, pitch)))
            elif e[0] == "patch_change":
                events.append((seconds(e[1]), 1, "patch", (e[2], e[3])))
            elif e[0] == "control_change":
                events.append((seconds(e[1]), 1, "cc", (e[2], e[3], e[4])))
    events.sort(key=lambda item: (item[0], item[1]))
    return events


# A timeline event as a raw MIDI channel message (status byte, data bytes).
_MESSAGE = {
    "on": lambda channel, pitch, velocity: (0x90 | channel, pitch, velocity),
    "off": lambda channel, pitch: (0x80 | channel, pitch, 0),
    "patch": lambda channel, program: (0xC0 | channel, program),
    "cc": lambda channel, control, value: (0xB0 | channel, control, value),
}


def render_wav(
    score: list, out: str | Path, soundfont: str | Path | None = None, max_seconds: float = MAX_RENDER_SECONDS
) -> float:
    """Render ``score`` offline (faster than real time) to a 16-bit stereo WAV; returns its length in seconds.

    Events after ``max_seconds`` are left out (logged), so a wandering continuation cannot fill the disk.
    """
    messages = [(when, _MESSAGE[kind](*args)) for when, _, kind, args in _timeline(score)]
    return render_messages(messages, out, soundfont, tail_s=RELEASE_SECONDS, max_seconds=max_seconds).seconds
