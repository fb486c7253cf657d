"""Beam search's records, as arrays: the tokens of every beam and the best hypotheses so far.

Beam search (``beam.py``) once kept each beam's tokens as a ``(rows, length)`` matrix copied at
every step, and each hypothesis as a Python object sorted into a list per sentence: at 1,000
sentences (5,000 rows) that bookkeeping cost as much host time per step as the model's step
on a GPU. Here a step costs O(rows) numpy work: :class:`Trail` keeps back-pointers, and
:class:`Kept` ranks hypotheses with a few vectorized sorts; the tokens of a hypothesis are
read back only for those returned.
"""

from __future__ import annotations

import numpy as np

from seqgen.decoding.search import Hypothesis


class Trail:
    """Every step's beams as back-pointers, as in OpenNMT-py and fairseq.

    Step ``k`` (the ``k + 1``-th generated token) has one entry per beam row of that step:
    its ``token_ids``, ``log_probs`` (float64) and ``parents`` (its row at step ``k - 1``, or
    for ``k = 0`` its row in ``first_tokens``). A beam is named by ``(step, row)``; step
    ``-1`` is a beam with no token yet, its row an index into ``first_tokens``.
    """

    def __init__(self, first_tokens: np.ndarray) -> None:
        self.first_tokens = first_tokens  # (rows,) int64, the token each first row fed
        self.parents: list[np.ndarray] = []
        self.token_ids: list[np.ndarray] = []
        self.log_probs: list[np.ndarray] = []

    def append(self, parents: np.ndarray, token_ids: np.ndarray, log_probs: np.ndarray) -> None:
        """Record the next step: ``(rows,)`` each of parents, tokens and their log-probs."""
        self.parents.append(parents)
        self.token_ids.append(token_ids)
        self.log_probs.append(log_probs)

    def paths(
        self, steps: np.ndarray, rows: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Walk ``n`` beams ``(steps, rows)`` back to their start.

        Returns ``token_ids`` ``(n, width)`` int64 and ``log_probs`` ``(n, width)`` float64,
        where ``width = steps.max() + 1`` and beam ``i`` fills its first ``steps[i] + 1``
        columns (zeros after), and ``roots`` ``(n,)``: each beam's row in ``first_tokens``.
        """
        width = int(steps.max(initial=-1)) + 1
        token_ids = np.zeros((rows.size, width), dtype=np.int64)
        log_probs = np.zeros((rows.size, width))
        cursor = np.array(rows, dtype=np.int64)
        for step in range(width - 1, -1, -1):
            # One fancy index per step for all beams that reach back this far.
            active = np.flatnonzero(steps >= step)
            at = cursor[active]
            token_ids[active, step] = self.token_ids[step][at]
            log_probs[active, step] = self.log_probs[step][at]
            cursor[active] = self.parents[step][at]
        return token_ids, log_probs, cursor


class Kept:
    """Per sentence, the ``limit`` best hypotheses found so far, best first (by normalized
    score; ties: the one offered first), in one ``(batch, limit, 5)`` float64 table. An empty
    slot has a normalized score of ``-inf``; every hypothesis offered has a finite one.

    A hypothesis is a beam of :class:`Trail` (``steps``, ``rows``: whole numbers, exact in
    float64), its cumulative ``scores`` and ``normalized`` scores, and for one that ended with
    EOS the EOS's log-prob (``eos_log_probs``; NaN: unfinished), since EOS never becomes a
    beam. One table, so that :meth:`offer` moves all five with one gather: at 64 sentences a
    step's numpy calls, not their work, are its cost.
    """

    NORMALIZED, SCORES, STEPS, ROWS, EOS_LOG_PROBS = range(5)

    def __init__(self, batch: int, limit: int) -> None:
        self.table = np.zeros((batch, limit, 5))
        self.table[:, :, self.NORMALIZED] = -np.inf
        self.table[:, :, self.STEPS] = -1
        self.table[:, :, self.EOS_LOG_PROBS] = np.nan

    @property
    def normalized(self) -> np.ndarray:
        """``(batch, limit)`` normalized scores, best first (``-inf``: empty)."""
        return self.table[:, :, self.NORMALIZED]

    def keep_empty(self, sentences: np.ndarray) -> None:
        """Give ``sentences`` the empty unfinished hypothesis (no token may be generated)."""
        self.table[sentences, 0, self.NORMALIZED] = 0.0
        self.table[sentences, 0, self.SCORES] = 0.0

    def offer(
        self,
        sentences: np.ndarray,
        scores: np.ndarray,
        penalty: float,
        *,
        step: int,
        rows: np.ndarray,
        eos_log_probs: np.ndarray | None = None,
    ) -> None:
        """Offer ``n`` hypotheses of one length, in order: ``(n,)`` batch index of each,
        its cumulative score (divided by ``penalty`` to rank it) and its beam
        ``(step, rows)``; ``eos_log_probs`` ``(n,)`` for hypotheses ending with EOS.

        The same as inserting them one by one into a per-sentence list kept sorted by a stable
        sort and cut to ``limit``: each sentence's current hypotheses and its newcomers, in
        that order, are sorted together (stable) and the best ``limit`` stay.
        """
        count = sentences.size
        if count == 0:
            return
        limit = self.table.shape[1]
        order = np.argsort(sentences, kind="stable")  # grouped by sentence, in offer order
        grouped = sentences[order]
        first = np.flatnonzero(np.r_[True, grouped[1:] != grouped[:-1]])  # each group's start
        unique = grouped[first]
        counts = np.diff(np.r_[first, count])
        group = np.repeat(np.arange(unique.size), counts)
        column = limit + np.arange(count) - np.repeat(first, counts)
        offered = np.empty((count, 5))
        offered[:, self.NORMALIZED] = scores / penalty
        offered[:, self.SCORES] = scores
        offered[:, self.STEPS] = step
        offered[:, self.ROWS] = rows
        offered[:, self.EOS_LOG_PROBS] = np.nan if eos_log_probs is None else eos_log_probs
        pool = np.zeros((unique.size, limit + int(counts.max()), 5))
        pool[:, limit:, self.NORMALIZED] = -np.inf
        pool[:, :limit] = self.table[unique]
        pool[group, column] = offered[order]
        best = np.argsort(-pool[:, :, self.NORMALIZED], axis=1, kind="stable")[:, :limit]
        self.table[unique] = pool[np.arange(unique.size)[:, None], best]

    def hypotheses(self, trail: Trail, n_best: int) -> list[list[Hypothesis]]:
        """Per sentence, its (up to) ``n_best`` best hypotheses as :class:`Hypothesis`."""
        found: list[list[Hypothesis]] = [[] for _ in range(self.table.shape[0])]
        sentences, ranks = np.nonzero(np.isfinite(self.normalized[:, :n_best]))
        kept = self.table[sentences, ranks]  # (n, 5)
        steps = kept[:, self.STEPS].astype(np.int64)
        token_ids, log_probs, _ = trail.paths(steps, kept[:, self.ROWS].astype(np.int64))
        for i, sentence in enumerate(sentences.tolist()):
            length = int(steps[i]) + 1
            eos_log_prob = float(kept[i, self.EOS_LOG_PROBS])
            finished = not np.isnan(eos_log_prob)
            found[sentence].append(
                Hypothesis(
                    tokens=tuple(token_ids[i, :length].tolist()),
                    score=float(kept[i, self.SCORES]),
                    token_log_probs=(
                        *log_probs[i, :length].tolist(),
                        *((eos_log_prob,) if finished else ()),
                    ),
                    finished=finished,
                    normalized_score=float(kept[i, self.NORMALIZED]),
                )
            )
        return found
