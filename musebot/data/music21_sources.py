"""music21's bundled corpora as MIDI files: ``music21:bach`` and ``music21:folk``.

``music21:bach`` is the Bach chorale collection shipped with music21 (``corpus/bach/*.mxl``, ``.xml``,
``.krn``; the ``.rntxt`` harmonic analyses are not music and are left out). ``music21:folk`` is the Essen
folk-song collection (``corpus/essenFolksong/*.abc``), several tunes per file, split at ``X:`` headers so
each tune becomes one piece. Converted files are cached (one ``.mid`` per piece, a ``.failed`` marker for
pieces music21 cannot convert) so a second build costs nothing.

music21 writes every part on channel 0; here each part is moved to its own channel (0..8, 10..15, never
the drum channel 9) so that the four chorale voices stay four distinct instruments after tokenisation.
"""

from __future__ import annotations

import io
import logging
import multiprocessing
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

SOURCE_NAMES = ("music21:bach", "music21:folk")
# Melodic channels in the order parts get them; 9 is General MIDI percussion.
_PART_CHANNELS = [c for c in range(16) if c != 9]


class SourceError(ValueError):
    """An unknown ``music21:`` source name, or music21 missing."""


@dataclass(frozen=True)
class Music21Item:
    """One piece to convert: a file of the corpus, or one tune (``abc`` text) cut out of a file."""

    name: str
    path: str
    abc_text: str | None = None


def _corpus_dir() -> Path:
    try:
        import music21
    except ImportError as exc:  # pragma: no cover - music21 is in the [train] extra
        raise SourceError("music21 sources need music21: pip install 'musebot[train]'") from exc
    return Path(music21.__file__).parent / "corpus"


def list_items(source: str) -> list[Music21Item]:
    """The pieces of ``music21:bach`` or ``music21:folk``, in a stable order."""
    root = _corpus_dir()
    if source == "music21:bach":
        files = sorted(p for p in (root / "bach").glob("*") if p.suffix in {".mxl", ".xml", ".krn"})
        return [Music21Item(f"bach_{p.stem}", str(p)) for p in files]
    if source == "music21:folk":
        items = []
        for path in sorted((root / "essenFolksong").glob("*.abc")):
            for index, tune in enumerate(_split_abc(path.read_text(encoding="latin-1"))):
                items.append(Music21Item(f"folk_{path.stem}_{index:04d}", str(path), tune))
        return items
    raise SourceError(f"unknown source {source!r}: use a folder of MIDI files or one of {', '.join(SOURCE_NAMES)}")


def _split_abc(text: str) -> list[str]:
    """Cut an abc file into tunes: each tune starts at an ``X:`` line (abc standard 2.1, section 3.1)."""
    tunes: list[list[str]] = []
    for line in text.splitlines():
        if line.startswith("X:"):
            tunes.append([])
        if tunes:
            tunes[-1].append(line)
    return ["\n".join(lines) + "\n" for lines in tunes if any(ln.startswith("K:") for ln in lines)]


def _to_midi_bytes(item: Music21Item) -> bytes:
    """Parse one item with music21 and write it as a type-1 MIDI file, one channel per part."""
    import mido
    from music21 import converter, midi, stream

    if item.abc_text is not None:
        parsed = converter.parse(item.abc_text, format="abc")
    else:
        parsed = converter.parse(item.path)
    if isinstance(parsed, stream.Opus):
        parsed = parsed.scores[0]
    _unshare_time_signatures(parsed)
    midi_file = midi.translate.streamToMidiFile(parsed)
    raw = midi_file.writestr()
    # Re-channel with mido: music21 puts every part on channel 0.
    mid = mido.MidiFile(file=io.BytesIO(raw))
    part_index = 0
    for track in mid.tracks:
        if not any(msg.type == "note_on" for msg in track):
            continue
        channel = _PART_CHANNELS[part_index % len(_PART_CHANNELS)]
        part_index += 1
        for i, msg in enumerate(track):
            if not msg.is_meta and hasattr(msg, "channel"):
                track[i] = msg.copy(channel=channel)
    out = io.BytesIO()
    mid.save(file=out)
    return out.getvalue()


def _unshare_time_signatures(score) -> None:
    """Give every measure its own TimeSignature object.

    music21's abc reader puts one TimeSignature object into several measures of tunes that change metre;
    MIDI export then fails ("already found in this Stream"). Copies fix it without changing the music.
    """
    import copy

    from music21 import meter, stream

    seen: set[int] = set()
    for measure in score.recurse().getElementsByClass(stream.Measure):
        for ts in list(measure.getElementsByClass(meter.TimeSignature)):
            if id(ts) in seen:
                measure.replace(ts, copy.deepcopy(ts))
            else:
                seen.add(id(ts))


def _convert_one(args: tuple[Music21Item, str]) -> tuple[str, str | None]:
    """Worker: convert one item into the cache; returns (name, path or None when it failed)."""
    item, cache_dir = args
    target = Path(cache_dir) / f"{item.name}.mid"
    failed = Path(cache_dir) / f"{item.name}.failed"
    if target.exists():
        return item.name, str(target)
    if failed.exists():
        return item.name, None
    try:
        data = _to_midi_bytes(item)
    except Exception as exc:  # noqa: BLE001 - music21 raises many unrelated types; one bad tune is not fatal
        failed.write_text(f"{type(exc).__name__}: {exc}\n")
        return item.name, None
    tmp = target.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.replace(target)  # atomic, so an interrupted build never leaves half a file in the cache
    return item.name, str(target)


def materialise(source: str, cache_dir: str | Path, workers: int = 2, progress: bool = True,
                limit: int | None = None) -> tuple[list[Path], int]:
    """Convert a music21 source to MIDI files under ``cache_dir/<source>/``.

    Returns (MIDI paths in a stable order, number of pieces music21 could not convert). ``limit`` keeps
    only the first N pieces (for tests and quick runs).
    """
    items = list_items(source)
    if limit is not None:
        items = items[:limit]
    folder = Path(cache_dir) / source.replace(":", "_")
    folder.mkdir(parents=True, exist_ok=True)
    jobs = [(item, str(folder)) for item in items]
    results: dict[str, str | None] = {}
    todo = [job for job in jobs if not (folder / f"{job[0].name}.mid").exists()]
    for item, _ in jobs:
        if (folder / f"{item.name}.mid").exists():
            results[item.name] = str(folder / f"{item.name}.mid")
    if todo:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), desc=f"converting {source}", unit="piece", disable=not progress)
        if workers > 1 and len(todo) > 1:
            # spawn, not fork: forking a process that already imported torch can deadlock.
            ctx = multiprocessing.get_context("spawn")
            with ctx.Pool(workers) as pool:
                for name, path in pool.imap_unordered(_convert_one, todo, chunksize=8):
                    results[name] = path
                    bar.update()
        else:
            for job in todo:
                name, path = _convert_one(job)
                results[name] = path
                bar.update()
        bar.close()
    paths = [Path(results[item.name]) for item in items if results.get(item.name)]
    failed = sum(1 for item in items if not results.get(item.name))
    return paths, failed
