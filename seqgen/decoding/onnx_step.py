"""ONNX Runtime adapter of the decoding contract for language models (no torch).

Two graphs, exported by ``seqgen.onnx_export`` from the callables the PyTorch adapter runs:

- ``prime``: ``token_ids`` ``(rows, time)`` int64 and the state -> the state after them;
- ``step``: ``tokens`` ``(rows,)`` int64 and the state -> ``log_probs`` ``(rows, vocab)``
  float32 and the new state.

State inputs are named after the state keys (``hidden``, and ``cell`` for an LSTM), each
``(rows, num_layers, hidden_size)``; the graphs' state outputs carry the prefix ``new_``.
Here the state is numpy arrays on the host; search only asks for ``step`` and ``select``.
On CUDA that means ONNX Runtime copies the state to the GPU and back at every step: correct,
not yet fast. A device-resident path would keep the state as ``OrtValue``s bound with I/O
binding (``initial_state``, ``prime``, ``step`` and ``select`` are the only places that touch
it) and needs a gather graph for ``select``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime

from seqgen.decoding.contract import State
from seqgen.decoding.priming import group_by_length
from seqgen.errors import CheckpointError, SeqgenError

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
DEVICES = ("auto", "cpu", "cuda")
NEW_PREFIX = "new_"
ONNX_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


@dataclass(frozen=True)
class StateSpec:
    """One state entry: its name, ``(num_layers, hidden_size)`` per row, and dtype."""

    name: str
    row_shape: tuple[int, ...]
    dtype: type[np.floating]


class OnnxLanguageModelStep:
    """``start`` primes the ``prime`` graph with prompts; ``step`` runs the ``step`` graph."""

    def __init__(
        self, prime: onnxruntime.InferenceSession, step: onnxruntime.InferenceSession
    ) -> None:
        self.prime_session = prime
        self.step_session = step
        self.state_specs = state_specs(prime, step)

    @classmethod
    def from_files(
        cls,
        prime_path: str | Path,
        step_path: str | Path,
        *,
        device: str = "auto",
        threads: int | None = None,
    ) -> OnnxLanguageModelStep:
        """Open both graphs on ``device``; arguments as in :func:`create_session`."""
        prime = create_session(prime_path, device=device, threads=threads)
        # Both graphs run where the first one could, so their state never changes device.
        step = create_session(step_path, device=device_of(prime), threads=threads)
        return cls(prime, step)

    @property
    def device(self) -> str:
        """``"cuda"`` or ``"cpu"``: where the sessions run."""
        return device_of(self.step_session)

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
        return state, first_tokens

    def prime(self, token_ids: np.ndarray, state: State) -> dict[str, np.ndarray]:
        """Run ``token_ids`` ``(rows, time)`` int64 through the model; returns the new state."""
        outputs = self.prime_session.run(
            [NEW_PREFIX + name for name in self.state_names], {"token_ids": token_ids, **state}
        )
        return dict(zip(self.state_names, outputs, strict=True))

    def step(self, tokens: np.ndarray, state: State) -> tuple[np.ndarray, State]:
        """``tokens`` ``(rows,)`` -> ``log_probs`` ``(rows, vocab)`` float32 and the new state."""
        tokens = np.ascontiguousarray(tokens, dtype=np.int64)
        log_probs, *new_state = self.step_session.run(
            ["log_probs", *(NEW_PREFIX + name for name in self.state_names)],
            {"tokens": tokens, **state},
        )
        return log_probs, dict(zip(self.state_names, new_state, strict=True))

    def select(self, state: State, rows: np.ndarray) -> State:
        """Gather ``rows`` ``(new_rows,)`` on axis 0 of every state array (a copy)."""
        rows = np.asarray(rows, dtype=np.int64)
        return {name: array[rows] for name, array in state.items()}


def state_specs(
    prime: onnxruntime.InferenceSession, step: onnxruntime.InferenceSession
) -> tuple[StateSpec, ...]:
    """The state entries the graphs share; CheckpointError if they are not the expected ones.

    ``prime`` must take ``token_ids`` and the state and return ``new_<name>`` per entry;
    ``step`` must take ``tokens`` and the state and return ``log_probs`` then the same.
    """
    prime_inputs = [i.name for i in prime.get_inputs()]
    names = tuple(prime_inputs[1:])
    expected = {
        "prime": (["token_ids", *names], [NEW_PREFIX + n for n in names]),
        "step": (["tokens", *names], ["log_probs", *(NEW_PREFIX + n for n in names)]),
    }
    for label, session in (("prime", prime), ("step", step)):
        inputs = [i.name for i in session.get_inputs()]
        outputs = [o.name for o in session.get_outputs()]
        if not names or (inputs, outputs) != expected[label]:
            raise CheckpointError(
                f"the {label} graph has inputs {inputs} and outputs {outputs}, expected "
                f"{expected[label][0]} and {expected[label][1]}; re-export the bundle"
            )
    return tuple(_spec(node) for node in step.get_inputs()[1:])


def _spec(node: onnxruntime.NodeArg) -> StateSpec:
    """The spec of a ``(rows, num_layers, hidden_size)`` state input."""
    row_shape = tuple(node.shape[1:])
    if node.type not in ONNX_DTYPES or not all(isinstance(d, int) for d in row_shape):
        raise CheckpointError(
            f"state input {node.name!r} is {node.type} of shape {node.shape}; expected float "
            "(rows, num_layers, hidden_size) with fixed sizes after rows; re-export the bundle"
        )
    return StateSpec(node.name, row_shape, ONNX_DTYPES[node.type])


def create_session(
    path: str | Path, *, device: str = "auto", threads: int | None = None
) -> onnxruntime.InferenceSession:
    """An ONNX Runtime session on ``device``: ``auto``, ``cpu`` or ``cuda``.

    ``auto`` takes CUDA only where ONNX Runtime lists it *and* a session actually starts on
    it (a CUDA build without a usable driver or cuDNN lists it but fails), else the CPU,
    without printing the provider errors of the failed try. ``cuda`` raises SeqgenError when
    CUDA is not usable. ``threads`` caps the CPU threads of one operator (None: ONNX
    Runtime's default, one per core). CheckpointError when the file is not a readable
    ONNX graph.
    """
    if device not in DEVICES:
        raise SeqgenError(f"unknown device {device!r}; choose one of: {', '.join(DEVICES)}")
    # Severity 3 (errors only): a failed CUDA try logs warnings we replace with a fallback.
    onnxruntime.set_default_logger_severity(3)
    if device != "cpu" and CUDA in onnxruntime.get_available_providers():
        session = _try_cuda(path, threads)
        if session is not None:
            return session
    if device == "cuda":
        raise SeqgenError(
            "CUDA is not usable by ONNX Runtime here (install onnxruntime-gpu with a CUDA "
            "driver and cuDNN); use --device cpu"
        )
    return _open(path, [CPU], threads)


def _try_cuda(path: str | Path, threads: int | None) -> onnxruntime.InferenceSession | None:
    """A session on CUDA, or None where CUDA fails to start."""
    try:
        session = _open(path, [CUDA, CPU], threads)
    except SeqgenError:
        return None  # CUDA failed to start, or a bad file, which the CPU try then names
    # ONNX Runtime may quietly drop a provider that fails to initialise.
    return session if session.get_providers()[0] == CUDA else None


def _open(
    path: str | Path, providers: list[str], threads: int | None
) -> onnxruntime.InferenceSession:
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    if threads is not None:
        options.intra_op_num_threads = threads
    if providers[0] == CPU:
        # The layout optimisations of ORT_ENABLE_ALL are for convolutions, and ONNX Runtime
        # 1.31 crashes (segfault) applying them to a float16 LSTM on the CPU.
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    try:
        return onnxruntime.InferenceSession(str(path), options, providers=providers)
    except Exception as error:  # ONNX Runtime raises its own types for bad files and devices
        detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(
            f"ONNX Runtime cannot load {path} ({detail}); re-export the bundle"
        ) from None


def device_of(session: onnxruntime.InferenceSession) -> str:
    """``"cuda"`` when the session runs on CUDA, else ``"cpu"``."""
    return "cuda" if session.get_providers()[0] == CUDA else "cpu"
