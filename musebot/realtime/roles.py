"""Which role the musician plays in a bar: bass, chords (comping) or melody (the Reflexive Looper's three
playing modes, Pachet et al. 2013; spec ``realtime-field.md`` §1.2 and §5 item 1).

A bar of notes becomes a short feature vector (register, polyphony, rhythm) and a multinomial logistic
regression, fitted with numpy by :mod:`musebot.tools.roles_fit` on the voices of Bach chorales (bass voice
= bass, soprano = melody, alto and tenor together = chords), gives the role. Its weights ship in
``roles_model.json`` beside this module; the held-out accuracy measured when they were fitted is stored
there too.

A musician may play two roles at once (a left-hand bass under right-hand chords): :func:`split_roles` splits a
wide bar at its largest pitch gap and classifies both halves, so the looper knows both roles are taken.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

ROLES = ("bass", "chords", "melody")
MODEL_FILE = Path(__file__).with_name("roles_model.json")
CHORD_WINDOW = 0.125  # onsets closer than this (beats) are struck together
SPLIT_SPAN = 19  # a bar wider than an octave and a fifth may hold two roles
SPLIT_GAP = 5  # ... split where neighbouring pitches are at least a fourth apart


class BarNote(NamedTuple):
    """One note of a bar: onset and duration in beats (onset from the bar start), MIDI pitch, velocity."""

    onset: float
    duration: float
    pitch: int
    velocity: int = 80


FEATURES = (
    "mean_pitch", "low_pitch", "high_pitch", "span", "density", "polyphony", "chord_share", "log_duration",
    "motion", "bias",
)


def bar_features(notes: Sequence[BarNote], beats: float = 4.0) -> np.ndarray:
    """The feature vector of one bar (names in :data:`FEATURES`), scaled to about unit range.

    Register (mean, lowest, highest pitch, in octaves from middle C), span, notes per beat, mean number of
    notes sounding at each onset, share of onsets struck with another, mean log duration and mean melodic
    motion of the top line (octaves per step).
    """
    if not notes:
        raise ValueError("a bar with no notes has no role")
    pitch = np.array([n.pitch for n in notes], float)
    onset = np.array([n.onset for n in notes], float)
    end = onset + np.array([max(n.duration, 1e-3) for n in notes], float)
    sounding = [(onset <= t + 1e-6) & (end > t + 1e-6) for t in onset]
    polyphony = float(np.mean([s.sum() for s in sounding]))
    order = np.argsort(onset, kind="stable")
    groups: list[list[int]] = []
    for i in order:
        if groups and onset[i] - onset[groups[-1][0]] < CHORD_WINDOW:
            groups[-1].append(i)
        else:
            groups.append([i])
    chord_share = sum(len(g) for g in groups if len(g) > 1) / len(notes)
    top = np.array([max(pitch[g]) for g in groups])
    motion = float(np.mean(np.abs(np.diff(top)))) / 12 if len(top) > 1 else 0.0
    return np.array([
        (pitch.mean() - 60) / 12, (pitch.min() - 60) / 12, (pitch.max() - 60) / 12, (np.ptp(pitch)) / 12,
        len(notes) / max(beats, 1e-6) / 4, polyphony - 1, chord_share,
        float(np.mean(np.log2(end - onset))) / 2, motion, 1.0,
    ])


@dataclass
class RoleClassifier:
    """Multinomial logistic regression over :func:`bar_features`: ``weights`` is ``(features, roles)``."""

    weights: np.ndarray
    accuracy: float | None = None  # held-out accuracy measured when fitted (roles_fit.py)

    @classmethod
    def load(cls, path: str | Path = MODEL_FILE) -> RoleClassifier:
        """The shipped weights (or another fitted file); raises FileNotFoundError with what to run."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no role classifier here; fit one with `musebot fit-roles`")
        data = json.loads(path.read_text())
        if data.get("features") != list(FEATURES) or data.get("roles") != list(ROLES):
            raise ValueError(f"{path}: fitted for other features or roles; refit with `musebot fit-roles`")
        return cls(np.array(data["weights"], float), data.get("accuracy"))

    def save(self, path: str | Path = MODEL_FILE, **extra: object) -> None:
        data = {"features": list(FEATURES), "roles": list(ROLES), "weights": self.weights.round(5).tolist(),
                "accuracy": self.accuracy, **extra}
        Path(path).write_text(json.dumps(data, indent=1) + "\n")

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        """Role probabilities ``(n, 3)`` for features ``(n, F)`` (or ``(3,)`` for one vector)."""
        z = np.asarray(features) @ self.weights
        z = z - z.max(axis=-1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=-1, keepdims=True)

    def classify(self, notes: Sequence[BarNote], beats: float = 4.0) -> str:
        """The role of one bar of notes."""
        return ROLES[int(np.argmax(self.probabilities(bar_features(notes, beats))))]


def fit_logistic(x: np.ndarray, y: np.ndarray, classes: int = len(ROLES), l2: float = 1e-3,
                 steps: int = 3000, rate: float = 0.5) -> np.ndarray:
    """Weights ``(F, classes)`` of a softmax regression by full-batch gradient descent on the mean
    cross-entropy plus ``l2`` times the squared weights (the bias feature is regularised too; harmless)."""
    w = np.zeros((x.shape[1], classes))
    target = np.eye(classes)[y]
    for _ in range(steps):
        z = x @ w
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        w -= rate * (x.T @ (p - target) / len(x) + l2 * w)
    return w


def split_roles(classifier: RoleClassifier, notes: Sequence[BarNote], beats: float = 4.0
                ) -> dict[str, list[BarNote]]:
    """Roles present in a bar with their notes: one role, or two when a wide bar splits into a low and a
    high layer of different roles (a musician playing bass and chords, or bass and melody, at once)."""
    if not notes:
        return {}
    whole = classifier.classify(notes, beats)
    pitches = sorted({n.pitch for n in notes})
    if pitches[-1] - pitches[0] < SPLIT_SPAN:
        return {whole: list(notes)}
    gaps = np.diff(pitches)
    cut = int(np.argmax(gaps))
    if gaps[cut] < SPLIT_GAP:
        return {whole: list(notes)}
    split = pitches[cut + 1]
    low = [n for n in notes if n.pitch < split]
    high = [n for n in notes if n.pitch >= split]
    low_role, high_role = classifier.classify(low, beats), classifier.classify(high, beats)
    if low_role == high_role:
        return {whole: list(notes)}
    return {low_role: low, high_role: high}
