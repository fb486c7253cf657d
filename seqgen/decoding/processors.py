"""Logit processors: small pure functions on a ``(rows, vocab)`` array of scores.

Each takes the scores of the next token for every row (log-probabilities as returned by a
step function, or those scores after another processor) and returns a *new* array; the input
is never mutated. A removed token gets ``-inf``, so every processor composes with the others
and with :func:`log_softmax`, which renormalises what is left. Callers keep at least one finite
score per row (top-k and top-p always keep the best token).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

NEG_INF = -np.inf


def apply_temperature(scores: np.ndarray, temperature: float) -> np.ndarray:
    """Divide ``(rows, vocab)`` scores by ``temperature`` (> 1 flattens, < 1 sharpens).

    Temperature 0 is rejected rather than read as "argmax": callers use greedy search for that.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}; use greedy search for 0")
    return (scores / temperature).astype(scores.dtype, copy=False)


def top_k_filter(scores: np.ndarray, k: int) -> np.ndarray:
    """Keep exactly the ``k`` best of each row of ``(rows, vocab)`` scores; others get ``-inf``.

    ``k <= 0`` (or ``k >= vocab``) turns the filter off. Ties at the k-th score are broken
    arbitrarily, so exactly ``k`` tokens stay finite (Fan et al., 2018).
    """
    vocab = scores.shape[-1]
    if k <= 0 or k >= vocab:
        return scores.copy()
    # argpartition is O(vocab) per row: no full sort is needed to find the k best.
    best = np.argpartition(scores, vocab - k, axis=-1)[:, vocab - k :]  # (rows, k)
    filtered = np.full_like(scores, NEG_INF)
    np.put_along_axis(filtered, best, np.take_along_axis(scores, best, axis=-1), axis=-1)
    return filtered


def top_p_filter(scores: np.ndarray, p: float) -> np.ndarray:
    """Nucleus filter (Holtzman et al., 2020) on ``(rows, vocab)`` scores.

    Keeps, per row, the smallest set of best tokens whose probability (softmax of the scores)
    reaches ``p``, and any token tied with the last of them; others get ``-inf``. The best token
    is always kept. ``p >= 1`` turns it off.
    """
    if not 0 < p:
        raise ValueError(f"top_p must be in (0, 1], got {p!r}")
    if p >= 1:
        return scores.copy()
    # Sorting values (not indices) and cutting at a score is several times faster than an
    # argsort followed by a scatter.
    sorted_scores = -np.sort(-scores, axis=-1)  # (rows, vocab), best first
    sorted_probs = np.exp(log_softmax(sorted_scores))
    # A token is kept when the tokens ranked before it hold less than p; the best token has
    # nothing before it, so at least one is kept.
    mass_before = np.cumsum(sorted_probs, axis=-1) - sorted_probs
    kept = (mass_before < p).sum(axis=-1, keepdims=True)  # (rows, 1)
    cutoff = np.take_along_axis(sorted_scores, kept - 1, axis=-1)
    return np.where(scores >= cutoff, scores, NEG_INF).astype(scores.dtype, copy=False)


def ban_tokens(
    scores: np.ndarray, token_ids: Sequence[int] | np.ndarray, rows_mask: np.ndarray | None = None
) -> np.ndarray:
    """Set ``token_ids`` to ``-inf`` in the rows where ``rows_mask`` (``(rows,)`` bool) is True.

    ``rows_mask=None`` bans them in every row.
    """
    banned = scores.copy()
    columns = np.asarray(token_ids, dtype=np.int64)
    if rows_mask is None:
        banned[:, columns] = NEG_INF
    else:
        banned[np.flatnonzero(rows_mask)[:, None], columns[None, :]] = NEG_INF
    return banned


def ban_tokens_per_row(
    scores: np.ndarray, token_ids_per_row: Sequence[Sequence[int]]
) -> np.ndarray:
    """Set ``token_ids_per_row[r]`` to ``-inf`` in row ``r`` of ``(rows, vocab)`` scores."""
    banned = scores.copy()
    counts = [len(token_ids) for token_ids in token_ids_per_row]
    if sum(counts) == 0:
        return banned
    rows = np.repeat(np.arange(len(counts)), counts)
    columns = np.fromiter(
        (token_id for token_ids in token_ids_per_row for token_id in token_ids), dtype=np.int64
    )
    banned[rows, columns] = NEG_INF
    return banned


def no_repeat_ngram_bans(history: Sequence[Sequence[int]], n: int) -> list[list[int]]:
    """Tokens that would repeat an ``n``-gram already present in each row's history.

    Args:
        history: per row, the tokens so far (oldest first).
        n: n-gram size; ``n <= 0`` bans nothing, ``n == 1`` bans every token already seen.

    Returns:
        per row, the banned token ids: every token that followed an earlier occurrence of the
        row's last ``n - 1`` tokens.
    """
    if n <= 0:
        return [[] for _ in history]
    bans = []
    for tokens in history:
        tokens = list(tokens)
        if len(tokens) < n - 1:
            bans.append([])
            continue
        suffix = tokens[len(tokens) - (n - 1) :]
        bans.append(
            [
                tokens[start + n - 1]
                for start in range(len(tokens) - n + 1)
                if tokens[start : start + n - 1] == suffix
            ]
        )
    return bans


def log_softmax(scores: np.ndarray) -> np.ndarray:
    """Renormalise ``(rows, vocab)`` scores to log-probabilities along the vocabulary.

    ``-inf`` scores stay ``-inf``; each row needs at least one finite score.
    """
    shifted = scores - scores.max(axis=-1, keepdims=True)  # the shift avoids overflow in exp
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
