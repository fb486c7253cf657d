"""ONNX Runtime adapter of the decoding contract for translators (no torch).

Two graphs, exported by ``seqgen.onnx_export`` from ``Translator.start`` and
``Translator.step`` (names in :mod:`seqgen.models.translator`):

- ``encoder``: ``source_ids`` ``(rows, source_len)`` int64 and ``source_lengths``
  ``(rows,)`` int64 -> the first decoder state, one output per state name;
- ``step``: ``tokens`` ``(rows,)`` int64 and the state -> ``log_probs`` ``(rows, vocab)``
  float32, each row's ``top_log_probs`` and ``top_ids``, and ``new_<name>`` for the recurrent
  names (``hidden``, ``cell``, ``feed``); the
  source side (``memory``, ``keys``, ``source_mask``) is an input only, since it never
  changes.

On the CPU the state is numpy arrays. On CUDA it stays on the GPU as ``OrtValue``s: the
graphs' outputs are bound to device memory with I/O binding and passed straight to the next
step, and ``select`` gathers rows with the bundle's third graph, ``select`` (``rows`` and
the state -> ``selected_<name>``), on the device. Per step only the tokens and row indices
go up, and for greedy and beam search (``narrowed``) only each row's top candidates come
back. (I/O binding also runs on the CPU, which is how the tests cover it without a GPU.)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnxruntime

from seqgen.decoding.contract import State
from seqgen.decoding.onnx_session import (
    STEP_OUTPUTS,
    DeviceState,
    device_of,
    run_select,
    run_session,
)
from seqgen.decoding.onnx_step import NEW_PREFIX
from seqgen.decoding.source_rows import (
    SENTENCE,
    SOURCE_NAMES,
    SOURCES,
    encoder_inputs,
    select_rows,
    with_sentences,
)
from seqgen.errors import CheckpointError
from seqgen.text.vocabulary import BOS_ID

ENCODER_INPUTS = ["source_ids", "source_lengths"]
RECURRENT_NAMES = ("hidden", "cell", "feed")


class OnnxTranslatorStep(DeviceState):
    """``start`` runs the ``encoder`` graph; ``step`` runs the ``step`` graph."""

    GRAPHS = ("encoder", "step", "select")

    def __init__(
        self,
        encoder: onnxruntime.InferenceSession,
        step: onnxruntime.InferenceSession,
        select: onnxruntime.InferenceSession | None = None,
        *,
        io_binding: bool | None = None,
    ) -> None:
        self.encoder_session = encoder
        self.step_session = step
        self.select_session = select
        self.state_names, self.recurrent_names = translator_state_names(encoder, step)
        self.device = device_of(step)
        self._keep_state_on_device(select, io_binding)

    def start(self, sources: Sequence[Sequence[int]]) -> tuple[State, np.ndarray]:
        """Encode a batch of sources (token ids without EOS; EOS is appended here).

        Returns the state (``(batch, ...)`` per name) and ``first_tokens`` ``(batch,)``, BOS.
        """
        source_ids, source_lengths = encoder_inputs(sources)
        outputs = run_session(
            self.encoder_session,
            {"source_ids": source_ids, "source_lengths": source_lengths},
            host_outputs=(),
            device_outputs=self.state_names,
            device=self.bound_device,
        )
        state = with_sentences(outputs, len(sources))
        return state, np.full(len(sources), BOS_ID, dtype=np.int64)

    def step(self, tokens: np.ndarray, state: State) -> tuple[np.ndarray, State]:
        """``tokens`` ``(rows,)`` -> ``log_probs`` ``(rows, vocab)`` float32 and the new state."""
        tokens = np.ascontiguousarray(tokens, dtype=np.int64)
        log_probs, outputs = self._run_step(
            {"tokens": tokens, **{name: state[name] for name in self.state_names}},
            [NEW_PREFIX + name for name in self.recurrent_names],
        )
        new_state = dict(state)
        new_state.update((name, outputs[NEW_PREFIX + name]) for name in self.recurrent_names)
        return log_probs, new_state

    def select(self, state: State, rows: np.ndarray) -> State:
        """Gather ``rows`` of the state (on the host, the source side only when sentences
        change; on the device, everything in one run of the ``select`` graph)."""
        if not self.io_binding:
            return select_rows(state, rows, lambda array, index: array[index])
        assert self.select_session is not None  # checked in __init__
        rows = np.ascontiguousarray(rows, dtype=np.int64)
        selected = run_select(self.select_session, state, self.state_names, rows, self.device)
        return {**selected, SENTENCE: state[SENTENCE][rows], SOURCES: state[SOURCES]}


def translator_state_names(
    encoder: onnxruntime.InferenceSession, step: onnxruntime.InferenceSession
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The state names and their recurrent subset; CheckpointError if the graphs do not
    have the inputs and outputs this adapter expects."""
    names = tuple(o.name for o in encoder.get_outputs())
    recurrent = tuple(n for n in names if n in RECURRENT_NAMES)
    expected = {
        "encoder": (ENCODER_INPUTS, list(names)),
        "step": (["tokens", *names], [*STEP_OUTPUTS, *(NEW_PREFIX + n for n in recurrent)]),
    }
    usable = "hidden" in recurrent and set(SOURCE_NAMES) <= set(names)
    usable = usable and not {SENTENCE, SOURCES} & set(names)
    for label, session in (("encoder", encoder), ("step", step)):
        inputs = [i.name for i in session.get_inputs()]
        outputs = [o.name for o in session.get_outputs()]
        if not usable or (inputs, outputs) != expected[label]:
            raise CheckpointError(
                f"the {label} graph has inputs {inputs} and outputs {outputs}, expected "
                f"{expected[label][0]} and {expected[label][1]}; re-export the bundle"
            )
    return names, recurrent
