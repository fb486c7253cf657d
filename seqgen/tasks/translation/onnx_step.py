"""ONNX Runtime adapter of the decoding contract for translators (no torch).

Two graphs, exported by ``seqgen.bundles.export`` from ``Translator.start`` and
``Translator.step`` (names in :mod:`seqgen.tasks.translation.model`):

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

A model with a lexical shortlist has a step graph that also takes ``output_ids`` ``(M,)``
int64, the tokens to score (:mod:`seqgen.tasks.translation.shortlist`); its ``log_probs`` are then
``(rows, M)``. ``start`` computes the batch's ids from the bundle's table
(:meth:`OnnxTranslatorStep.use_shortlist`), or passes every token id for
``shortlist=False``; search still sees token ids and ``(rows, vocab)`` log-probs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import numpy as np
import onnxruntime

from seqgen.cores import available_cores
from seqgen.decoding.contract import State
from seqgen.decoding.onnx_session import (
    NEW_PREFIX,
    STEP_OUTPUTS,
    DeviceState,
    device_of,
    open_graphs,
    run_select,
    run_session,
)
from seqgen.errors import CheckpointError
from seqgen.tasks.translation.shortlist import shortlist_ids
from seqgen.tasks.translation.source_rows import (
    OUTPUT_IDS,
    SENTENCE,
    SOURCE_NAMES,
    SOURCES,
    encoder_inputs,
    per_batch,
    select_rows,
    with_sentences,
)
from seqgen.text.vocabulary import BOS_ID

ENCODER_INPUTS = ["source_ids", "source_lengths"]
RECURRENT_NAMES = ("hidden", "cell", "feed")
SHORTLIST_INPUT = "output_ids"  # the step graph's last input, for a shortlisted model


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
        workers: int = 1,
    ) -> None:
        self.encoder_session = encoder
        self.step_session = step
        self.select_session = select
        self.workers = workers
        self.state_names, self.recurrent_names = translator_state_names(encoder, step)
        self.takes_output_ids = step.get_inputs()[-1].name == SHORTLIST_INPUT
        self.shortlist: tuple[np.ndarray, np.ndarray] | None = None
        self.vocab_size = 0
        self.device = device_of(step)
        self._keep_state_on_device(select, io_binding)

    @classmethod
    def from_files(
        cls,
        folder: str | Path,
        files: Mapping[str, str],
        *,
        device: str = "auto",
        threads: int | None = None,
        io_binding: bool | None = None,
    ) -> OnnxTranslatorStep:
        """Open the bundle's graphs. On the CPU every operator runs on one thread and
        ``threads`` batches (None: one per core) decode at once (:meth:`concurrent_batches`):
        a step's products are too small for ONNX Runtime to split well over threads."""
        sessions = open_graphs(folder, files, device=device, threads=1, io_binding=io_binding)
        step = sessions["step"]
        assert step is not None  # open_graphs opens every graph but select
        workers = (threads or available_cores()) if device_of(step) == "cpu" else 1
        return cls(*(sessions[name] for name in cls.GRAPHS), io_binding=io_binding, workers=workers)

    def concurrent_batches(self) -> AbstractContextManager[int]:
        """How many batches the translation pipeline may search at once (see
        :meth:`from_files`); ONNX Runtime's sessions take concurrent runs."""
        return nullcontext(self.workers)

    def use_shortlist(self, table: np.ndarray, frequent: np.ndarray, vocab_size: int) -> None:
        """Give the shortlist of a step graph that takes ``output_ids``: ``table`` ``(source
        vocab, K)`` and ``frequent`` ``(N,)`` int64 (the bundle's shortlist file) and the
        target vocabulary's size."""
        self.shortlist = (table, frequent)
        self.vocab_size = vocab_size

    def start(
        self, sources: Sequence[Sequence[int]], *, shortlist: bool = True
    ) -> tuple[State, np.ndarray]:
        """Encode a batch of sources (token ids without EOS; EOS is appended here).

        ``shortlist``: with a shortlisted graph, score only the batch's shortlist (False:
        every token). Returns the state (``(batch, ...)`` per name) and ``first_tokens``
        ``(batch,)``, BOS.
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
        if self.takes_output_ids:
            if self.shortlist is None:
                raise CheckpointError(
                    "the step graph takes a shortlist but the bundle has none; re-export it"
                )
            state[OUTPUT_IDS] = (
                shortlist_ids(*self.shortlist, source_ids)
                if shortlist
                else np.arange(self.vocab_size, dtype=np.int64)
            )
        return state, np.full(len(sources), BOS_ID, dtype=np.int64)

    def step(self, tokens: np.ndarray, state: State) -> tuple[np.ndarray, State]:
        """``tokens`` ``(rows,)`` -> ``log_probs`` ``(rows, vocab)`` float32 and the new state."""
        tokens = np.ascontiguousarray(tokens, dtype=np.int64)
        inputs = {"tokens": tokens, **{name: state[name] for name in self.state_names}}
        if self.takes_output_ids:
            inputs[SHORTLIST_INPUT] = state[OUTPUT_IDS]
        log_probs, outputs = self._run_step(
            inputs, [NEW_PREFIX + name for name in self.recurrent_names]
        )
        if self.takes_output_ids and isinstance(log_probs, np.ndarray):
            # (rows, M) over the shortlist -> (rows, vocab), -inf for the other tokens
            full = np.full((len(tokens), self.vocab_size), -np.inf, dtype=log_probs.dtype)
            full[:, state[OUTPUT_IDS]] = log_probs
            log_probs = full
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
        return {**selected, SENTENCE: state[SENTENCE][rows], **per_batch(state)}


def translator_state_names(
    encoder: onnxruntime.InferenceSession, step: onnxruntime.InferenceSession
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The state names and their recurrent subset; CheckpointError if the graphs do not
    have the inputs and outputs this adapter expects."""
    names = tuple(o.name for o in encoder.get_outputs())
    recurrent = tuple(n for n in names if n in RECURRENT_NAMES)
    step_inputs = ["tokens", *names]
    if step.get_inputs()[-1].name == SHORTLIST_INPUT:
        step_inputs.append(SHORTLIST_INPUT)
    expected = {
        "encoder": (ENCODER_INPUTS, list(names)),
        "step": (step_inputs, [*STEP_OUTPUTS, *(NEW_PREFIX + n for n in recurrent)]),
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
