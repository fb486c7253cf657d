"""Lexical shortlists: score only the target tokens a batch's sources make likely (no torch).

At each decoding step the output layer (``decoder_hidden x vocab`` per row), its
log-softmax and its top-k are most of a translator's work. Most of those 8,000 tokens
never stand a chance for a given source: a shortlist keeps, for each source token, the
target tokens that co-occur with it most in the training pairs, plus the most frequent
target tokens (the lexical shortlists of Marian, Junczys-Dowmunt et al., 2018, with
co-occurrence counts instead of word alignments).

Each sentence may produce only its own shortlist, whatever else is in its batch: the output
layer is computed once for the union over the batch (:func:`shortlist_ids`, ``(M,)``), and
each row then keeps only its sentence's columns of those logits (:func:`shortlist_columns`,
``(sentences, S)``, with a mask of 0 or -inf for the padding of shorter shortlists), so its
log-probabilities are normalised over its own tokens alone, and the log-softmax and top-k
read ``S`` columns, not ``M``: a sentence's shortlist holds about 250 of test_2016_flickr's
8,000 tokens, a batch of 100 sentences about 2,500. (Before each sentence kept its own
shortlist, a batch scored the union, and a sentence's words depended on its neighbours;
bundle format 2 then masked the union's ``M`` columns per sentence.)

The table is built once from the training pairs (:func:`build_shortlist`), stored with
the model's weights (buffers ``shortlist_table`` and ``shortlist_frequent``) and in an
ONNX bundle, and read by both backends through :func:`shortlist_ids` and
:func:`shortlist_columns`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from seqgen.text.vocabulary import EOS_ID, SPECIAL_TOKENS

# The ids every shortlist holds: the special tokens (EOS ends every hypothesis).
SPECIAL_IDS = np.arange(len(SPECIAL_TOKENS), dtype=np.int64)


def build_shortlist(
    sources: Sequence[Sequence[int]],
    targets: Sequence[Sequence[int]],
    *,
    source_vocab_size: int,
    target_vocab_size: int,
    per_source: int,
    frequent: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Count co-occurrences in the training pairs and keep each source token's best.

    A pair of tokens scores ``count(s, t) / (count(s) + count(t))`` (the Dice coefficient
    without its factor 2; counts are of sentence pairs holding the token), which prefers a
    token's translations over tokens that are merely everywhere; the everywhere tokens come
    in through ``frequent``.

    Args:
        sources, targets: the training pairs as token id lists (no BOS or EOS).
        per_source: target tokens kept per source token (K).
        frequent: the most frequent target tokens, kept for every batch (N).

    Returns:
        ``table`` ``(source_vocab_size, K)`` int64, each row best first and padded with EOS
        where a token co-occurs with fewer than K targets, and ``frequent`` ``(N,)`` int64.
    """
    table = np.full((source_vocab_size, per_source), EOS_ID, dtype=np.int64)
    source_sets = [np.unique(np.asarray(s, dtype=np.int64)) for s in sources]
    target_sets = [np.unique(np.asarray(t, dtype=np.int64)) for t in targets]
    pairs = [
        (s[:, None] * target_vocab_size + t[None, :]).ravel()
        for s, t in zip(source_sets, target_sets, strict=True)
    ]
    codes, counts = np.unique(np.concatenate([np.empty(0, np.int64), *pairs]), return_counts=True)
    source_counts = np.bincount(
        np.concatenate([np.empty(0, np.int64), *source_sets]), minlength=source_vocab_size
    )
    target_counts = np.bincount(
        np.concatenate([np.empty(0, np.int64), *target_sets]), minlength=target_vocab_size
    )
    source_ids, target_ids = np.divmod(codes, target_vocab_size)
    score = counts / (source_counts[source_ids] + target_counts[target_ids])
    order = np.lexsort((-score, source_ids))  # by source token, best score first
    source_ids, target_ids = source_ids[order], target_ids[order]
    starts = np.searchsorted(source_ids, np.arange(source_vocab_size))
    ends = np.searchsorted(source_ids, np.arange(source_vocab_size), side="right")
    for token, (start, end) in enumerate(zip(starts, ends, strict=True)):
        kept = target_ids[start : min(end, start + per_source)]
        table[token, : len(kept)] = kept
    occurrences = np.bincount(
        np.concatenate([np.empty(0, np.int64), *(np.asarray(t, dtype=np.int64) for t in targets)]),
        minlength=target_vocab_size,
    )
    # A stable sort: equally frequent tokens keep id order, so the table is reproducible.
    most_frequent = np.full(frequent, EOS_ID, dtype=np.int64)  # EOS pads a small vocabulary
    ranked = np.argsort(-occurrences, kind="stable")[:frequent]
    most_frequent[: len(ranked)] = ranked
    return table, most_frequent


def shortlist_ids(table: np.ndarray, frequent: np.ndarray, source_ids: np.ndarray) -> np.ndarray:
    """The sorted target ids a batch may produce.

    Args:
        table: ``(source_vocab, K)`` int64, from :func:`build_shortlist`.
        frequent: ``(N,)`` int64.
        source_ids: ``(rows, source_len)`` int64, the encoder's input (padding included:
            the PAD row of the table holds only EOS).

    Returns:
        ``(M,)`` int64, ascending: the special tokens, ``frequent`` and the table rows of
        every source token, each once.
    """
    # Each distinct source id once (a batch repeats its common words), then marks in a
    # vocabulary-sized mask instead of a sort: 1,000 sentences took 10 ms with np.unique of
    # every table row of every position, on the host of a GPU that decodes them in 200 ms.
    # The distinct ids by a mask too: np.unique imports numpy.ma on first use, 10 ms of a
    # one-line translation's start.
    present = np.zeros(len(table), dtype=bool)
    present[source_ids] = True
    rows = table[present]
    size = 1 + max(int(rows.max(initial=0)), int(frequent.max(initial=0)), int(SPECIAL_IDS[-1]))
    chosen = np.zeros(size, dtype=bool)
    chosen[SPECIAL_IDS] = True
    chosen[frequent] = True
    chosen[rows] = True
    return np.flatnonzero(chosen).astype(np.int64)


def shortlist_columns(
    table: np.ndarray,
    frequent: np.ndarray,
    source_ids: np.ndarray,
    source_lengths: np.ndarray,
    output_ids: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Each sentence's own shortlist as columns of the batch's ``output_ids``: exactly the
    ids :func:`shortlist_ids` gives for that sentence alone, in the same (ascending) order.

    Args:
        table, frequent: as for :func:`shortlist_ids`.
        source_ids: ``(sentences, source_len)`` int64, right-padded (padding is not read).
        source_lengths: ``(sentences,)`` int64, each sentence's real tokens (EOS included).
        output_ids: ``(M,)`` int64 ascending, a superset of every sentence's shortlist (the
            batch's :func:`shortlist_ids`).

    Returns:
        ``columns`` ``(sentences, S)`` int64, indices into ``output_ids``, ascending within a
        sentence and padded with 0 to the batch's longest shortlist ``S``; and ``mask``
        ``(sentences, S)`` float32, 0 for a sentence's own columns and -inf for padding
        (added to the gathered logits before the log-softmax).
    """
    sentences, width = source_ids.shape
    column = np.full(int(output_ids.max(initial=0)) + 1, -1, dtype=np.int64)
    column[output_ids] = np.arange(len(output_ids))
    allowed = np.zeros((sentences, len(output_ids)), dtype=bool)
    allowed[:, column[SPECIAL_IDS]] = True
    allowed[:, column[frequent]] = True
    row, position = np.nonzero(np.arange(width) < source_lengths[:, None])
    targets = table[source_ids[row, position]]  # (real tokens, K)
    allowed[np.repeat(row, targets.shape[1]), column[targets.ravel()]] = True
    counts = allowed.sum(axis=1)
    real = np.arange(int(counts.max(initial=0))) < counts[:, None]
    columns = np.zeros(real.shape, dtype=np.int64)
    columns[real] = np.nonzero(allowed)[1]  # row-major: each sentence's columns ascending
    return columns, np.where(real, np.float32(0), np.float32(-np.inf))


def batch_shortlist(
    table: np.ndarray, frequent: np.ndarray, source_ids: np.ndarray, source_lengths: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A batch's ``output_ids`` ``(M,)``, the union of its sentences' shortlists (padding
    not read), and each sentence's :func:`shortlist_columns` and their mask ``(sentences,
    S)``."""
    real = np.arange(source_ids.shape[1]) < source_lengths[:, None]
    output_ids = shortlist_ids(table, frequent, source_ids[real])
    columns, mask = shortlist_columns(table, frequent, source_ids, source_lengths, output_ids)
    return output_ids, columns, mask


def column_token_ids(output_ids: np.ndarray, columns: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``(sentences, S)`` token ids of each sentence's columns, -1 for padding (where
    ``mask`` is -inf): what a step's ``(rows, S)`` log-probs are of."""
    return np.where(mask == 0, output_ids[columns], -1)


# Sentences per group of a grouped step graph's output layer (bundle format 6): groups of 8
# consecutive sentences of a batch share the union of their shortlists, 573 of
# test_2016_flickr's tokens on average against 1,984 for a batch of 64, and a beam-5 step's
# float32 product per group took 1.6-2.2x less time (docs/benchmarks.md, "What is left on
# this machine"). Python and JavaScript group alike, so their translations stay the same bits.
GROUP_SENTENCES = 8


def grouped_shortlist(
    table: np.ndarray,
    frequent: np.ndarray,
    source_ids: np.ndarray,
    source_lengths: np.ndarray,
    group_sentences: int = GROUP_SENTENCES,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`batch_shortlist` for a grouped step: each run of ``group_sentences``
    consecutive sentences shares the union of their shortlists.

    Returns:
        ``output_ids`` ``(G * U,)`` int64, the groups' unions one after the other, each
        ascending and padded with EOS to the longest union ``U`` (padding no column reads);
        ``columns`` ``(sentences, S)`` int64, each sentence's shortlist as indices into
        ``output_ids`` (its group's part), and ``mask`` ``(sentences, S)`` float32, as
        :func:`shortlist_columns` gives them; ``groups`` ``(sentences,)`` int64, each
        sentence's group.
    """
    sentences = len(source_ids)
    starts = range(0, sentences, group_sentences)
    parts = [
        batch_shortlist(
            table,
            frequent,
            source_ids[start : start + group_sentences],
            source_lengths[start : start + group_sentences],
        )
        for start in starts
    ]
    union = max(len(ids) for ids, _, _ in parts)
    width = max(columns.shape[1] for _, columns, _ in parts)
    output_ids = np.full((len(parts), union), EOS_ID, dtype=np.int64)
    columns = np.zeros((sentences, width), dtype=np.int64)
    mask = np.full((sentences, width), -np.inf, dtype=np.float32)
    for group, (start, (ids, part_columns, part_mask)) in enumerate(
        zip(starts, parts, strict=True)
    ):
        output_ids[group, : len(ids)] = ids
        end, own = start + len(part_columns), part_columns.shape[1]
        columns[start:end] = group * union  # padding: the group's first column, masked
        columns[start:end, :own] += part_columns
        mask[start:end, :own] = part_mask
    groups = np.arange(sentences, dtype=np.int64) // group_sentences
    return output_ids.ravel(), columns, mask, groups


def group_layout(
    groups: np.ndarray, rows_per_sentence: int, group_count: int, union: int
) -> tuple[np.ndarray, np.ndarray]:
    """Where a grouped step's rows go: ``groups`` ``(sentences,)`` int64 (each sentence's
    group, of ``group_count``), ``rows_per_sentence`` consecutive rows per sentence, ``union``
    the tokens ``U`` of each group's part of ``output_ids``.

    Returns:
        ``group_rows`` ``(group_count, R)`` int64, the rows of each group (its sentences'
        rows in order, then row 0 as padding, whose scores no row reads), ``R`` the most
        rows a group has and at least 2: one row alone takes ONNX Runtime's matrix-vector
        kernel, whose sums run in another order, and a sentence's bits would then depend on
        its batch (``OnnxTranslatorStep._one_row_as_two``); and ``row_offsets`` ``(rows,)``
        int64: for row ``r`` at place ``j`` of group ``g`` (``slot = g * R + j`` in
        ``group_rows`` flattened), ``(slot - g) * U``, so that its score of ``output_ids[c]``
        is at ``row_offsets[r] + c`` in the step's flat ``(G * R * U)`` scores. The graph
        then makes each row's gather index with one addition (a division there took nine
        ONNX nodes, at a few microseconds each in a greedy step).
    """
    row_groups = np.repeat(groups, rows_per_sentence)  # (rows,): a sentence's rows together
    rows = len(row_groups)
    if group_count == 1:  # greedy search's one group, at every select: the rows in order
        row_slots = np.arange(rows, dtype=np.int64)
        group_rows = np.zeros(max(2, rows), dtype=np.int64)
        group_rows[:rows] = row_slots
        return group_rows[None], row_slots * union
    counts = np.bincount(row_groups, minlength=group_count)
    width = max(2, int(counts.max(initial=0)))
    # Each row's place among its group's rows, in the state's order.
    order = np.argsort(row_groups, kind="stable")
    place = np.empty(rows, dtype=np.int64)
    place[order] = np.arange(rows) - (np.cumsum(counts) - counts)[row_groups[order]]
    row_slots = row_groups * width + place
    group_rows = np.zeros(group_count * width, dtype=np.int64)
    group_rows[row_slots] = np.arange(rows)
    row_offsets = (row_slots - row_slots // width) * union
    return group_rows.reshape(group_count, width), row_offsets
