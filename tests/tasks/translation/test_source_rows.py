"""The translator state's layout: rows grouped by sentence, the source side once per sentence
(seqgen/tasks/translation/source_rows.py), on numpy arrays as the ONNX Runtime adapter keeps
them."""

from __future__ import annotations

import numpy as np

from seqgen.tasks.translation.source_rows import (
    LAYOUT,
    OUTPUT_IDS,
    OUTPUT_MASK,
    row_layout,
    select_rows,
    with_sentences,
)


def test_row_layout_groups_equal_runs_of_one_sentence() -> None:
    # Beams opened: each sentence's row 3 times.
    k, sentences = row_layout(np.array([0, 0, 0, 1, 1, 1]), 1)
    assert k == 3 and sentences.tolist() == [0, 1]
    # Beams reordered within their sentences, one sentence dropped.
    k, sentences = row_layout(np.array([5, 3, 3, 1, 0, 0]), 3)
    assert k == 3 and sentences.tolist() == [1, 0]
    # Greedy: one row per sentence, some finished.
    k, sentences = row_layout(np.array([0, 2, 3]), 1)
    assert k == 1 and sentences.tolist() == [0, 2, 3]


def test_uneven_or_separate_rows_get_a_sentence_each() -> None:
    k, sentences = row_layout(np.array([2, 0, 0, 1]), 1)
    assert k == 1 and sentences.tolist() == [2, 0, 0, 1]
    k, sentences = row_layout(np.array([0, 0]), 1, separate=True)
    assert k == 1 and sentences.tolist() == [0, 0]
    k, sentences = row_layout(np.array([1]), 2)
    assert k == 1 and sentences.tolist() == [0]


def numpy_state(sentences: int) -> dict:
    state = {
        "hidden": np.arange(sentences * 2, dtype=np.float32).reshape(sentences, 1, 2),
        "memory": np.arange(sentences * 6, dtype=np.float32).reshape(sentences, 3, 2) + 100,
        "source_mask": np.ones((sentences, 3), dtype=bool),
        OUTPUT_MASK: np.zeros((sentences, 4), dtype=np.float32) - np.arange(sentences)[:, None],
        OUTPUT_IDS: np.arange(4),
    }
    return with_sentences(state, sentences)


def gather(array: np.ndarray, index: np.ndarray) -> np.ndarray:
    return array[index]


def test_select_gathers_the_source_side_only_when_the_sentences_change() -> None:
    state = numpy_state(3)
    beams = select_rows(state, np.array([2, 2, 0, 0, 1, 1]), gather)
    assert beams[LAYOUT] == (3, 2) and beams[OUTPUT_IDS] is state[OUTPUT_IDS]
    assert beams["hidden"].shape[0] == 6 and beams["memory"].shape[0] == 3
    np.testing.assert_array_equal(beams["memory"], state["memory"][[2, 0, 1]])
    np.testing.assert_array_equal(beams[OUTPUT_MASK], state[OUTPUT_MASK][[2, 0, 1]])
    reordered = select_rows(beams, np.array([1, 1, 3, 2, 4, 4]), gather)
    assert reordered["memory"] is beams["memory"] and reordered[OUTPUT_MASK] is beams[OUTPUT_MASK]
    np.testing.assert_array_equal(reordered["hidden"], beams["hidden"][[1, 1, 3, 2, 4, 4]])
    dropped = select_rows(reordered, np.array([4, 5]), gather)
    assert dropped[LAYOUT] == (1, 2)
    np.testing.assert_array_equal(dropped["memory"], state["memory"][[1]])
    np.testing.assert_array_equal(dropped["source_mask"], state["source_mask"][[1]])


def test_the_first_sentences_in_order_keep_their_source_side_without_a_copy() -> None:
    state = numpy_state(3)
    # Beams opened: the same sentences in their order, so the same arrays.
    beams = select_rows(state, np.array([0, 0, 1, 1, 2, 2]), gather)
    assert beams[LAYOUT] == (3, 2)
    assert beams["memory"] is state["memory"] and beams[OUTPUT_MASK] is state[OUTPUT_MASK]
    # The last sentence finished: the first two, as a view of the old arrays.
    dropped = select_rows(beams, np.array([1, 0, 2, 3]), gather)
    assert dropped[LAYOUT] == (2, 2)
    for name in ("memory", "source_mask", OUTPUT_MASK):
        assert np.shares_memory(dropped[name], state[name])
        np.testing.assert_array_equal(dropped[name], state[name][[0, 1]])
    np.testing.assert_array_equal(dropped["hidden"], beams["hidden"][[1, 0, 2, 3]])
    # A sentence before the last finished: gathered, a copy.
    middle = select_rows(dropped, np.array([2, 3]), gather)
    assert not np.shares_memory(middle["memory"], state["memory"])
    np.testing.assert_array_equal(middle["memory"], state["memory"][[1]])
