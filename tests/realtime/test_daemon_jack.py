"""musebot serve over a real JACK server: a musician plays into ``musebot:in`` and hears ``musebot-out:out``.

The server is ``jackd -d dummy`` started by the fixture; the musician is a separate JACK client. Answers
here come from the echo answerer (plays the call back) so the plumbing is tested on its own; model
answers are tested in test_realtime_worker.py.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time

import pytest

from musebot.realtime.config import ServeConfig
from musebot.realtime.daemon import Daemon, ServeOptions
from musebot.realtime.io.poller import MidiPoller
from tests._jack import Musician, hanging_notes, jack_server, note_ons, requires_jackd

pytestmark = [pytest.mark.jack, requires_jackd]

PHRASE = [(60, 0.08), (64, 0.08), (67, 0.08), (72, 0.12)]
SILENCE_S = 0.2


@pytest.fixture(scope="module")
def jack():
    with jack_server("-rt") as server:
        yield server


def wait_for_log(caplog, text: str, timeout: float = 10.0) -> None:
    """Wait until ``text`` is in the captured log (the daemon's threads write it), at most ``timeout`` s.

    The health check looks every 0.5 s, but reopening a port makes a new JACK client, which took over 3 s
    once with two busy processes on two cores (a 20x loop run); what is checked is that it comes back."""
    deadline = time.monotonic() + timeout
    while text not in caplog.text and time.monotonic() < deadline:
        time.sleep(0.02)


def make_daemon(**options) -> Daemon:
    config = ServeConfig(bpm=120, silence_ms=SILENCE_S * 1000, seed=1)
    return Daemon(config, ServeOptions(answer="echo", **options)).start()


@pytest.fixture
def daemon(jack):
    d = make_daemon()
    yield d
    d.close()


@pytest.fixture
def musician(daemon):
    m = Musician()
    time.sleep(0.05)
    yield m
    m.close()


def test_a_phrase_is_answered_on_musebot_out_when_the_silence_ends(daemon, musician):
    release = musician.play(PHRASE)
    heard = musician.wait_for(lambda h: len(note_ons(h)) >= len(PHRASE) and not hanging_notes(h))
    ons = note_ons(heard)
    assert [m[1] for _, m in ons] == [p for p, _ in PHRASE]  # the echo answer: the call played back
    first = ons[0][0]
    # Due at release + silence; measured precisely by `musebot bench-realtime`, here only sanity-bounded.
    assert release + SILENCE_S - 0.005 <= first <= release + SILENCE_S + 0.25
    assert hanging_notes(heard) == set()
    assert daemon.session.counts["answers"] == 1


def test_the_musician_playing_again_stops_the_answer_and_releases_its_notes(daemon, musician):
    long_phrase = [(60 + i, 0.1) for i in range(8)]
    musician.play(long_phrase)
    musician.wait_for(lambda h: len(note_ons(h)) >= 2)  # the answer is under way
    musician.send(0x90, 50, 100)  # barge-in
    barge = time.perf_counter()
    time.sleep(0.4)
    heard = musician.snapshot()
    assert len(note_ons(heard)) < len(long_phrase)
    assert not [t for t, _ in note_ons(heard) if t > barge + 0.01]  # nothing new after the barge-in
    assert hanging_notes(heard) == set()
    assert daemon.session.counts["barge_ins"] == 1
    musician.send(0x80, 50, 0)


def test_a_sustain_pedal_holds_the_phrase_open(daemon, musician):
    musician.send(0xB0, 64, 127)
    release = musician.play([(62, 0.05)])
    time.sleep(SILENCE_S + 0.15)
    assert note_ons(musician.snapshot()) == []  # pedal down: no answer yet
    pedal_up = musician.send(0xB0, 64, 0)
    heard = musician.wait_for(lambda h: len(note_ons(h)) >= 1)
    assert note_ons(heard)[0][0] >= pedal_up + SILENCE_S - 0.005 > release


def test_bad_input_floods_sysex_clock_malformed_and_stray_note_offs_do_not_break_it(daemon, musician):
    for _ in range(3000):  # a flood of controller data (JACK itself may drop part of it)
        musician.send(0xB0, 1, 64)
    received = -1
    while daemon.session.counts["received"] != received:  # until the listener has drained the flood
        received = daemon.session.counts["received"]
        time.sleep(0.1)
    odd = [(0xF0, 0x7E, 0x7F, 0x06, 0x01, 0xF7), (0xF8,), (0xFA,), (0xFE,), (0xFC,),  # sysex, clock...
           (0x80, 61, 0), (0x95, 61, 0),  # note-offs of notes never played
           (0x90, 61)]  # a truncated note-on
    for msg in odd:
        musician.send(*msg)
        time.sleep(0.01)
    time.sleep(0.2)
    before = len(musician.snapshot())
    musician.play(PHRASE)
    heard = musician.wait_for(lambda h: len(note_ons(h[before:])) >= len(PHRASE) and not hanging_notes(h))
    assert [m[1] for _, m in note_ons(heard[before:])] == [p for p, _ in PHRASE]
    assert hanging_notes(heard) == set()
    assert daemon.session.tracker.orphan_note_offs >= 2
    assert daemon.session.counts["received"] >= 100  # the flood reached the listener (JACK drops the excess)


def test_fluidsynth_output_renders_a_non_silent_answer(jack):
    d = make_daemon(outputs=["virtual", "fluidsynth"], fluidsynth_driver="file",
                    fluidsynth_file=os.devnull)
    try:
        synth = d.outputs[1]
        m = Musician()
        try:
            m.play(PHRASE)
            m.wait_for(lambda h: len(note_ons(h)) >= 1)
            assert synth.ledger.sounding()  # an answer note is on in the synth now
            audio = synth.render(0.2)
            assert abs(audio).max() > 500
        finally:
            m.close()
    finally:
        d.close()


def test_a_named_input_that_vanishes_is_reconnected_when_it_returns(jack, caplog):
    keyboard = Musician(play_to=None, listen_to=None)
    keyboard.virtual_keyboard()
    time.sleep(0.1)
    d = make_daemon(input="tester-kbd:out")
    keyboard.listen("musebot-out:out")
    try:
        # DEBUG: why the input is not back yet, if it is not (once, with two loops side by side, not in 10 s).
        with caplog.at_level(logging.DEBUG, logger="musebot.realtime.daemon"):
            keyboard.unplug()
            wait_for_log(caplog, "vanished")
            assert "input port 'tester-kbd:out' vanished" in caplog.text
            keyboard.virtual_keyboard()
            wait_for_log(caplog, "is back")
            assert "input port 'tester-kbd:out' is back" in caplog.text
        time.sleep(0.05)
        keyboard.play(PHRASE)
        heard = keyboard.wait_for(lambda h: len(note_ons(h)) >= len(PHRASE) and not hanging_notes(h))
        assert len(note_ons(heard)) == len(PHRASE)
    finally:
        keyboard.close()
        d.close()


def test_the_jack_server_dying_is_reported_and_the_daemon_comes_back_with_it(caplog):
    with jack_server("-die") as server:
        d = make_daemon()
        try:
            with caplog.at_level(logging.WARNING, logger="musebot.realtime.daemon"):
                server.kill()
                wait_for_log(caplog, "JACK server stopped")
                assert "JACK server stopped" in caplog.text
                server.start()
                wait_for_log(caplog, "ports reopened")
                assert "JACK server is back: ports reopened" in caplog.text
            m = Musician()
            try:
                m.play(PHRASE)
                heard = m.wait_for(lambda h: len(note_ons(h)) >= len(PHRASE) and not hanging_notes(h))
                assert len(note_ons(heard)) == len(PHRASE)
            finally:
                m.close()
        finally:
            d.close()


def test_a_daemon_whose_jack_server_died_shuts_down_without_closing_the_dead_clients(caplog):
    # Unregistering a port of a dead server's client can crash the process (SIGSEGV in jack_port_unregister,
    # seen in a loop run): such clients are let go of, kept alive and never closed.
    with jack_server("-gone") as server:
        d = make_daemon()
        output = d.outputs[0]
        client = output._port
        refs = sys.getrefcount(client)
        with caplog.at_level(logging.WARNING, logger="musebot.realtime.daemon"):
            server.kill()
            wait_for_log(caplog, "JACK server stopped")
        d.close()
        assert output.closed and d.input._midi_in is None
        assert sys.getrefcount(client) == refs + 1  # abandoned: one reference that is never given back


def test_sigterm_during_an_answer_leaves_no_note_sounding(jack, tmp_path):
    record = tmp_path / "session.mid"
    command = [sys.executable, "-m", "musebot", "serve", "--answer", "echo", "--silence-ms", "150",
               "--record", str(record)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        m = Musician.__new__(Musician)
        deadline = time.monotonic() + 20
        while True:  # the subprocess needs a moment to make its ports
            try:
                Musician.__init__(m)
                break
            except AssertionError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
        try:
            m.play([(60 + i, 0.08) for i in range(8)])
            m.wait_for(lambda h: len(note_ons(h)) >= 2)
            process.send_signal(signal.SIGTERM)
            output, _ = process.communicate(timeout=10)
            time.sleep(0.1)
            heard = m.snapshot()
        finally:
            m.close()
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, output
    assert 2 <= len(note_ons(heard)) < 8
    assert hanging_notes(heard) == set()
    assert "signal SIGTERM" in output
    assert record.exists(), output


def test_a_named_output_that_vanishes_is_released_and_reconnected_when_it_returns(jack, caplog):
    import rtmidi

    def synth_port():
        port = rtmidi.MidiIn(rtmidi.API_UNIX_JACK, name="tester-synth")
        port.open_virtual_port("in")
        return port

    synth = synth_port()
    d = make_daemon(outputs=["tester-synth:in"])
    keyboard = Musician(listen_to=None)
    try:
        output = d.outputs[0]
        with caplog.at_level(logging.WARNING, logger="musebot.realtime.daemon"):
            output.send((0x90, 70, 100))  # a note sounding on the synth when it goes away
            synth.close_port()
            synth.delete()
            wait_for_log(caplog, "vanished")
            assert "output port 'tester-synth:in' vanished" in caplog.text
            assert output.ledger.sounding() == []  # released (panic) rather than left for later
            synth = synth_port()
            wait_for_log(caplog, "is back")
            assert "output port 'tester-synth:in' is back: reconnected" in caplog.text
        heard = []
        poller = MidiPoller(synth, lambda _t, message: heard.append(tuple(message)), "tester-synth")
        try:
            keyboard.play(PHRASE)
            end = time.monotonic() + 3
            while (sum(1 for m in heard if m[0] & 0xF0 == 0x90 and m[2]) < len(PHRASE)
                   and time.monotonic() < end):
                time.sleep(0.02)
        finally:
            poller.stop()
        assert [m[1] for m in heard if m[0] & 0xF0 == 0x90 and m[2]] == [p for p, _ in PHRASE]
    finally:
        keyboard.close()
        d.close()
        synth.delete()


def test_the_health_check_lists_ports_on_one_client_kept_open(jack, monkeypatch):
    # Opening a JACK client takes tens of milliseconds with the interpreter lock held (python-rtmidi): a
    # check twice a second that opened a client each time stalled every thread, the scheduler's too.
    import rtmidi

    synth = rtmidi.MidiIn(rtmidi.API_UNIX_JACK, name="tester-synth")
    synth.open_virtual_port("in")
    d = make_daemon(outputs=["tester-synth:in"])
    opened, listed = [], []
    real_midi_out, real_ports = rtmidi.MidiOut, d._probe.ports
    monkeypatch.setattr(rtmidi, "MidiOut", lambda *a, **k: opened.append(a) or real_midi_out(*a, **k))
    monkeypatch.setattr(d._probe, "ports", lambda direction: listed.append(direction) or real_ports(direction))
    try:
        for _ in range(20):
            d.check_health()
        assert len(listed) == 20  # the outputs' ports were listed at every check
        assert len(opened) <= 1, opened  # on the probe's own client, opened once (if not before) and kept
        assert "tester-synth:in" in real_ports("out")
    finally:
        d.close()
        synth.delete()


def test_an_error_in_the_listener_panics_and_the_daemon_keeps_serving(daemon, musician, caplog):
    answerer = daemon.session.answerer
    original = answerer.start_answer

    def broken(*args):  # a bug in an answerer, injected
        raise RuntimeError("injected fault")

    answerer.start_answer = broken
    with caplog.at_level(logging.ERROR, logger="musebot.realtime.daemon"):
        musician.play(PHRASE[:1])
        # The phrase ends after the silence, later on a loaded machine.
        wait_for_log(caplog, "listener: error while handling")
    assert "listener: error while handling" in caplog.text
    assert daemon.session.counts["panics"] >= 1
    answerer.start_answer = original
    musician.play(PHRASE)
    heard = musician.wait_for(lambda h: len(note_ons(h)) >= len(PHRASE) and not hanging_notes(h))
    assert [m[1] for _, m in note_ons(heard)] == [p for p, _ in PHRASE]
