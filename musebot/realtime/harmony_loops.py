"""The looper over changes: a bar recorded over one chord, replayed over another (Pachet et al. 2013, the
Reflexive Looper's "harmonic adaptation" of recorded bars to the chord grid).

Each note keeps its onset, duration and velocity; only its pitch moves:

1. by the root motion from the recorded chord to the new one, the nearer way round (-5..+6 semitones);
2. a chord tone of the recorded chord becomes the same chord tone of the new one (its third to its third,
   its seventh to its seventh), so a Cmaj7 voicing moved to Dm7 has F and C, not F# and C#; in the bass, the
   recorded bass note becomes the new bass note (a slash chord's bass included);
3. what is still outside the new chord moves to the nearest allowed pitch: on a strong beat (chord change,
   downbeat, middle of the bar) a chord tone, or for the chords part a chord tone or tension; between them a
   chord-scale tone. Ties go down (a suspension resolves down).

Drums are returned untouched, and so is everything when either chord is unknown or N.C. (no root motion to
follow). Notes are any NamedTuple with ``onset``, ``duration``, ``pitch`` fields
(:class:`musebot.realtime.roles.BarNote`): onsets in beats from the bar start.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from musebot.realtime.chords import Chord
from musebot.realtime.harmony_parts import allowed_pitch_classes, strong_beat

Note = TypeVar("Note", bound=Any)
# A chord tone's function, by its interval above the root: third (or its suspension), fifth, sixth/seventh.
DEGREE = {0: "root", 2: "third", 3: "third", 4: "third", 5: "third", 6: "fifth", 7: "fifth", 8: "fifth",
          9: "seventh", 10: "seventh", 11: "seventh"}


def root_motion(source: Chord, target: Chord) -> int:
    """Semitones from ``source``'s root to ``target``'s, the nearer way round (-5..+6); 0 with no root."""
    if source.root is None or target.root is None:
        return 0
    shift = (target.root - source.root) % 12
    return shift - 12 if shift > 6 else shift


def _degree_map(source: Chord, target: Chord) -> dict[int, int]:
    """Interval above the root in ``source`` -> interval above the root in ``target``, per chord function."""
    by_degree = {DEGREE[i]: i for i in target.intervals}
    return {i: by_degree[DEGREE[i]] for i in source.intervals if DEGREE[i] in by_degree}


def _nearest(pitch: int, allowed: frozenset[int]) -> int:
    """The pitch nearest ``pitch`` whose class is allowed (ties down), kept within 0..127."""
    for distance in range(7):
        for candidate in (pitch - distance, pitch + distance):
            if 0 <= candidate <= 127 and candidate % 12 in allowed:
                return candidate
    return pitch


def move_to_chord(notes: Sequence[Note], source: Chord | None, target: Chord | None, role: str,
                  beats_per_bar: float = 4.0, span_start: float = 0.0) -> list[Note]:
    """The notes of a bar recorded over ``source``, moved to fit ``target`` (module docstring); onsets are
    beats from the bar start, ``span_start`` the onset (in the same beats) where ``target`` begins."""
    if role == "drums" or source is None or target is None or source.is_no_chord or target.is_no_chord:
        return list(notes)
    shift = root_motion(source, target)
    degrees = _degree_map(source, target)
    moved = []
    for note in notes:
        interval = (note.pitch - source.root) % 12
        base = note.pitch + shift
        if role == "bass" and note.pitch % 12 == source.bass:
            pitch = base + ((target.bass - base) % 12 + 6) % 12 - 6  # the target's bass, nearest octave
        elif interval in degrees:
            pitch = base + ((degrees[interval] - interval + 6) % 12 - 6)
        else:
            pitch = base
        strong = strong_beat(note.onset, span_start, beats_per_bar)
        if role in ("bass", "chords", "melody", "pad"):
            allowed = allowed_pitch_classes(target, "chords" if role == "chords" else "bass", strong)
            if allowed is not None and pitch % 12 not in allowed:
                pitch = _nearest(pitch, allowed)
        while pitch < 0:
            pitch += 12
        while pitch > 127:
            pitch -= 12
        moved.append(note._replace(pitch=pitch))
    return moved


def move_over_changes(notes: Sequence[Note], source: Sequence[tuple[float, float, Chord]],
                      target: Sequence[tuple[float, float, Chord]], role: str,
                      beats_per_bar: float = 4.0) -> list[Note]:
    """:func:`move_to_chord` for a bar with several chords: ``source`` and ``target`` are the bar's
    ``(start, end, chord)`` spans (beats from the bar start) when recorded and now; each note is moved from
    the recorded chord at its onset to the chord in force at its onset now."""
    def at(spans: Sequence[tuple[float, float, Chord]], beat: float) -> tuple[float, Chord] | None:
        for start, end, chord in spans:
            if start - 1e-9 <= beat < end - 1e-9:
                return start, chord
        return (spans[-1][0], spans[-1][2]) if spans else None

    moved = []
    for note in notes:
        was, now = at(source, note.onset), at(target, note.onset)
        if was is None or now is None:
            moved.append(note)
            continue
        moved += move_to_chord([note], was[1], now[1], role, beats_per_bar, now[0])
    return moved
