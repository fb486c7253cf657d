"""The one decoding contract shared by the PyTorch and ONNX Runtime backends.

A *step function* turns the previous token of every row into log-probabilities of the
next token. Its decoder state is a mapping from names to arrays, every one batch-major
(axis 0 = rows; in beam search rows = batch x beam). The state's arrays stay wherever
the backend keeps them (torch tensors, possibly on a GPU; numpy arrays or ORT values):
search never looks inside, it only asks the step function to ``select`` rows.

How the first state is made is model-specific (a language model is primed with a
prompt, a translator runs its encoder), so ``start`` is not part of this protocol; each
adapter offers its own ``start`` that returns ``(state, first_tokens)``.

Search (``seqgen.decoding.search``) depends on this module and numpy only, so it runs
without torch.

Greedy and beam search read only the few best log-probabilities of each row. A step
function may offer ``narrowed(candidates)`` (see :func:`narrowed`), whose ``step`` returns
each row's best log-probs as :class:`TopLogProbs` ``(rows, K)`` instead of ``(rows, vocab)``:
the model's adapters take them from the step itself (a top-k in the ONNX graph, or in torch),
so only ``K`` numbers per row reach the host and the search ranks ``K``, not ``vocab``,
candidates per row.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

# The best log-probs per row an exported step graph also returns: greedy and beam search (up
# to a beam of 6 with three banned ids) copy these to the host, not the vocabulary; a larger
# beam reads the whole log_probs. 16, not 32: ONNX Runtime's TopK costs about linearly in K
# (1.06 -> 0.50 ms for 300 rows x 1,482), and beam 5 on the bundled translator ran 266 -> 295
# sentences/s with the same output.
TOP_CANDIDATES = 16

State = Mapping[str, Any]
"""Decoder state: name -> batch-major array. Names equal the ONNX graph's input names."""


@dataclass(frozen=True)
class TopLogProbs:
    """Each row's ``K`` highest log-probs, best first: what a narrowed step may return.

    Every other token's log-prob is below the row's last value (and is not needed: search
    asked for at most ``K`` candidates).
    """

    values: np.ndarray  # (rows, K) float32, descending along axis 1
    token_ids: np.ndarray  # (rows, K) int64, the token of each value

    @property
    def shape(self) -> tuple[int, int]:
        return self.values.shape

    def dense(self, vocab_size: int) -> np.ndarray:
        """``(rows, vocab_size)`` log-probs, ``-inf`` outside the top ``K``."""
        full = np.full((self.values.shape[0], vocab_size), -np.inf, dtype=self.values.dtype)
        np.put_along_axis(full, self.token_ids, self.values, axis=1)
        return full

    def take(self, rows: np.ndarray | slice) -> TopLogProbs:
        """The candidates of ``rows`` (an index array or slice over axis 0)."""
        return TopLogProbs(self.values[rows], self.token_ids[rows])


@dataclass(frozen=True)
class ColumnLogProbs:
    """Log-probs of some tokens only: what a member's ``compact_step`` may return to an
    ensemble (:mod:`seqgen.decoding.ensemble`), so that members sharing a lexical shortlist
    are averaged over each row's ``S`` shortlisted tokens, not the whole vocabulary; every
    other token is ``-inf``."""

    values: np.ndarray  # (rows, S) float32: values[i, j] is token columns[i, j]
    columns: np.ndarray  # (rows, S) int64 token ids, ascending; -1 for padding (-inf values)
    vocab_size: int

    def dense(self) -> np.ndarray:
        """``(rows, vocab_size)`` log-probs, ``-inf`` outside each row's ``columns``."""
        full = np.full((self.values.shape[0], self.vocab_size), -np.inf, dtype=self.values.dtype)
        row, column = np.nonzero(self.columns >= 0)
        full[row, self.columns[row, column]] = self.values[row, column]
        return full

    def take(self, rows: np.ndarray | slice) -> ColumnLogProbs:
        """The log-probs of ``rows`` (an index array or slice over axis 0)."""
        return ColumnLogProbs(self.values[rows], self.columns[rows], self.vocab_size)


class StepFunction(Protocol):
    """What search needs from a model: one step, and a gather of rows."""

    def step(self, tokens: np.ndarray, state: State) -> tuple[np.ndarray, State]:
        """Advance every row by one token.

        Args:
            tokens: ``(rows,)`` int64, the previous token of each row.
            state: the state after the previous step; never mutated.

        Returns:
            ``log_probs``: ``(rows, vocab)`` float32 numpy array, log-softmax of the
            next-token scores (a narrowed view may give :class:`TopLogProbs` instead); and
            the new state (same rows, same order).
        """
        ...

    def select(self, state: State, rows: np.ndarray) -> State:
        """Gather rows of every state array on axis 0.

        Args:
            state: a state with ``old_rows`` rows; never mutated.
            rows: ``(new_rows,)`` int64 indices into the old rows (may repeat).

        Returns:
            a state with ``new_rows`` rows.
        """
        ...


def narrowed(step_fn: StepFunction, candidates: int | None) -> StepFunction:
    """``step_fn``, told that search reads only each row's ``candidates`` best log-probs.

    A step function that offers ``narrowed(candidates)`` returns one whose ``step`` gives
    :class:`TopLogProbs` of ``K >= candidates`` per row (or, where it cannot, the full
    ``(rows, vocab)`` log-probs); any other step function, or ``candidates`` None (search
    reads them all), gives ``step_fn`` itself. Search asks for enough candidates that its
    bans (which only remove candidates) never leave it short, so the result is the same as
    with every log-prob.
    """
    narrow = getattr(step_fn, "narrowed", None)
    return step_fn if candidates is None or narrow is None else narrow(candidates)
