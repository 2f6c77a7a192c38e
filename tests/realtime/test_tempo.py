"""The tempo and beat tracker hears the musician's tempo and beat from what they play (issue 13)."""

from __future__ import annotations

import math
import random

import pytest

from musebot.bench import tempo as bench
from musebot.realtime.tempo import BeatTracker, TempoEstimate
from musebot.realtime.tempo_baselines import FixedTempo, IOIClustering

# A two-bar call of eighths and quarters (durations in beats), and a longer tune made of it.
CALL = (1, 0.5, 0.5, 1, 1, 0.5, 0.5, 0.5, 0.5, 1, 2)
TUNE = CALL * 3


def play(rhythm, bpm: float, start: float = 10.0, jitter_s: float = 0.015, seed: int = 0,
         swing: bool = False) -> list[float]:
    """Onset times of ``rhythm`` (beats) at ``bpm`` from ``start``, humanised by uniform +-``jitter_s``."""
    rng = random.Random(seed)
    period, pos, times = 60.0 / bpm, 0.0, []
    for length in rhythm:
        shifted = pos + 1 / 6 if swing and abs(pos % 1 - 0.5) < 1e-9 else pos
        times.append(start + shifted * period + rng.uniform(-jitter_s, jitter_s))
        pos += length
    return times


def feed(tracker: BeatTracker, times, pitch: int = 67, velocity: int = 80) -> TempoEstimate:
    est = tracker.estimate()
    for t in times:
        est = tracker.add_onset(t, pitch, velocity)
    return est


def phase_error(est: TempoEstimate, start: float, bpm: float, at: float) -> float:
    """Distance in true beats from the estimate's beat nearest ``at`` to the true grid (beats at ``start``)."""
    beat = est.time_at(round(est.beat_at(at)))
    pos = (beat - start) / (60.0 / bpm)
    return abs(pos - round(pos))


def assert_follows(est: TempoEstimate, bpm: float, start: float, at: float) -> None:
    assert est.bpm == pytest.approx(bpm, rel=0.04), f"heard {est.bpm:.1f} bpm, played {bpm}"
    assert phase_error(est, start, bpm, at) <= 1 / 16


@pytest.mark.parametrize("bpm", [72, 84, 100, 120, 142])
def test_eighths_and_quarters_are_heard_at_the_played_tempo_and_beat(bpm):
    """A musician plays eighths and quarters at a tempo musebot was not told (its guess is 120)."""
    times = play(TUNE, bpm, seed=bpm)
    tracker = BeatTracker(initial_bpm=120)
    est = feed(tracker, times)
    assert_follows(est, bpm, 10.0, times[-1])
    assert est.confidence > 0.3
    assert est.n_onsets == len(times)


def test_a_one_bar_call_is_enough():
    """Four beats of playing (quarter, two eighths, two quarters) at 100 bpm: already on the beat."""
    times = play((1, 0.5, 0.5, 1, 1), 100, seed=1)
    est = feed(BeatTracker(initial_bpm=120), times)
    assert_follows(est, 100, 10.0, times[-1])


def test_the_estimate_improves_as_the_musician_plays():
    times = play(TUNE, 96, seed=2)
    tracker = BeatTracker(initial_bpm=120)
    errors = []
    for i, t in enumerate(times):
        est = tracker.add_onset(t, 65, 80)
        if i + 1 in (4, 16, len(times)):
            errors.append(abs(est.bpm / 96 - 1))
    assert errors[-1] <= errors[0] + 1e-9
    assert errors[-1] < 0.01


def test_swung_eighths_keep_the_beat():
    """Off-beat eighths played late (2:1 swing) are heard as swing, not as another tempo or phase."""
    times = play(TUNE, 110, seed=3, swing=True)
    est = feed(BeatTracker(initial_bpm=120), times)
    assert_follows(est, 110, 10.0, times[-1])


def test_chords_count_once_and_mark_the_beat():
    """Block chords on the beats under a melody of eighths: one event per chord, on the beat."""
    rng = random.Random(4)
    tracker = BeatTracker(initial_bpm=120)
    period, start = 60.0 / 90, 5.0
    for beat in range(16):
        t = start + beat * period
        for pitch in (48, 52, 55, 60):  # a strummed chord: 4 notes within 30 ms
            tracker.add_onset(t + rng.uniform(0, 0.03), pitch, 90)
        tracker.add_onset(t + period / 2 + rng.uniform(-0.015, 0.015), 72, 60)
    est = tracker.estimate()
    assert est.n_onsets == 32
    assert_follows(est, 90, start, start + 15.5 * period)


def test_a_held_note_does_not_move_the_tempo():
    """A phrase, a four-beat held note (released), then the phrase again: the same tempo and grid."""
    tracker = BeatTracker(initial_bpm=120)
    times = play(CALL + (4,) + CALL, 100, seed=5)
    for t in times:
        tracker.add_onset(t, 64, 80)
        tracker.add_note_off(t + 0.2, 64)
    assert_follows(tracker.estimate(), 100, 10.0, times[-1])


def test_one_odd_note_does_not_move_the_beat():
    """Sixteen steady notes, then one note far off the grid: tempo and phase stay (hysteresis)."""
    times = play((0.5, 0.5, 1) * 6, 100, seed=6)
    tracker = BeatTracker(initial_bpm=120)
    before = feed(tracker, times)
    odd = times[-1] + 0.37 * 0.6  # 0.37 of a beat after the last note: on no grid line
    after = tracker.add_onset(odd, 64, 80)
    assert after.bpm == pytest.approx(before.bpm, rel=0.01)
    assert phase_error(after, 10.0, 100, odd) <= 1 / 16


def test_rubato_is_followed_without_jumping():
    """The musician slows from 110 to 90 bpm over 32 beats: the tracker follows, never jumping by 8 %."""
    tracker = BeatTracker(initial_bpm=120)
    t, beat, previous = 10.0, 0.0, None
    rng = random.Random(7)
    for i in range(48):
        bpm = 110 - 20 * min(1.0, beat / 32)
        est = tracker.add_onset(t + rng.uniform(-0.01, 0.01), 60, 80)
        if i >= 8 and previous is not None:
            assert abs(est.bpm / previous - 1) < 0.08
        previous = est.bpm
        step = (1.0, 0.5, 0.5)[i % 3]
        t += step * 60.0 / bpm
        beat += step
    assert est.bpm == pytest.approx(90, rel=0.06)


def test_a_tempo_change_mid_call_is_followed_after_a_few_notes():
    times = play(CALL, 80, seed=8)
    later = play(CALL * 2, 130, start=times[-1] + 2 * 60 / 80, seed=9)
    tracker = BeatTracker(initial_bpm=120)
    feed(tracker, times)
    est = feed(tracker, later)
    assert_follows(est, 130, later[0], later[-1])


def test_the_next_call_starts_from_the_last_tempo():
    """After a call at 75 bpm, a next call of even quarter notes (ambiguous: 75 or 150) is heard at 75."""
    tracker = BeatTracker(initial_bpm=120)
    feed(tracker, play(TUNE, 75, seed=10))
    tracker.reset_call()
    assert tracker.estimate().bpm == pytest.approx(75, rel=0.04)
    assert tracker.estimate().n_onsets == 0
    est = feed(tracker, play((1, 1, 1, 1, 1), 75, start=40.0, seed=11))
    assert_follows(est, 75, 40.0, 40.0 + 4 * 0.8)


def test_next_beat_and_next_downbeat():
    """The answer may start on the musician's next beat, or the next bar of four from their first note."""
    times = play(TUNE[:9], 100, seed=12)  # two bars and a beat, the call starting on a downbeat
    tracker = BeatTracker(initial_bpm=120)
    feed(tracker, times)
    end = times[-1] + 0.1
    beat = tracker.next_beat_time(end)
    assert beat >= end
    assert phase_error(tracker.estimate(), 10.0, 100, beat) <= 1 / 16
    assert beat - end < 0.6 + 1e-6
    bar = tracker.next_beat_time(end, on="bar", beats_per_bar=4)
    assert bar >= end
    beats_from_first = (bar - 10.0) / 0.6
    assert round(beats_from_first) % 4 == 0 and abs(beats_from_first - round(beats_from_first)) < 1 / 16
    est = tracker.estimate()
    assert est.beat_at(est.time_at(2.5)) == pytest.approx(2.5)
    assert tracker.time_at(tracker.beat_at(12.3)) == pytest.approx(12.3)


@pytest.mark.parametrize("case", ["nothing", "one note", "only chords", "two-minute hold", "random timing",
                                  "same instant", "nan and inf", "backwards", "very slow", "very fast"])
def test_bad_input_gives_a_sensible_tempo_never_an_error(case):
    """Whatever is played, the estimate is a tempo in 30..300 bpm and a finite beat time."""
    rng = random.Random(13)
    tracker = BeatTracker(initial_bpm=110)
    if case == "one note":
        est = tracker.add_onset(5.0, 60, 100)
        assert est.bpm == pytest.approx(110) and est.beat_time == 5.0 and est.confidence == 0.0
    elif case == "only chords":  # chords every 0.75 s (80 bpm), four notes each
        for k in range(12):
            for pitch in (48, 55, 64, 67):
                tracker.add_onset(1.0 + 0.75 * k + rng.uniform(0, 0.02), pitch, 90)
        assert tracker.estimate().n_onsets == 12
        assert tracker.estimate().bpm == pytest.approx(80, rel=0.04)
    elif case == "two-minute hold":
        tracker.add_onset(1.0, 60, 90)
        tracker.add_note_off(121.0, 60)
        feed(tracker, play((1, 1, 0.5, 0.5, 1), 100, start=125.0, seed=14))
        assert tracker.estimate().bpm == pytest.approx(100, rel=0.04)
    elif case == "random timing":
        feed(tracker, sorted(rng.uniform(0, 20) for _ in range(80)))
    elif case == "same instant":
        feed(tracker, [3.0] * 50)
        assert tracker.estimate().n_onsets == 1
    elif case == "nan and inf":
        feed(tracker, [math.nan, math.inf, 1.0, -math.inf, 1.5, math.nan])
        tracker.add_note_off(math.nan, 60)
        assert tracker.estimate().n_onsets == 2
    elif case == "backwards":
        feed(tracker, [10.0 - 0.5 * k for k in range(12)])
        assert tracker.estimate().bpm == pytest.approx(120, rel=0.04)
    elif case == "very slow":
        feed(tracker, [4.0 * k for k in range(8)])  # 15 bpm as quarters: heard at a multiple
    elif case == "very fast":
        feed(tracker, [0.05 * k for k in range(64)])  # 1200 notes a minute
    est = tracker.estimate()
    assert 30.0 <= est.bpm <= 300.0
    assert math.isfinite(est.beat_time) and 0.0 <= est.confidence <= 1.0
    assert math.isfinite(tracker.next_beat_time(50.0, on="bar"))


def test_baselines_fixed_tempo_and_ioi_clustering():
    times = play(TUNE, 96, seed=15)
    fixed = FixedTempo(initial_bpm=120)
    ioi = IOIClustering(initial_bpm=120)
    for t in times:
        fixed.add_onset(t)
        ioi.add_onset(t)
    assert fixed.estimate().bpm == 120 and fixed.estimate().beat_time == times[0]
    assert ioi.estimate().bpm == pytest.approx(96, rel=0.04)


def test_the_benchmark_runs_on_two_pieces_and_prints_its_table(capsys):
    assert bench.main(["--pieces", "2", "--no-swing", "--no-cost"]) == 0
    out = capsys.readouterr().out
    assert "| tracker | 4 |" in out and "| ioi-cluster | 16 |" in out and "| fixed | 8 |" in out
    pieces = bench.load_pieces(2)
    report = bench.run(pieces, seed=1, swing=False)
    assert report["trials"] == 2 * 6
    for method in ("tracker", "ioi-cluster", "fixed"):
        for n in (4, 8, 16):
            row = report["results"][method][n]
            assert row["trials"] == report["trials"] and 0 <= row["phase_pct"] <= row["tempo_pct"] <= 100
