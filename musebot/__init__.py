"""musebot: a real-time MIDI improvisation daemon with a SkyTNT-compatible neural decoder."""

__version__ = "0.1.0"
