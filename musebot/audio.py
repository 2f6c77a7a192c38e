"""Sound through FluidSynth: the one soundfont lookup, the one General MIDI synth, the one WAV renderer.

Used by ``musebot serve --output fluidsynth`` (a live :class:`GMSynth` behind
:class:`~musebot.realtime.io.outputs.FluidSynthOutput`), ``musebot demo`` and ``musebot generate --wav``
(both through :func:`render_messages`). A low module: stdlib and numpy only, pyfluidsynth imported when a
synth is made, nothing from the rest of musebot. Messages are raw MIDI channel messages, tuples of ints
such as ``(0x90, 60, 100)``.
"""

from __future__ import annotations

import logging
import wave
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

log = logging.getLogger(__name__)

SAMPLE_RATE = 44100
PERCUSSION_CHANNEL = 9  # GM channel 10: the drum kit, on the percussion bank
PERCUSSION_BANK = 128
DEFAULT_GAIN = 0.2  # FluidSynth's own default
MAX_RENDER_SECONDS = 600.0  # an untrained model can leave hour-long gaps; do not write gigabytes of silence

# Where soundfonts are looked for when none is given: the repository's own, the working folder's, then the
# Debian/Ubuntu ones (timgm6mb-soundfont, fluid-soundfont-gm).
SOUNDFONT_DIRS = (
    Path(__file__).resolve().parent.parent / "soundfonts",
    Path.cwd() / "soundfonts",
    Path("/usr/share/sounds/sf2"),
    Path("/usr/share/soundfonts"),
)
INSTALL_HINT = "Debian/Ubuntu: apt install timgm6mb-soundfont or fluid-soundfont-gm"


class AudioError(RuntimeError):
    """Sound is impossible here (no soundfont, FluidSynth missing); the message says what to do."""


class SoundfontNotFoundError(AudioError):
    """No usable SoundFont (.sf2) to give FluidSynth."""


def find_soundfont(explicit: str | Path | None = None) -> Path:
    """The SoundFont to use: ``explicit`` if given, else the first .sf2 in :data:`SOUNDFONT_DIRS`."""
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise SoundfontNotFoundError(f"SoundFont {path} does not exist; pass --soundfont FILE.sf2")
        return path
    for folder in SOUNDFONT_DIRS:
        fonts = sorted(folder.glob("*.sf2")) if folder.is_dir() else []
        if fonts:
            return fonts[0]
    searched = ", ".join(str(d) for d in SOUNDFONT_DIRS)
    raise SoundfontNotFoundError(
        f"no SoundFont found in {searched}; put a General MIDI .sf2 in soundfonts/, pass --soundfont FILE.sf2 "
        f"or install one ({INSTALL_HINT})"
    )


def import_fluidsynth():
    """The pyfluidsynth module; :class:`AudioError` when it or libfluidsynth is missing."""
    try:
        import fluidsynth
    except ImportError as exc:  # pyfluidsynth is a dependency, but libfluidsynth may be missing
        raise AudioError(f"FluidSynth is not available ({exc}): install libfluidsynth3") from exc
    return fluidsynth


class GMSynth:
    """A FluidSynth synthesiser with one General MIDI soundfont, programme 0 on every channel (channel 9
    on the percussion bank). ``synth`` is the pyfluidsynth ``Synth`` (for audio drivers and settings)."""

    def __init__(
        self, soundfont: str | Path | None = None, sample_rate: int = SAMPLE_RATE, gain: float = DEFAULT_GAIN
    ) -> None:
        fluidsynth = import_fluidsynth()
        self.soundfont = find_soundfont(soundfont)
        self.sample_rate = sample_rate
        self.synth = fluidsynth.Synth(gain=gain, samplerate=float(sample_rate))
        self.sfid = self.synth.sfload(str(self.soundfont))
        if self.sfid < 0:
            self.synth.delete()
            raise SoundfontNotFoundError(f"FluidSynth cannot load soundfont {self.soundfont}")
        for channel in range(16):
            self.select(channel, 0)

    def select(self, channel: int, program: int) -> None:
        """Programme change; a preset the soundfont lacks falls back to its first preset of that bank."""
        bank = PERCUSSION_BANK if channel == PERCUSSION_CHANNEL else 0
        if self.synth.sfpreset_name(self.sfid, bank, program) is None:
            program = 0
        if self.synth.sfpreset_name(self.sfid, bank, program) is not None:
            self.synth.program_select(channel, self.sfid, bank, program)

    def apply(self, msg: Sequence[int]) -> None:
        """Play one raw channel message (note on/off, control change, programme change, pitch bend)."""
        kind, channel = msg[0] & 0xF0, msg[0] & 0x0F
        if kind == 0x90 and msg[2] > 0:
            self.synth.noteon(channel, msg[1], msg[2])
        elif kind in (0x80, 0x90):
            self.synth.noteoff(channel, msg[1])
        elif kind == 0xB0:
            self.synth.cc(channel, msg[1], msg[2])
        elif kind == 0xC0:
            self.select(channel, msg[1])
        elif kind == 0xE0:
            self.synth.pitch_bend(channel, (msg[1] | msg[2] << 7) - 8192)

    def samples(self, frames: int) -> np.ndarray:
        """Synthesise ``frames`` frames now: int16 array of shape ``(frames, 2)``."""
        return np.asarray(self.synth.get_samples(frames), dtype=np.int16).reshape(-1, 2)

    def delete(self) -> None:
        self.synth.delete()


class Rendered(NamedTuple):
    seconds: float  # length of the WAV
    peak: float  # loudest sample, 0..1


def render_messages(
    events: Iterable[tuple[float, Sequence[int]]],
    out: str | Path,
    soundfont: str | Path | None = None,
    *,
    tail_s: float = 1.0,
    max_seconds: float | None = MAX_RENDER_SECONDS,
    sample_rate: int = SAMPLE_RATE,
    gain: float = DEFAULT_GAIN,
) -> Rendered:
    """Render timed raw MIDI messages (seconds from 0) offline, faster than real time, to a 16-bit stereo
    WAV at ``out``, with ``tail_s`` after the last message so the final notes ring out.

    Messages at equal times keep their order. Those after ``max_seconds`` are left out (logged), so a
    wandering continuation cannot fill the disk.
    """
    synth = GMSynth(soundfont, sample_rate, gain)
    done = peak = 0

    def write(frames: int) -> None:
        nonlocal done, peak
        chunk = synth.samples(frames)
        if chunk.size:
            peak = max(peak, int(np.abs(chunk.astype(np.int32)).max()))
        handle.writeframes(chunk.tobytes())
        done += len(chunk)

    try:
        with wave.open(str(out), "wb") as handle:
            handle.setnchannels(2)
            handle.setsampwidth(2)
            handle.setframerate(sample_rate)
            for when, msg in sorted(events, key=lambda e: e[0]):
                if max_seconds is not None and when > max_seconds:
                    log.warning("audio cut at %.0f s: the music goes on to %.0f s", max_seconds, when)
                    break
                target = round(when * sample_rate)
                if target > done:
                    write(target - done)
                synth.apply(msg)
            write(round(tail_s * sample_rate))
    finally:
        synth.delete()
    return Rendered(done / sample_rate, peak / 32768)
