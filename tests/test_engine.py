"""The ONNX Runtime engine on a real exported model (the tiny reference checkpoint sky_shared).

Specifications: the cache never changes what the model says (cached = uncached logits), rolling back is as
good as starting over, the window slides past its limit, a seed replays a performance, branches are
independent continuations of one prompt, and constraints hold on every event the engine plays.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from musebot.engine import (
    ConstraintError,
    Constraints,
    Engine,
    EngineStateError,
    MaskTable,
    ModelLoadError,
    SamplerSettings,
)
from musebot.engine.masks import DRUM_CHANNEL, time2_of

TOL = 1e-4
NO_EOS = Constraints(allow_eos=False)
WIDE = SamplerSettings(temperature=1.3, top_p=1.0, top_k=0)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory, reference_dir) -> Path:
    from musebot.export.onnx_export import export_onnx

    out = tmp_path_factory.mktemp("sky_shared_onnx")
    export_onnx(reference_dir / "sky_shared", out)
    return out


@pytest.fixture(scope="session")
def reference(reference_dir) -> dict:
    with gzip.open(reference_dir / "sky_shared_ref.json.gz", "rt") as f:
        return json.load(f)


@pytest.fixture(scope="session")
def prompt(reference) -> np.ndarray:
    return np.array(reference["prompt"][:64], np.int64)


@pytest.fixture(scope="session", params=["reference", "inplace"])
def load(request, model_dir, reference_dir):
    """Opens an engine on the exported reference pair, or on the same weights' in-place engine graphs."""
    if request.param == "reference":
        return lambda window=None: Engine.load(model_dir, provider="cpu", window=window)
    from tests.test_engine_inplace import inplace_engine

    return lambda window=None: inplace_engine(reference_dir / "sky_shared", model_dir, window)


@pytest.fixture(scope="session")
def engine(load) -> Engine:
    return load()


@pytest.fixture
def fresh(engine, prompt) -> Engine:
    """The shared engine holding exactly the 64-event prompt."""
    engine.reset()
    engine.append(prompt)
    return engine


def test_engine_matches_the_reference_model_numbers(engine, reference):
    # Hidden state and token logits computed by SkyTNT's own code on the same checkpoint (tests/data/reference).
    engine.reset()
    hidden = engine.append(np.array(reference["prompt"]))
    np.testing.assert_allclose(hidden[0], reference["hidden_last"], atol=TOL)
    tokens = np.array(reference["next_event"])[None, :7]
    logits = engine.token_logits_uncached(hidden, tokens)
    np.testing.assert_allclose(logits[0], reference["logits"], atol=TOL)


def test_cached_and_uncached_logits_agree_over_prompt_and_64_generated_events(fresh, prompt):
    rng = np.random.default_rng(3)
    masks = MaskTable(fresh.vocab, NO_EOS)
    cached_hidden, cached_logits, rows = [fresh.hidden], [], []
    for _ in range(64):
        row = fresh.sample_event(WIDE, masks, rng, keep_logits=True)
        cached_logits.append(fresh.last_logits[0])
        rows.append(row[0])
        cached_hidden.append(fresh.append(row[:, None]))
    everything = np.concatenate([prompt, np.array(rows)])[None]
    uncached_hidden = fresh.hidden_uncached(everything)[0]
    np.testing.assert_allclose(np.concatenate(cached_hidden), uncached_hidden[63:], atol=TOL)
    for i, (row, logits) in enumerate(zip(rows, cached_logits)):
        runs = logits.shape[0]  # token-model runs the event needed (8 for a note)
        expected = fresh.token_logits_uncached(uncached_hidden[63 + i][None], row[None, : runs - 1])[0]
        np.testing.assert_allclose(logits, expected, atol=TOL)


def test_rollback_then_append_equals_a_fresh_prefill(fresh, prompt, load):
    fresh.generate(20, WIDE, MaskTable(fresh.vocab, NO_EOS), np.random.default_rng(0))
    assert fresh.n_events == 84
    fresh.rollback(40)
    assert fresh.n_events == 40 and fresh.context_length == 40
    other = np.array(prompt[50:60])
    hidden = fresh.append(other)
    rng_a, rng_b = np.random.default_rng(9), np.random.default_rng(9)
    row = fresh.sample_event(WIDE, None, rng_a, keep_logits=True)
    logits = fresh.last_logits

    again = load()
    expected_hidden = again.append(np.concatenate([prompt[:40], other]))
    expected_row = again.sample_event(WIDE, None, rng_b, keep_logits=True)
    np.testing.assert_allclose(hidden, expected_hidden, atol=TOL)
    np.testing.assert_allclose(logits, again.last_logits, atol=TOL)
    np.testing.assert_array_equal(row, expected_row)
    np.testing.assert_array_equal(fresh.rows, again.rows)


def test_rollback_refuses_to_go_forward(fresh):
    with pytest.raises(EngineStateError, match="only 64"):
        fresh.rollback(65)


def test_window_slides_past_its_limit_keeping_bos(load, prompt):
    small = load(window=32)
    small.append(prompt[:20])
    small.generate(40, WIDE, MaskTable(small.vocab, NO_EOS), np.random.default_rng(1))
    assert small.n_events == 60
    assert small.context_length <= 32
    # The cache now holds BOS + the newest events: its output equals an uncached pass over that context.
    history = small.rows[0]
    context = np.concatenate([history[:1], history[60 - (small.context_length - 1):]])
    assert context[0, 0] == small.vocab.bos_id
    np.testing.assert_allclose(small.hidden, small.hidden_uncached(context[None])[:, -1], atol=TOL)
    # Rolling back inside the slid context just shortens the cache.
    small.rollback(58)
    np.testing.assert_allclose(small.hidden, small.hidden_uncached(context[None, :-2])[:, -1], atol=TOL)
    # Going back to before the slide rebuilds the cache from the kept history.
    small.rollback(25)
    np.testing.assert_allclose(small.hidden, small.hidden_uncached(history[None, :25])[:, -1], atol=TOL)
    # And a prompt longer than the window is cut on the way in.
    small.reset()
    small.append(np.concatenate([prompt, prompt[1:]]))
    assert small.n_events == 127 and small.context_length <= 32


def test_slide_can_be_asked_for_at_a_quiet_moment(load, prompt):
    engine = load(window=32)
    engine.append(prompt[:30])
    assert engine.slide() and engine.context_length == engine.slide_keep == 24
    assert not engine.slide()  # nothing more to drop
    context = np.concatenate([prompt[:1], prompt[30 - 23 : 30]])
    np.testing.assert_allclose(engine.hidden, engine.hidden_uncached(context[None])[:, -1], atol=TOL)


def test_smallest_window_keeps_bos_and_the_last_event(load, prompt):
    engine = load(window=2)
    engine.append(prompt[:3])
    engine.generate(4, WIDE, NO_EOS, np.random.default_rng(0))
    assert engine.context_length == 2
    context = engine.rows[:, [0, -1]]
    np.testing.assert_allclose(engine.hidden, engine.hidden_uncached(context)[:, -1], atol=TOL)


def test_same_seed_same_events_different_seed_different_events(fresh, prompt):
    masks = NO_EOS  # plain constraints work too: the engine builds and keeps their table
    first = fresh.generate(30, WIDE, masks, np.random.default_rng(11))
    fresh.rollback(len(prompt))
    second = fresh.generate(30, WIDE, masks, np.random.default_rng(11))
    fresh.rollback(len(prompt))
    third = fresh.generate(30, WIDE, masks, np.random.default_rng(12))
    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(first, third)


@pytest.mark.parametrize("constraints", [NO_EOS, Constraints(max_time_gap=4, pitch_classes=frozenset({2, 4, 6, 7, 9, 11, 1}))])
def test_the_one_branch_path_picks_what_the_general_path_picks(fresh, prompt, constraints):
    """One branch with one generator takes the lean path of the live daemon; a list of one generator, or
    kept logits, the general one: the same draws must give the same events (eos included)."""
    masks = MaskTable(fresh.vocab, constraints)
    lean = fresh.generate(40, WIDE, masks, np.random.default_rng(7), stop_at_eos=False)
    lean_hidden = fresh.hidden
    fresh.rollback(len(prompt))
    general = fresh.generate(40, WIDE, masks, [np.random.default_rng(7)], stop_at_eos=False)
    np.testing.assert_array_equal(lean, general)
    np.testing.assert_allclose(fresh.hidden, lean_hidden, atol=TOL)
    fresh.rollback(len(prompt))
    first = fresh.sample_event(WIDE, masks, np.random.default_rng(7), keep_logits=True)
    np.testing.assert_array_equal(first, lean[:, 0])


def test_batched_branches_equal_single_branch_runs(fresh, prompt):
    seeds = (21, 22, 23)
    masks = MaskTable(fresh.vocab, NO_EOS)
    singles = []
    for seed in seeds:
        fresh.rollback(len(prompt))
        singles.append(fresh.generate(16, WIDE, masks, np.random.default_rng(seed))[0])
        single_hidden = fresh.hidden[0]
    fresh.rollback(len(prompt))
    fresh.branch(len(seeds))
    batched = fresh.generate(16, WIDE, masks, [np.random.default_rng(s) for s in seeds])
    assert batched.shape == (3, 16, 8)
    for branch, single in enumerate(singles):
        np.testing.assert_array_equal(batched[branch], single)
    np.testing.assert_allclose(fresh.hidden[2], single_hidden, atol=TOL)
    # Keeping one branch gives back a single-branch engine holding that continuation.
    fresh.select(1)
    assert fresh.batch == 1
    np.testing.assert_array_equal(fresh.rows[0, len(prompt):], singles[1])


def test_io_binding_path_gives_the_same_performance(model_dir, prompt):
    # The OrtValue/IO-binding runner used on CUDA, run here on the CPU provider: same rows, same state.
    plain = Engine.load(model_dir, provider="cpu")
    bound = Engine.load(model_dir, provider="cpu", io_binding=True)
    masks = MaskTable(plain.vocab, NO_EOS)
    np.testing.assert_allclose(bound.append(prompt), plain.append(prompt), atol=TOL)
    expected = plain.generate(12, WIDE, masks, np.random.default_rng(8))
    np.testing.assert_array_equal(bound.generate(12, WIDE, masks, np.random.default_rng(8)), expected)
    bound.rollback(len(prompt) + 4)
    bound.branch(2)
    rows = bound.generate(8, WIDE, masks, [np.random.default_rng(8), np.random.default_rng(9)])
    plain.rollback(len(prompt) + 4)
    np.testing.assert_array_equal(rows[0], plain.generate(8, WIDE, masks, np.random.default_rng(8))[0])
    bound.select(0)
    np.testing.assert_allclose(bound.hidden, plain.hidden, atol=TOL)


def _obeys(vocab, c: Constraints, row: np.ndarray, prev_time2: int) -> str | None:
    """Check a sampled row against the constraints directly from their meaning; returns what broke."""
    if row[0] == vocab.eos_id:
        return None if c.allow_eos else "eos"
    event = vocab.row_to_event(row)
    if event is None:
        return f"malformed row {row}"
    name, values = event[0], dict(zip(vocab.events[event[0]], event[1:]))
    if c.event_types is not None and name not in c.event_types:
        return f"event type {name}"
    if "channel" in values and c.channels is not None and values["channel"] not in c.channels:
        return f"channel {values['channel']}"
    if c.tracks is not None and values["track"] not in c.tracks:
        return f"track {values['track']}"
    if "pitch" in values and values["channel"] != DRUM_CHANNEL:
        if c.pitch_range and not c.pitch_range[0] <= values["pitch"] <= c.pitch_range[1]:
            return f"pitch {values['pitch']}"
        if c.pitch_classes is not None and values["pitch"] % 12 not in c.pitch_classes:
            return f"pitch class {values['pitch'] % 12}"
    gap = 16 * values["time1"] + values["time2"] - prev_time2
    if c.max_time_gap is not None and gap > c.max_time_gap:
        return f"gap {gap}"
    if "duration" in values and c.max_duration is not None and not 1 <= values["duration"] <= c.max_duration:
        return f"duration {values['duration']}"
    return None


def _maybe(strategy):
    return st.one_of(st.none(), strategy)


constraints_strategy = st.builds(
    Constraints,
    event_types=_maybe(st.frozensets(st.sampled_from(["note", "control_change", "set_tempo", "patch_change"]),
                                     min_size=1)),
    allow_eos=st.booleans(),
    channels=_maybe(st.frozensets(st.integers(0, 15), min_size=1)),
    tracks=_maybe(st.frozensets(st.integers(0, 127), min_size=1, max_size=4)),
    pitch_range=_maybe(st.tuples(st.integers(0, 60), st.integers(60, 127))),
    pitch_classes=_maybe(st.frozensets(st.integers(0, 11), min_size=1)),
    max_time_gap=_maybe(st.integers(0, 64)),
    max_duration=_maybe(st.integers(1, 64)),
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(constraints=constraints_strategy, seed=st.integers(0, 2**32 - 1))
def test_every_sampled_event_obeys_the_constraints(engine, prompt, constraints, seed):
    if constraints.pitch_range and constraints.pitch_classes:  # else refused (test_impossible_constraints...)
        low, high = constraints.pitch_range
        assume(any(p % 12 in constraints.pitch_classes for p in range(low, high + 1)))
    engine.reset()
    engine.append(prompt[:16])
    masks = MaskTable(engine.vocab, constraints)
    rng = np.random.default_rng(seed)
    for _ in range(6):
        prev_time2 = time2_of(engine.vocab, engine.rows[0, -1])
        row = engine.step(WIDE, masks, rng)[0]
        broken = _obeys(engine.vocab, constraints, row, prev_time2)
        assert broken is None, f"{broken} in {row.tolist()} under {constraints}"


def test_time_gap_masks_follow_the_beat_grid(engine):
    vocab = engine.vocab
    masks = MaskTable(vocab, Constraints(max_time_gap=8))
    note = vocab.event_ids["note"]
    t1_start, t2_start = vocab.parameter_offsets["time1"], vocab.parameter_offsets["time2"]
    # Previous event at step 10 of its beat: 8 steps later is step 2 of the next beat.
    assert (masks.allowed(1, np.array([note]), prev_time2=10) - t1_start).tolist() == [0, 1]
    next_beat = np.array([note, t1_start + 1])
    assert (masks.allowed(2, next_beat, prev_time2=10) - t2_start).tolist() == [0, 1, 2]
    same_beat = np.array([note, t1_start])
    assert (masks.allowed(2, same_beat, prev_time2=10) - t2_start).tolist() == list(range(16))


def test_key_applies_to_melodic_channels_but_not_to_drums(engine):
    vocab = engine.vocab
    c_major = MaskTable(vocab, Constraints(pitch_classes=frozenset({0, 2, 4, 5, 7, 9, 11})))
    channel = vocab.parameter_offsets["channel"]
    pitch_position = vocab.events["note"].index("pitch") + 1
    row = np.full(8, vocab.pad_id)
    row[0] = vocab.event_ids["note"]
    row[pitch_position - 1] = channel + 0
    melodic = c_major.allowed(pitch_position, row) - vocab.parameter_offsets["pitch"]
    assert 61 not in melodic and 60 in melodic and len(melodic) == 75
    row[pitch_position - 1] = channel + DRUM_CHANNEL
    assert len(c_major.allowed(pitch_position, row)) == 128


def test_impossible_constraints_are_refused(engine):
    with pytest.raises(ConstraintError, match="no event type"):
        MaskTable(engine.vocab, Constraints(event_types=frozenset(), allow_eos=False))
    with pytest.raises(ConstraintError, match="unknown event types"):
        MaskTable(engine.vocab, Constraints(event_types=frozenset({"pitch_bend"})))
    # Notes need a channel: an empty channel set leaves only the events without one.
    masks = MaskTable(engine.vocab, Constraints(channels=frozenset(), allow_eos=False))
    assert engine.vocab.event_ids["note"] not in masks.event_type_ids
    assert engine.vocab.event_ids["set_tempo"] in masks.event_type_ids
    # A pitch range holding none of the allowed pitch classes leaves a melodic note nothing to sample.
    with pytest.raises(ConstraintError, match="holds none of the allowed pitch classes"):
        MaskTable(engine.vocab, Constraints(pitch_range=(61, 62), pitch_classes=frozenset({0})))
    drums_only = Constraints(channels=frozenset({DRUM_CHANNEL}), pitch_range=(61, 62), pitch_classes=frozenset({0}))
    assert engine.vocab.event_ids["note"] in MaskTable(engine.vocab, drums_only).event_type_ids


def test_bad_calls_get_clear_errors(model_dir, tmp_path, engine):
    with pytest.raises(ModelLoadError, match="no config.json"):
        Engine.load(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelLoadError, match="export"):
        Engine.load(tmp_path)
    engine.reset()
    with pytest.raises(EngineStateError, match="append a prompt"):
        engine.sample_event()
    with pytest.raises(ValueError, match="token ids"):
        engine.append([[1, 0, 0, 0, 0, 0, 0, 99999]])
    with pytest.raises(ValueError, match="shape"):
        engine.append(np.zeros((2, 3, 4, 8), np.int64))


def test_importing_the_engine_does_not_import_torch():
    code = "import sys, musebot.engine; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


HAS_CUDA = "CUDAExecutionProvider" in ort.get_available_providers()


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="onnxruntime has no CUDAExecutionProvider on this machine")
class TestCuda:
    """The same engine on the GPU: caches stay on the device, results match the CPU run."""

    def test_cuda_matches_cpu(self, model_dir, prompt):
        cpu = Engine.load(model_dir, provider="cpu")
        gpu = Engine.load(model_dir, provider="cuda")
        np.testing.assert_allclose(gpu.append(prompt), cpu.append(prompt), atol=1e-3)
        masks = MaskTable(cpu.vocab, NO_EOS)
        cpu_rows = cpu.generate(16, WIDE, masks, np.random.default_rng(4))
        gpu_rows = gpu.generate(16, WIDE, masks, np.random.default_rng(4))
        np.testing.assert_allclose(gpu.hidden, cpu.hidden, atol=1e-3)
        assert (gpu_rows == cpu_rows).mean() > 0.9  # sampling may flip on a near-tie between devices

    def test_cuda_rollback_and_branches(self, model_dir, prompt):
        gpu = Engine.load(model_dir, provider="cuda")
        gpu.append(prompt)
        gpu.generate(8, WIDE, MaskTable(gpu.vocab, NO_EOS), np.random.default_rng(0))
        gpu.rollback(len(prompt))
        np.testing.assert_allclose(gpu.hidden, gpu.hidden_uncached(prompt[None])[:, -1], atol=1e-3)
        gpu.branch(2)
        rows = gpu.generate(4, WIDE, None, [np.random.default_rng(1), np.random.default_rng(2)])
        assert rows.shape[0] == 2


def _generate(model_dir: Path, prompt: Path, out: Path, seed: int, wav: Path | None = None) -> int:
    from musebot.cli import main

    args = ["generate", "--model", str(model_dir), "--prompt", str(prompt), "--prompt-events", "40",
            "--events", "24", "--out", str(out), "--seed", str(seed), "--no-eos",
            "--max-time-gap", "16", "--max-duration", "32"]
    return main(args + (["--wav", str(wav)] if wav else []))


def test_generate_continues_a_prompt_and_renders_audio(model_dir, reference_midis, tmp_path):
    import wave

    from musebot.tokenizers import load_score

    prompt = reference_midis[0]
    out, wav = tmp_path / "out.mid", tmp_path / "out.wav"
    assert _generate(model_dir, prompt, out, seed=3, wav=wav) == 0
    notes = [e for track in load_score(out)[1:] for e in track if e[0] == "note"]
    prompt_notes = [e for track in load_score(prompt)[1:] for e in track if e[0] == "note"]
    assert len(notes) > 0 and min(e[1] for e in notes) == 0  # the prompt's opening is kept
    assert len(notes) <= len(prompt_notes) + 24
    with wave.open(str(wav)) as f:
        assert (f.getnchannels(), f.getsampwidth(), f.getframerate()) == (2, 2, 44100)
        audio = np.frombuffer(f.readframes(f.getnframes()), np.int16)
    assert np.abs(audio).max() > 1000  # the soundfont actually played notes

    again, other = tmp_path / "again.mid", tmp_path / "other.mid"
    assert _generate(model_dir, prompt, again, seed=3) == 0
    assert _generate(model_dir, prompt, other, seed=4) == 0
    assert again.read_bytes() == out.read_bytes()
    assert other.read_bytes() != out.read_bytes()


def test_generate_reports_bad_input_in_one_line(model_dir, tmp_path, capsys):
    from musebot.cli import main

    not_midi = tmp_path / "notes.txt"
    not_midi.write_text("C D E")
    assert main(["generate", "--model", str(model_dir), "--prompt", str(not_midi), "--events", "4",
                 "--out", str(tmp_path / "o.mid")]) == 2
    assert main(["generate", "--model", str(tmp_path), "--events", "4", "--out", str(tmp_path / "o.mid")]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 2 and "not a MIDI file" in errors[0] and "config.json" in errors[1]


def test_bench_reports_every_figure(model_dir, capsys):
    from musebot.cli import main

    assert main(["bench", "--model", str(model_dir), "--context", "48", "24", "--events", "4",
                 "--generate", "8", "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert [run["context_events"] for run in figures["runs"]] == [48, 24]
    for run in figures["runs"]:
        for f in (run["reference"], run["engine"]["fp32"], run["prefill"]):
            assert f["p50_ms"] > 0 and f["p99_ms"] >= f["p50_ms"]
        engine = run["engine"]["fp32"]
        assert engine["ort_p50_ms"] > 0 and engine["speedup_vs_reference"] > 0
        # The reference pair reads its whole head per token call: the same bytes as the engine over it.
        assert engine["weight_mb_per_event"] == run["reference"]["weight_mb_per_event"] > 0
        assert engine["floor_ms"] > 0
    assert figures["generate"]["events"] == 8 and figures["generate"]["speedup"] > 0
    assert main(["bench", "--model", str(model_dir), "--context", "16", "--events", "2", "--generate", "0"]) == 0
    report = capsys.readouterr().out
    assert "| reference loop (fp32, full vocab, numpy) |" in report and "| engine fp32 (default) |" in report


def test_hugging_face_layout_with_graphs_in_an_onnx_folder_loads(model_dir, tmp_path, prompt):
    import shutil

    (tmp_path / "onnx").mkdir()
    shutil.copy(model_dir / "config.json", tmp_path)
    for name in ("model_base.onnx", "model_token.onnx"):
        shutil.copy(model_dir / name, tmp_path / "onnx")
    engine = Engine.load(tmp_path, provider="cpu")
    assert engine.append(prompt[:4]).shape == (1, 64)
