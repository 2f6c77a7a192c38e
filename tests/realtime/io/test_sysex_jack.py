"""A sysex cut short (F0 with no F7) must not deafen musebot's inputs, over a real JACK server.

RtMidi's JACK input takes every event after such a message for the rest of the sysex and drops it, until one
ends in F7: without :class:`~musebot.realtime.io.inputs.SysexEnder`, the note-ons below never arrive.
"""

from __future__ import annotations

import time

import pytest

from musebot.realtime.clock import now
from musebot.realtime.io.inputs import ClockInput, RtMidiInput
from musebot.realtime.io.poller import NUDGE_AFTER_S
from musebot.realtime.timebase import ClockFollower, Timebase
from tests._jack import jack_server, requires_jackd, wait_for_port

pytestmark = [pytest.mark.jack, requires_jackd]

CUT_SHORT = [0xF0, 0x7D, 0x01]  # a non-commercial sysex whose end (F7) never comes


@pytest.fixture
def jack():
    with jack_server("-sysex") as server:
        yield server


def sender(port: str):
    import rtmidi

    out = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, name="tester-sysex")
    out.open_port(wait_for_port(out, port), "out")
    time.sleep(0.1)  # the connection is made
    return out


def drain(midi_input: RtMidiInput) -> list[list[int]]:
    got = []
    while not midi_input.queue.empty():
        got.append(midi_input.queue.get_nowait()[1])
    return got


def test_after_a_sysex_cut_short_the_note_input_hears_again_within_a_moment(jack):
    import rtmidi

    midi_input = RtMidiInput(rtmidi.API_UNIX_JACK, "musebot", None)
    out = sender("musebot:in")
    try:
        out.send_message([0x90, 60, 90])
        time.sleep(0.2)
        assert drain(midi_input) == [[0x90, 60, 90]]
        # The sysex cut short, then a note-on every 10 ms for half a second: RtMidi drops what comes before
        # the ender's F7 (about NUDGE_AFTER_S of it), then hears the rest.
        out.send_message(CUT_SHORT)
        pitches = list(range(30, 80))
        for pitch in pitches:
            out.send_message([0x90, pitch, 90])
            time.sleep(0.01)
        time.sleep(0.2)
        heard = [m[1] for m in drain(midi_input)]
        missing = [p for p in pitches if p not in heard]
        print(f"\nafter the sysex cut short: {len(heard)} of {len(pitches)} note-ons heard; missing {missing}")
        assert heard == sorted(heard) and heard[-20:] == pitches[-20:]  # in order, and hearing again
        assert len(heard) >= len(pitches) - 20  # deaf for well under 200 ms (10 lost: 100 ms)
        # A note played after a moment's quiet is heard at once, and the ender's own F7s never reach the queue.
        out.send_message(CUT_SHORT)
        time.sleep(3 * NUDGE_AFTER_S)
        out.send_message([0x90, 61, 90])
        time.sleep(0.2)
        assert drain(midi_input) == [[0x90, 61, 90]]
        time.sleep(0.3)
        assert drain(midi_input) == [] and midi_input.overflows == 0
        # Each ender's F7 that ended a stuck sysex is counted: two here, unless JACK lost one of the sysexes on
        # the way (a client frozen past its cycle by the machine, tests/_stalls.py, misses that cycle's MIDI).
        assert 1 <= midi_input.sysex_cuts <= 2
    finally:
        out.close_port()
        del out
        midi_input.close()


def test_after_a_sysex_cut_short_the_clock_input_counts_ticks_again(jack):
    import rtmidi

    follower = ClockFollower(Timebase(120.0))
    clock = ClockInput(rtmidi.API_UNIX_JACK, follower)
    out = sender("musebot-clock:in")
    try:
        out.send_message([0xFA])
        out.send_message(CUT_SHORT)
        time.sleep(3 * NUDGE_AFTER_S)
        start = now()
        for _ in range(48):  # two beats at 120 bpm
            out.send_message([0xF8])
            time.sleep(0.5 / 24)
        time.sleep(0.2)
        print(f"\n{follower.counts['ticks']} of 48 ticks counted in {now() - start:.2f} s")
        assert follower.counts["ticks"] == 48
    finally:
        out.close_port()
        del out
        clock.close()
