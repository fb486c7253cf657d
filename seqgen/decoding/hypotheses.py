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
    score; ties: the one offered first), in ``(batch, limit)`` arrays. An empty slot has a
    normalized score of ``-inf``; every hypothesis offered has a finite one.

    A hypothesis is a beam of :class:`Trail` (``steps``, ``rows``), its cumulative ``scores``
    and ``normalized`` scores, and for one that ended with EOS the EOS's log-prob
    (``eos_log_probs``; NaN: unfinished), since EOS never becomes a beam.
    """

    _FIELDS = ("normalized", "scores", "steps", "rows", "eos_log_probs")

    def __init__(self, batch: int, limit: int) -> None:
        shape = (batch, limit)
        self.normalized = np.full(shape, -np.inf)
        self.scores = np.zeros(shape)
        self.steps = np.full(shape, -1, dtype=np.int64)
        self.rows = np.zeros(shape, dtype=np.int64)
        self.eos_log_probs = np.full(shape, np.nan)

    @property
    def worst(self) -> np.ndarray:
        """``(batch,)`` the normalized score a newcomer must beat: the last kept one's, or
        ``-inf`` while a sentence holds fewer than ``limit``."""
        return self.normalized[:, -1]

    def keep_empty(self, sentences: np.ndarray) -> None:
        """Give ``sentences`` the empty unfinished hypothesis (no token may be generated)."""
        self.normalized[sentences, 0] = 0.0
        self.scores[sentences, 0] = 0.0

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
        if sentences.size == 0:
            return
        limit = self.normalized.shape[1]
        order = np.argsort(sentences, kind="stable")  # grouped by sentence, in offer order
        unique, starts, counts = np.unique(sentences[order], return_index=True, return_counts=True)
        group = np.repeat(np.arange(unique.size), counts)
        column = limit + np.arange(sentences.size) - np.repeat(starts, counts)
        offered = {
            "normalized": scores / penalty,
            "scores": scores,
            "steps": np.full(sentences.size, step, dtype=np.int64),
            "rows": rows,
            "eos_log_probs": np.full(sentences.size, np.nan)
            if eos_log_probs is None
            else eos_log_probs,
        }
        pools = {}
        for name in self._FIELDS:
            current = getattr(self, name)
            pool = np.zeros((unique.size, limit + int(counts.max())), dtype=current.dtype)
            pool[:, :limit] = current[unique]
            pool[:, limit:] = -np.inf if name == "normalized" else 0
            pool[group, column] = offered[name][order]
            pools[name] = pool
        best = np.argsort(-pools["normalized"], axis=1, kind="stable")[:, :limit]
        for name, pool in pools.items():
            getattr(self, name)[unique] = np.take_along_axis(pool, best, axis=1)

    def hypotheses(self, trail: Trail, n_best: int) -> list[list[Hypothesis]]:
        """Per sentence, its (up to) ``n_best`` best hypotheses as :class:`Hypothesis`."""
        sentences, ranks = np.nonzero(np.isfinite(self.normalized[:, :n_best]))
        steps = self.steps[sentences, ranks]
        token_ids, log_probs, _ = trail.paths(steps, self.rows[sentences, ranks])
        found: list[list[Hypothesis]] = [[] for _ in range(self.normalized.shape[0])]
        for i, (sentence, rank) in enumerate(zip(sentences, ranks, strict=True)):
            length = int(steps[i]) + 1
            eos_log_prob = float(self.eos_log_probs[sentence, rank])
            finished = not np.isnan(eos_log_prob)
            found[sentence].append(
                Hypothesis(
                    tokens=tuple(token_ids[i, :length].tolist()),
                    score=float(self.scores[sentence, rank]),
                    token_log_probs=(
                        *log_probs[i, :length].tolist(),
                        *((eos_log_prob,) if finished else ()),
                    ),
                    finished=finished,
                    normalized_score=float(self.normalized[sentence, rank]),
                )
            )
        return found
