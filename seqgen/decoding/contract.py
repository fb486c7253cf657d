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
function may offer ``narrowed(candidates)`` (see :func:`narrowed`): on a GPU, the ONNX
Runtime adapter then copies ``candidates`` numbers per row to the host instead of the whole
vocabulary.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np

State = Mapping[str, Any]
"""Decoder state: name -> batch-major array. Names equal the ONNX graph's input names."""


class StepFunction(Protocol):
    """What search needs from a model: one step, and a gather of rows."""

    def step(self, tokens: np.ndarray, state: State) -> tuple[np.ndarray, State]:
        """Advance every row by one token.

        Args:
            tokens: ``(rows,)`` int64, the previous token of each row.
            state: the state after the previous step; never mutated.

        Returns:
            ``log_probs``: ``(rows, vocab)`` float32 numpy array, log-softmax of the
            next-token scores; and the new state (same rows, same order).
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

    A step function that offers ``narrowed(candidates)`` returns one whose ``log_probs`` are
    exact on (at least) each row's ``candidates`` highest entries and may be ``-inf``
    elsewhere; any other step function, or ``candidates`` None (search reads them all), gives
    ``step_fn`` itself. Search asks for enough candidates that its bans (which only remove
    candidates) never leave it short, so the result is the same as with every log-prob.
    """
    narrow = getattr(step_fn, "narrowed", None)
    return step_fn if candidates is None or narrow is None else narrow(candidates)
