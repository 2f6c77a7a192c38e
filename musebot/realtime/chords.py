"""Chord symbols and chord charts: what a lead sheet says the band plays over.

A chord symbol (``Cm7``, ``Bb7(b9,#11)``, ``F#m7b5``, ``G7alt``, ``C/E``, ``N.C.``) becomes a :class:`Chord`:
its root and bass pitch classes, its chord tones (root, third or suspension, fifth, sixth or seventh), the
extensions written in the symbol (9ths, 11ths, 13ths, natural or altered), the tensions available over it and
its chord scale, the scale a melody or a pad draws on. The chord-scale choices follow the usual jazz
chord-scale theory (Levine, *The Jazz Theory Book*, ch. 2-5): ionian for major, dorian for minor sevenths,
mixolydian for dominants (lydian dominant with #11, phrygian dominant with b9 or b13, altered with #9 or alt),
locrian for half-diminished, the whole-half diminished scale for dim7, the whole-tone scale for augmented.
Available tensions are the chord-scale tones that are neither chord tones nor "avoid notes" (a semitone above
a chord tone), plus whatever the symbol writes explicitly.

A chart is bars separated by ``|``: ``"Cm7 | F7 | Bbmaj7 | Ebmaj7 | Am7b5 D7 | Gm6 | %"``. Chords in a bar
split it evenly; ``/`` tokens mark beats (``"C / G /"``: two beats each); ``%`` repeats the previous bar; a
line break is a bar line too, ``#`` starts a comment. The chart loops (:meth:`Chart.chord_at`). Pure: no
threads, no I/O except :func:`load_chart_file`, which reads MusicXML/ABC lead sheets through music21.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path

NAMES = ("C", "Db", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
LETTERS = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}
ACCIDENTALS = {"#": 1, "♯": 1, "b": -1, "♭": -1}
MAX_BARS = 4096  # a longer chart is refused (ChartError); 4096 bars of 4/4 is about 2 hours at 140 bpm
NO_CHORD = ("N.C.", "NC", "N.C", "n.c.", "nc")

SCALES = {
    "ionian": (0, 2, 4, 5, 7, 9, 11), "lydian": (0, 2, 4, 6, 7, 9, 11), "mixolydian": (0, 2, 4, 5, 7, 9, 10),
    "lydian_dominant": (0, 2, 4, 6, 7, 9, 10), "phrygian_dominant": (0, 1, 4, 5, 7, 8, 10),
    "altered": (0, 1, 3, 4, 6, 8, 10), "half_whole": (0, 1, 3, 4, 6, 7, 9, 10), "whole_tone": (0, 2, 4, 6, 8, 10),
    "dorian": (0, 2, 3, 5, 7, 9, 10), "aeolian": (0, 2, 3, 5, 7, 8, 10), "phrygian": (0, 1, 3, 5, 7, 8, 10),
    "melodic_minor": (0, 2, 3, 5, 7, 9, 11), "locrian": (0, 1, 3, 5, 6, 8, 10),
    "locrian_natural9": (0, 2, 3, 5, 6, 8, 10), "whole_half": (0, 2, 3, 5, 6, 8, 9, 11),
    "lydian_augmented": (0, 2, 4, 6, 8, 9, 11),
}
# Extension numbers stack the naturals below them (an 11th chord holds the 9th; a dominant 13th leaves out
# the 11th, which clashes with the major third; a minor 13th keeps it).
STACKS = {"9": (2,), "11": (2, 5), "13": (2, 9)}
MINOR_STACKS = {"9": (2,), "11": (2, 5), "13": (2, 5, 9)}
ALTERATIONS = {"b9": 1, "#9": 3, "#11": 6, "b13": 8, "b5": 6, "#5": 8}
NATURAL_OF = {1: 2, 3: 2, 6: 5, 8: 9}  # an altered tension replaces its natural
ADDS = {"2": 2, "9": 2, "4": 5, "11": 5, "6": 9, "13": 9}
TENSION_INTERVALS = frozenset({1, 2, 3, 5, 6, 8, 9})  # b9 9 #9 11 #11 b13 13
EXT_NAMES = {2: "add9", 5: "add11", 9: "add13", 1: "b9", 3: "#9", 6: "#11", 8: "b13"}
# (third, fifth, seventh, sixth) -> canonical quality; third None is a suspension.
CORE_NAMES = {
    (4, 7, None, False): "", (3, 7, None, False): "m", (3, 6, None, False): "dim", (4, 8, None, False): "aug",
    (4, 7, 10, False): "7", (4, 7, 11, False): "maj7", (3, 7, 10, False): "m7", (3, 7, 11, False): "mmaj7",
    (3, 6, 10, False): "m7b5", (3, 6, 9, False): "dim7", (4, 7, None, True): "6", (3, 7, None, True): "m6",
}


class ChordSyntaxError(ValueError):
    """A chord symbol or chart token musebot cannot read; names the symbol and, in a chart, its place."""

    def __init__(self, symbol: str, reason: str, bar: int | None = None, position: int | None = None) -> None:
        where = f" (bar {bar}, chord {position})" if bar is not None else ""
        super().__init__(f"chord symbol {symbol!r}{where}: {reason}")
        self.symbol, self.bar, self.position = symbol, bar, position


class ChartError(ValueError):
    """A chart that cannot be used as a whole: empty, too long, or a file that cannot be read."""


def pitch_class_name(pc: int) -> str:
    """The spelling musebot writes for a pitch class (flats, except F#)."""
    return NAMES[pc % 12]


@dataclass(frozen=True)
class Chord:
    """One chord: pitch classes 0 (C) .. 11 (B); intervals are semitones above the root, sorted.

    ``root`` and ``bass`` are None for "no chord" (N.C.). ``intervals`` are the chord tones, ``extensions``
    the 9ths/11ths/13ths the symbol writes, ``scale_intervals`` the chord scale (module docstring).
    """

    root: int | None
    bass: int | None
    quality: str
    intervals: tuple[int, ...]
    extensions: tuple[int, ...]
    scale_intervals: tuple[int, ...]

    @property
    def is_no_chord(self) -> bool:
        return self.root is None

    @cached_property
    def tones(self) -> frozenset[int]:
        """Chord tones as pitch classes (the slash bass included)."""
        if self.root is None:
            return frozenset()
        return frozenset((self.root + i) % 12 for i in self.intervals) | {self.bass}

    @cached_property
    def scale(self) -> frozenset[int]:
        """The chord scale as pitch classes (it holds every chord tone and written extension)."""
        if self.root is None:
            return frozenset()
        return frozenset((self.root + i) % 12 for i in self.scale_intervals) | {self.bass}

    @cached_property
    def extension_classes(self) -> frozenset[int]:
        """The extensions the symbol writes (``C7b9``: Db), as pitch classes."""
        if self.root is None:
            return frozenset()
        return frozenset((self.root + i) % 12 for i in self.extensions)

    @cached_property
    def tensions(self) -> frozenset[int]:
        """Written extensions, and chord-scale tones that are neither chord tones nor a semitone above one."""
        if self.root is None:
            return frozenset()
        chord = set(self.intervals)
        free = {i for i in self.scale_intervals
                if i in TENSION_INTERVALS and i not in chord and (i - 1) % 12 not in chord}
        return frozenset((self.root + i) % 12 for i in free | set(self.extensions))

    @property
    def symbol(self) -> str:
        """The canonical symbol; :func:`parse_chord` reads it back to an equal chord."""
        if self.root is None:
            return "N.C."
        slash = f"/{NAMES[self.bass]}" if self.bass != self.root else ""
        return f"{NAMES[self.root]}{self.quality}{slash}"

    def transposed(self, semitones: int) -> Chord:
        """The same chord ``semitones`` higher (or lower, when negative)."""
        if self.root is None:
            return self
        return Chord((self.root + semitones) % 12, (self.bass + semitones) % 12, self.quality, self.intervals,
                     self.extensions, self.scale_intervals)

    def __str__(self) -> str:
        return self.symbol

    def __repr__(self) -> str:
        return f"Chord({self.symbol!r})"


def _read_pitch(text: str, i: int) -> tuple[int, int] | None:
    """(pitch class, next index) of a note name at ``text[i:]``, or None."""
    if i >= len(text) or text[i] not in LETTERS:
        return None
    pc, i = LETTERS[text[i]], i + 1
    while i < len(text) and text[i] in ACCIDENTALS:
        pc, i = pc + ACCIDENTALS[text[i]], i + 1
    return pc % 12, i


def _take(s: str, i: int, options: tuple[str, ...]) -> str | None:
    for option in options:
        if s.startswith(option, i):
            return option
    return None


@dataclass
class _Parts:
    third: int | None = 4
    fifth: int = 7
    seventh: int | None = None
    sixth: bool = False
    major_seventh: bool = False
    exts: set[int] = field(default_factory=set)


def _parse_quality(s: str) -> _Parts:
    """Read a quality suffix (everything between the root and a slash bass); ValueError on anything else."""
    p = _Parts()
    i = 0
    if (tok := _take(s, i, ("ø", "Ø"))) is not None:
        p.third, p.fifth, p.seventh = 3, 6, 10
        i += len(tok) + s.startswith("7", i + len(tok))
    elif (tok := _take(s, i, ("dim", "o", "°"))) is not None:
        p.third, p.fifth = 3, 6
        i += len(tok)
        if s.startswith("7", i):
            p.seventh, i = 9, i + 1
    elif (tok := _take(s, i, ("aug", "+"))) is not None:
        p.fifth, i = 8, i + len(tok)
    elif _take(s, i, ("maj", "Maj", "MAJ", "ma", "Ma", "M", "Δ", "^")) is None and \
            (tok := _take(s, i, ("min", "mi", "m", "-"))) is not None:
        p.third, i = 3, i + len(tok)
    if (tok := _take(s, i, ("maj", "Maj", "MAJ", "ma", "Ma", "M", "Δ", "^"))) is not None:
        p.major_seventh, i = True, i + len(tok)
        if tok in ("Δ", "^") and not s[i:i + 1].isdigit():
            p.seventh = 11
    number = re.match(r"6/9|69|13|11|9|7|6|5", s[i:])
    if number and number.group() == "5":
        if i:
            raise ValueError("a power chord is written root and 5 alone, like C5")
        p.third, i = -1, i + 1
    elif number:
        n = number.group()
        i += len(n)
        if n in ("6/9", "69", "6"):
            p.sixth = True
            if n != "6":
                p.exts.add(2)
        else:
            if p.seventh is None:
                p.seventh = 11 if p.major_seventh else 10
            if n != "7":
                p.exts.update((MINOR_STACKS if p.third == 3 else STACKS)[n])
    elif p.major_seventh and p.seventh is None and (p.third == 3 or p.fifth == 8):
        p.seventh = 11  # "mMaj" / "augmaj" without a 7 still mean the major seventh
    if (tok := _take(s, i, ("sus2", "sus4", "sus"))) is not None:
        p.third, i = None, i + len(tok)
        p.exts.add(2 if tok == "sus2" else 5)  # moved into the chord tones below
    while i < len(s):
        if s[i] in "(), ":
            i += 1
            continue
        if s.startswith("alt", i):
            p.seventh = p.seventh or 10
            p.exts.update((1, 3, 6, 8))
            i += 3
            continue
        m = re.match(r"(add|no|omit)?([b#♭♯+-]?)(13|11|9|5|6|4|3|2)", s[i:])
        if not m:
            raise ValueError(f"cannot read {s[i:]!r}")
        word, accidental, degree = m.groups()
        i += len(m.group())
        sign = {"♭": "b", "-": "b", "♯": "#", "+": "#"}.get(accidental, accidental)
        if word in ("no", "omit"):
            if sign or degree not in ("3", "5"):
                raise ValueError(f"only no3 and no5 are understood, not {m.group()!r}")
            if degree == "3":
                p.third = -1
            else:
                p.fifth = -1
        elif sign:
            if sign + degree not in ALTERATIONS:
                raise ValueError(f"unknown alteration {m.group()!r}")
            if degree == "5":
                p.fifth = ALTERATIONS[sign + degree]
            else:
                interval = ALTERATIONS[sign + degree]
                p.exts.discard(NATURAL_OF[interval])
                p.exts.add(interval)
        elif degree in ADDS and (word or degree in ("9", "11", "13")):
            p.exts.add(ADDS[degree])
        else:
            raise ValueError(f"cannot read {m.group()!r}")
    return p


def _chord_scale(third: int | None, fifth: int, seventh: int | None, exts: set[int]) -> str:
    """The chord scale's name for a chord's third, fifth, seventh and written extensions (module docstring)."""
    if third is None or third < 0:
        return "mixolydian" if seventh == 10 else "ionian"
    if third == 4:
        if seventh == 10:
            if 3 in exts or {1, 8} <= exts and (6 in exts or fifth == 8):
                return "altered"
            if 1 in exts and 9 in exts:
                return "half_whole"
            if 1 in exts or 8 in exts:
                return "phrygian_dominant"
            if fifth in (6, 8):
                return "whole_tone"
            return "lydian_dominant" if 6 in exts else "mixolydian"
        if fifth == 8:
            return "lydian_augmented" if seventh == 11 else "whole_tone"
        return "lydian" if 6 in exts or fifth == 6 else "ionian"
    if fifth == 6:
        if seventh == 9:
            return "whole_half"
        return "locrian_natural9" if 2 in exts else "locrian"
    if seventh == 11:
        return "melodic_minor"
    return "aeolian" if 8 in exts else "phrygian" if 1 in exts else "dorian"


def _quality_name(third: int | None, fifth: int, seventh: int | None, sixth: bool, exts: set[int],
                  sus: int | None) -> str:
    """The canonical quality suffix (it parses back to the same parts)."""
    core_third = 4 if third is None or third < 0 else third
    core_fifth = 7 if fifth not in (6, 8) else fifth
    key = (core_third, core_fifth, seventh, sixth)
    name = CORE_NAMES.get(key)
    fifth_mark = ""
    if name is None:
        name = CORE_NAMES.get((core_third, 7, seventh, sixth), "")
        fifth_mark = {6: "b5", 8: "#5"}.get(fifth, "")
    rest = set(exts)
    if third == -1 and fifth == 7 and seventh is None and not sixth and not rest:
        return "5"
    if seventh == 10 and core_third == 4 and {1, 3, 6, 8} <= rest and fifth == 7:
        return ("7alt" + ("sus4" if sus == 5 else "sus2" if sus == 2 else "")
                + ("no3" if third == -1 else "") + ("no5" if fifth == -1 else ""))
    if sixth and 2 in rest and name in ("6", "m6"):
        name, rest = name.replace("6", "69"), rest - {2}
    elif seventh is not None and name in ("7", "maj7", "m7", "mmaj7"):
        stacks = MINOR_STACKS if core_third == 3 else STACKS
        for n, top in (("13", 9), ("11", 5), ("9", 2)):
            if top in rest and all(d in rest or any(NATURAL_OF[a] == d and a in rest for a in NATURAL_OF)
                                   for d in stacks[n]):
                name = name.replace("7", n)
                rest -= set(stacks[n])
                break
    sus_mark = {2: "sus2", 5: "sus4"}.get(sus, "") if sus is not None else ""
    tail = "".join(EXT_NAMES[e] for e in sorted(rest, key=lambda e: (NATURAL_OF.get(e, e), e)))
    return (name + sus_mark + fifth_mark + tail + ("no3" if third == -1 else "")
            + ("no5" if fifth == -1 else ""))


@lru_cache(maxsize=4096)
def parse_chord(symbol: str) -> Chord:
    """A :class:`Chord` from a symbol such as ``Cm7``, ``Bb7(b9,#11)``, ``F#ø``, ``Eb/G`` or ``N.C.``.

    Raises :class:`ChordSyntaxError` (a ValueError) naming the symbol and what could not be read.
    """
    text = symbol.strip()
    if text in NO_CHORD:
        return Chord(None, None, "N.C.", (), (), ())
    read = _read_pitch(text, 0)
    if read is None:
        raise ChordSyntaxError(symbol, "a chord starts with its root, A..G with # or b")
    root, i = read
    suffix, bass = text[i:], root
    cut = suffix.replace("6/9", "6+9").rfind("/")
    if cut >= 0:
        slash = _read_pitch(suffix, cut + 1)
        if slash is None or slash[1] != len(suffix):
            raise ChordSyntaxError(symbol, "after '/' comes the bass note, A..G with # or b")
        suffix, bass = suffix[:cut], slash[0]
    suffix = re.sub(r"^(m|min|mi|-)\((maj7|Maj7|M7|Δ7|Δ|maj9|M9)\)", r"\1\2", suffix)  # Cm(maj7)
    if suffix.endswith("+") and len(suffix) > 1:
        suffix = suffix[:-1] + "#5"  # C7+: the augmented fifth
    try:
        p = _parse_quality(suffix)
    except ValueError as exc:
        raise ChordSyntaxError(symbol, f"unknown quality {suffix!r} ({exc}); try maj7, m7, 7, m7b5, dim7, "
                                       "aug, sus4, 6, 9, 11, 13, add9, 7(b9,#11), alt") from None
    exts = set(p.exts)
    sus = None
    if p.third is None:
        sus = 2 if 2 in exts and 5 not in exts else 5
        exts.discard(sus)
    tones = {0, p.seventh if p.seventh is not None else 0, 9 if p.sixth else 0}
    if p.third is not None and p.third >= 0:
        tones.add(p.third)
    if sus is not None:
        tones.add(sus)
    if p.fifth >= 0:
        tones.add(p.fifth)
    exts -= tones
    scale = set(SCALES[_chord_scale(p.third, p.fifth, p.seventh, exts)]) | tones | exts
    for altered, natural in NATURAL_OF.items():
        if altered in exts and natural not in exts and natural not in tones:
            scale.discard(natural)
    if p.fifth in (6, 8):
        scale.discard(7)
    quality = _quality_name(p.third, p.fifth, p.seventh, p.sixth, exts, sus)
    return Chord(root, bass, quality, tuple(sorted(tones)), tuple(sorted(exts)), tuple(sorted(scale)))


def make_chord(root: int, quality: str, bass: int | None = None) -> Chord:
    """The chord of a root pitch class, a quality suffix (``"m7"``) and an optional bass pitch class."""
    slash = f"/{NAMES[bass % 12]}" if bass is not None and bass % 12 != root % 12 else ""
    return parse_chord(f"{NAMES[root % 12]}{quality}{slash}")


# ---- charts ----------------------------------------------------------------------------------------------
TOKEN = re.compile(r"[^\s(]*\([^)]*\)[^\s(]*|[^\s(]+")


@dataclass(frozen=True)
class Chart:
    """A looping chord chart: ``bars`` holds, per bar, its chords and their lengths in beats.

    Consecutive spans of the same chord (a bar repeated, a chord held over a bar line) are one span for
    :meth:`chord_at`, so a span start is a chord change; a pass of the chart does not join its last span to
    the first of the next pass.
    """

    bars: tuple[tuple[tuple[Chord, float], ...], ...]
    beats_per_bar: float = 4.0

    def __post_init__(self) -> None:
        if not self.bars:
            raise ChartError("the chart has no bars: write chords separated by |, e.g. 'Dm7 | G7 | Cmaj7 | %'")
        if len(self.bars) > MAX_BARS:
            raise ChartError(f"the chart has {len(self.bars)} bars; at most {MAX_BARS} are supported")

    @cached_property
    def _spans(self) -> tuple[list[float], list[float], list[Chord]]:
        starts: list[float] = []
        ends: list[float] = []
        chords: list[Chord] = []
        beat = 0.0
        for bar in self.bars:
            for chord, beats in bar:
                if chords and chords[-1] == chord and ends[-1] == beat:
                    ends[-1] = beat + beats
                else:
                    starts.append(beat)
                    ends.append(beat + beats)
                    chords.append(chord)
                beat += beats
        return starts, ends, chords

    @property
    def bar_count(self) -> int:
        return len(self.bars)

    @property
    def length_beats(self) -> float:
        """Beats in one pass of the chart."""
        return self.bar_count * self.beats_per_bar

    def chord_at(self, beat: float) -> tuple[Chord, float, float]:
        """The chord in force at ``beat`` (beat 0 = the chart's first downbeat; the chart loops, negative
        beats count back from it) and the start and end beat of its span, in the same absolute beats."""
        length = self.length_beats
        loops = beat // length
        offset = loops * length
        local = beat - offset
        if local >= length:  # float rounding at the loop's end
            local, offset = 0.0, offset + length
        starts, ends, chords = self._spans
        k = max(bisect_right(starts, local) - 1, 0)
        return chords[k], offset + starts[k], offset + ends[k]

    def bar_at(self, beat: float) -> int:
        """The bar (0-based, within one pass) that holds ``beat``."""
        return int((beat % self.length_beats) // self.beats_per_bar) % self.bar_count

    def transposed(self, semitones: int) -> Chart:
        """The chart ``semitones`` higher (e.g. moved to C for a key-normalised model)."""
        return Chart(tuple(tuple((c.transposed(semitones), b) for c, b in bar) for bar in self.bars),
                     self.beats_per_bar)

    @property
    def chords(self) -> list[Chord]:
        """The chords of one pass, one per span (repeats joined)."""
        return list(self._spans[2])

    def text(self) -> str:
        """The canonical chart text; :func:`parse_chart` (with the same ``beats_per_bar``) reads it back."""
        out: list[str] = []
        for k, bar in enumerate(self.bars):
            if k and bar == self.bars[k - 1]:
                out.append("%")
                continue
            even = all(abs(b - bar[0][1]) < 1e-9 for _, b in bar)
            if even:
                out.append(" ".join(c.symbol for c, _ in bar))
            else:
                out.append(" ".join(" ".join([c.symbol] + ["/"] * (round(b) - 1)) for c, b in bar))
        return " | ".join(out)

    def __str__(self) -> str:
        return self.text()


def _parse_bar(tokens: list[str], bar_number: int, beats: float) -> tuple[tuple[Chord, float], ...]:
    chords: list[list] = []  # [chord, beat marks]
    for k, token in enumerate(tokens, 1):
        if token == "/":
            if not chords:
                raise ChordSyntaxError(token, "a beat mark '/' needs a chord before it in the bar",
                                       bar_number, k)
            chords[-1][1] += 1
            continue
        try:
            chords.append([parse_chord(token), 1])
        except ChordSyntaxError as exc:
            reason = str(exc).split(": ", 1)[1]
            raise ChordSyntaxError(token, reason, bar_number, k) from None
    if "/" in tokens:
        marks = sum(n for _, n in chords)
        if abs(marks - beats) > 1e-9:
            raise ChordSyntaxError(" ".join(tokens), f"the bar marks {marks} beats with '/', it has {beats:g}",
                                   bar_number, 1)
        return tuple((c, float(n)) for c, n in chords)
    return tuple((c, beats / len(chords)) for c, _ in chords)


def _strip_comment(line: str) -> str:
    """The line before a ``#`` comment: a # at the start or after a space, outside parentheses (the # of
    ``F#m7`` follows a letter, that of ``C7(b9, #11)`` is inside parentheses)."""
    depth = 0
    for i, char in enumerate(line):
        depth += (char == "(") - (char == ")")
        if char == "#" and depth <= 0 and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def parse_chart(text: str, beats_per_bar: float = 4.0) -> Chart:
    """A :class:`Chart` from text (module docstring). Raises :class:`ChordSyntaxError` naming the bad symbol
    with its bar (1-based) and position in the bar, :class:`ChartError` for an empty or over-long chart."""
    if not beats_per_bar > 0:
        raise ChartError(f"beats_per_bar must be > 0, got {beats_per_bar}")
    cells: list[str] = []
    for line in text.splitlines():
        line = _strip_comment(line)
        line = re.sub(r"\|\||\|:|:\|", "|", line).strip().strip("|")
        if line.strip():
            cells += line.split("|")
    bars: list[tuple[tuple[Chord, float], ...]] = []
    for number, cell in enumerate(cells, 1):
        tokens = TOKEN.findall(cell)
        if not tokens:
            raise ChordSyntaxError("", "an empty bar: write a chord, or % to repeat the previous bar", number, 1)
        if tokens == ["%"]:
            if not bars:
                raise ChordSyntaxError("%", "the first bar has no previous bar to repeat", number, 1)
            bars.append(bars[-1])
        else:
            bars.append(_parse_bar(tokens, number, float(beats_per_bar)))
        if len(bars) > MAX_BARS:
            raise ChartError(f"the chart has more than {MAX_BARS} bars; at most {MAX_BARS} are supported")
    return Chart(tuple(bars), float(beats_per_bar))


LEAD_SHEETS = (".xml", ".musicxml", ".mxl", ".abc")


def load_chart_file(path: str | Path, beats_per_bar: float | None = None) -> Chart:
    """A chart from a file: MusicXML (``.xml``, ``.musicxml``, ``.mxl``) or ABC (``.abc``) lead sheets read
    through music21 (their chord symbols per measure; a measure without one keeps the chord before it), any
    other file as chart text. ``beats_per_bar`` defaults to 4 for text and to the lead sheet's time signature
    (in quarter notes) for the others."""
    path = Path(path)
    if not path.is_file():
        raise ChartError(f"{path}: no such chart file")
    if path.suffix.lower() not in LEAD_SHEETS:
        return parse_chart(path.read_text(), beats_per_bar or 4.0)
    try:
        from music21 import converter, harmony
    except ImportError:
        raise ChartError(f"{path}: reading MusicXML/ABC lead sheets needs music21 (pip install music21), "
                         "or write the chart as text") from None
    try:
        score = converter.parse(str(path))
    except Exception as exc:  # music21 raises many types for a bad file
        raise ChartError(f"{path}: music21 cannot read it ({exc})") from exc
    part = score.parts[0] if score.parts else score
    bars: list[tuple[tuple[Chord, float], ...]] = []
    current: Chord | None = None
    measures = list(part.getElementsByClass("Measure"))
    bar_beats = beats_per_bar or float(measures[0].barDuration.quarterLength if measures else 4.0)
    for number, measure in enumerate(measures, 1):
        symbols = sorted(measure.recurse().getElementsByClass(harmony.Harmony), key=lambda s: s.offset)
        marks = [(0.0, current)] if current is not None and (not symbols or symbols[0].offset > 0) else []
        for k, symbol in enumerate(symbols, 1):
            current = _from_music21(symbol, number, k)
            marks.append((float(symbol.offset), current))
        if not marks:
            continue  # before the first symbol
        ends = [m[0] for m in marks[1:]] + [bar_beats]
        bars.append(tuple((c, e - s) for (s, c), e in zip(marks, ends) if e > s and c is not None))
    if not bars:
        raise ChartError(f"{path}: no chord symbols found; a lead sheet needs harmony (chord symbol) marks")
    if len(bars) > MAX_BARS:
        raise ChartError(f"{path}: {len(bars)} bars; at most {MAX_BARS} are supported")
    return Chart(tuple(bars), bar_beats)


def _from_music21(symbol, bar: int, position: int) -> Chord:
    """A music21 Harmony (ChordSymbol or NoChord) as a Chord: its figure through :func:`parse_chord`, else its
    root, bass and pitch classes matched to the chord qualities musebot knows."""
    if type(symbol).__name__ == "NoChord" or not symbol.pitches:
        return parse_chord("N.C.")
    figure = (symbol.figure or "").replace("-", "b").replace(" ", "")
    try:
        return parse_chord(figure)
    except ChordSyntaxError:
        pass
    root, bass = symbol.root().pitchClass, symbol.bass().pitchClass
    heard = {(p.pitchClass - root) % 12 for p in symbol.pitches}
    best = max(CORE_NAMES.values(), key=lambda q: (len(set(parse_chord("C" + q).intervals) & heard)
                                                   - len(set(parse_chord("C" + q).intervals) - heard)))
    if not heard & {3, 4}:
        raise ChordSyntaxError(symbol.figure or "?", "music21 gives a chord musebot cannot name", bar, position)
    return make_chord(root, best, bass)
