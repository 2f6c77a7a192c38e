"""The band's harmony without a MIDI system: ``--chords``/``--chords-file``/``--harmony`` on the command line
(bad charts get one clear line and exit status 2), the :class:`Harmony` of a session (a chart looping from
bar 1, the tracked chord taking over from the next beat, what each part may play), and the engine masks that
read each event's beat (:class:`PartMasks` with ``classes_at``) with a real vocabulary."""

from __future__ import annotations

import numpy as np
import pytest

from musebot.cli import main
from musebot.realtime.chords import MAX_BARS, parse_chart
from musebot.realtime.constraints import PartMasks
from musebot.realtime.harmony_live import Harmony, read_chart
from musebot.realtime.modes.band import BandConfig
from musebot.tokenizers.vocab import STEPS_PER_BEAT, Vocabulary

NO_JACK = {"JACK_DEFAULT_SERVER": "musebot-no-such-server", "JACK_NO_START_SERVER": "1"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--chords", "Cm7 | F7 | Bbmaj7 | Ebmaj7 Xm7"], "'Xm7' (bar 4, chord 2)"),
        (["--chords", "Dm7 | G7 | C69 | Ctriangle"], "'Ctriangle' (bar 4, chord 1)"),
        (["--chords", ""], "the chart has no bars"),
        (["--chords", " | | "], "the chart has no bars"),
        (["--chords", "% | C"], "no previous bar to repeat"),
        (["--chords", "C | " * (MAX_BARS + 1)], f"at most {MAX_BARS}"),
        (["--chords-file", "/nonexistent.txt"], "no such chart file"),
        (["--chords", "C", "--chords-file", "x.txt"], "not both"),
        (["--harmony", "chart"], "--harmony chart needs a chart"),
    ],
)
def test_bad_charts_on_the_command_line_get_one_clear_line(args, message, capsys, monkeypatch):
    for key, value in NO_JACK.items():
        monkeypatch.setenv(key, value)
    assert main(["serve", "--mode", "looper", "--output", "fluidsynth", "--fluidsynth-driver", "file", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


def test_a_chart_file_of_a_thousand_bars_is_read_and_the_band_config_takes_it(tmp_path):
    path = tmp_path / "long.txt"
    path.write_text("# a long tune\n" + "\n".join("Dm7 G7 | Cmaj7 | Am7b5 | D7b9" for _ in range(250)))
    band = BandConfig.for_mode("accompany", chords_file=str(path))
    band.validate()
    chart = band.chart()
    assert chart.bar_count == 1000 and Harmony(chart).mode == "chart"
    assert read_chart() is None and Harmony().mode == "key" and not Harmony().active


def test_the_chart_loops_from_bar_one_and_each_part_gets_its_own_pitch_classes():
    harmony = Harmony(parse_chart("Dm7 | G7 | Cmaj7 | A7b9"))
    # Beat 17 is bar 1 again (second pass): Dm7.
    assert harmony.chord_at(17.0)[0].symbol == "Dm7" and harmony.chord_at(17.0)[1:] == (16.0, 20.0)
    assert harmony.next_change(17.0) == 20.0
    d_minor_7 = {2, 5, 9, 0}
    assert harmony.classes("bass", 16.0) == d_minor_7  # a change: chord tones only
    assert harmony.classes("bass", 18.0) == d_minor_7  # beat 3 of 4/4: strong
    assert harmony.classes("bass", 17.5) > d_minor_7  # between: passing notes of the chord scale
    assert harmony.classes("chords", 17.5) >= d_minor_7 | {4}  # + the 9th (E)
    assert 1 in harmony.classes("chords", 12.5)  # A7b9: its b9 (Bb) is a tension
    assert harmony.classes("drums", 16.0) is None
    assert harmony.bar_spans(30.0, 4.0)[0][2].symbol == "A7b9"  # a bar's spans, for the looper
    status = harmony.status(13.0)
    assert status["bar"] == 4 and status["chord"] == "A7b9" and status["bars"] == 4


def test_the_tracked_chord_takes_over_from_the_next_beat_and_the_plan_assumes_it_holds():
    harmony = Harmony(mode="follow")
    spb = 0.5  # 120 bpm, beat b at b * 0.5 s

    def time_at(beat: float) -> float:
        return beat * spb

    assert harmony.tick(0.0, time_at) is None and not harmony.active
    for pitch in (38, 53, 57, 60, 65):  # Dm7 with the root in the left hand, in beat 0
        harmony.hear(0.01, pitch, 80)
    assert harmony.tick(0.5, time_at) is None  # the beat is not over
    changed = harmony.tick(1.0, time_at)
    assert changed is not None and changed[0] == 1.0 and changed[1].symbol == "Dm7"
    assert harmony.active and harmony.chord_at(5.0)[0].symbol == "Dm7"  # assumed to hold
    assert harmony.chord_at(0.5)[0] is None  # before it was heard: the key
    for pitch in (38, 53, 57, 60, 65):
        harmony.hear(1.9 * spb, pitch, 0)
    for pitch in (43, 53, 59, 62, 65):  # G7 in beat 2
        harmony.hear(2.02 * spb, pitch, 80)
    assert harmony.tick(2.0, time_at) is None  # beat 1: Dm7 still sounding
    version = harmony.version
    assert harmony.tick(3.0, time_at)[1].symbol == "G7" and harmony.version > version
    assert harmony.chord_at(3.0)[0].symbol == "G7" and harmony.chord_at(2.5)[0].symbol == "Dm7"
    assert harmony.status(3.0)["tracked_chord"] == "G7"


def test_a_live_change_is_checked_before_anything_changes():
    harmony = Harmony(parse_chart("C | G"))
    with pytest.raises(ValueError, match="needs a chart"):
        harmony.set(mode="chart", clear_chart=True)
    assert harmony.chart is not None and harmony.mode == "chart"
    harmony.set(clear_chart=True)  # without a chart, chart mode falls back to the key
    assert harmony.mode == "key" and harmony.chart is None
    harmony.set(parse_chart("F7 | Bb7"))  # a new chart is played
    assert harmony.mode == "chart" and harmony.chord_at(4.0)[0].symbol == "Bb7"


def test_engine_masks_give_each_event_the_pitches_of_the_chord_at_its_own_onset():
    vocab = Vocabulary.for_version("v2")
    harmony = Harmony(parse_chart("C | F#"))
    bass = 1
    masks = PartMasks(vocab, {1: 0, 2: bass}, {bass: (28, 55)}, None,
                      classes_at=lambda channel, beat: harmony.classes("bass", beat))
    masks.origin_step = 2 * STEPS_PER_BEAT + 4  # the previous event: beat 2, a quarter in

    def pitches(time1: int, time2: int) -> set[int]:
        row = np.array(vocab.event_to_row(["note", time1, time2, 2, bass, 40, 80, 4]), np.int64)
        channel_pos = vocab.events["note"].index("channel") + 1
        ids = masks.allowed(channel_pos + 1, row)
        return {int(i) - vocab.parameter_offsets["pitch"] for i in ids}

    assert {p % 12 for p in pitches(0, 8)} == {0, 2, 4, 5, 7, 9, 11}  # beat 2.5 of C: passing notes
    assert {p % 12 for p in pitches(2, 0)} == {6, 10, 1}  # beat 4: the change to F#, chord tones only
    assert len({p % 12 for p in pitches(1, 0)}) == 7  # beat 3 (the fourth of the bar): weak, the scale
    assert {p % 12 for p in pitches(4, 0)} == {6, 10, 1}  # beat 6, the middle of the F# bar: strong
    assert {p % 12 for p in pitches(4, 8)} > {6, 10, 1}  # and between: the chord scale
    assert min(pitches(2, 0)) >= 28 and max(pitches(2, 0)) <= 55  # in the part's register
