"""The note ledger and panic: whatever was sounding, a panic leaves nothing sounding on any used channel."""

from __future__ import annotations

from musebot.realtime import midi
from musebot.realtime.io.ledger import NoteLedger
from musebot.realtime.io.outputs import MemoryOutput


def test_ledger_counts_note_ons_against_note_offs_per_channel():
    ledger = NoteLedger()
    for msg in [midi.note_on(0, 60, 100), midi.note_on(0, 60, 90), midi.note_on(3, 60, 80), (0x90, 64, 0)]:
        ledger.update(msg)
    # A re-struck pitch counts twice; velocity-0 note-on of a pitch not sounding changes nothing.
    assert ledger.sounding() == [(0, 60), (0, 60), (3, 60)]
    ledger.update(midi.note_off(0, 60))
    ledger.update((0x93, 60, 0))  # note-on velocity 0 is a note-off
    assert ledger.sounding() == [(0, 60)]
    assert ledger.channels == [0, 3]


def test_panic_sends_explicit_note_offs_then_sustain_off_all_notes_off_all_sound_off():
    out = MemoryOutput()
    out.send(midi.control_change(2, midi.CC_SUSTAIN, 127))
    out.send(midi.note_on(2, 48, 100))
    out.send(midi.note_on(0, 72, 100))
    out.sent.clear()
    out.panic()
    sent = out.messages()
    assert sent[:2] == [midi.note_off(0, 72), midi.note_off(2, 48)]
    assert sent[2:] == [
        midi.control_change(0, 64, 0), midi.control_change(0, 123, 0), midi.control_change(0, 120, 0),
        midi.control_change(2, 64, 0), midi.control_change(2, 123, 0), midi.control_change(2, 120, 0),
    ]
    assert out.ledger.sounding() == []


def test_panic_on_all_channels_reaches_the_sixteen():
    out = MemoryOutput()
    out.panic(all_channels=True)
    offs = [m for m in out.messages() if m[1] == midi.CC_ALL_NOTES_OFF]
    assert sorted(midi.channel_of(m) for m in offs) == list(range(16))


def test_close_panics_first_and_then_sends_nothing():
    out = MemoryOutput()
    out.send(midi.note_on(5, 60, 100))
    out.close()
    assert out.messages()[1] == midi.note_off(5, 60)
    count = len(out.sent)
    assert out.send(midi.note_on(5, 61, 100)) is False
    assert len(out.sent) == count


def test_a_backend_failure_is_counted_not_raised():
    class Broken(MemoryOutput):
        def _send(self, msg):
            raise OSError("port vanished")

    out = Broken()
    assert out.send(midi.note_on(0, 60, 100)) is False
    assert out.failures == 1
