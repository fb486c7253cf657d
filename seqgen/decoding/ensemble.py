"""Ensemble decoding: several step functions decoding as one (numpy only, like search).

:class:`EnsembleStep` implements the decoding contract over N member step functions. Its
state is the tuple of the members' states (search never looks inside a state, so a tuple
serves as well as a mapping); ``step`` steps every member on the same tokens and returns the
mean of their log-probabilities, ``select`` gathers the same rows of every member's state.

The mean of log-softmaxes, not renormalised (OpenNMT-py's default; Marian sums them, which
ranks alike; fairseq averages probabilities instead). Not renormalising keeps a hypothesis's
score exactly the mean of the members' scores of it (the sum over steps of a mean is the mean
of the sums), whereas a per-step ``log Z`` would differ from row to row and re-rank beams by
something no member scored. The geometric mean gives a token that any member rules out
(``-inf``, e.g. outside its lexical shortlist) ``-inf``.

Members are never narrowed: a member's top ``K`` leaves its other log-probs unknown, and a
token in one member's top ``K`` but not another's has no exact mean. Every member returns all
its log-probs; the ensemble's own ``narrowed`` view (greedy and beam search ask for it)
averages them and hands the search the top ``K`` of the exact mean (:func:`top_log_probs`),
so that the search ranks ``K``, not ``vocab``, candidates per row. A member with a
``compact_step`` may return them over a lexical shortlist's ``M`` tokens only
(:class:`ColumnLogProbs`); where every member does so over the same tokens, the mean is
taken over those ``M`` columns (a third of the vocabulary), else each is made dense first.
"""

from __future__ import annotations

import contextlib
import copy
import functools
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from seqgen.decoding.contract import ColumnLogProbs, State, StepFunction, TopLogProbs

EnsembleState = tuple[State, ...]
"""The members' states, in the members' order."""


def average_log_probs(member_log_probs: Sequence[np.ndarray]) -> np.ndarray:
    """The mean of N ``(rows, vocab)`` float32 log-prob arrays, as float32 ``(rows, vocab)``.

    Exactly the float64 mean rounded once to float32, so that N equal arrays give that array
    back bit for bit (an ensemble of a model with itself decodes as the model does); a
    ``-inf`` in any member stays ``-inf``. Two members are summed in float32: ``(a + b) / 2``
    rounds once either way (halving is exact), at half the memory traffic.
    """
    first = member_log_probs[0]
    for log_probs in member_log_probs:
        if isinstance(log_probs, TopLogProbs):
            raise TypeError("an ensemble averages every log-prob; its members must not narrow")
        if log_probs.shape != first.shape:
            raise ValueError(
                f"members' log-probs differ in shape: {log_probs.shape} and {first.shape}"
            )
    if len(member_log_probs) == 2 and all(lp.dtype == np.float32 for lp in member_log_probs):
        total = np.add(first, member_log_probs[1])
        return np.multiply(total, np.float32(0.5), out=total)
    total = np.zeros(first.shape, dtype=np.float64)
    for log_probs in member_log_probs:
        total += log_probs
    return (total / len(member_log_probs)).astype(np.float32)


def top_log_probs(log_probs: np.ndarray, candidates: int) -> TopLogProbs:
    """Each row's ``candidates`` best of ``(rows, vocab)`` float32 log-probs, best first.

    A member's lexical shortlist leaves most of a row ``-inf``, and numpy's argpartition is
    about 9x slower on such runs of equal values (500 x 8,000, 97% ``-inf``: 98 against 11 ms);
    it ranks distinct stand-ins for them instead, below every finite log-prob, and the values
    returned are the log-probs themselves (``-inf`` where a row has fewer finite ones).
    """
    vocab = log_probs.shape[1]
    keys = np.where(np.isneginf(log_probs), _stand_ins(vocab), log_probs)
    best = np.argpartition(keys, vocab - candidates, axis=1)[:, vocab - candidates :]
    values = np.take_along_axis(log_probs, best, axis=1)
    order = np.argsort(-np.take_along_axis(keys, best, axis=1), axis=1)
    token_ids = np.take_along_axis(best, order, axis=1).astype(np.int64)
    return TopLogProbs(np.take_along_axis(values, order, axis=1), token_ids)


def _narrowed_mean(
    member_log_probs: list[np.ndarray], columns: ColumnLogProbs | None, candidates: int
) -> np.ndarray | TopLogProbs:
    """The top ``candidates`` of the members' mean per row, or where the members allow no
    more tokens than that, the whole mean ``(rows, vocab)``.

    ``member_log_probs`` are ``(rows, vocab)``, or ``(rows, S)`` over each row's
    ``columns.columns`` (every member's alike). Only the columns the first member scores in
    some row are averaged: any other is ``-inf`` in the mean (with lexical shortlists, each
    sentence's own, about 250 of 8,000 tokens).
    """
    first = member_log_probs[0]
    finite = np.flatnonzero(np.isfinite(first).any(axis=0))  # (M',)
    if finite.size <= candidates:
        return _dense(average_log_probs(member_log_probs), columns)
    if finite.size < first.shape[1]:
        member_log_probs = [log_probs[:, finite] for log_probs in member_log_probs]
    top = top_log_probs(average_log_probs(member_log_probs), candidates)
    token_ids = top.token_ids if finite.size == first.shape[1] else finite[top.token_ids]
    if columns is not None:  # each row's columns of its shortlist -> token ids
        token_ids = np.take_along_axis(columns.columns, token_ids, axis=1)
    return TopLogProbs(top.values, token_ids)


def _dense(mean: np.ndarray, columns: ColumnLogProbs | None) -> np.ndarray:
    """``mean`` ``(rows, vocab)``, or ``(rows, S)`` over ``columns`` made ``(rows, vocab)``."""
    if columns is None:
        return mean
    return ColumnLogProbs(mean, columns.columns, columns.vocab_size).dense()


def _common_columns(
    member_log_probs: list[np.ndarray | ColumnLogProbs],
) -> tuple[list[np.ndarray], ColumnLogProbs | None]:
    """The members' log-probs as arrays over the same columns: their ``(rows, S)`` values
    and the first member's :class:`ColumnLogProbs` where all share its columns (the same
    shortlist, the same sources), else every member's ``(rows, vocab)``."""
    first = member_log_probs[0]
    if isinstance(first, ColumnLogProbs) and all(
        isinstance(other, ColumnLogProbs)
        and (other.columns is first.columns or np.array_equal(other.columns, first.columns))
        for other in member_log_probs[1:]
    ):
        return [log_probs.values for log_probs in member_log_probs], first  # type: ignore[union-attr]
    return [
        log_probs.dense() if isinstance(log_probs, ColumnLogProbs) else log_probs
        for log_probs in member_log_probs
    ], None


def _compact_step(
    member: StepFunction, tokens: np.ndarray, state: State
) -> tuple[np.ndarray | ColumnLogProbs, State]:
    """``member.compact_step`` where it has one (log-probs over its shortlist), else its
    ``step``."""
    compact = getattr(member, "compact_step", None)
    return compact(tokens, state) if compact is not None else member.step(tokens, state)


@functools.cache
def _stand_ins(vocab: int) -> np.ndarray:
    """``(vocab,)`` float32 distinct values far below any log-prob: -1e30 - 1e26 x token id
    (1e26 is over a thousand float32 steps at these magnitudes)."""
    return np.float32(-1e30) - np.arange(vocab, dtype=np.float32) * np.float32(1e26)


class EnsembleStep:
    """N step functions as one: the mean of their log-probs at every step.

    ``members`` share the target vocabulary (the caller checks it: token ``i`` must mean the
    same piece to every member). Each keeps its own state, backend and device.
    """

    candidates: int | None = None  # set on the narrowed view

    def __init__(self, members: Sequence[StepFunction]) -> None:
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least two members, got {len(members)}")
        self.members = tuple(members)

    def narrowed(self, candidates: int) -> EnsembleStep:
        """A view whose steps return the top ``candidates`` of the mean per row
        (``seqgen.decoding.contract.narrowed``); the members are never narrowed."""
        view = copy.copy(self)
        view.candidates = candidates
        return view

    @property
    def device(self) -> Any:
        """The first member's device (where the pipeline sizes its batches for)."""
        return getattr(self.members[0], "device", "cpu")

    def step(
        self, tokens: np.ndarray, state: EnsembleState
    ) -> tuple[np.ndarray | TopLogProbs, EnsembleState]:
        """``tokens`` ``(rows,)`` -> the mean log-probs ``(rows, vocab)`` float32 (narrowed:
        each row's best of them) and the members' new states."""
        stepped = [
            _compact_step(member, tokens, member_state)
            for member, member_state in zip(self.members, state, strict=True)
        ]
        new_state = tuple(member_state for _, member_state in stepped)
        member_log_probs, columns = _common_columns([log_probs for log_probs, _ in stepped])
        if self.candidates is None:
            return _dense(average_log_probs(member_log_probs), columns), new_state
        return _narrowed_mean(member_log_probs, columns, self.candidates), new_state

    def select(self, state: EnsembleState, rows: np.ndarray) -> EnsembleState:
        """The same ``rows`` ``(new_rows,)`` of every member's state."""
        return tuple(
            member.select(member_state, rows)
            for member, member_state in zip(self.members, state, strict=True)
        )

    @contextlib.contextmanager
    def concurrent_batches(self) -> Iterator[int]:
        """The members' blocks (see the translation pipeline), all held; as many batches at
        once as the most cautious member allows.

        Each member is first asked alone, since its answer depends on the process state it
        finds: a PyTorch member on the CPU runs torch on one thread for the block and allows
        one batch per former thread, and a second PyTorch member entered inside that block
        would find one thread and allow one batch. A member without such a block allows one.
        """
        allowed = []
        for member in self.members:
            with _batches_of(member) as workers:
                allowed.append(workers)
        with contextlib.ExitStack() as stack:
            for member in self.members:
                stack.enter_context(_batches_of(member))
            yield min(allowed)


def _batches_of(member: StepFunction) -> contextlib.AbstractContextManager[int]:
    """``member.concurrent_batches()``, or one batch at a time where it has none."""
    batches = getattr(member, "concurrent_batches", None)
    return batches() if batches is not None else contextlib.nullcontext(1)
