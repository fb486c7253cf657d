"""Translator state bookkeeping shared by the PyTorch and ONNX Runtime adapters (no torch).

A translator's decoder state has two parts (names in :mod:`seqgen.tasks.translation.model`):

- the recurrent part (``hidden``, ``cell``, ``feed``), one entry per row, which every step
  rewrites;
- the source side (``memory``, ``keys``, ``source_mask``), fixed per *sentence*, and with a
  lexical shortlist ``output_columns`` ``(sentences, S)``, which of the batch's shortlisted
  tokens (``OUTPUT_IDS``) the sentence may produce, and their ``output_mask`` (0, or -inf
  for padding, added to its rows' logits of those columns).

The source side is kept once per sentence, not copied into every beam row: the rows are
grouped by sentence, sentence-major, ``rows / sentences`` consecutive rows per sentence
(``LAYOUT``), and the step attends from each sentence's rows together
(``Decoder._attend``). Beam search reorders rows at every step, but only among the rows of
one sentence, so the source side is gathered again only when the sentences change (beams
opened, finished sentences dropped), and then once per sentence, not once per row.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from seqgen.decoding.contract import State
from seqgen.tasks.translation.shortlist import column_token_ids, group_layout
from seqgen.text.vocabulary import EOS_ID, PAD_ID

SOURCE_NAMES = ("memory", "keys", "source_mask")
# (sentences, S) int64, the columns of OUTPUT_IDS the sentence may produce, and (sentences, S)
# float32, 0 for those and -inf for padding (seqgen.tasks.translation.shortlist
# .shortlist_columns); also the step graph's input names
OUTPUT_COLUMNS = "output_columns"
OUTPUT_MASK = "output_mask"
SHORTLIST_NAMES = (OUTPUT_COLUMNS, OUTPUT_MASK)
# A grouped step's (bundle format 6) inputs (G, R) int64 and (rows,) int64, made from the
# layout and OUTPUT_GROUPS whenever the layout changes (with_group_inputs, below)
OUTPUT_GROUP_ROWS = "output_group_rows"
OUTPUT_ROW_OFFSETS = "output_row_offsets"
GROUP_NAMES = (OUTPUT_GROUP_ROWS, OUTPUT_ROW_OFFSETS)
# (sentences,) int64 on the host: each sentence's group, for a grouped step's shortlist
OUTPUT_GROUPS = "_output_groups"
# one entry per sentence, not per row
PER_SENTENCE = (*SOURCE_NAMES, *SHORTLIST_NAMES, OUTPUT_GROUPS)
# (sentences, rows per sentence), two ints: how the state's rows group into its sentences
LAYOUT = "_layout"
# (M,) int64, the batch's shortlist (seqgen.tasks.translation.shortlist), when the model has one
OUTPUT_IDS = "_output_ids"
# The output layer's rows of OUTPUT_IDS, gathered once per batch, not per step: PyTorch's
# Decoder.output_rows, ONNX Runtime's outputs of the bundle's output_rows graph by name (the
# step graph's inputs of those names, bundle format 4)
OUTPUT_LAYER = "_output_layer"
# PyTorch only: every target token's share of the decoder's first-layer gates (per model)
EMBEDDING_GATES = "_embedding_gates"
# A grouped step's (G, U): its OUTPUT_IDS are G groups' unions of U tokens each
OUTPUT_GROUPING = "_output_grouping"
PER_BATCH = (OUTPUT_IDS, OUTPUT_LAYER, EMBEDDING_GATES, OUTPUT_GROUPING)  # not per row/sentence


def per_batch(state: State) -> dict[str, Any]:
    """The state's per-batch entries, which ``select`` passes on as they are."""
    return {name: state[name] for name in PER_BATCH if name in state}


def row_token_ids(state: State, to_host: Callable[..., Sequence[np.ndarray]]) -> np.ndarray:
    """``(rows, S)`` token ids of each row's columns of a shortlisted step's log-probs (its
    sentence's shortlist, -1 for padding), on the host; ``to_host(*values)`` is the
    backend's copy of ``OUTPUT_IDS`` and the shortlist's columns and mask to numpy."""
    output_ids, columns, mask = to_host(*(state[name] for name in (OUTPUT_IDS, *SHORTLIST_NAMES)))
    return column_token_ids(output_ids, columns, mask).repeat(state[LAYOUT][1], axis=0)


def encoder_inputs(sources: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Append EOS to each source (as training does) and right-pad with PAD.

    Returns:
        ``source_ids`` ``(batch, max_len)`` int64 and ``source_lengths`` ``(batch,)`` int64
        (each >= 1: an empty source is just EOS).
    """
    rows = [[*source, EOS_ID] for source in sources]
    lengths = np.array([len(row) for row in rows], dtype=np.int64)
    ids = np.full((len(rows), int(lengths.max(initial=1))), PAD_ID, dtype=np.int64)
    real = np.arange(ids.shape[1]) < lengths[:, None]
    if rows:
        ids[real] = np.concatenate([np.asarray(row, dtype=np.int64) for row in rows])
    return ids, lengths


def with_sentences(state: dict[str, Any], sentences: int) -> dict[str, Any]:
    """Add the layout to a fresh encoder state of ``sentences`` sentences, one row each."""
    state[LAYOUT] = (sentences, 1)
    return state


def row_layout(
    rows: np.ndarray, rows_per_sentence: int, *, separate: bool = False
) -> tuple[int, np.ndarray]:
    """The layout of ``rows`` (indices into a state whose rows group ``rows_per_sentence``
    to a sentence): ``(k, sentences)``, the new rows per sentence and each new sentence's
    index among the old ones ``(len(rows) / k,)`` int64.

    Consecutive rows of one old sentence form a new sentence's group when every such run
    has the same length ``k`` (beam search: ``beam``; greedy search: 1); otherwise, or with
    ``separate``, each row gets a sentence of its own (its source side copied), which any
    selection allows.
    """
    owner = rows // rows_per_sentence  # each new row's old sentence
    if separate or owner.size < 2:
        return 1, owner
    starts = np.flatnonzero(np.concatenate(([True], owner[1:] != owner[:-1])))
    lengths = np.diff(starts, append=owner.size)
    if (lengths != lengths[0]).any():
        return 1, owner
    return int(lengths[0]), owner[starts]


def select_rows(
    state: State,
    rows: np.ndarray,
    gather: Callable[[Any, Any], Any],
    index: Callable[[np.ndarray], Any] = lambda rows: rows,
    *,
    separate: bool = False,
) -> State:
    """``select`` of the contract: gather ``rows`` of the recurrent part, and the source
    side once per sentence, only where the sentences changed (:func:`row_layout`;
    ``separate``: one sentence per row). ``gather(array, index(rows))`` is the backend's;
    ``index`` runs once per call for the rows and once for the sentences (on a GPU: one
    upload each, not one per array)."""
    rows = np.ascontiguousarray(rows, dtype=np.int64)
    old_sentences, old_k = state[LAYOUT]
    k, sentences = row_layout(rows, old_k, separate=separate)
    # The first sentences kept in their order (beams opened or reordered, the batch's last
    # sentences finished): the source side is the leading part of the old one, a view.
    leading = bool((sentences == np.arange(sentences.size)).all())
    selected: dict[str, Any] = {LAYOUT: (sentences.size, k), **per_batch(state)}
    row_index = index(rows)
    sentence_index = None if leading else index(sentences)
    for name, value in state.items():
        if name == LAYOUT or name in PER_BATCH or name in GROUP_NAMES:
            continue  # a grouped step's inputs are made for the new layout, not gathered
        if name not in PER_SENTENCE:
            selected[name] = gather(value, row_index)
        elif not leading:
            selected[name] = gather(value, sentence_index)
        else:
            selected[name] = value if sentences.size == old_sentences else value[: sentences.size]
    return with_group_inputs(selected, state)


def with_group_inputs(state: State, previous: State | None = None) -> State:
    """``state`` with a grouped step's ``output_group_rows`` and ``output_row_offsets`` for its
    rows (:func:`seqgen.tasks.translation.shortlist.group_layout`), taken from ``previous``
    (the state it was selected from) where the layout and the groups did not change: beam
    search reorders rows within their sentences at every step, and its sentences change only
    when one finishes. A state without groups is returned as it is."""
    if OUTPUT_GROUPS not in state:
        return state
    groups, layout = state[OUTPUT_GROUPS], state[LAYOUT]
    if (
        previous is not None
        and previous.get(LAYOUT) == layout
        and np.array_equal(previous[OUTPUT_GROUPS], groups)
    ):
        return {**state, **{name: previous[name] for name in GROUP_NAMES}}
    count, union = state[OUTPUT_GROUPING]
    made = group_layout(groups, layout[1], count, union)
    return {**state, **dict(zip(GROUP_NAMES, made, strict=True))}
