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
int64, the tokens to score (the union of the batch's shortlists,
:mod:`seqgen.tasks.translation.shortlist`), and then ``output_mask`` ``(rows, M)`` float32, 0
where the row's sentence may use the token and -inf elsewhere; its ``log_probs`` are then
``(rows, M)``, each row normalised over its own sentence's shortlist. ``start`` computes both
from the bundle's table (:meth:`OnnxTranslatorStep.use_shortlist`), or passes every token id
and a mask of zeros for ``shortlist=False``; the mask is per row like the source side, and
``select`` gathers it (the ``select`` graph takes it too). Search still sees token ids and
``(rows, vocab)`` log-probs. A step graph exported before the mask (no ``output_mask``
input) is run as it was: every row scores the union, so its output depends on the batch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime

from seqgen.cores import available_cores
from seqgen.decoding.contract import State, TopLogProbs
from seqgen.decoding.onnx_session import (
    NEW_PREFIX,
    STEP_OUTPUTS,
    DeviceState,
    device_of,
    open_graphs,
    run_select,
    run_session,
    to_device,
)
from seqgen.errors import CheckpointError
from seqgen.tasks.translation.shortlist import batch_shortlist, shortlist_ids
from seqgen.tasks.translation.source_rows import (
    OUTPUT_IDS,
    OUTPUT_MASK,
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
ATTENTION_OUTPUT = "attention"  # the step graph's optional last output (attention maps)
SHORTLIST_INPUT = "output_ids"  # a step graph input, for a shortlisted model
# After it, each row's mask of it (source_rows.OUTPUT_MASK); absent in bundles exported before
SHORTLIST_INPUTS = (SHORTLIST_INPUT, OUTPUT_MASK)


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
        step_inputs = {node.name for node in step.get_inputs()}
        self.takes_output_ids = SHORTLIST_INPUT in step_inputs
        self.takes_output_mask = OUTPUT_MASK in step_inputs
        # What select gathers on the device: the state, and the mask where the graph has it.
        self.selected_names = self.state_names
        if select is not None and OUTPUT_MASK in {node.name for node in select.get_inputs()}:
            self.selected_names = (*self.state_names, OUTPUT_MASK)
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

        ``shortlist``: with a shortlisted graph, keep each sentence to its own shortlist (a
        graph exported before ``output_mask``: to the batch's union; False: every token).
        Returns the state (``(batch, ...)`` per name) and ``first_tokens`` ``(batch,)``, BOS.
        """
        if len(sources) == 1 and self.device == "cpu":
            # One row as two (see _one_row_as_two), then back to one.
            state, first_tokens = self.start([sources[0], sources[0]], shortlist=shortlist)
            return self.select(state, np.zeros(1, dtype=np.int64)), first_tokens[:1]
        source_ids, source_lengths = encoder_inputs(sources)
        outputs = run_session(
            self.encoder_session,
            {"source_ids": source_ids, "source_lengths": source_lengths},
            host_outputs=(),
            device_outputs=self.state_names,
            device=self.bound_device,
        )
        if self.takes_output_ids:
            outputs.update(self._shortlist(source_ids, source_lengths, shortlist=shortlist))
        state = with_sentences(outputs, len(sources))
        return state, np.full(len(sources), BOS_ID, dtype=np.int64)

    def _shortlist(
        self, source_ids: np.ndarray, source_lengths: np.ndarray, *, shortlist: bool
    ) -> dict[str, Any]:
        """The step graph's shortlist inputs for a batch: ``OUTPUT_IDS`` ``(M,)`` and, for a
        graph that takes it, ``OUTPUT_MASK`` ``(rows, M)`` (on the device with I/O binding,
        so steps do not copy it in again). ``shortlist=False``: every token, mask of zeros."""
        if self.shortlist is None:
            raise CheckpointError(
                "the step graph takes a shortlist but the bundle has none; re-export it"
            )
        if not shortlist:
            output_ids = np.arange(self.vocab_size, dtype=np.int64)
            mask = np.zeros((len(source_ids), self.vocab_size), dtype=np.float32)
        elif self.takes_output_mask:
            output_ids, mask = batch_shortlist(*self.shortlist, source_ids, source_lengths)
        else:  # a bundle from before the mask: the union over the batch, as it was
            return {OUTPUT_IDS: shortlist_ids(*self.shortlist, source_ids)}
        if not self.takes_output_mask:
            return {OUTPUT_IDS: output_ids}
        if self.bound_device is not None:
            mask = to_device(mask, self.bound_device)
        return {OUTPUT_IDS: output_ids, OUTPUT_MASK: mask}

    def step(self, tokens: np.ndarray, state: State) -> tuple[np.ndarray | TopLogProbs, State]:
        """``tokens`` ``(rows,)`` -> ``log_probs`` ``(rows, vocab)`` float32 (or each row's
        top candidates, narrowed) and the new state."""
        tokens = np.ascontiguousarray(tokens, dtype=np.int64)
        if len(tokens) == 1 and self.device == "cpu":
            return self._one_row_as_two(tokens, state)
        inputs = {"tokens": tokens, **{name: state[name] for name in self.state_names}}
        if self.takes_output_ids:
            inputs[SHORTLIST_INPUT] = state[OUTPUT_IDS]
        if self.takes_output_mask:
            inputs[OUTPUT_MASK] = state[OUTPUT_MASK]
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

    @property
    def step_output_names(self) -> list[str]:
        """The step graph's outputs (``attention`` last in bundles since 2026-12-06)."""
        return [output.name for output in self.step_session.get_outputs()]

    def attention_step(self, tokens: np.ndarray, state: State) -> tuple[np.ndarray, State]:
        """One step for attention maps (``attention_maps.onnx_attention``): ``tokens``
        ``(rows,)`` -> the attention weights ``(rows, source_len)`` and the new state."""
        device = onnxruntime.OrtValue
        host = {name: v.numpy() if isinstance(v, device) else v for name, v in state.items()}
        inputs = {"tokens": np.ascontiguousarray(tokens, dtype=np.int64)}
        inputs.update((name, host[name]) for name in self.state_names)
        if self.takes_output_ids:
            inputs[SHORTLIST_INPUT] = host[OUTPUT_IDS]
        if self.takes_output_mask:
            inputs[OUTPUT_MASK] = host[OUTPUT_MASK]
        names = [NEW_PREFIX + name for name in self.recurrent_names]
        outputs = run_session(self.step_session, inputs, host_outputs=[ATTENTION_OUTPUT, *names])
        new_state = {**host, **{name: outputs[NEW_PREFIX + name] for name in self.recurrent_names}}
        return outputs[ATTENTION_OUTPUT], new_state

    def _one_row_as_two(
        self, tokens: np.ndarray, state: State
    ) -> tuple[np.ndarray | TopLogProbs, State]:
        """:meth:`step` of one row, run as two copies of it. ONNX Runtime's CPU matrix
        product takes another kernel for a single row (a matrix-vector product, whose sums
        run in another order), so a sentence decoded alone differed in the last bits from
        the same sentence in a batch, enough to change a beam's choice now and then (1 line
        of test_2016_flickr in 1,000). From two rows up the products give a row the same
        bits whatever the other rows (measured; the log-softmax's sum may still differ in
        its last bit where the batch's union of shortlists is wider, docs/translation.md)."""
        pair = np.zeros(2, dtype=np.int64)
        log_probs, new_state = self.step(np.repeat(tokens, 2), self.select(state, pair))
        first = np.zeros(1, dtype=np.int64)
        if isinstance(log_probs, TopLogProbs):
            return TopLogProbs(log_probs.values[:1], log_probs.token_ids[:1]), self.select(
                new_state, first
            )
        return log_probs[:1], self.select(new_state, first)

    def select(self, state: State, rows: np.ndarray) -> State:
        """Gather ``rows`` of the state (on the host, the source side only when sentences
        change; on the device, everything in one run of the ``select`` graph)."""
        if not self.io_binding:
            return select_rows(state, rows, lambda array, index: array[index])
        assert self.select_session is not None  # checked in __init__
        rows = np.ascontiguousarray(rows, dtype=np.int64)
        selected = run_select(self.select_session, state, self.selected_names, rows, self.device)
        return {**selected, SENTENCE: state[SENTENCE][rows], **per_batch(state)}


def translator_state_names(
    encoder: onnxruntime.InferenceSession, step: onnxruntime.InferenceSession
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The state names and their recurrent subset; CheckpointError if the graphs do not
    have the inputs and outputs this adapter expects."""
    names = tuple(o.name for o in encoder.get_outputs())
    recurrent = tuple(n for n in names if n in RECURRENT_NAMES)
    step_inputs = ["tokens", *names]
    given = [node.name for node in step.get_inputs()]
    step_inputs += [name for name in SHORTLIST_INPUTS if name in given[len(step_inputs) :]]
    expected = {
        "encoder": (ENCODER_INPUTS, list(names)),
        "step": (step_inputs, [*STEP_OUTPUTS, *(NEW_PREFIX + n for n in recurrent)]),
    }
    if [o.name for o in step.get_outputs()][-1:] == [ATTENTION_OUTPUT]:  # since 2026-12-06
        expected["step"][1].append(ATTENTION_OUTPUT)
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
