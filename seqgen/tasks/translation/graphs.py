"""A translator's graphs, tokenizers and manifest entries in a bundle (``write_bundle`` hook).

The graphs are the callables the PyTorch adapter (``TranslatorStep``) calls:

- ``encoder``: ``Translator.start(source_ids, source_lengths)``, the first decoder state;
- ``step``: ``Translator.step(tokens, state)`` and the log-softmax (with each row's top
  candidates, as the generator's step graph), returning the recurrent part of the new
  state (``new_hidden``, ``new_cell``, ``new_feed``); the source side (``memory``, ``keys``,
  ``source_mask``, and a shortlist's ``output_columns`` and ``output_mask``) never changes,
  so it is an input only, once per *sentence*: the rows are grouped by sentence,
  ``rows / sentences`` consecutive rows per sentence (bundle format 2; format 1 took it once
  per row; format 3 gives each row its sentence's shortlist columns, format 2 a mask over
  the batch's union);
- ``select``: ``rows`` and ``sentences`` -> every state entry gathered on axis 0, the
  recurrent part by row and the source side by sentence (:class:`SelectGraph`), so that a
  GPU runtime reorders beams without copying the state to the host;
- ``output_rows`` (a shortlisted model only): ``output_ids`` -> the output layer's rows of
  those tokens (:class:`OutputRowsGraph`), run once per batch; the step graph takes them as
  inputs (bundle format 4; format 3 gathered them from its own table at every step).

Rows (sentences x beam), sentences, the source length and the selected rows and sentences
are dynamic axes.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from seqgen.bundles.export import (
    EXAMPLE_ROWS,
    EXAMPLE_SELECTED_ROWS,
    PARITY_TOLERANCE,
    TOP_CANDIDATES,
    GraphSpec,
    export_graph,
    special_ids,
    with_top_candidates,
)
from seqgen.decoding.onnx_session import NEW_PREFIX, SELECTED_PREFIX, STEP_OUTPUTS
from seqgen.errors import SeqgenError
from seqgen.recipes import recipe_to_dict
from seqgen.tasks.translation import (
    GRAPH_FILES,
    JOINT_SENTENCEPIECE_FILE,
    JOINT_TOKENIZER_FILE,
    SENTENCEPIECE_FILES,
    TOKENIZER_FILES,
)
from seqgen.tasks.translation.decoder import OutputRows
from seqgen.tasks.translation.model import (
    EncoderDecoder,
    grouped_sentence_logits,
    sentence_logits,
    sentence_token_ids,
)
from seqgen.tasks.translation.onnx_step import SHORTLIST_INPUT as OUTPUT_IDS_INPUT
from seqgen.tasks.translation.onnx_step import OnnxTranslatorStep
from seqgen.tasks.translation.pipeline import Translator
from seqgen.tasks.translation.shortlist import batch_shortlist, column_token_ids
from seqgen.tasks.translation.source_rows import (
    OUTPUT_COLUMNS,
    OUTPUT_GROUP_ROWS,
    OUTPUT_IDS,
    OUTPUT_MASK,
    OUTPUT_ROW_OFFSETS,
    PER_SENTENCE,
    SHORTLIST_NAMES,
    SOURCE_NAMES,
    encoder_inputs,
)
from seqgen.text import Tokenizer

EXAMPLE_SOURCE_LENGTH = 5  # differs from EXAMPLE_ROWS, so torch.export keeps them apart
EXAMPLE_BEAM = 2  # the step's example: EXAMPLE_ROWS sentences of this many rows each
EXAMPLE_SELECTED_SENTENCES = 7  # unlike every other axis's example
EXAMPLE_SHORTLIST = 40  # at least the top-k's 32 candidates, and unlike the other sizes
EXAMPLE_SENTENCE_SHORTLIST = 33  # a sentence's: at least 32 too, and unlike every other size
# A grouped step's: groups, rows a group, tokens a group (over a sentence's 33 and the
# sentences' offsets, as each example sentence's columns must fit its group's union)
EXAMPLE_GROUPS, EXAMPLE_GROUP_ROWS, EXAMPLE_GROUP_UNION = 4, 8, 41
SHORTLIST_FILE = "shortlist.json"
RECURRENT = ("hidden", "cell", "feed")


class EncoderGraph(nn.Module):
    """``source_ids`` ``(rows, source_len)``, ``source_lengths`` ``(rows,)`` -> the state."""

    def __init__(self, model: EncoderDecoder) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, source_ids: torch.Tensor, source_lengths: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        state = self.model.start(source_ids, source_lengths)
        return tuple(state[name] for name in self.model.state_names)


ATTENTION_OUTPUT = "attention"  # the step graph's last output: (rows, source_len) weights
# The output_rows graph's outputs, which the step graph takes after output_ids.
OUTPUT_WEIGHT, OUTPUT_BIAS = "output_weight", "output_bias"


class OutputRowsGraph(nn.Module):
    """``output_ids`` ``(M,)`` int64 -> ``output_weight`` ``(M, output_size)`` and, where the
    output layer has one, ``output_bias`` ``(M,)``: the rows the step graph scores, gathered
    once per batch (``Decoder.output_rows``, as PyTorch decodes)."""

    def __init__(self, model: EncoderDecoder) -> None:
        super().__init__()
        self.model = model

    def forward(self, output_ids: torch.Tensor) -> tuple[torch.Tensor, ...]:
        rows = self.model.decoder.output_rows(output_ids)
        return (rows.weight,) if rows.bias is None else (rows.weight, rows.bias)


class SelectGraph(nn.Module):
    """``rows`` ``(new_rows,)`` and ``sentences`` ``(new_sentences,)`` int64 + the state ->
    each entry gathered on axis 0: the per-row ones by ``rows``, the per-sentence ones
    (``per_sentence`` of them, last) by ``sentences``; run where the state lives."""

    def __init__(self, per_sentence: int) -> None:
        super().__init__()
        self.per_sentence = per_sentence

    def forward(
        self, rows: torch.Tensor, sentences: torch.Tensor, *state: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        split = len(state) - self.per_sentence
        return (
            *(tensor.index_select(0, rows) for tensor in state[:split]),
            *(tensor.index_select(0, sentences) for tensor in state[split:]),
        )


class TranslatorStepGraph(nn.Module):
    """``tokens`` ``(rows,)`` + state -> ``log_probs`` ``(rows, vocab)`` float32, the top
    candidates (``with_top_candidates``) and the new recurrent state.

    A model with a lexical shortlist takes ``output_ids`` ``(M,)`` int64 (the union of the
    batch's shortlists, :func:`seqgen.tasks.translation.shortlist.shortlist_ids`: the output
    layer's rows to compute), the ``output_rows`` graph's outputs for them
    (``output_weight`` ``(M, output_size)``, ``output_bias`` ``(M,)``), then
    ``output_columns`` ``(sentences, S)`` int64 and ``output_mask`` ``(sentences, S)`` float32
    (each sentence's own shortlist as columns of those, and 0 or -inf for padding,
    :func:`~seqgen.tasks.translation.shortlist
    .shortlist_columns`): ``log_probs`` is then ``(rows, S)``, each row normalised over its
    sentence's shortlist, and ``top_ids`` are token ids all the same. The source side and the
    shortlist are per sentence, the rows grouped ``rows / sentences`` to a sentence.

    ``grouped`` (bundle format 6, float32 and int8 exports): ``output_ids`` are ``G`` groups'
    unions of ``M / G`` tokens each (:func:`~seqgen.tasks.translation.shortlist
    .grouped_shortlist`), each sentence's columns index its group's part, and two more
    inputs follow the mask, ``output_group_rows`` ``(G, R)`` and ``output_row_offsets``
    ``(rows,)`` int64 (:func:`~seqgen.tasks.translation.shortlist.group_layout`): each group
    of rows is scored against its own union only.
    """

    def __init__(self, model: EncoderDecoder, *, grouped: bool = False) -> None:
        super().__init__()
        self.model = model
        self.grouped = grouped and model.has_shortlist

    def _gate_table(self) -> torch.Tensor | None:
        """The decoder's gate table, as PyTorch decodes with it (Decoder._rnn_step): gathered
        per step instead of the embedding. In the graph it is a product of two weights that
        ONNX Runtime folds into a constant when a session starts, so the file holds the
        weights (vocab x embedding) and not the table (vocab x 4 hidden, four times more).
        A float16 graph multiplies in float32, which ONNX Runtime can fold (its CPU kernels
        have no float16 Gemm: :func:`seqgen.layers.cells.embedding_gates`)."""
        decoder = self.model.decoder
        return decoder.embedding_gates(torch.float32) if decoder.uses_gate_table else None

    def forward(self, tokens: torch.Tensor, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        names = self.model.state_names
        state = dict(zip(names, inputs[: len(names)], strict=True))
        output_ids, columns, mask, output, row_offsets = None, None, None, None, None
        if self.model.has_shortlist:
            shortlisted, group_rows = inputs[len(names) :], None
            if self.grouped:
                shortlisted, (group_rows, row_offsets) = shortlisted[:-2], shortlisted[-2:]
            output_ids, *rows, columns, mask = shortlisted
            output = OutputRows(rows[0], rows[1] if len(rows) > 1 else None, group_rows)
        # The attention weights the step computes, an output for attention maps
        # (attention_maps.onnx_attention): caught from the attention module, which keeps none.
        caught: list[torch.Tensor] = []
        hook = self.model.decoder.attention.register_forward_hook(
            lambda module, inputs, output: caught.append(output[1])
        )
        try:
            logits, new_state = self.model.step(tokens, state, output, self._gate_table())
        finally:
            hook.remove()
        attention = caught[-1].reshape(tokens.shape[0], -1).float()
        # As TranslatorStep.step: log-softmax in float32, also for a float16 model.
        logits = logits.float()
        if row_offsets is not None:  # (G, R, U): each row to its sentence's, in one gather
            bias = None if output is None or output.bias is None else output.bias.float()
            logits = grouped_sentence_logits(logits, columns, mask, row_offsets, bias)
        elif columns is not None:  # each row to its own sentence's shortlist
            logits = sentence_logits(logits, columns, mask)
        log_probs = torch.log_softmax(logits, dim=-1)
        if output_ids is None:
            log_probs, top_values, top_ids = with_top_candidates(log_probs)
        else:
            # K = min(16, vocab): a shortlist holds at least 16 tokens (the config checks
            # shortlist_frequent); the exporter makes it Min(top_k, K) (format 5).
            count = min(TOP_CANDIDATES, self.model.target_vocab_size)
            top_values, top_columns = torch.topk(log_probs, count, dim=-1)
            top_ids = sentence_token_ids(output_ids, columns, top_columns)
        recurrent = (new_state[name] for name in names if name in RECURRENT)
        return (log_probs, top_values, top_ids, *recurrent, attention)


def write_bundle(
    translator: Translator,
    model: EncoderDecoder,
    staging: Path,
    *,
    fp16: bool,
    int8: bool = False,
) -> dict[str, Any]:
    """Write the graphs and tokenizers into ``staging``; returns the manifest's entries.
    ``int8`` (a bundle for the CPU): the encoder's first LSTM layer is written as a gate
    table and a ``Scan`` (``encoder.table_lstm``), which ONNX Runtime's CPU runs faster than
    its ``LSTM`` node, and after the parity check its products of values within [-1, 1]
    become int8 (the recurrence inside the ``Scan``, the attention keys, the bridge from the
    hidden states: :func:`seqgen.bundles.quantize.quantize_graph`; the step's are made int8
    after this returns); ``model`` is the export's own copy."""
    files = GRAPH_FILES
    model.encoder.export_table_lstm = int8
    # Float32 and int8 bundles score each group of sentences against its own shortlists
    # (formats 6 and 7; the quantizer makes the grouped product int8). float16 ones keep
    # one union a batch: their steps run on GPUs, where a product's rows cost little and
    # groups were not measured.
    specs = graph_specs(model, grouped=not fp16)
    graphs = {name: export_graph(spec, staging / files[name]) for name, spec in specs.items()}
    if not fp16:
        check_parity(translator.step_function.model, staging, {name: files[name] for name in specs})
    if int8:
        from seqgen.bundles.quantize import quantize_graph  # onnx: the export extra

        quantize_graph(staging / files["encoder"], unit_range_only=True)
    tokenizer_entries = write_tokenizers(
        {"source": translator.source_tokenizer, "target": translator.target_tokenizer}, staging
    )
    extra = {}
    if model.has_shortlist:
        table = {
            "table": model.shortlist_table.tolist(),
            "frequent": model.shortlist_frequent.tolist(),
        }
        (staging / SHORTLIST_FILE).write_text(json.dumps(table), encoding="utf-8")
        extra["shortlist"] = {
            "file": SHORTLIST_FILE,
            "per_source": model.config.shortlist,
            "frequent": model.config.shortlist_frequent,
        }
    return {
        **extra,
        "model": _model_entry(model),
        "state": _state_entry(model, specs["step"].inputs, fp16=fp16),
        "graphs": {name: {"file": files[name], **described} for name, described in graphs.items()},
        "tokenizers": tokenizer_entries,
        "special_ids": special_ids(translator.target_tokenizer),
        "decoding": {
            **recipe_to_dict(translator.recipe)["decoding"],
            "max_source_length": translator.recipe.data.max_source_length,
            "source_ends_with": "eos",
            "first_token": "bos",
            "banned_token_ids": [
                translator.target_tokenizer.pad_id,
                translator.target_tokenizer.bos_id,
                translator.target_tokenizer.unk_id,
            ],
        },
        "recipe": recipe_to_dict(translator.recipe),
        "training_info": translator.info,
    }


def write_tokenizers(tokenizers: dict[str, Tokenizer], staging: Path) -> dict[str, Any]:
    """Write each side's tokenizer (its ``to_dict()``, and for sentencepiece the raw model)
    into ``staging``; returns the manifest's ``tokenizers`` entries.

    A joint vocabulary (both sides serialise the same) is written once, as
    ``JOINT_TOKENIZER_FILE`` (and ``JOINT_SENTENCEPIECE_FILE``), and both entries name it:
    the bundled translators' tokenizers are 0.9 MB a copy, which a web page downloads."""
    serialised = {side: tokenizer.to_dict() for side, tokenizer in tokenizers.items()}
    # The contents, not recipe.tokenizer.joint, decide: identical files are what one copy
    # can replace, whatever trained them.
    joint = serialised["source"] == serialised["target"]
    entries = {}
    for side, tokenizer in tokenizers.items():
        file = JOINT_TOKENIZER_FILE if joint else TOKENIZER_FILES[side]
        model_file = JOINT_SENTENCEPIECE_FILE if joint else SENTENCEPIECE_FILES[side]
        entry = {"file": file, "kind": tokenizer.kind}
        if tokenizer.kind == "sentencepiece":
            entry["sentencepiece_model"] = model_file
            entry["lowercase"] = serialised[side]["lowercase"]
        entries[side] = entry
        if joint and side != "source":
            continue  # the source side wrote the one copy
        (staging / file).write_text(json.dumps(serialised[side]), encoding="utf-8")
        if tokenizer.kind == "sentencepiece":
            # The raw model too, for sentencepiece's ports in other languages.
            model_proto = base64.b64decode(serialised[side]["model_proto"])
            (staging / model_file).write_bytes(model_proto)
    return entries


def graph_specs(model: EncoderDecoder, *, grouped: bool = False) -> dict[str, GraphSpec]:
    """The graphs (three, four with a shortlist) with example inputs of the model's dtype
    and their dynamic axes; ``grouped``: a grouped step graph (:class:`TranslatorStepGraph`)."""
    names = model.state_names
    recurrent = [name for name in names if name in RECURRENT]
    sentences, length = EXAMPLE_ROWS, EXAMPLE_SOURCE_LENGTH
    source_ids = torch.ones(sentences, length, dtype=torch.long)
    source_lengths = torch.tensor([length, 2, 1][:sentences] + [1] * (sentences - 3))
    with torch.inference_mode():
        state = model.start(source_ids, source_lengths)
    # The step's example: EXAMPLE_BEAM rows per sentence, so the grouping stays dynamic.
    state = {
        name: state[name].repeat_interleave(EXAMPLE_BEAM, 0) if name in recurrent else state[name]
        for name in names
    }
    state = {name: tensor.clone() for name, tensor in state.items()}  # not inference tensors
    rows = sentences * EXAMPLE_BEAM
    state_axes = {
        name: {0: "sentences", 1: "source_len"} if name in SOURCE_NAMES else {0: "rows"}
        for name in names
    }
    new_recurrent = [NEW_PREFIX + name for name in recurrent]
    step_inputs, step_axes = {"tokens": torch.zeros(rows, dtype=torch.long), **state}, {}
    specs = {}
    if model.has_shortlist:
        specs["output_rows"], shortlisted, step_axes = shortlist_examples(
            model, sentences, grouped=grouped
        )
        step_inputs.update(shortlisted)
    # Gathered by select like the source side: the shortlist's columns and mask.
    per_sentence = {name: step_inputs[name] for name in SHORTLIST_NAMES if name in step_inputs}
    encoder_axes = {name: {**axes, 0: "rows"} for name, axes in state_axes.items()}
    return {
        "encoder": GraphSpec(
            EncoderGraph(model),
            {"source_ids": source_ids, "source_lengths": source_lengths},
            list(names),
            {"source_ids": {0: "rows", 1: "source_len"}, "source_lengths": {0: "rows"}},
            {name: [encoder_axes[name][a] for a in sorted(encoder_axes[name])] for name in names},
            {torch.ops.seqgen.lstm_to_lengths.default: onnx_lstm_to_lengths},
        ),
        "step": GraphSpec(
            TranslatorStepGraph(model, grouped=grouped),
            step_inputs,
            [*STEP_OUTPUTS, *new_recurrent, ATTENTION_OUTPUT],
            {"tokens": {0: "rows"}, **state_axes, **step_axes},
            {
                **{name: ["rows"] for name in [*STEP_OUTPUTS, *new_recurrent]},
                ATTENTION_OUTPUT: ["rows", "source_len"],
            },
        ),
        **specs,  # output_rows, before select (the last to open: open_graphs)
        "select": select_spec(
            {**state, **per_sentence}, {**state_axes, **{n: step_axes[n] for n in per_sentence}}
        ),
    }


def shortlist_examples(
    model: EncoderDecoder, sentences: int, *, grouped: bool = False
) -> tuple[GraphSpec, dict[str, torch.Tensor], dict[str, dict[int, str]]]:
    """A shortlisted model's ``output_rows`` graph, and its step's example inputs after the
    state (``output_ids``, the output_rows graph's outputs for them, each sentence's columns
    and mask, and for a ``grouped`` step the groups' rows and each row's place) with their
    dynamic axes. Grouped, each example sentence has a group of its own."""
    # Any ids of a size unlike the other axes', so the exporter keeps the axis dynamic.
    union = EXAMPLE_GROUP_UNION if grouped else EXAMPLE_SHORTLIST
    shortlist = union * EXAMPLE_GROUPS if grouped else union
    output_ids = torch.arange(shortlist, dtype=torch.long) % model.target_vocab_size
    spec = output_rows_spec(model, output_ids)
    with torch.inference_mode():
        gathered = OutputRowsGraph(model)(output_ids)
    inputs = {OUTPUT_IDS_INPUT: output_ids}
    inputs.update((name, value.clone()) for name, value in zip(spec.outputs, gathered, strict=True))
    axes = {name: {0: "shortlist"} for name in inputs}
    width = EXAMPLE_SENTENCE_SHORTLIST
    columns = torch.arange(width, dtype=torch.long).repeat(sentences, 1)
    inputs[OUTPUT_COLUMNS] = columns + torch.arange(sentences)[:, None] * (1 + union * grouped)
    inputs[OUTPUT_MASK] = torch.zeros(sentences, width)
    inputs[OUTPUT_MASK][0, -1] = -torch.inf  # a mask, not a constant to fold
    axes.update({name: {0: "sentences", 1: "sentence_shortlist"} for name in SHORTLIST_NAMES})
    if grouped:  # sentence s in group s, its EXAMPLE_BEAM rows first there
        rows = torch.arange(sentences * EXAMPLE_BEAM, dtype=torch.long)
        slots = (rows // EXAMPLE_BEAM) * EXAMPLE_GROUP_ROWS + rows % EXAMPLE_BEAM
        group_rows = torch.zeros(EXAMPLE_GROUPS * EXAMPLE_GROUP_ROWS, dtype=torch.long)
        group_rows[slots] = rows
        inputs[OUTPUT_GROUP_ROWS] = group_rows.reshape(EXAMPLE_GROUPS, EXAMPLE_GROUP_ROWS)
        inputs[OUTPUT_ROW_OFFSETS] = (slots - slots // EXAMPLE_GROUP_ROWS) * union
        axes[OUTPUT_GROUP_ROWS] = {0: "groups", 1: "group_rows"}
        axes[OUTPUT_ROW_OFFSETS] = {0: "rows"}
    return spec, inputs, axes


def output_rows_spec(model: EncoderDecoder, output_ids: torch.Tensor) -> GraphSpec:
    """The ``output_rows`` graph (:class:`OutputRowsGraph`) over example ``output_ids``."""
    outputs = [OUTPUT_WEIGHT] if model.decoder.output.bias is None else [OUTPUT_WEIGHT, OUTPUT_BIAS]
    return GraphSpec(
        OutputRowsGraph(model),
        {OUTPUT_IDS_INPUT: output_ids},
        outputs,
        {OUTPUT_IDS_INPUT: {0: "shortlist"}},
        {name: ["shortlist"] for name in outputs},
    )


def onnx_lstm_to_lengths(
    inputs: Any,
    lengths: Any,
    weight_ih: Any,
    weight_hh: Any,
    bias_ih: Any,
    bias_hh: Any,
) -> tuple[Any, Any]:
    """:func:`seqgen.tasks.translation.encoder.lstm_to_lengths` in ONNX (torch.onnx's
    custom translation; the arguments are the exporter's graph values): one ``LSTM`` node
    over ``(time, rows, input_size)`` with ``sequence_lens``, whose ``Y_c`` is each row's
    cell state after its last real position. ONNX stacks the gates as i, o, f, c where
    PyTorch has i, f, g, o; the reordering is of weights only, which ONNX Runtime folds
    into constants when a session starts."""
    from onnxscript import opset18 as op  # only exporting needs it (the ``export`` extra)

    hidden = weight_hh.shape[1]

    def onnx_gates(tensor: Any) -> Any:
        # Slices, not a Split: the exporter's optimizer folds them (it warns on a Split).
        gate = [op.Slice(tensor, [i * hidden], [(i + 1) * hidden], [0]) for i in range(4)]
        return op.Concat(gate[0], gate[3], gate[1], gate[2], axis=0)

    weight = op.Unsqueeze(onnx_gates(weight_ih), [0])  # (directions = 1, 4 hidden, input)
    recurrence = op.Unsqueeze(onnx_gates(weight_hh), [0])
    bias = op.Unsqueeze(op.Concat(onnx_gates(bias_ih), onnx_gates(bias_hh), axis=0), [0])
    time_major = op.Transpose(inputs, perm=[1, 0, 2])
    int32 = 6  # onnx.TensorProto.INT32, what sequence_lens takes
    outputs, _, final_cell = op.LSTM(
        time_major,
        weight,
        recurrence,
        bias,
        op.Cast(lengths, to=int32),
        hidden_size=hidden,
    )
    # outputs (time, 1, rows, hidden) -> (rows, time, hidden); final_cell (1, rows, hidden)
    return op.Transpose(op.Squeeze(outputs, [1]), perm=[1, 0, 2]), op.Squeeze(final_cell, [0])


def select_spec(state: dict[str, torch.Tensor], state_axes: dict[str, dict[int, str]]) -> GraphSpec:
    """The ``select`` graph (:class:`SelectGraph`) over example ``state`` (per-row entries,
    then per-sentence ones) with its dynamic axes."""
    split = [name for name in state if name not in PER_SENTENCE]
    ordered = {name: state[name] for name in [*split, *(n for n in state if n in PER_SENTENCE)]}
    selected = [SELECTED_PREFIX + name for name in ordered]
    return GraphSpec(
        SelectGraph(len(ordered) - len(split)),
        {
            "rows": torch.zeros(EXAMPLE_SELECTED_ROWS, dtype=torch.long),
            "sentences": torch.zeros(EXAMPLE_SELECTED_SENTENCES, dtype=torch.long),
            **ordered,
        },
        selected,
        {"rows": {0: "new_rows"}, "sentences": {0: "new_sentences"}, **state_axes},
        {
            SELECTED_PREFIX + name: ["new_sentences" if name in PER_SENTENCE else "new_rows"]
            for name in ordered
        },
    )


def check_parity(model: EncoderDecoder, folder: Path, files: dict[str, str]) -> None:
    """Run the graphs ``files`` in ``folder`` on sources of other lengths than the
    example's, two rows per sentence (a beam's layout), and compare with PyTorch;
    SeqgenError where they differ by more than ``PARITY_TOLERANCE``."""
    onnx_step = OnnxTranslatorStep.from_files(
        folder, files, device="cpu", threads=1, io_binding=True
    )
    if model.has_shortlist:
        table, frequent = model.shortlist_table.numpy(), model.shortlist_frequent.numpy()
        onnx_step.use_shortlist(table, frequent, model.target_vocab_size)
    onnx_step.group_sentences = 2  # a grouped step's five sentences in three groups
    generator = torch.Generator().manual_seed(0)
    worst = 0.0
    vocab = model.source_vocab_size
    for lengths in ([1], [9, 3, 1, 7, 2]):
        sources = [torch.randint(4, vocab, (n,), generator=generator).tolist() for n in lengths]
        rows = 2 * len(lengths)
        tokens = torch.randint(4, model.target_vocab_size, (rows,), generator=generator)
        state, _ = onnx_step.start(sources, beam_size=2)
        state = onnx_step.select(state, np.arange(len(lengths)).repeat(2))
        log_probs, stepped = onnx_step.step(tokens.numpy(), state)
        stepped = onnx_step.select(stepped, np.arange(rows)[::-1].copy())
        expected, expected_state = _torch_step(model, sources, tokens)
        pairs = [(log_probs, expected)]
        host = {
            name: value.numpy() if hasattr(value, "numpy") else value
            for name, value in stepped.items()
        }
        if model.has_shortlist:  # the tokens of each sentence's columns, grouped or not
            host[OUTPUT_COLUMNS] = column_token_ids(
                np.asarray(host[OUTPUT_IDS]), host[OUTPUT_COLUMNS], host[OUTPUT_MASK]
            ).astype(np.float64)
        for name in [*model.state_names, *(SHORTLIST_NAMES if model.has_shortlist else [])]:
            pairs.append((np.asarray(host[name]), np.flip(expected_state[name], 0)))
        for got, want in pairs:
            if not np.array_equal(np.isneginf(got), np.isneginf(want)):
                worst = np.inf  # not the same shortlist
                continue
            finite = ~np.isneginf(want)
            worst = max(worst, float(np.abs(got[finite].astype(np.float64) - want[finite]).max()))
    if worst > PARITY_TOLERANCE:
        raise SeqgenError(
            f"the exported graphs disagree with PyTorch (max difference {worst:.2g} > "
            f"{PARITY_TOLERANCE}); this torch version's ONNX exporter is not supported"
        )


def _torch_step(
    model: EncoderDecoder, sources: list[list[int]], tokens: torch.Tensor
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """What the step graph should give for two rows per sentence: ``(rows, vocab)`` log-probs
    (-inf outside each row's shortlist, as the adapter hands them to search) and the new
    state, with ``output_mask`` ``(sentences, M)`` for a shortlisted model."""
    host_ids, host_lengths = encoder_inputs(sources)
    with torch.inference_mode():
        state = model.start(torch.from_numpy(host_ids), torch.from_numpy(host_lengths))
        state = {
            name: value if name in SOURCE_NAMES else value.repeat_interleave(2, 0)
            for name, value in state.items()
        }
        shortlist, output = None, None
        if model.has_shortlist:
            table, frequent = model.shortlist_table.numpy(), model.shortlist_frequent.numpy()
            shortlist = batch_shortlist(table, frequent, host_ids, host_lengths)
            output = model.decoder.output_rows(torch.from_numpy(shortlist[0]))
        logits, state = model.step(tokens, state, output)
    expected = {name: tensor.numpy() for name, tensor in state.items()}
    if shortlist is None:
        return torch.log_softmax(logits, -1).numpy(), expected
    output_ids, columns, mask = shortlist
    logits = sentence_logits(logits, torch.from_numpy(columns), torch.from_numpy(mask))
    log_probs = torch.log_softmax(logits, -1).numpy()
    # The adapter hands the whole vocabulary to search: -inf outside each row's shortlist.
    full = np.full((len(tokens), model.target_vocab_size), -np.inf, dtype=np.float32)
    ids = column_token_ids(output_ids, columns, mask).repeat(2, axis=0)
    row, column = np.nonzero(ids >= 0)
    full[row, ids[row, column]] = log_probs[row, column]
    expected[OUTPUT_COLUMNS] = column_token_ids(output_ids, columns, mask).astype(np.float64)
    expected[OUTPUT_MASK] = mask
    return full, expected


def _model_entry(model: EncoderDecoder) -> dict[str, Any]:
    config = model.config
    return {
        "cell": config.cell,
        "encoder_layers": config.encoder_layers,
        "encoder_hidden_size": config.encoder_hidden_size,
        "decoder_layers": config.decoder_layers,
        "decoder_hidden_size": config.decoder_hidden_size,
        "attention": config.attention,
        "input_feeding": config.input_feeding,
        "source_vocab_size": model.source_vocab_size,
        "target_vocab_size": model.target_vocab_size,
    }


def _state_entry(
    model: EncoderDecoder, example: dict[str, torch.Tensor], *, fp16: bool
) -> dict[str, Any]:
    """Each state entry's shape and dtype, and which part of the state it is."""
    entries = {}
    for name in model.state_names:
        axes = ["sentences", "source_len"] if name in SOURCE_NAMES else ["rows"]
        shape = [*axes, *example[name].shape[len(axes) :]]
        dtype = str(example[name].dtype).removeprefix("torch.")
        entries[name] = {"shape": shape, "dtype": {"float": "float32"}.get(dtype, dtype)}
    return {
        "names": list(model.state_names),
        "recurrent": [name for name in model.state_names if name in RECURRENT],
        "source_side": [name for name in model.state_names if name in SOURCE_NAMES],
        "entries": entries,
    }
