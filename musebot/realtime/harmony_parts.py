"""Per-part pitch constraints from the chord in force: what each part may play on each beat.

The same kind of value as the key lock's (:meth:`constraints.KeyLock.pitch_classes`): a frozenset of pitch
classes (0 = C) the part may use, or None for "no limit", so it slots in where the key's pitch classes go in
the engine's masks (``Constraints.pitch_classes``, ``PartMasks``) per part and per beat. The rules:

* **bass**: chord tones (and the slash bass) at a chord change and on strong beats; between them, passing
  notes from the chord scale;
* **chords**: chord tones and tensions (9ths, 11ths, 13ths the chord allows, :attr:`Chord.tensions`);
* **melody**, **pad**: the chord scale;
* **drums**: unaffected (None).

With a key (``key_scale``), the scale tones and tensions outside the key are dropped, but never a chord tone
(an A7 in C major keeps its C#; the melody then avoids F#, which neither the key nor the chord needs). With no
chord (N.C., or nothing known yet), every part falls back to the key.
"""

from __future__ import annotations

from musebot.realtime.chords import Chart, Chord

ROLES = ("bass", "chords", "melody", "drums", "pad")
ONSET_TOLERANCE = 0.125  # beats: a note this close to a chord change or strong beat is on it

VOICING_TENSIONS = frozenset({1, 2, 3, 8, 9})  # semitones above the root: b9 9 #9 b13 13
BASS_ARRIVAL_BEATS = 1.0  # the bass states a new chord within this many beats of the change


def strong_beat(beat: float, span_start: float, beats_per_bar: float = 4.0, bar_start: float = 0.0) -> bool:
    """Whether a note starting at ``beat`` falls on a chord change (``span_start``) or a strong beat: the
    downbeat and, in a bar of an even number of beats, its middle (beat 3 of 4/4). Beats are absolute, bars
    counted from ``bar_start``."""
    if abs(beat - span_start) <= ONSET_TOLERANCE:
        return True
    local = (beat - bar_start) % beats_per_bar
    strong = [0.0, beats_per_bar] + ([beats_per_bar / 2] if round(beats_per_bar) % 2 == 0 else [])
    return any(abs(local - s) <= ONSET_TOLERANCE for s in strong)


def allowed_pitch_classes(chord: Chord | None, role: str, strong: bool = True,
                          key_scale: frozenset[int] | None = None) -> frozenset[int] | None:
    """The pitch classes part ``role`` may play over ``chord`` (module docstring); ``strong`` says whether the
    note starts on a chord change or strong beat (:func:`strong_beat`); None means no limit."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}: choose from {', '.join(ROLES)}")
    if role == "drums":
        return None
    if chord is None or chord.is_no_chord:
        return key_scale
    tones = chord.tones
    if role == "bass" and strong:
        return tones
    if role == "chords":
        # Voicings: chord tones with the 9ths and 13ths they may carry (b9, 9, #9, b13, 13), and any
        # extension the symbol writes (an 11th only when written: over most chords it clashes).
        extra = frozenset(pc for pc in chord.tensions if (pc - chord.root) % 12 in VOICING_TENSIONS)
        extra |= chord.extension_classes
    else:
        extra = chord.scale  # bass between strong beats, melody, pad
    if key_scale is not None:
        extra = (extra & key_scale) | chord.extension_classes
    return frozenset(tones | extra)


def pitch_classes_at(chart: Chart, role: str, beat: float, key_scale: frozenset[int] | None = None,
                     bar_start: float = 0.0) -> frozenset[int] | None:
    """:func:`allowed_pitch_classes` for a note of ``role`` starting at ``beat`` over a chart whose first
    downbeat is ``bar_start``: the chord in force there, and whether the beat is strong."""
    chord, start, _ = chart.chord_at(beat - bar_start)
    strong = strong_beat(beat - bar_start, start, chart.beats_per_bar)
    if role == "bass" and start - ONSET_TOLERANCE <= beat - bar_start < start + BASS_ARRIVAL_BEATS:
        strong = True  # the bass's first note over a new chord is one of its tones
    return allowed_pitch_classes(chord, role, strong, key_scale)


def next_change(chart: Chart, beat: float, bar_start: float = 0.0) -> float:
    """The beat (absolute) of the next chord change after ``beat``: the planner re-masks when it is near."""
    _, _, end = chart.chord_at(beat - bar_start)
    return end + bar_start


# How much a chord's time says "this key" by its root's degree in the key (semitones above the tonic): the
# tonic (or its relative minor) most, the subdominant and dominant next, the other diatonic degrees a little.
DEGREE_WEIGHTS = {0: 1.0, 9: 0.6, 5: 0.5, 7: 0.5, 2: 0.3, 4: 0.2, 11: 0.1}
MAJOR_SCALE = frozenset({0, 2, 4, 5, 7, 9, 11})


def _triad(chord: Chord) -> list[int]:
    """Root, third and fifth as pitch classes (the sevenths and tensions say little of the key: a blues's
    dominant sevenths are outside it)."""
    tones = [chord.root]
    for options in ((3, 4, 2, 5), (7, 6, 8)):
        step = next((i for i in options if i in chord.intervals), None)
        if step is not None:
            tones.append((chord.root + step) % 12)
    return tones


def chart_tonic(chart: Chart) -> int:
    """The major key a chart is in, as its tonic's pitch class (a minor tune: its relative major).

    Each key scores every chord by its length in beats: how well the chord's triad sits in the key's scale
    (a tone outside costs twice a tone inside) plus the weight of its root's degree (``DEGREE_WEIGHTS``);
    the last chord adds a bar's worth when it is the tonic or the relative minor (tunes end home). A blues
    in C (C7 F7 G7) is in C, not in F (where its C7 lies) nor in G (its turnaround's last chord)."""
    scores = [0.0] * 12
    last = None
    for bar in chart.bars:
        for chord, beats in bar:
            if chord.is_no_chord:
                continue
            last = chord
            triad = _triad(chord)
            for tonic in range(12):
                inside = sum((pc - tonic) % 12 in MAJOR_SCALE for pc in triad)
                fit = (inside - 2 * (len(triad) - inside)) / len(triad)
                scores[tonic] += beats * (fit + DEGREE_WEIGHTS.get((chord.root - tonic) % 12, 0.0))
    if last is None:
        return 0
    for tonic in range(12):
        if (last.root - tonic) % 12 in (0, 9):
            scores[tonic] += chart.beats_per_bar
    return max(range(12), key=lambda tonic: scores[tonic])
