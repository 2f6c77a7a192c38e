"""Build a token dataset from MIDI folders and music21's corpora (``musebot dataset build``).

Pipeline per piece: read the MIDI file, tokenize it (SkyTNT v2, "optimise" on), optionally transpose it to
C major / A minor using the key the tokenizer finds, apply the quality filter (spec 2.8, with thresholds
chosen for this project's corpora, see :data:`DEFAULT_QUALITY`), cut it to ``max_len`` rows; then drop
duplicates (same token rows), split by piece with a fixed seed, and write the compact layout described in
:mod:`musebot.data.dataset`. Files that cannot be read are counted and skipped, never fatal.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import random
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from musebot.data.dataset import DatasetError

log = logging.getLogger(__name__)

MIDI_SUFFIXES = {".mid", ".midi", ".MID", ".MIDI"}

# The reference's check_quality defaults (total_notes_min 256, notes_density_min 2.5 notes per beat,
# notes_bandwidth_min 3, piano_max 0.7) were tuned for multi-instrument pop MIDI; they would reject nearly
# every chorale and folk song (a folk tune is monophonic: bandwidth 0, ~1-2 notes per beat, 30-100 notes; a
# chorale is four piano voices: piano ratio 1.0). These defaults keep the checks that matter for this corpus:
# grid alignment, tonality, a sane maximum density, and a minimum of 32 notes.
DEFAULT_QUALITY: dict[str, float] = {
    "alignment_min": 0.3,
    "tonality_min": 0.8,
    "piano_max": 1.0,
    "notes_bandwidth_min": 0,
    "notes_density_max": 50,
    "notes_density_min": 0.5,
    "total_notes_max": 20000,
    "total_notes_min": 32,
}


@dataclass
class BuildOptions:
    """Options of ``musebot dataset build``; saved in dataset.json."""

    tokenizer: str = "v2o"
    transpose: bool = False
    max_len: int | None = None
    quality: bool = True
    quality_thresholds: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_QUALITY))
    valid_fraction: float = 0.05
    test_fraction: float = 0.05
    seed: int = 0
    workers: int = 2


@dataclass
class BuildReport:
    """What a build did with every input piece."""

    files: int = 0
    corrupt: int = 0
    conversion_failed: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0
    kept: int = 0
    rows: int = 0
    split_sizes: dict[str, int] = field(default_factory=dict)


def find_midi_files(folder: Path) -> list[Path]:
    """All MIDI files under a folder (recursive), sorted, so a build is reproducible."""
    return sorted(p for p in folder.rglob("*") if p.suffix in MIDI_SUFFIXES and p.is_file())


def collect_sources(sources: list[str], cache_dir: Path, workers: int = 2, progress: bool = True,
                    limit: int | None = None) -> tuple[list[Path], int]:
    """Expand each source (a folder, a MIDI file, or ``music21:bach`` / ``music21:folk``) into MIDI paths.

    Returns (paths, pieces music21 could not convert).
    """
    from musebot.data import music21_sources

    paths: list[Path] = []
    failed = 0
    for source in sources:
        if source.startswith("music21:"):
            found, n_failed = music21_sources.materialise(source, cache_dir, workers, progress, limit)
            paths += found
            failed += n_failed
            continue
        path = Path(source)
        if path.is_file():
            paths.append(path)
        elif path.is_dir():
            found = find_midi_files(path)
            if not found:
                raise DatasetError(f"no MIDI files (*.mid, *.midi) under {path}: point to a folder of MIDI "
                                   "files or use music21:bach / music21:folk")
            paths += found[:limit] if limit else found
        else:
            raise DatasetError(f"source {source} does not exist: give a folder of MIDI files, a MIDI file, "
                               "music21:bach or music21:folk")
    return paths, failed


def key_shift(rows: list[list[int]], vocab) -> int | None:
    """Semitones that move the piece's first key signature to C major / A minor, in -6..5; None if no key.

    A key with ``sf`` sharps (negative: flats) has its major tonic at pitch class ``7*sf mod 12``; its relative
    minor shares ``sf``, so the same shift sends a minor key to A minor.
    """
    ks_id = vocab.event_ids.get("key_signature")
    for row in rows:
        if row[0] == ks_id:
            event = vocab.row_to_event(row)
            if event is None:
                continue
            sf = event[4] - 7
            shift = -((7 * sf) % 12)
            return shift + 12 if shift < -6 else shift
    return None


def _transpose_score(score: list, shift: int) -> list | None:
    """A copy of the score with pitched notes moved by ``shift`` and key signatures set to no sharps/flats;
    None when a note would leave 0..127."""
    out = [score[0]]
    for track in score[1:]:
        new_track = []
        for event in track:
            if event[0] == "note" and event[3] != 9:
                pitch = event[4] + shift
                if not 0 <= pitch < 128:
                    return None
                event = [*event[:4], pitch, *event[5:]]
            elif event[0] == "key_signature":
                event = [event[0], event[1], 0, event[3]]
            new_track.append(event)
        out.append(new_track)
    return out


_WORKER_TOK = None
_WORKER_OPTIONS: BuildOptions | None = None


def _init_worker(options: BuildOptions) -> None:
    global _WORKER_TOK, _WORKER_OPTIONS
    from musebot.tokenizers import MIDITokenizer

    _WORKER_TOK = MIDITokenizer.from_name(options.tokenizer)
    _WORKER_OPTIONS = options


def _process(path: str) -> tuple[str, str, np.ndarray | None]:
    """Worker: one MIDI file -> (path, status, rows). Status is "ok", "corrupt" or "quality:<reasons>"."""
    from musebot.tokenizers import load_score

    tok, options = _WORKER_TOK, _WORKER_OPTIONS
    try:
        score = load_score(path)
        rows = tok.tokenize(score)
        if options.transpose and tok.version == "v2":
            shift = key_shift(rows, tok.vocab)
            if shift:
                moved = _transpose_score(score, shift)
                if moved is not None:
                    rows = tok.tokenize(moved)
    except Exception as exc:  # noqa: BLE001 - a broken file of any kind is counted and skipped
        log.debug("skipping %s: %s", path, exc)
        return path, "corrupt", None
    if options.quality:
        ok, reasons = tok.check_quality(rows, **options.quality_thresholds)
        if not ok:
            return path, "quality:" + ",".join(reasons), None
    if options.max_len is not None and len(rows) > options.max_len:
        rows = rows[:options.max_len]
    return path, "ok", np.asarray(rows, dtype=np.int16)


def tokenize_files(paths: list[Path], options: BuildOptions, progress: bool = True):
    """Yield (path, status, rows) for every file, in input order, using ``options.workers`` processes."""
    from tqdm import tqdm

    jobs = [str(p) for p in paths]
    bar = tqdm(total=len(jobs), desc="tokenizing", unit="file", disable=not progress)
    results: dict[str, tuple[str, np.ndarray | None]] = {}
    if options.workers > 1 and len(jobs) > 8:
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(options.workers, initializer=_init_worker, initargs=(options,)) as pool:
            for path, status, rows in pool.imap_unordered(_process, jobs, chunksize=16):
                results[path] = (status, rows)
                bar.update()
    else:
        _init_worker(options)
        for job in jobs:
            path, status, rows = _process(job)
            results[path] = (status, rows)
            bar.update()
    bar.close()
    for job in jobs:
        yield job, *results[job]


def split_pieces(n: int, valid_fraction: float, test_fraction: float, seed: int) -> dict[str, list[int]]:
    """Random split of piece indices with a fixed seed; valid and test get at least one piece when n >= 3."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    n_valid = max(1, round(n * valid_fraction)) if n >= 3 else 0
    n_test = max(1, round(n * test_fraction)) if n >= 3 else 0
    return {
        "valid": sorted(order[:n_valid]),
        "test": sorted(order[n_valid:n_valid + n_test]),
        "train": sorted(order[n_valid + n_test:]),
    }


def build_dataset(sources: list[str], out: str | Path, options: BuildOptions | None = None,
                  cache_dir: str | Path | None = None, progress: bool = True,
                  limit: int | None = None) -> BuildReport:
    """Build a dataset folder from MIDI sources; returns the counts (also saved in dataset.json)."""
    from musebot.tokenizers import MIDITokenizer

    options = options or BuildOptions()
    out = Path(out)
    cache = Path(cache_dir) if cache_dir else Path.home() / ".cache" / "musebot"
    tok = MIDITokenizer.from_name(options.tokenizer)
    paths, conversion_failed = collect_sources(sources, cache, options.workers, progress, limit)
    if not paths:
        raise DatasetError(f"no pieces found in {', '.join(sources)}")
    report = BuildReport(files=len(paths), conversion_failed=conversion_failed)
    rejected: Counter[str] = Counter()
    seen: set[bytes] = set()
    kept_rows: list[np.ndarray] = []
    pieces: list[dict] = []
    for path, status, rows in tokenize_files(paths, options, progress):
        if status == "corrupt":
            report.corrupt += 1
            continue
        if status != "ok":
            for reason in status.split(":", 1)[1].split(","):
                rejected[reason] += 1
            continue
        digest = hashlib.sha1(rows.tobytes()).digest()
        if digest in seen:
            report.duplicates += 1
            continue
        seen.add(digest)
        kept_rows.append(rows)
        pieces.append({"name": Path(path).stem, "file": str(path), "rows": len(rows)})
    report.rejected = dict(rejected)
    if not pieces:
        raise DatasetError(f"no piece survived ({report.files} files, {report.corrupt} unreadable, rejected: "
                           f"{report.rejected or 'none'}): try --no-quality or lower --min-notes")
    report.kept = len(pieces)
    split = split_pieces(len(pieces), options.valid_fraction, options.test_fraction, options.seed)
    report.split_sizes = {k: len(v) for k, v in split.items()}

    out.mkdir(parents=True, exist_ok=True)
    offsets = np.zeros(len(kept_rows) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(r) for r in kept_rows])
    report.rows = int(offsets[-1])
    np.concatenate(kept_rows).astype("<i2").tofile(out / "tokens.bin")
    np.save(out / "offsets.npy", offsets)
    (out / "pieces.json").write_text(json.dumps(pieces, indent=0))
    (out / "split.json").write_text(json.dumps({"seed": options.seed, **split}))
    meta = {
        "format": "musebot-dataset-1",
        "sources": sources,
        "tokenizer": tok.to_dict(),
        "options": asdict(options),
        "report": asdict(report),
    }
    (out / "dataset.json").write_text(json.dumps(meta, indent=2))
    return report
