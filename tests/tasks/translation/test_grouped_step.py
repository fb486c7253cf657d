"""A grouped step's output layer (bundle format 6): each group of sentences scored against
its own shortlists' union, and the inputs that say which rows belong to which group."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional

from seqgen.tasks.translation.decoder import OutputRows, grouped_scores
from seqgen.tasks.translation.model import grouped_sentence_logits, sentence_logits
from seqgen.tasks.translation.shortlist import (
    batch_shortlist,
    column_token_ids,
    group_layout,
    grouped_shortlist,
)
from seqgen.tasks.translation.source_rows import (
    LAYOUT,
    OUTPUT_GROUP_ROWS,
    OUTPUT_GROUPING,
    OUTPUT_GROUPS,
    OUTPUT_ROW_OFFSETS,
    encoder_inputs,
    with_group_inputs,
)

EOS = 3
VOCAB = 60
SOURCES = [[5, 6, 7], [8], [9, 10], [11, 12, 13, 14], [15]]


def _table() -> tuple[np.ndarray, np.ndarray]:
    """A shortlist table of 3 targets per source id, and 8 frequent targets."""
    generator = np.random.default_rng(0)
    table = generator.integers(4, VOCAB, size=(20, 3))
    frequent = generator.permutation(np.arange(4, VOCAB))[:8]
    return table, frequent


@pytest.mark.parametrize("group", [1, 2, 3, 5, 8])
def test_each_sentence_keeps_its_shortlist_as_columns_of_its_groups_union(group: int) -> None:
    table, frequent = _table()
    source_ids, lengths = encoder_inputs(SOURCES)
    output_ids, columns, mask, groups = grouped_shortlist(
        table, frequent, source_ids, lengths, group
    )
    _, batch_columns, batch_mask = batch_shortlist(table, frequent, source_ids, lengths)
    batch_ids = batch_shortlist(table, frequent, source_ids, lengths)[0]
    # The same tokens per column as the batch's union gives (an ensemble's members agree).
    want = column_token_ids(batch_ids, batch_columns, batch_mask)
    np.testing.assert_array_equal(column_token_ids(output_ids, columns, mask), want)
    assert groups.tolist() == [s // group for s in range(len(SOURCES))]
    count = -(-len(SOURCES) // group)
    union = len(output_ids) // count
    assert len(output_ids) == count * union
    for g in range(count):
        part = output_ids[g * union : (g + 1) * union]
        members = slice(g * group, (g + 1) * group)
        own, _, _ = batch_shortlist(table, frequent, source_ids[members], lengths[members])
        assert part[: len(own)].tolist() == own.tolist()  # ascending, then EOS padding
        assert (part[len(own) :] == EOS).all()
        # Every column, padding included, lies in the sentence's own group's part.
        assert ((columns[members] >= g * union) & (columns[members] < (g + 1) * union)).all()


def test_the_layout_places_each_row_in_its_groups_row_whatever_the_sentences_order() -> None:
    groups = np.array([2, 0, 1, 0, 2, 2])  # sentences as select leaves them: any order
    union = 10
    group_rows, row_offsets = group_layout(groups, 3, group_count=4, union=union)
    assert group_rows.shape == (4, 9)  # group 2 has three sentences of 3 rows; group 3 none
    # Row r's place (slot) in group_rows flattened, from its offset (slot - g) * U.
    owner = np.repeat(groups, 3)
    slots = row_offsets // union + owner
    np.testing.assert_array_equal(row_offsets % union, 0)
    np.testing.assert_array_equal(group_rows.reshape(-1)[slots], np.arange(18))
    np.testing.assert_array_equal(slots // 9, owner)  # each row in its own group's row
    # The sentences of a group in the state's order, their rows consecutive; padding row 0.
    assert group_rows[0].tolist() == [3, 4, 5, 9, 10, 11, 0, 0, 0]
    assert group_rows[3].tolist() == [0] * 9
    one, offsets = group_layout(np.array([0]), rows_per_sentence=1, group_count=1, union=union)
    assert one.shape == (1, 2) and offsets.tolist() == [0]  # two rows at least, never one


def test_grouped_scores_are_each_rows_product_plus_bias_as_the_union_gives_them() -> None:
    """Per row and column the same value as scoring the batch's union: ``features . w + b``,
    the bias added to the picked columns only, in the same order (the same bits)."""
    table, frequent = _table()
    source_ids, lengths = encoder_inputs(SOURCES)
    generator = torch.Generator().manual_seed(0)
    weight, bias = (
        torch.randn(VOCAB, 16, generator=generator),
        torch.randn(VOCAB, generator=generator),
    )
    beam = 2
    features = torch.randn(len(SOURCES) * beam, 16, generator=generator)
    batch_ids, batch_columns, batch_mask = batch_shortlist(table, frequent, source_ids, lengths)
    union = functional.linear(features, weight[batch_ids]) + bias[batch_ids]
    want = sentence_logits(union, torch.from_numpy(batch_columns), torch.from_numpy(batch_mask))
    for group in (1, 2, 3):
        ids, columns, mask, groups = grouped_shortlist(table, frequent, source_ids, lengths, group)
        count = int(groups.max()) + 1
        group_rows, row_offsets = group_layout(groups, beam, count, len(ids) // count)
        output = OutputRows(weight[ids], bias[ids], torch.from_numpy(group_rows))
        scores = grouped_scores(features, output)
        assert scores.shape == (
            group_rows.shape[0],
            group_rows.shape[1],
            len(ids) // len(group_rows),
        )
        got = grouped_sentence_logits(
            scores,
            torch.from_numpy(columns),
            torch.from_numpy(mask),
            torch.from_numpy(row_offsets),
            output.bias,
        )
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
        np.testing.assert_array_equal(np.isneginf(got.numpy()), np.isneginf(want.numpy()))


def test_a_selected_state_makes_its_group_inputs_again_only_when_its_layout_changes() -> None:
    state = {
        OUTPUT_GROUPS: np.array([0, 0, 1]),
        OUTPUT_GROUPING: (2, 10),
        LAYOUT: (3, 2),
    }
    made = with_group_inputs(state)
    assert made[OUTPUT_GROUP_ROWS].shape == (2, 4) and made[OUTPUT_ROW_OFFSETS].shape == (6,)
    # Beam search reordering rows within their sentences: the same layout, the same inputs.
    reordered = with_group_inputs({**state, OUTPUT_GROUPS: np.array([0, 0, 1])}, made)
    assert reordered[OUTPUT_GROUP_ROWS] is made[OUTPUT_GROUP_ROWS]
    # A sentence finished: made again for the two left.
    finished = with_group_inputs({**state, OUTPUT_GROUPS: np.array([0, 1]), LAYOUT: (2, 2)}, made)
    assert finished[OUTPUT_GROUP_ROWS].shape == (2, 2)
    # Slots 0, 1 (group 0) and 2, 3 (group 1) of rows 2 wide, 10 tokens a group.
    assert finished[OUTPUT_ROW_OFFSETS].tolist() == [0, 10, 10, 20]
    assert with_group_inputs({LAYOUT: (3, 2)}) == {LAYOUT: (3, 2)}  # an ungrouped step's
