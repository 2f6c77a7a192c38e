"""Offline generation: continue a MIDI prompt with the engine, and render a score to a WAV file with FluidSynth.

The prompt handling follows the reference apps' "midi prompt" (shared/spec/skytnt-format.md section 3.4):
tokenize the file with the model's tokenizer, keep the first N events (BOS included), then sample. The WAV
rendering follows section 3.4's audio step: FluidSynth at 44.1 kHz, 120 bpm until a tempo change, channel 9
on the percussion bank 128.
"""

from __future__ import annotations

import logging
import time
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from musebot.engine.engine import Engine
from musebot.engine.masks import MaskTable
from musebot.engine.sampling import SamplerSettings
from musebot.tokenizers import MIDITokenizer

log = logging.getLogger(__name__)

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "assets" / "model"
SAMPLE_RATE = 44100
DEFAULT_TEMPO_US = 500_000  # 120 bpm, the MIDI default
PERCUSSION_BANK = 128
RELEASE_SECONDS = 1.0  # rendered after the last event so the final notes can ring out
MAX_RENDER_SECONDS = 600.0  # an untrained model can leave hour-long gaps; do not write gigabytes of silence
SYSTEM_SOUNDFONTS = Path("/usr/share/sounds/sf2")


class RenderError(RuntimeError):
    """Audio rendering is impossible here (no soundfont, FluidSynth missing)."""


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


def find_soundfont(explicit: str | Path | None = None) -> Path:
    """A General MIDI soundfont: ``explicit``, else soundfonts/*.sf2 in the repository or the working folder,
    else one from /usr/share/sounds/sf2."""
    if explicit is not None:
        path = Path(explicit)
        if not path.is_file():
            raise RenderError(f"soundfont {path} does not exist")
        return path
    repo = Path(__file__).resolve().parent.parent.parent
    for folder in (repo / "soundfonts", Path.cwd() / "soundfonts", SYSTEM_SOUNDFONTS):
        found = sorted(folder.glob("*.sf2")) if folder.is_dir() else []
        if found:
            return found[0]
    raise RenderError(
        "no soundfont found: put a General MIDI .sf2 in soundfonts/ or install one (apt install timgm6mb-soundfont)"
    )


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


def _select(synth, channel: int, sfid: int, patch: int) -> None:
    """Programme change; a preset the soundfont lacks falls back to its first preset of that bank."""
    bank = PERCUSSION_BANK if channel == 9 else 0
    if synth.sfpreset_name(sfid, bank, patch) is None:
        patch = 0
    if synth.sfpreset_name(sfid, bank, patch) is not None:
        synth.program_select(channel, sfid, bank, patch)


def render_wav(
    score: list, out: str | Path, soundfont: str | Path | None = None, max_seconds: float = MAX_RENDER_SECONDS
) -> float:
    """Render ``score`` offline (faster than real time) to a 16-bit stereo WAV; returns its length in seconds.

    Events after ``max_seconds`` are left out (logged), so a wandering continuation cannot fill the disk.
    """
    try:
        import fluidsynth
    except ImportError as exc:  # pyfluidsynth is a dependency, but libfluidsynth may be missing
        raise RenderError(f"FluidSynth is not available ({exc}): install libfluidsynth3") from exc
    font = find_soundfont(soundfont)
    synth = fluidsynth.Synth(samplerate=float(SAMPLE_RATE))
    try:
        sfid = synth.sfload(str(font))
        if sfid < 0:
            raise RenderError(f"FluidSynth cannot load soundfont {font}")
        for channel in range(16):
            _select(synth, channel, sfid, 0)
        chunks, done = [], 0
        for when, _, kind, args in _timeline(score):
            if when > max_seconds:
                log.warning("audio cut at %.0f s: the score goes on to %.0f s", max_seconds, when)
                break
            target = round(when * SAMPLE_RATE)
            if target > done:
                chunks.append(synth.get_samples(target - done))
                done = target
            if kind == "on":
                synth.noteon(*args)
            elif kind == "off":
                synth.noteoff(*args)
            elif kind == "patch":
                _select(synth, args[0], sfid, args[1])
            else:
                synth.cc(*args)
        chunks.append(synth.get_samples(int(RELEASE_SECONDS * SAMPLE_RATE)))
    finally:
        synth.delete()
    audio = np.concatenate(chunks).astype(np.int16)
    with wave.open(str(out), "wb") as f:
        f.setnchannels(2)
        f.setsampwidth(2)
        f.setframerate(SAMPLE_RATE)
        f.writeframes(audio.tobytes())
    return len(audio) / 2 / SAMPLE_RATE
