"""Translator state bookkeeping shared by the PyTorch and ONNX Runtime adapters (no torch).

A translator's decoder state has two parts (names in :mod:`seqgen.tasks.translation.model`):

- the recurrent part (``hidden``, ``cell``, ``feed``), which every step rewrites;
- the source side (``memory``, ``keys``, ``source_mask``), fixed per *sentence*, and with a
  lexical shortlist ``output_mask`` ``(rows, M)``, which of the batch's shortlisted tokens
  (``OUTPUT_IDS``) the row's sentence may produce (0 or -inf, added to the logits).

Beam search reorders rows at every step, but only among the rows of one sentence, so the
source side of a row does not change. Gathering ``memory`` and ``keys`` (the largest arrays)
at each step would copy them for nothing: instead the state remembers which sentence each
row decodes (``SENTENCE``) and the per-sentence source side (``SOURCES``), and the source
side is gathered again only when the sentence of some row changes (beams opened, finished
sentences dropped).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from seqgen.decoding.contract import State
from seqgen.text.vocabulary import EOS_ID, PAD_ID

SOURCE_NAMES = ("memory", "keys", "source_mask")
# (rows, M) float32, 0 where the row's sentence may produce OUTPUT_IDS[j], else -inf
# (seqgen.tasks.translation.shortlist.shortlist_mask); also the step graph's input name
OUTPUT_MASK = "output_mask"
PER_SENTENCE = (*SOURCE_NAMES, OUTPUT_MASK)  # fixed per sentence: gathered when rows change it
SENTENCE = "_sentence"  # (rows,) int64 numpy: the encoded sentence each row decodes
SOURCES = "_sources"  # name -> (sentences, ...) array, the encoder's source side
# (M,) int64, the batch's shortlist (seqgen.tasks.translation.shortlist), when the model has one
OUTPUT_IDS = "_output_ids"
# PyTorch only: the output layer's rows of OUTPUT_IDS, gathered once per batch, not per step
OUTPUT_LAYER = "_output_layer"
# PyTorch only: every target token's share of the decoder's first-layer gates (per model)
EMBEDDING_GATES = "_embedding_gates"
PER_BATCH = (SOURCES, OUTPUT_IDS, OUTPUT_LAYER, EMBEDDING_GATES)  # not one per row


def per_batch(state: State) -> dict[str, Any]:
    """The state's per-batch entries, which ``select`` passes on as they are."""
    return {name: state[name] for name in PER_BATCH if name in state}


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


def with_sentences(state: dict[str, Any], rows: int) -> dict[str, Any]:
    """Add the bookkeeping to a fresh encoder state of ``rows`` rows (row i: sentence i)."""
    state[SENTENCE] = np.arange(rows, dtype=np.int64)
    state[SOURCES] = {name: state[name] for name in PER_SENTENCE if name in state}
    return state


def select_rows(
    state: State,
    rows: np.ndarray,
    gather: Callable[[Any, Any], Any],
    index: Callable[[np.ndarray], Any] = lambda rows: rows,
) -> State:
    """``select`` of the contract: gather ``rows`` of the recurrent part, and of the source
    side only where the rows' sentences changed. ``gather(array, index(rows))`` is the
    backend's; ``index`` runs once per call for the rows and once for the sentences (on a
    GPU: one upload each, not one per array)."""
    rows = np.ascontiguousarray(rows, dtype=np.int64)
    sentence = state[SENTENCE][rows]
    sources = state[SOURCES]
    unchanged = np.array_equal(sentence, state[SENTENCE])
    selected: dict[str, Any] = {SENTENCE: sentence, **per_batch(state)}
    row_index = index(rows)
    sentence_index = None if unchanged else index(sentence)
    for name, value in state.items():
        if name == SENTENCE or name in PER_BATCH:
            continue
        if name in sources:
            selected[name] = value if unchanged else gather(sources[name], sentence_index)
        else:
            selected[name] = gather(value, row_index)
    return selected
