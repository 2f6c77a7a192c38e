"""``musebot bench-accompany`` end to end, short: its own JACK server, a musician process changing key, the
reference model exported to ONNX; the figures it prints are there and add up. (The five-minute run with the
shipped model is the benchmark itself; its figures are not asserted here, a test is no timing gauge.)"""

from __future__ import annotations

import json

import pytest

from musebot.bench.accompany import KEYS, key_follow, musician_plan
from musebot.cli import main
from tests._jack import requires_jackd
from tests._realtime_fixtures import exported_reference_model


@requires_jackd
@pytest.mark.jack
def test_bench_accompany_reports_timing_drops_and_key_following(reference_dir, tmp_path, capsys):
    model = exported_reference_model(reference_dir)
    out = tmp_path / "figures.json"
    # 0.2 minutes at 160 bpm: 32 beats, two key changes every two bars.
    assert main(["bench-accompany", "--model", str(model), "--minutes", "0.2", "--bpm", "160",
                 "--key-bars", "2", "--json", str(out)]) == 0
    figures = json.loads(out.read_text())
    assert json.loads(capsys.readouterr().out) == figures
    timing = figures["timing"]
    assert figures["musician_notes"] == 64
    assert figures["machine"]["cpus"] >= 1 and isinstance(figures["machine"]["scheduler_realtime_priority"], bool)
    assert timing["part_notes"] == sum(figures["parts"].values()) >= 8
    assert 0.0 <= timing["share_within_2ms"] <= 1.0
    assert timing["late_over_2ms"] == round((1 - timing["share_within_2ms"]) * timing["part_notes"])
    assert timing["dropped_by_scheduler"] == 0  # nothing was ever 100 ms late
    assert figures["key_follow"]["changes"] >= 2
    assert figures["keys_played"][:2] == ["C major", "F# major"]
    assert figures["planning"]["events"] > 0 and figures["planning"]["guess_misses"] > 0


def test_the_benchmark_musician_plays_eighths_in_each_key_it_announces():
    plan = musician_plan(minutes=0.5, bpm=120, key_bars=2)
    assert len(plan) == 120 and plan[1][0] - plan[0][0] == 0.5
    for beat, pitch, tonic in plan:
        assert tonic == KEYS[int(beat // 8) % len(KEYS)]
        assert (pitch - tonic) % 12 in (0, 2, 4, 5, 7, 9, 11)


def test_key_follow_counts_the_beats_from_the_first_note_outside_the_old_key_to_the_last_stray():
    # C major, then F# major whose first note (B) is in C major too: the change is heard at the A# (beat 4.5).
    plan = [(0.0, 60, 0), (0.5, 62, 0), (4.0, 71, 6), (4.5, 70, 6), (5.0, 66, 6)]
    parts = [(1.0, 1, 60), (4.25, 1, 60), (5.25, 2, 67), (5.5, 1, 66), (5.75, 9, 38)]
    report = key_follow(plan, parts, [(5.0, 6)])
    # C (60) at 4.25 and G (67) at 5.25 are outside F# major; the drum note does not count.
    assert report["beats_to_follow"] == [0.75] and report["within_1_beat"] == 1
    assert report["from_first_new_key_note"]["beats"] == [1.25]
    assert report["tracker_beats_median"] == 0.5 and report["tracker_missed"] == 0
