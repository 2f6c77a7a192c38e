"""The note ledger: every note sounding on one output, per channel, so a panic can silence exactly them.

Panic order (spec ``realtime-field.md`` §4 "Panic" and §5 item 11): explicit note-offs for every sounding
note first (synths that ignore CC123 still stop), then on every channel the output has used CC64=0
(sustain off, else released notes keep ringing), CC123 (all notes off) and CC120 (all sound off).
"""

from __future__ import annotations

import threading

from musebot.realtime import midi


class NoteLedger:
    """Counts note-ons minus note-offs per ``(channel, pitch)`` and remembers the channels used.

    A pitch struck twice without a note-off in between counts twice: some synths stack voices, so the
    panic sends one note-off per outstanding note-on. Thread-safe (the scheduler and a panic from the main
    thread may touch it at once).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sounding: dict[tuple[int, int], int] = {}
        self._channels: set[int] = set()

    def update(self, msg: midi.Message) -> None:
        """Account for one message about to be sent."""
        if midi.kind_of(msg) >= 0xF0:
            return
        channel = midi.channel_of(msg)
        with self._lock:
            self._channels.add(channel)
            if midi.is_note_on(msg):
                key = (channel, msg[1])
                self._sounding[key] = self._sounding.get(key, 0) + 1
            elif midi.is_note_off(msg):
                key = (channel, msg[1])
                count = self._sounding.get(key, 0)
                if count > 1:
                    self._sounding[key] = count - 1
                else:
                    self._sounding.pop(key, None)

    def sounding(self) -> list[tuple[int, int]]:
        """``(channel, pitch)`` of every note now sounding, one entry per outstanding note-on."""
        with self._lock:
            return [key for key, count in sorted(self._sounding.items()) for _ in range(count)]

    @property
    def channels(self) -> list[int]:
        with self._lock:
            return sorted(self._channels)

    def is_sounding(self, channel: int, pitch: int) -> bool:
        with self._lock:
            return (channel, pitch) in self._sounding

    def panic_messages(self, all_channels: bool = False) -> list[midi.Message]:
        """The panic sequence for this output, and clear the ledger.

        ``all_channels`` covers the 16 channels even when unused (a panic controller pressed by the
        musician must also reach notes this process did not start).
        """
        with self._lock:
            notes = [key for key, count in sorted(self._sounding.items()) for _ in range(count)]
            channels = range(16) if all_channels else sorted(self._channels)
            self._sounding.clear()
        out = [midi.note_off(channel, pitch) for channel, pitch in notes]
        for channel in channels:
            out.append(midi.control_change(channel, midi.CC_SUSTAIN, 0))
            out.append(midi.control_change(channel, midi.CC_ALL_NOTES_OFF, 0))
            out.append(midi.control_change(channel, midi.CC_ALL_SOUND_OFF, 0))
        return out
