"""The engine over graphs whose KV caches are updated in place (``musebot.export.inplace``).

Specifications: the in-place graphs say what the reference pair says (SkyTNT's own numbers at fp32), a step
writes the new positions into the very buffers it was given and touches nothing before them, the buffers grow
without changing a result, and rollback, branching and the shipped model use them. The behaviour shared with
the reference pair (cache = no cache, rollback = fresh prefill, windows, seeds, branches) is specified in
``tests/test_engine.py``, which runs every such test on both kinds of graphs.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from musebot.engine import Constraints, Engine, MaskTable, SamplerSettings
from musebot.engine.inplace import HEAD_BLOCKS, HEAD_FILE, Head, InPlaceCache, InPlaceRunner, load_head
from musebot.engine.runners import ModelLoadError, session_options

TOL = 1e-4
NO_EOS = Constraints(allow_eos=False)
WIDE = SamplerSettings(temperature=1.3, top_p=1.0, top_k=0)
SHIPPED = Path(__file__).resolve().parents[1] / "musebot" / "assets" / "model"


def inplace_folder(checkpoint: Path, model_dir: Path) -> Path:
    """fp32 in-place graphs of ``checkpoint`` in ``model_dir/inplace`` (built once per folder)."""
    folder = model_dir / "inplace"
    if not (folder / "model_token.onnx").is_file():
        from musebot.export.inplace import build_inplace_graphs
        from musebot.models import load_model

        folder.mkdir(exist_ok=True)
        build_inplace_graphs(load_model(checkpoint).float().eval(), folder, {})
    return folder


def inplace_engine(checkpoint: Path, model_dir: Path, window: int | None = None) -> Engine:
    """An engine over the fp32 in-place graphs, with ``model_dir``'s config."""
    folder = inplace_folder(checkpoint, model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    base = ort.InferenceSession(str(folder / "model_base.onnx"), session_options(1))
    token = ort.InferenceSession(str(folder / "model_token.onnx"), session_options(1))
    return Engine(InPlaceRunner(base, token, config, load_head(folder)), config, window=window)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, reference_dir) -> Path:
    from musebot.export.onnx_export import export_onnx

    out = tmp_path_factory.mktemp("sky_shared_inplace")
    export_onnx(reference_dir / "sky_shared", out)
    return out


@pytest.fixture(scope="module")
def inplace(reference_dir, model_dir) -> Engine:
    return inplace_engine(reference_dir / "sky_shared", model_dir)


@pytest.fixture(scope="module")
def prompt(reference_dir) -> np.ndarray:
    with gzip.open(reference_dir / "sky_shared_ref.json.gz", "rt") as f:
        return np.array(json.load(f)["prompt"][:64], np.int64)


def test_inplace_graphs_give_skytnt_reference_numbers(inplace, reference_dir):
    with gzip.open(reference_dir / "sky_shared_ref.json.gz", "rt") as f:
        reference = json.load(f)
    inplace.reset()
    hidden = inplace.append(np.array(reference["prompt"]))
    np.testing.assert_allclose(hidden[0], reference["hidden_last"], atol=TOL)
    logits = inplace.token_logits_uncached(hidden, np.array(reference["next_event"])[None, :7])
    np.testing.assert_allclose(logits[0], reference["logits"], atol=TOL)


def test_inplace_and_reference_pair_score_every_token_alike(inplace, model_dir, prompt):
    plain = Engine.load(model_dir, provider="cpu")
    assert isinstance(inplace.runner, InPlaceRunner) and not isinstance(plain.runner, InPlaceRunner)
    inplace.reset()
    np.testing.assert_allclose(inplace.append(prompt), plain.append(prompt), atol=TOL)
    masks = MaskTable(plain.vocab, NO_EOS)
    for seed in range(12):
        row = plain.sample_event(WIDE, masks, np.random.default_rng(seed), keep_logits=True)
        inplace.sample_event(WIDE, masks, np.random.default_rng(seed), keep_logits=True)
        np.testing.assert_allclose(inplace.last_logits, plain.last_logits, atol=TOL)
        np.testing.assert_allclose(inplace.append(row[:, None]), plain.append(row[:, None]), atol=TOL)


def test_a_step_writes_its_position_into_the_same_buffers_and_nothing_before(inplace, prompt):
    inplace.reset()
    inplace.append(prompt[:40])
    cache: InPlaceCache = inplace._past
    buffers = [id(a) for a in cache.arrays]
    before = [a.copy() for a in cache.arrays]
    inplace.append(prompt[40:41])
    assert inplace._past is cache and [id(a) for a in cache.arrays] == buffers
    assert cache.length == 41
    for old, new in zip(before, cache.arrays):
        np.testing.assert_array_equal(new[:, :, :40], old[:, :, :40])  # the past is read where it lies
        assert not np.array_equal(new[:, :, 40], old[:, :, 40])  # the new keys/values were written in place


def test_growing_past_the_capacity_changes_no_result(inplace, prompt):
    inplace.reset()
    for start, stop in ((0, 30), (30, 31), (31, 63), (63, 64)):  # 64 then 128 positions of room
        inplace.append(prompt[start:stop])
    inplace.generate(70, WIDE, NO_EOS, np.random.default_rng(4))
    assert inplace._past.capacity >= 134 and inplace._past.length == 134
    np.testing.assert_allclose(inplace._history.hidden, inplace.hidden_uncached(inplace.rows), atol=TOL)


def test_rollback_is_a_count_and_the_next_append_overwrites(inplace, prompt):
    inplace.reset()
    inplace.append(prompt)
    first = inplace.generate(10, WIDE, NO_EOS, np.random.default_rng(5))
    cache = inplace._past
    inplace.rollback(50)
    assert inplace._past is cache and cache.length == 50
    inplace.append(prompt[50:64])
    again = inplace.generate(10, WIDE, NO_EOS, np.random.default_rng(5))
    np.testing.assert_array_equal(first, again)
    np.testing.assert_allclose(inplace.hidden, inplace.hidden_uncached(inplace.rows)[:, -1], atol=TOL)


def test_window_slide_on_inplace_graphs(reference_dir, model_dir, prompt):
    small = inplace_engine(reference_dir / "sky_shared", model_dir, window=32)
    small.append(prompt[:20])
    small.generate(40, WIDE, NO_EOS, np.random.default_rng(1))
    assert small.n_events == 60 and small.context_length <= 32
    history = small.rows[0]
    context = np.concatenate([history[:1], history[60 - (small.context_length - 1):]])
    np.testing.assert_allclose(small.hidden, small.hidden_uncached(context[None])[:, -1], atol=TOL)
    small.rollback(25)
    np.testing.assert_allclose(small.hidden, small.hidden_uncached(history[None, :25])[:, -1], atol=TOL)


def test_the_shipped_model_runs_inplace_int8_graphs():
    engine = Engine.load(SHIPPED, provider="cpu")
    assert engine.precision == "int8" and isinstance(engine.runner, InPlaceRunner)
    engine.append(np.array([engine.vocab.special_row(engine.vocab.bos_id)]))
    rows = engine.generate(16, None, NO_EOS, np.random.default_rng(0))
    assert rows.shape == (1, 16, 8) and engine._past.length == 17
    np.testing.assert_allclose(engine._history.hidden, engine.hidden_uncached(engine.rows), atol=1e-3)


def test_the_engines_head_scores_any_set_of_rows_as_the_whole_head_does():
    rng = np.random.default_rng(0)
    head = Head(rng.standard_normal((300, 16)).astype(np.float32))
    states = rng.standard_normal((2, 3, 16)).astype(np.float32)
    full = states @ head.weight.T
    block, scattered = np.arange(40, 90), np.array([3, 7, 8, 200, 299])
    for ids in (block, scattered, np.arange(300), None):
        columns = slice(None) if ids is None else ids
        np.testing.assert_allclose(head.logits(states, ids), full[..., columns], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(head.logits(states[1:, 2:], ids), full[1:, 2:, columns], rtol=1e-5, atol=1e-5)
    assert np.shares_memory(head.rows(block), head.weight)  # a whole block is read where it lies
    assert head.rows(scattered) is head.rows(scattered)  # other sets are gathered once
    for _ in range(3 * HEAD_BLOCKS):  # ever-new id arrays keep a bounded set of gathered rows
        head.rows(np.array([1, 5, 9]))
    assert len(head._blocks) <= HEAD_BLOCKS
    with pytest.raises(ValueError, match="float32"):
        Head(np.zeros((4, 4), np.float64))


def test_a_token_graph_without_its_head_is_a_clear_load_error(tmp_path):
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(SHIPPED, folder)
    assert load_head(folder / "int8") is not None
    (folder / "int8" / HEAD_FILE).unlink()
    with pytest.raises(ModelLoadError, match=HEAD_FILE):
        Engine.load(folder, provider="cpu")


def test_a_long_session_of_prefills_of_every_length_keeps_a_bounded_set_of_output_arrays(inplace, prompt):
    # A live session prefills contexts of ever-different lengths (key changes, trims, re-plans): the output
    # arrays kept for reuse are those of a step, so the process does not grow with each new length.
    from musebot.engine.inplace import KEPT_OUTPUT_ROWS, KEPT_OUTPUTS

    runner = inplace.runner
    for n in range(20, len(prompt) + 1):
        inplace.reset()
        inplace.append(prompt[:n])
        inplace.step()
    assert len(runner._out) <= KEPT_OUTPUTS
    assert all(shape[1] <= KEPT_OUTPUT_ROWS for shape in runner._out)
    assert any(shape[1] == 1 for shape in runner._out)  # a step's output is still reused


def test_a_reserved_engine_never_reallocates_its_cache_or_history_and_answers_alike(reference_dir, model_dir, prompt):
    # A live session reserves its bounded context up front: resets, prefills of every length and steps
    # then run in the same buffers (no growth over a gig), and give the same events as an unreserved engine.
    plain = inplace_engine(reference_dir / "sky_shared", model_dir)
    reserved = inplace_engine(reference_dir / "sky_shared", model_dir)
    reserved.reserve(96)
    assert reserved.n_events == 0 and reserved._past.capacity == 96
    rows_buffer = reserved._history._rows
    cache, cache_buffers = reserved._past, [id(a) for a in reserved._past.arrays]
    for n in (1, 40, 64):
        for engine in (plain, reserved):
            engine.reset()
            engine.append(prompt[:n])
        first = plain.generate(24, WIDE, NO_EOS, np.random.default_rng(n))
        again = reserved.generate(24, WIDE, NO_EOS, np.random.default_rng(n))
        np.testing.assert_array_equal(first, again)
        assert reserved._past.capacity == 96 and reserved._history._rows is rows_buffer
        # Resets empty the same cache (its buffers and IO binding): nothing is allocated per reset.
        assert reserved._past is cache and [id(a) for a in cache.arrays] == cache_buffers
    np.testing.assert_allclose(reserved._history.hidden, reserved.hidden_uncached(reserved.rows), atol=TOL)
    reserved.reset()
    reserved.append(prompt)
    reserved.generate(40, WIDE, NO_EOS, np.random.default_rng(0))  # past the reservation: it grows, as before
    assert reserved._past.capacity >= 104 and reserved._past.length == 104
