"""Sampling filters on known distributions: what survives temperature, masks, top-k, top-p and min-p."""

from __future__ import annotations

import numpy as np
import pytest

from musebot.engine.sampling import (
    SamplerSettings,
    candidates,
    choose,
    filtered_probabilities,
    sample,
    sample_ids,
    sample_one,
)

# A known distribution: softmax of these logits is exactly [0.5, 0.3, 0.15, 0.05].
PROBS = np.array([0.5, 0.3, 0.15, 0.05])
LOGITS = np.log(PROBS)[None, :]
OFF = {"top_p": 1.0, "top_k": 0, "min_p": 0.0}


def test_no_filter_gives_the_softmax():
    probs = filtered_probabilities(LOGITS, SamplerSettings(**OFF))
    np.testing.assert_allclose(probs[0], PROBS)


def test_masked_ids_get_zero_and_the_rest_is_renormalised():
    # Only the two least likely ids may be played: they share all the mass in their own ratio (3:1),
    # unlike the reference, which leaves them at 0.15 and 0.05 before top-p.
    allowed = np.array([False, False, True, True])
    probs = filtered_probabilities(LOGITS, SamplerSettings(**OFF), allowed)
    np.testing.assert_allclose(probs[0], [0.0, 0.0, 0.75, 0.25])


def test_top_p_is_measured_on_the_allowed_mass():
    # Allowed mass is 0.2 < top_p: the reference would apply no nucleus cut; here 0.75 >= 0.7 keeps one id.
    allowed = np.array([False, False, True, True])
    probs = filtered_probabilities(LOGITS, SamplerSettings(top_p=0.7, top_k=0), allowed)
    np.testing.assert_allclose(probs[0], [0.0, 0.0, 1.0, 0.0])


@pytest.mark.parametrize(
    ("top_p", "expected"),
    [
        (0.4, [1.0, 0.0, 0.0, 0.0]),  # the most likely token always survives
        (0.7, [0.625, 0.375, 0.0, 0.0]),
        (0.79, [0.625, 0.375, 0.0, 0.0]),  # 0.5 + 0.3 already reaches 0.79: the prefix is complete
        (0.9, [0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0.0]),
    ],
)
def test_top_p_keeps_the_smallest_prefix_reaching_p(top_p, expected):
    probs = filtered_probabilities(LOGITS, SamplerSettings(top_p=top_p, top_k=0))
    np.testing.assert_allclose(probs[0], expected)


def test_top_k_keeps_the_k_most_likely():
    probs = filtered_probabilities(LOGITS, SamplerSettings(top_p=1.0, top_k=2))
    np.testing.assert_allclose(probs[0], [0.625, 0.375, 0.0, 0.0])


def test_min_p_drops_tokens_below_a_fraction_of_the_best():
    # Threshold 0.2 * 0.5 = 0.1 removes only the 0.05 token.
    probs = filtered_probabilities(LOGITS, SamplerSettings(top_p=1.0, top_k=0, min_p=0.2))
    np.testing.assert_allclose(probs[0], [0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0.0])


def test_temperature_sharpens_and_zero_is_greedy():
    hot = filtered_probabilities(LOGITS, SamplerSettings(temperature=2.0, **OFF))[0]
    expected = np.sqrt(PROBS) / np.sqrt(PROBS).sum()
    np.testing.assert_allclose(hot, expected)
    greedy = filtered_probabilities(LOGITS[:, ::-1], SamplerSettings(temperature=0.0))[0]
    np.testing.assert_array_equal(greedy, [0.0, 0.0, 0.0, 1.0])


def test_filters_work_row_by_row_in_a_batch():
    logits = np.stack([np.log(PROBS), np.log(PROBS[::-1])])
    probs = filtered_probabilities(logits, SamplerSettings(top_p=1.0, top_k=1))
    np.testing.assert_array_equal(probs, [[1, 0, 0, 0], [0, 0, 0, 1]])


def test_sampled_frequencies_follow_the_filtered_distribution():
    rng = np.random.default_rng(7)
    logits = np.repeat(LOGITS, 40000, axis=0)
    draws = sample(logits, SamplerSettings(top_p=0.9, top_k=0), rng)
    frequencies = np.bincount(draws, minlength=4) / len(draws)
    np.testing.assert_allclose(frequencies, [0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0.0], atol=0.01)


def test_same_seed_same_choices_and_per_row_generators_match_single_rows():
    rng_logits = np.random.default_rng(0).normal(size=(3, 50)) * 3
    settings = SamplerSettings(temperature=1.0, top_p=0.95, top_k=10)
    a = sample(rng_logits, settings, np.random.default_rng(42))
    b = sample(rng_logits, settings, np.random.default_rng(42))
    np.testing.assert_array_equal(a, b)
    batched = sample(rng_logits, settings, [np.random.default_rng(s) for s in (1, 2, 3)])
    single = [sample(rng_logits[i : i + 1], settings, np.random.default_rng(s))[0] for i, s in enumerate((1, 2, 3))]
    np.testing.assert_array_equal(batched, single)


def test_sample_ids_returns_vocabulary_ids_from_the_allowed_set_only():
    logits = np.zeros((200, 100))
    logits[:, 5] = 10.0  # the favourite is not allowed
    ids = np.array([20, 21, 22])
    chosen = sample_ids(logits, ids, SamplerSettings(**OFF), np.random.default_rng(1))
    assert set(chosen.tolist()) == {20, 21, 22}


def test_choose_never_returns_a_zero_probability_entry():
    probs = np.array([[0.3, 0.0, 0.7, 0.0], [0.0, 1.0, 0.0, 0.0]])
    u = np.array([0.9999999999, 0.0])
    np.testing.assert_array_equal(choose(probs, u), [2, 1])


@pytest.mark.parametrize(
    "kwargs",
    [{"temperature": -1.0}, {"top_p": 0.0}, {"top_p": 1.5}, {"top_k": -1}, {"min_p": 1.0}],
)
def test_bad_settings_are_refused_with_a_message(kwargs):
    with pytest.raises(ValueError, match="must be"):
        SamplerSettings(**kwargs)


def test_a_mask_allowing_nothing_is_an_error_not_a_nan():
    with pytest.raises(ValueError, match="no allowed token"):
        filtered_probabilities(LOGITS, SamplerSettings(), np.zeros(4, bool))


@pytest.mark.parametrize(
    "settings",
    [SamplerSettings(), SamplerSettings(top_k=0, top_p=0.5), SamplerSettings(temperature=0.7, min_p=0.1),
     SamplerSettings(temperature=0.0), SamplerSettings(top_k=3, top_p=1.0)],
)
@pytest.mark.parametrize("width", [7, 64, 300])  # 300 with top-k off: the long candidate list (numpy) path
def test_single_row_path_picks_what_the_batched_path_picks(settings, width):
    rng = np.random.default_rng(5)
    logits = (rng.normal(size=(2000, width)) * 2).astype(np.float32)
    u = rng.random(2000)
    index, probs = candidates(logits.astype(np.float64), settings)
    batched = index[np.arange(2000), choose(probs, u)]
    single = [sample_one(logits[i], settings, u[i]) for i in range(2000)]
    np.testing.assert_array_equal(batched, single)
