"""ONNX Runtime adapter of the decoding contract for language models (no torch).

Three graphs, exported by ``seqgen.bundles.export`` from the callables the PyTorch adapter runs:

- ``prime``: ``token_ids`` ``(rows, time)`` int64 and the state -> the state after them;
- ``step``: ``tokens`` ``(rows,)`` int64 and the state -> ``log_probs`` ``(rows, vocab)``
  float32, each row's ``top_log_probs`` and ``top_ids``, and the new state;
- ``select``: ``rows`` and the state -> ``selected_<name>``, a gather of rows.

State inputs are named after the state keys (``hidden``, and ``cell`` for an LSTM), each
``(rows, num_layers, hidden_size)``; the graphs' state outputs carry the prefix ``new_``.
On the CPU the state is numpy arrays. With I/O binding (by default on CUDA) it stays in
ONNX Runtime's memory as ``OrtValue``s from one step to the next and ``select`` gathers it
there; per step only the tokens go in and, for greedy and beam search (``narrowed``), each
row's top candidates come out. Prompts are primed on the host once, then the state moves.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnxruntime

from seqgen.decoding.contract import State
from seqgen.decoding.float_environment import running_sessions
from seqgen.decoding.onnx_session import (
    NEW_PREFIX,
    STEP_OUTPUTS,
    TOP_K_INPUT,
    DeviceState,
    device_of,
    run_select,
    take_rows,
    to_device,
)
from seqgen.decoding.priming import group_by_length
from seqgen.errors import CheckpointError

ONNX_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


@dataclass(frozen=True)
class StateSpec:
    """One state entry: its name, ``(num_layers, hidden_size)`` per row, and dtype."""

    name: str
    row_shape: tuple[int, ...]
    dtype: type[np.floating]


class OnnxLanguageModelStep(DeviceState):
    """``start`` primes the ``prime`` graph with prompts; ``step`` runs the ``step`` graph."""

    GRAPHS = ("prime", "step", "select")

    def __init__(
        self,
        prime: onnxruntime.InferenceSession,
        step: onnxruntime.InferenceSession,
        select: onnxruntime.InferenceSession | None = None,
        *,
        io_binding: bool | None = None,
    ) -> None:
        self.prime_session = prime
        self.step_session = step
        self.select_session = select
        self.state_specs = state_specs(prime, step)
        self.device = device_of(step)
        self._keep_state_on_device(select, io_binding)

    @property
    def state_names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.state_specs)

    def initial_state(self, rows: int) -> dict[str, np.ndarray]:
        """Zeros, ``(rows, num_layers, hidden_size)`` per state name."""
        return {s.name: np.zeros((rows, *s.row_shape), dtype=s.dtype) for s in self.state_specs}

    def start(self, prompts: Sequence[Sequence[int]]) -> tuple[State, np.ndarray]:
        """Consume every prompt but its last token, which becomes the first step's input.

        Args:
            prompts: ``batch`` non-empty token id lists (callers start them with BOS).

        Returns:
            the state ``(batch, num_layers, hidden_size)`` per name, and ``first_tokens``
            ``(batch,)`` int64.
        """
        state = self.initial_state(len(prompts))
        # Rows of equal prompt length run together, so no padding ever enters the state.
        for length, rows in group_by_length([len(p) - 1 for p in prompts]):
            if length == 0:
                continue
            token_ids = np.array([prompts[r][:-1] for r in rows], dtype=np.int64)
            group_state = self.prime(token_ids, {k: v[rows] for k, v in state.items()})
            for name, array in group_state.items():
                state[name][rows] = array
        first_tokens = np.array([p[-1] for p in prompts], dtype=np.int64)
        if self.io_binding:
            return {n: to_device(a, self.device) for n, a in state.items()}, first_tokens
        return state, first_tokens

    def prime(self, token_ids: np.ndarray, state: State) -> dict[str, np.ndarray]:
        """Run ``token_ids`` ``(rows, time)`` int64 through the model; returns the new state."""
        with running_sessions():
            outputs = self.prime_session.run(
                [NEW_PREFIX + name for name in self.state_names], {"token_ids": token_ids, **state}
            )
        return dict(zip(self.state_names, outputs, strict=True))

    def step(self, tokens: np.ndarray, state: State) -> tuple[np.ndarray, State]:
        """``tokens`` ``(rows,)`` -> ``log_probs`` ``(rows, vocab)`` float32 and the new state."""
        tokens = np.ascontiguousarray(tokens, dtype=np.int64)
        log_probs, outputs = self._run_step(
            {"tokens": tokens, **state},
            [NEW_PREFIX + name for name in self.state_names],
        )
        return log_probs, {name: outputs[NEW_PREFIX + name] for name in self.state_names}

    def select(self, state: State, rows: np.ndarray) -> State:
        """Gather ``rows`` ``(new_rows,)`` on axis 0 of every state array."""
        if self.io_binding:
            assert self.select_session is not None  # checked in __init__
            return run_select(self.select_session, state, self.state_names, rows, self.device)
        rows = np.asarray(rows, dtype=np.int64)
        return {name: take_rows(array, rows) for name, array in state.items()}


def state_specs(
    prime: onnxruntime.InferenceSession, step: onnxruntime.InferenceSession
) -> tuple[StateSpec, ...]:
    """The state entries the graphs share; CheckpointError if they are not the expected ones.

    ``prime`` must take ``token_ids`` and the state and return ``new_<name>`` per entry;
    ``step`` must take ``tokens`` and the state (then ``top_k``, bundle format 5) and return
    ``STEP_OUTPUTS`` then the same.
    """
    prime_inputs = [i.name for i in prime.get_inputs()]
    names = tuple(prime_inputs[1:])
    step_inputs = [i.name for i in step.get_inputs()]
    top_k = [TOP_K_INPUT] if step_inputs[-1:] == [TOP_K_INPUT] else []  # bundle format 5
    expected = {
        "prime": (["token_ids", *names], [NEW_PREFIX + n for n in names]),
        "step": (["tokens", *names, *top_k], [*STEP_OUTPUTS, *(NEW_PREFIX + n for n in names)]),
    }
    for label, session in (("prime", prime), ("step", step)):
        inputs = [i.name for i in session.get_inputs()]
        outputs = [o.name for o in session.get_outputs()]
        if not names or (inputs, outputs) != expected[label]:
            raise CheckpointError(
                f"the {label} graph has inputs {inputs} and outputs {outputs}, expected "
                f"{expected[label][0]} and {expected[label][1]}; re-export the bundle"
            )
    return tuple(_spec(node) for node in step.get_inputs()[1 : len(names) + 1])


def _spec(node: onnxruntime.NodeArg) -> StateSpec:
    """The spec of a ``(rows, num_layers, hidden_size)`` state input."""
    row_shape = tuple(node.shape[1:])
    if node.type not in ONNX_DTYPES or not all(isinstance(d, int) for d in row_shape):
        raise CheckpointError(
            f"state input {node.name!r} is {node.type} of shape {node.shape}; expected float "
            "(rows, num_layers, hidden_size) with fixed sizes after rows; re-export the bundle"
        )
    return StateSpec(node.name, row_shape, ONNX_DTYPES[node.type])
