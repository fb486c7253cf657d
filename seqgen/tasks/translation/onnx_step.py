"""ONNX Runtime adapter of the decoding contract for translators (no torch).

Two graphs, exported by ``seqgen.bundles.export`` from ``Translator.start`` and
``Translator.step`` (names in :mod:`seqgen.tasks.translation.model`):

- ``encoder``: ``source_ids`` ``(sentences, source_len)`` int64 and ``source_lengths``
  ``(sentences,)`` int64 -> the first decoder state (one row per sentence), one output per
  state name;
- ``step``: ``tokens`` ``(rows,)`` int64 and the state -> ``log_probs`` ``(rows, vocab)``
  float32, each row's ``top_log_probs`` and ``top_ids``, and ``new_<name>`` for the recurrent
  names (``hidden``, ``cell``, ``feed``); the source side (``memory``, ``keys``,
  ``source_mask``) is an input only, since it never changes, and it is given once per
  *sentence*: the rows are grouped by sentence, ``rows / sentences`` consecutive rows each
  (:mod:`seqgen.tasks.translation.source_rows`), and each sentence's rows attend together.

On the CPU the state is numpy arrays. On CUDA it stays on the GPU as ``OrtValue``s: the
graphs' outputs are bound to device memory with I/O binding and passed straight to the next
step, and ``select`` gathers rows with the bundle's third graph, ``select`` (``rows``,
``sentences`` and the state -> ``selected_<name>``, the recurrent part by row and the source
side by sentence), on the device. Per step only the tokens and row indices go up, and for
greedy and beam search (``narrowed``) only each row's top candidates come back. (I/O binding
also runs on the CPU, which is how the tests cover it without a GPU.)

A model with a lexical shortlist has a step graph that also takes ``output_ids`` ``(M,)``
int64, the output layer's rows to compute (the union of the batch's shortlists,
:mod:`seqgen.tasks.translation.shortlist`), those rows themselves (every output of the
bundle's fourth graph, ``output_rows``, run on ``output_ids`` once per batch:
``output_weight`` and ``output_bias``, in an int8 bundle ``output_weight`` int8 and its
``output_weight_scale``), and ``output_columns`` ``(sentences, S)`` int64 and ``output_mask``
``(sentences, S)`` float32, each sentence's own shortlist as columns of those and 0 or -inf
for padding; its ``log_probs`` are then ``(rows, S)``, each row normalised over its own
sentence's shortlist. ``start`` computes them from the bundle's table
(:meth:`OnnxTranslatorStep.use_shortlist`), or passes every token for ``shortlist=False``;
the columns and mask are per sentence like the source side, the rows per batch. Search
still sees token ids and ``(rows, vocab)`` log-probs (an ensemble may take the ``(rows, S)``
ones, :meth:`OnnxTranslatorStep.compact_step`).

Graphs of bundle format 1 took the source side once per row, those of format 2 a mask over
the batch's union, and those of format 3 gathered the output layer's rows at every step;
the reader refuses them (``seqgen.bundles.reader``), and :func:`translator_state_names` any
graph without this adapter's inputs: a graph cannot be migrated without its checkpoint.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime

from seqgen.cores import available_cores
from seqgen.decoding.contract import ColumnLogProbs, State, TopLogProbs
from seqgen.decoding.onnx_session import (
    NEW_PREFIX,
    SELECTED_PREFIX,
    STEP_OUTPUTS,
    TOP_K_INPUT,
    DeviceState,
    device_of,
    open_graphs,
    run_session,
    take_rows,
    to_device,
)
from seqgen.errors import CheckpointError
from seqgen.tasks.translation.shortlist import (
    GROUP_SENTENCES,
    batch_shortlist,
    grouped_shortlist,
)
from seqgen.tasks.translation.source_rows import (
    GROUP_NAMES,
    LAYOUT,
    OUTPUT_COLUMNS,
    OUTPUT_GROUP_ROWS,
    OUTPUT_GROUPING,
    OUTPUT_GROUPS,
    OUTPUT_IDS,
    OUTPUT_LAYER,
    OUTPUT_MASK,
    OUTPUT_ROW_OFFSETS,
    SHORTLIST_NAMES,
    SOURCE_NAMES,
    encoder_inputs,
    per_batch,
    row_layout,
    row_token_ids,
    select_rows,
    with_group_inputs,
    with_sentences,
)
from seqgen.text.vocabulary import BOS_ID

ENCODER_INPUTS = ["source_ids", "source_lengths"]
RECURRENT_NAMES = ("hidden", "cell", "feed")
ATTENTION_OUTPUT = "attention"  # the step graph's optional last output (attention maps)
SHORTLIST_INPUT = "output_ids"  # a step graph input, for a shortlisted model
# Then the output_rows graph's outputs, and each sentence's columns of output_ids and their
# mask (source_rows.SHORTLIST_NAMES).
REEXPORT = "re-export it with this seqgen (seqgen export CHECKPOINT FOLDER)"


class OnnxTranslatorStep(DeviceState):
    """``start`` runs the ``encoder`` graph (and a shortlisted model's ``output_rows``);
    ``step`` runs the ``step`` graph."""

    GRAPHS = ("encoder", "step", "select", "output_rows")

    def __init__(
        self,
        encoder: onnxruntime.InferenceSession,
        step: onnxruntime.InferenceSession,
        select: onnxruntime.InferenceSession | None = None,
        output_rows: onnxruntime.InferenceSession | None = None,
        *,
        io_binding: bool | None = None,
        workers: int = 1,
    ) -> None:
        self.encoder_session = encoder
        self.step_session = step
        self.select_session = select
        self.output_rows_session = output_rows
        self.workers = workers
        self.row_names = tuple(o.name for o in output_rows.get_outputs()) if output_rows else ()
        self.state_names, self.recurrent_names = translator_state_names(
            encoder, step, self.row_names
        )
        step_inputs = {node.name for node in step.get_inputs()}
        self.takes_output_ids = SHORTLIST_INPUT in step_inputs
        # A grouped step (bundle format 6) scores each group of sentences' own union.
        self.grouped = OUTPUT_GROUP_ROWS in step_inputs
        # Its output_rows graph takes the groups' unions (G, U), not (M,) (int8, format 7).
        self.rows_by_group = bool(output_rows) and len(output_rows.get_inputs()[0].shape) == 2
        # Sentences a group in beam search (greedy search scores its batch as one group).
        self.group_sentences = GROUP_SENTENCES
        # What select gathers on the device: the state, and the shortlist where the graph
        # has one.
        self.selected_names = self.state_names
        if self.takes_output_ids:
            self.selected_names = (*self.state_names, *SHORTLIST_NAMES)
        if select is not None:
            check_select_graph(select, self.selected_names)
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
        graphs = (sessions.get(name) for name in cls.GRAPHS)
        return cls(*graphs, io_binding=io_binding, workers=workers)

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
        self, sources: Sequence[Sequence[int]], *, shortlist: bool = True, beam_size: int = 1
    ) -> tuple[State, np.ndarray]:
        """Encode a batch of sources (token ids without EOS; EOS is appended here).

        ``shortlist``: with a shortlisted graph, keep each sentence to its own shortlist
        (False: every token). ``beam_size``: the search's; a grouped step (bundle format 6)
        scores groups of :attr:`group_sentences` in beam search and the batch as one group
        in greedy search. Returns the state (one row per sentence) and ``first_tokens``
        ``(batch,)``, BOS.
        """
        if len(sources) == 1 and self.device == "cpu":
            # One row as two (see _one_row_as_two), then back to one.
            state, first_tokens = self.start(
                [sources[0], sources[0]], shortlist=shortlist, beam_size=beam_size
            )
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
            # Beam search's rows per group make the groups' products pay (docs/benchmarks.md).
            group = self.group_sentences if beam_size > 1 else len(sources)
            outputs.update(self._shortlist(source_ids, source_lengths, shortlist, group))
        state = with_group_inputs(with_sentences(outputs, len(sources)))
        return state, np.full(len(sources), BOS_ID, dtype=np.int64)

    def _shortlist(
        self, source_ids: np.ndarray, source_lengths: np.ndarray, shortlist: bool, group: int
    ) -> dict[str, Any]:
        """The step graph's shortlist inputs for a batch: ``OUTPUT_IDS`` ``(M,)``, the
        ``output_rows`` graph's outputs for them (``OUTPUT_LAYER``, by name), and
        ``OUTPUT_COLUMNS`` and ``OUTPUT_MASK`` ``(sentences, S)`` (on the device with I/O
        binding, so steps do not copy them in again). ``shortlist=False``: every token; a grouped
        step's groups are of ``group`` sentences."""
        if self.shortlist is None or self.output_rows_session is None:
            raise CheckpointError(
                "the step graph takes a shortlist but the bundle has none; re-export it"
            )
        # Every token, as one group for a grouped step.
        groups = np.zeros(len(source_ids), dtype=np.int64)
        if not shortlist:
            output_ids = np.arange(self.vocab_size, dtype=np.int64)
            columns = np.tile(output_ids, (len(source_ids), 1))
            mask = np.zeros(columns.shape, dtype=np.float32)
        elif self.grouped:
            output_ids, columns, mask, groups = grouped_shortlist(
                *self.shortlist, source_ids, source_lengths, group
            )
        else:
            output_ids, columns, mask = batch_shortlist(*self.shortlist, source_ids, source_lengths)
        count = int(groups.max(initial=0)) + 1
        # An int8 grouped bundle's output_rows gathers each group's rows apart (format 7).
        ids = output_ids.reshape(count, -1) if self.rows_by_group else output_ids
        rows = run_session(
            self.output_rows_session,
            {SHORTLIST_INPUT: ids},
            host_outputs=(),
            device_outputs=self.row_names,
            device=self.bound_device,
        )
        if self.bound_device is not None:
            columns, mask = (to_device(array, self.bound_device) for array in (columns, mask))
        shortlisted = {OUTPUT_COLUMNS: columns, OUTPUT_MASK: mask}
        if self.grouped:
            shortlisted.update(
                {OUTPUT_GROUPS: groups, OUTPUT_GROUPING: (count, len(output_ids) // count)}
            )
        return {OUTPUT_IDS: output_ids, OUTPUT_LAYER: rows, **shortlisted}

    def step(self, tokens: np.ndarray, state: State) -> tuple[np.ndarray | TopLogProbs, State]:
        """``tokens`` ``(rows,)`` -> ``log_probs`` ``(rows, vocab)`` float32 (or each row's
        top candidates, narrowed) and the new state."""
        log_probs, new_state = self.compact_step(tokens, state)
        if isinstance(log_probs, ColumnLogProbs):
            return log_probs.dense(), new_state  # -inf for the tokens off the shortlist
        return log_probs, new_state

    def compact_step(
        self, tokens: np.ndarray, state: State
    ) -> tuple[np.ndarray | ColumnLogProbs | TopLogProbs, State]:
        """:meth:`step`, but a shortlisted graph's ``(rows, S)`` log-probs come back as they
        are, over each row's sentence's shortlist (:class:`ColumnLogProbs`): an ensemble
        whose members share the shortlist averages those ``S`` columns, not ``vocab``."""
        tokens = np.ascontiguousarray(tokens, dtype=np.int64)
        if len(tokens) == 1 and self.device == "cpu":
            return self._one_row_as_two(tokens, state)
        inputs = {"tokens": tokens, **{name: state[name] for name in self.state_names}}
        if self.takes_output_ids:
            inputs[SHORTLIST_INPUT] = state[OUTPUT_IDS]
            inputs.update(state[OUTPUT_LAYER])
            inputs.update((name, state[name]) for name in SHORTLIST_NAMES)
            inputs.update((name, state[name]) for name in GROUP_NAMES if self.grouped)
        log_probs, outputs = self._run_step(
            inputs, [NEW_PREFIX + name for name in self.recurrent_names]
        )
        if self.takes_output_ids and isinstance(log_probs, np.ndarray):
            token_ids = row_token_ids(state, host_arrays)
            log_probs = ColumnLogProbs(log_probs, token_ids, self.vocab_size)
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
        host = dict(zip(state, host_arrays(*state.values()), strict=True))
        inputs = {"tokens": np.ascontiguousarray(tokens, dtype=np.int64)}
        inputs.update((name, host[name]) for name in self.state_names)
        if self.takes_output_ids:
            inputs[SHORTLIST_INPUT] = host[OUTPUT_IDS]
            rows = state[OUTPUT_LAYER]
            inputs.update(zip(rows, host_arrays(*rows.values()), strict=True))
            inputs.update((name, host[name]) for name in SHORTLIST_NAMES)
            inputs.update((name, host[name]) for name in GROUP_NAMES if self.grouped)
        inputs.update(self.top_k_input(1))
        names = [NEW_PREFIX + name for name in self.recurrent_names]
        outputs = run_session(self.step_session, inputs, host_outputs=[ATTENTION_OUTPUT, *names])
        new_state = {**host, **{name: outputs[NEW_PREFIX + name] for name in self.recurrent_names}}
        return outputs[ATTENTION_OUTPUT], new_state

    def _one_row_as_two(
        self, tokens: np.ndarray, state: State
    ) -> tuple[np.ndarray | ColumnLogProbs | TopLogProbs, State]:
        """:meth:`step` of one row, run as two copies of it. ONNX Runtime's CPU matrix
        product takes another kernel for a single row (a matrix-vector product, whose sums
        run in another order), so a sentence decoded alone differed in the last bits from
        the same sentence in a batch, enough to change a beam's choice now and then (1 line
        of test_2016_flickr in 1,000). From two rows up the products give a row the same
        bits whatever the other rows (measured; the log-softmax's sum may still differ in
        its last bit where the batch's union of shortlists is wider, docs/translation.md).
        The copy is a sentence of its own, as in a batch of one row per sentence: two rows of
        one sentence would attend as a product of two rows, another kernel again."""
        pair = np.zeros(2, dtype=np.int64)
        log_probs, new_state = self.compact_step(
            np.repeat(tokens, 2), self._select(state, pair, separate=True)
        )
        first = np.zeros(1, dtype=np.int64)
        if isinstance(log_probs, np.ndarray):
            return log_probs[:1], self.select(new_state, first)
        return log_probs.take(slice(0, 1)), self.select(new_state, first)

    def select(self, state: State, rows: np.ndarray) -> State:
        """Gather ``rows`` of the state, and its source side once per sentence (on the host
        only when the sentences change; on the device in the same run of the ``select``
        graph)."""
        return self._select(state, rows)

    def _select(self, state: State, rows: np.ndarray, *, separate: bool = False) -> State:
        """:meth:`select`; ``separate``: each row a sentence of its own."""
        if not self.io_binding:
            return select_rows(state, rows, take_rows, separate=separate)
        assert self.select_session is not None  # checked in __init__
        rows = np.ascontiguousarray(rows, dtype=np.int64)
        rows_per_sentence, sentences = row_layout(rows, state[LAYOUT][1], separate=separate)
        names = self.selected_names
        outputs = run_session(
            self.select_session,
            {"rows": rows, "sentences": sentences, **{name: state[name] for name in names}},
            host_outputs=(),
            device_outputs=[SELECTED_PREFIX + name for name in names],
            device=self.device,
        )
        selected = {name: outputs[SELECTED_PREFIX + name] for name in names}
        if OUTPUT_GROUPS in state:  # on the host, for with_group_inputs
            selected[OUTPUT_GROUPS] = take_rows(state[OUTPUT_GROUPS], sentences)
        layout = (sentences.size, rows_per_sentence)
        return with_group_inputs({**selected, LAYOUT: layout, **per_batch(state)}, state)


def translator_state_names(
    encoder: onnxruntime.InferenceSession,
    step: onnxruntime.InferenceSession,
    row_names: Sequence[str] = (),
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The state names and their recurrent subset; CheckpointError if the graphs do not
    have the inputs and outputs this adapter expects (a shortlisted step's include the
    ``output_rows`` graph's outputs, ``row_names``), or take the source side once per row
    (bundle format 1)."""
    names = tuple(o.name for o in encoder.get_outputs())
    recurrent = tuple(n for n in names if n in RECURRENT_NAMES)
    step_inputs = ["tokens", *names]
    given = [node.name for node in step.get_inputs()]
    if SHORTLIST_INPUT in given[len(step_inputs) :]:
        if not row_names:
            raise CheckpointError(
                "this translator's step graph takes a shortlist but the bundle has no "
                f"output_rows graph (bundle format 3 or older); {REEXPORT}"
            )
        step_inputs += [SHORTLIST_INPUT, *row_names, *SHORTLIST_NAMES]
        if OUTPUT_GROUP_ROWS in given:  # bundle format 6, grouped
            step_inputs += [OUTPUT_GROUP_ROWS, OUTPUT_ROW_OFFSETS]
    if given[-1:] == [TOP_K_INPUT]:  # bundle format 5
        step_inputs.append(TOP_K_INPUT)
    expected = {
        "encoder": (ENCODER_INPUTS, list(names)),
        "step": (step_inputs, [*STEP_OUTPUTS, *(NEW_PREFIX + n for n in recurrent)]),
    }
    if [o.name for o in step.get_outputs()][-1:] == [ATTENTION_OUTPUT]:  # since 2026-12-06
        expected["step"][1].append(ATTENTION_OUTPUT)
    usable = "hidden" in recurrent and set(SOURCE_NAMES) <= set(names)
    usable = usable and not {LAYOUT, *SHORTLIST_NAMES} & set(names)
    for label, session in (("encoder", encoder), ("step", step)):
        inputs = [i.name for i in session.get_inputs()]
        outputs = [o.name for o in session.get_outputs()]
        if not usable or (inputs, outputs) != expected[label]:
            raise CheckpointError(
                f"the {label} graph has inputs {inputs} and outputs {outputs}, expected "
                f"{expected[label][0]} and {expected[label][1]}; re-export the bundle"
            )
    memory = next(node for node in step.get_inputs() if node.name == "memory")
    if memory.shape[0] != "sentences":
        raise CheckpointError(
            "this translator's step graph takes the source side once per row (bundle format "
            f"1), this seqgen once per sentence; {REEXPORT}"
        )
    return names, recurrent


def host_arrays(*values: Any) -> list[np.ndarray]:
    """State values on the host: an ``OrtValue`` (I/O binding) copied to numpy."""
    return [v.numpy() if isinstance(v, onnxruntime.OrtValue) else v for v in values]


def check_select_graph(select: onnxruntime.InferenceSession, names: Sequence[str]) -> None:
    """CheckpointError unless ``select`` takes ``rows``, ``sentences`` and the state
    entries ``names`` (bundle format 2; format 1's took rows only)."""
    inputs = [node.name for node in select.get_inputs()]
    if inputs[:2] != ["rows", "sentences"] or set(inputs[2:]) != set(names):
        raise CheckpointError(
            f"the select graph has inputs {inputs}, expected rows, sentences and "
            f"{', '.join(names)}; {REEXPORT}"
        )
