"""Typed errors of the real-time path; each message says what to do."""

from __future__ import annotations

from musebot import audio


class RealtimeError(Exception):
    """Base class: a problem the user can fix (a port, a MIDI system, a soundfont)."""


class NoMidiSystemError(RealtimeError):
    """Neither a JACK server nor the ALSA sequencer (nor CoreMIDI/WinMM) is reachable."""


class PortNotFoundError(RealtimeError):
    """A named MIDI port does not exist (the message lists those that do)."""


class SoundfontNotFoundError(RealtimeError, audio.SoundfontNotFoundError):
    """No SoundFont (.sf2) to give FluidSynth (also a :class:`musebot.audio.SoundfontNotFoundError`)."""
