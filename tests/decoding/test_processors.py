"""Logit processors: hand-computed results, no mutation of the input."""

from __future__ import annotations

import numpy as np
import pytest

from seqgen.decoding.processors import (
    apply_temperature,
    ban_tokens,
    ban_tokens_per_row,
    log_softmax,
    no_repeat_ngram_bans,
    top_k_filter,
    top_p_filter,
)

# Probabilities 0.05, 0.5, 0.15, 0.3 (best first: 1, 3, 2, 0) in the first row; a uniform row.
PROBS = np.array([[0.05, 0.5, 0.15, 0.3], [0.25, 0.25, 0.25, 0.25]])
SCORES = np.log(PROBS).astype(np.float32)


def finite_tokens(scores: np.ndarray) -> list[list[int]]:
    return [np.flatnonzero(np.isfinite(row)).tolist() for row in scores]


def test_processors_never_mutate_their_input() -> None:
    scores = SCORES.copy()
    apply_temperature(scores, 2.0)
    top_k_filter(scores, 2)
    top_p_filter(scores, 0.5)
    ban_tokens(scores, [1])
    ban_tokens(scores, [1], np.array([True, False]))
    ban_tokens_per_row(scores, [[0], [1, 2]])
    log_softmax(scores)
    np.testing.assert_array_equal(scores, SCORES)


def test_apply_temperature_divides_and_keeps_dtype() -> None:
    hotter = apply_temperature(SCORES, 2.0)
    assert hotter.dtype == np.float32
    np.testing.assert_allclose(hotter, SCORES / 2)


@pytest.mark.parametrize("temperature", [0.0, -1.0])
def test_apply_temperature_rejects_non_positive(temperature: float) -> None:
    with pytest.raises(ValueError, match="temperature"):
        apply_temperature(SCORES, temperature)


def test_top_k_keeps_the_k_best_unchanged() -> None:
    filtered = top_k_filter(SCORES, 2)
    assert finite_tokens(filtered)[0] == [1, 3]
    assert len(finite_tokens(filtered)[1]) == 2  # ties: exactly k, whichever they are
    kept = np.isfinite(filtered)
    np.testing.assert_array_equal(filtered[kept], SCORES[kept])
    assert np.all(np.isneginf(filtered[~kept]))


@pytest.mark.parametrize("k", [0, -1, 4, 10])
def test_top_k_off(k: int) -> None:
    np.testing.assert_array_equal(top_k_filter(SCORES, k), SCORES)


@pytest.mark.parametrize(
    ("p", "expected"),
    [
        (1e-9, [1]),  # the best token is always kept
        (0.45, [1]),  # 0.5 already reaches p
        (0.6, [1, 3]),
        (0.75, [1, 3]),  # 0.5 + 0.3 reaches p
        (0.85, [1, 3, 2]),
        (0.99, [0, 1, 2, 3]),
    ],
)
def test_top_p_keeps_the_smallest_nucleus(p: float, expected: list[int]) -> None:
    filtered = top_p_filter(SCORES[:1], p)
    assert finite_tokens(filtered)[0] == sorted(expected)
    kept = np.isfinite(filtered)
    np.testing.assert_array_equal(filtered[kept], SCORES[:1][kept])


def test_top_p_renormalises_unnormalised_scores() -> None:
    # Scores shifted by a constant are the same distribution: same nucleus.
    np.testing.assert_array_equal(
        np.isfinite(top_p_filter(SCORES + 7, 0.6)), np.isfinite(top_p_filter(SCORES, 0.6))
    )


def test_top_p_off_and_bad_values() -> None:
    np.testing.assert_array_equal(top_p_filter(SCORES, 1.0), SCORES)
    for p in (0.0, -0.5):
        with pytest.raises(ValueError, match="top_p"):
            top_p_filter(SCORES, p)


def test_ban_tokens_everywhere_and_by_row_mask() -> None:
    assert finite_tokens(ban_tokens(SCORES, [1, 3])) == [[0, 2], [0, 2]]
    masked = ban_tokens(SCORES, [1], np.array([False, True]))
    assert finite_tokens(masked) == [[0, 1, 2, 3], [0, 2, 3]]


def test_ban_tokens_per_row() -> None:
    assert finite_tokens(ban_tokens_per_row(SCORES, [[0, 2], []])) == [[1, 3], [0, 1, 2, 3]]
    np.testing.assert_array_equal(ban_tokens_per_row(SCORES, [[], []]), SCORES)


def test_no_repeat_ngram_bans() -> None:
    history = [[5, 1, 2, 3, 1, 2, 4, 1], [1, 2], [7]]
    # Bigrams: after 1 came 2 (twice) and nothing else.
    assert no_repeat_ngram_bans(history, 2) == [[2, 2], [], []]
    # Trigrams: row 0 ends with (4, 1), never seen before; (1, 2) was followed by 3.
    assert no_repeat_ngram_bans(history, 3) == [[], [], []]
    assert no_repeat_ngram_bans([[1, 2, 3, 1, 2]], 3) == [[3]]
    # n = 1 bans every token already seen; n = 0 bans nothing.
    assert sorted(set(no_repeat_ngram_bans(history, 1)[0])) == [1, 2, 3, 4, 5]
    assert no_repeat_ngram_bans(history, 0) == [[], [], []]
    # A history shorter than n - 1 tokens bans nothing.
    assert no_repeat_ngram_bans([[1]], 3) == [[]]


def test_log_softmax_renormalises_and_keeps_bans() -> None:
    banned = ban_tokens(SCORES + 3, [0])
    renormalised = log_softmax(banned)
    np.testing.assert_allclose(np.exp(renormalised).sum(axis=-1), 1.0, rtol=1e-6)
    assert np.all(np.isneginf(renormalised[:, 0]))
    expected = np.log(PROBS[0, 1:] / PROBS[0, 1:].sum())
    np.testing.assert_allclose(renormalised[0, 1:], expected, rtol=1e-5)
