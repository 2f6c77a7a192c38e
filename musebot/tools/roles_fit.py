"""Fit and measure the bar-role classifier of :mod:`musebot.realtime.roles` on Bach chorales (music21 corpus).

Each four-voice chorale gives, per bar, three labelled examples whose roles are known: the bass voice alone
(bass), the soprano alone (melody) and alto plus tenor together (chords, the inner voices that comp). The
chorales are split by piece: every ``test_every``-th one is held out and never seen by the fit, and the
accuracy is measured on its bars. Training bars are also transposed by a few semitones (the musician plays
in any key and octave; the chorales sit in a narrow band of keys).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from musebot.realtime.roles import ROLES, BarNote, RoleClassifier, bar_features, fit_logistic

log = logging.getLogger(__name__)

TRANSPOSITIONS = (-7, -4, -2, 0, 2, 5, 7)


@dataclass
class LabelledBar:
    piece: int
    role: str
    notes: list[BarNote]
    beats: float


def _measure_notes(measure) -> list[BarNote]:  # a music21 Measure (no stubs)
    notes = []
    for element in measure.flatten().notes:
        for pitch in element.pitches:
            notes.append(BarNote(float(element.offset), float(element.quarterLength), int(pitch.midi), 80))
    return notes


def chorale_bars(limit: int | None = None) -> Iterator[LabelledBar]:
    """Labelled bars of the four-part Bach chorales in music21's corpus (in corpus order)."""
    from music21 import corpus

    piece = 0
    for path in corpus.getComposer("bach"):
        if limit is not None and piece >= limit:
            return
        try:
            score = corpus.parse(path)
        except Exception as exc:  # noqa: BLE001 - a corpus file music21 cannot read is skipped
            log.debug("skipping %s: %s", path, exc)
            continue
        if len(score.parts) != 4:
            continue
        measures = [list(part.getElementsByClass("Measure")) for part in score.parts]
        if len({len(m) for m in measures}) != 1:
            continue
        for soprano, alto, tenor, bass in zip(*measures):
            beats = float(soprano.barDuration.quarterLength) or 4.0
            for role, notes in (("melody", _measure_notes(soprano)), ("bass", _measure_notes(bass)),
                                ("chords", _measure_notes(alto) + _measure_notes(tenor))):
                if notes:
                    yield LabelledBar(piece, role, notes, beats)
        piece += 1


def _transposed(notes: list[BarNote], shift: int) -> list[BarNote]:
    return [n._replace(pitch=n.pitch + shift) for n in notes]


def fit_roles(pieces: int | None = None, test_every: int = 5) -> tuple[RoleClassifier, dict]:
    """Fit on the training chorales; returns the classifier and a report (held-out accuracy, counts,
    confusion matrix with rows = true role, columns = predicted, in :data:`ROLES` order)."""
    train_x, train_y, test_x, test_y = [], [], [], []
    for bar in chorale_bars(pieces):
        label = ROLES.index(bar.role)
        if bar.piece % test_every == 0:
            test_x.append(bar_features(bar.notes, bar.beats))
            test_y.append(label)
            continue
        for shift in TRANSPOSITIONS:
            train_x.append(bar_features(_transposed(bar.notes, shift), bar.beats))
            train_y.append(label)
    if not train_x or not test_x:
        raise ValueError("too few chorales to fit and test on; use more pieces")
    x, y = np.array(train_x), np.array(train_y)
    classifier = RoleClassifier(fit_logistic(x, y))
    predicted = np.argmax(classifier.probabilities(np.array(test_x)), axis=1)
    truth = np.array(test_y)
    confusion = np.zeros((len(ROLES), len(ROLES)), int)
    np.add.at(confusion, (truth, predicted), 1)
    classifier.accuracy = float(np.mean(predicted == truth))
    train_accuracy = float(np.mean(np.argmax(classifier.probabilities(x), axis=1) == y))
    report = {
        "held_out_accuracy": round(classifier.accuracy, 4), "train_accuracy": round(train_accuracy, 4),
        "test_bars": len(test_y), "train_bars": len(train_y), "confusion": confusion.tolist(),
        "roles": list(ROLES), "test_pieces": f"every {test_every}th chorale of music21's bach corpus",
    }
    return classifier, report


def held_out_accuracy(classifier: RoleClassifier, pieces: int | None = None, test_every: int = 5) -> dict:
    """Accuracy of ``classifier`` on the held-out chorales (the ones :func:`fit_roles` never trains on)."""
    x, y = [], []
    for bar in chorale_bars(pieces):
        if bar.piece % test_every == 0:
            x.append(bar_features(bar.notes, bar.beats))
            y.append(ROLES.index(bar.role))
    if not x:
        raise ValueError("no held-out chorale among the pieces read; use more pieces")
    predicted = np.argmax(classifier.probabilities(np.array(x)), axis=1)
    per_role = {role: round(float(np.mean(predicted[np.array(y) == i] == i)), 4) for i, role in enumerate(ROLES)}
    return {"held_out_accuracy": round(float(np.mean(predicted == np.array(y))), 4), "test_bars": len(y),
            "per_role": per_role}


def run_fit_roles(args) -> int:
    """``musebot fit-roles``: fit on the chorales, print the report, write the weights."""
    import json

    classifier, report = fit_roles(args.pieces, args.test_every)
    classifier.save(args.out, evaluated=report)
    print(json.dumps(report, indent=2))
    print(f"weights written to {args.out}")
    return 0
