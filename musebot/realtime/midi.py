"""Raw MIDI 1.0 channel messages as tuples of ints: validation and classification.

The real-time path carries messages as the bytes of the MIDI 1.0 wire format (``(status, data1, data2)``)
because that is what rtmidi delivers and takes; building mido objects per message would cost more than
the rest of the hop. Lengths and ranges follow the MIDI 1.0 Detailed Specification, table I.
"""

from __future__ import annotations

NOTE_OFF = 0x80
NOTE_ON = 0x90
POLY_PRESSURE = 0xA0
CONTROL_CHANGE = 0xB0
PROGRAM_CHANGE = 0xC0
CHANNEL_PRESSURE = 0xD0
PITCH_BEND = 0xE0

CC_SUSTAIN = 64
CC_ALL_SOUND_OFF = 120
CC_ALL_NOTES_OFF = 123

# Data bytes that follow each channel-voice status nibble.
_DATA_LENGTH = {0x80: 2, 0x90: 2, 0xA0: 2, 0xB0: 2, 0xC0: 1, 0xD0: 1, 0xE0: 2}

Message = tuple[int, ...]


def channel_message(data: object) -> Message | None:
    """Return ``data`` as a valid channel-voice message tuple, or None for anything else.

    Everything that is not a complete channel-voice message (sysex, clock, active sensing, running-status
    fragments, wrong lengths, out-of-range data bytes) gives None: the listener drops it and counts it.
    """
    try:
        msg = tuple(int(b) for b in data)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        return None
    if not msg:
        return None
    status = msg[0]
    kind = status & 0xF0
    if status < 0x80 or kind not in _DATA_LENGTH:
        return None
    if len(msg) != 1 + _DATA_LENGTH[kind] or any(not 0 <= b < 0x80 for b in msg[1:]):
        return None
    return msg


def kind_of(msg: Message) -> int:
    """Status nibble of a channel message (``NOTE_ON`` etc.)."""
    return msg[0] & 0xF0


def channel_of(msg: Message) -> int:
    return msg[0] & 0x0F


def is_note_on(msg: Message) -> bool:
    """A note-on with velocity > 0 (velocity 0 is a note-off by the MIDI 1.0 running-status convention)."""
    return msg[0] & 0xF0 == NOTE_ON and msg[2] > 0


def is_note_off(msg: Message) -> bool:
    return msg[0] & 0xF0 == NOTE_OFF or (msg[0] & 0xF0 == NOTE_ON and msg[2] == 0)


def note_on(channel: int, pitch: int, velocity: int) -> Message:
    return (NOTE_ON | channel, pitch, velocity)


def note_off(channel: int, pitch: int) -> Message:
    return (NOTE_OFF | channel, pitch, 0)


def control_change(channel: int, controller: int, value: int) -> Message:
    return (CONTROL_CHANGE | channel, controller, value)
