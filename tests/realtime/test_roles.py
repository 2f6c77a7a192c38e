"""The looper's bar-role classifier: what a bass line, comping chords and a melody look like to it, its
accuracy on chorales it never saw, and a musician playing two roles at once."""

from __future__ import annotations

import json

import pytest

from musebot.realtime.roles import MODEL_FILE, BarNote, RoleClassifier, bar_features, split_roles
from musebot.tools.roles_fit import fit_roles, held_out_accuracy

BASS = [BarNote(b, 0.9, p) for b, p in enumerate((36, 43, 40, 43))]  # root-fifth walking quarters
CHORDS = [BarNote(b, 1.8, p) for b in (0, 2) for p in (60, 64, 67)]  # two struck triads
MELODY = [BarNote(b * 0.5, 0.45, p) for b, p in enumerate((72, 74, 76, 77, 79, 77, 76, 74))]


@pytest.fixture(scope="module")
def classifier() -> RoleClassifier:
    return RoleClassifier.load()


def test_a_bass_line_chords_and_a_melody_are_told_apart(classifier):
    assert classifier.classify(BASS) == "bass"
    assert classifier.classify(CHORDS) == "chords"
    assert classifier.classify(MELODY) == "melody"
    # The same shapes an octave away from where the chorales sit keep their roles.
    assert classifier.classify([n._replace(pitch=n.pitch - 5) for n in BASS]) == "bass"
    assert classifier.classify([n._replace(pitch=n.pitch + 7) for n in MELODY]) == "melody"


def test_a_left_hand_bass_under_right_hand_chords_is_two_roles_at_once(classifier):
    roles = split_roles(classifier, BASS + CHORDS)
    assert set(roles) == {"bass", "chords"}
    assert {n.pitch for n in roles["bass"]} == {36, 40, 43}
    assert split_roles(classifier, MELODY) == {"melody": MELODY}
    assert split_roles(classifier, []) == {}


def test_an_empty_bar_has_no_role():
    with pytest.raises(ValueError, match="no role"):
        bar_features([])


def test_the_shipped_weights_report_their_held_out_accuracy_and_keep_it_on_unseen_chorales(classifier):
    stored = json.loads(MODEL_FILE.read_text())
    assert stored["evaluated"]["held_out_accuracy"] >= 0.9  # spec §6: >= 90 % per bar on a held-out set
    # Re-measured here on the held-out chorales among the first 30 (never in the fit's training set).
    report = held_out_accuracy(classifier, pieces=30)
    assert report["test_bars"] >= 200
    assert report["held_out_accuracy"] >= 0.95
    assert min(report["per_role"].values()) >= 0.9


def test_fitting_on_a_few_chorales_learns_the_roles(tmp_path):
    fitted, report = fit_roles(pieces=15)
    assert report["held_out_accuracy"] >= 0.9
    assert sum(map(sum, report["confusion"])) == report["test_bars"]
    path = tmp_path / "roles.json"
    fitted.save(path, evaluated=report)
    again = RoleClassifier.load(path)
    assert again.classify(BASS) == "bass" and again.accuracy == pytest.approx(fitted.accuracy)


def test_a_weights_file_for_other_features_is_refused(tmp_path):
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"features": ["pitch"], "roles": ["bass"], "weights": [[1.0]]}))
    with pytest.raises(ValueError, match="refit"):
        RoleClassifier.load(path)
    with pytest.raises(FileNotFoundError, match="fit-roles"):
        RoleClassifier.load(tmp_path / "missing.json")
