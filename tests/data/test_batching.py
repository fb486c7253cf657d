"""Truncated-BPTT stream batches and the fixed train / validation / test splits."""

from __future__ import annotations

import pytest
import torch

from seqgen.data.batching import StreamBatches
from seqgen.data.corpora import load_text
from seqgen.data.splits import SPLIT_NAMES, pick_split, text_splits
from seqgen.errors import DataError
from seqgen.tasks.generation.config import TextDataConfig

BOS = 2


def stream(length: int) -> torch.Tensor:
    """Distinct ids that never equal BOS, so every position is recognisable."""
    return torch.arange(10, 10 + length, dtype=torch.long)


def batches(length: int = 102, *, batch_size: int = 4, sequence_length: int = 8) -> StreamBatches:
    return StreamBatches(
        stream(length), batch_size=batch_size, sequence_length=sequence_length, bos_id=BOS
    )


def test_shapes_and_length() -> None:
    windows = batches()  # 102 tokens -> 4 rows of 25 (2 dropped), 25 predictions per row
    assert windows.rows.shape == (4, 26)
    assert len(windows) == 4  # ceil(25 / 8)
    assert windows.num_tokens == 100
    shapes = [tuple(inputs.shape) for inputs, _ in windows]
    assert shapes == [(4, 8), (4, 8), (4, 8), (4, 1)]
    for inputs, targets in windows:
        assert inputs.shape == targets.shape
        assert inputs.dtype == targets.dtype == torch.long


def test_every_row_starts_with_bos() -> None:
    windows = batches()
    inputs, _ = windows.window(0)
    assert inputs[:, 0].tolist() == [BOS] * 4
    # BOS appears nowhere else.
    assert (windows.rows[:, 1:] != BOS).all()


def test_targets_are_inputs_shifted_by_one() -> None:
    for inputs, targets in batches():
        assert torch.equal(inputs[:, 1:], targets[:, :-1])


def test_consecutive_windows_of_a_row_are_contiguous() -> None:
    """The BPTT boundary: the last target of window i is the first input of window i + 1."""
    windows = list(batches())
    for (_, targets), (next_inputs, _) in zip(windows, windows[1:], strict=False):
        assert torch.equal(targets[:, -1], next_inputs[:, 0])


def test_each_row_is_a_contiguous_piece_of_the_stream() -> None:
    windows = batches()
    targets = torch.cat([t for _, t in windows], dim=1)
    assert torch.equal(targets, stream(100).view(4, 25))
    inputs = torch.cat([i for i, _ in windows], dim=1)
    expected = torch.cat([torch.full((4, 1), BOS), stream(100).view(4, 25)[:, :-1]], dim=1)
    assert torch.equal(inputs, expected)


def test_short_last_window() -> None:
    windows = batches(4 * 20, sequence_length=8)  # 20 predictions per row: 8 + 8 + 4
    assert len(windows) == 3
    inputs, targets = windows.window(2)
    assert inputs.shape == targets.shape == (4, 4)
    assert targets[:, -1].tolist() == stream(80).view(4, 20)[:, -1].tolist()


def test_windows_divide_evenly() -> None:
    windows = batches(4 * 16, sequence_length=8)
    assert [tuple(i.shape) for i, _ in windows] == [(4, 8), (4, 8)]


def test_window_longer_than_a_row() -> None:
    windows = batches(8, batch_size=4, sequence_length=16)
    assert len(windows) == 1
    inputs, targets = windows.window(0)
    assert inputs.tolist() == [[BOS, 10], [BOS, 12], [BOS, 14], [BOS, 16]]
    assert targets.tolist() == [[10, 11], [12, 13], [14, 15], [16, 17]]


def test_iteration_equals_indexing() -> None:
    windows = batches()
    for index, (inputs, targets) in enumerate(windows):
        expected_inputs, expected_targets = windows.window(index)
        assert torch.equal(inputs, expected_inputs)
        assert torch.equal(targets, expected_targets)


def test_too_few_tokens_for_the_rows() -> None:
    with pytest.raises(ValueError, match="3 tokens cannot fill 4 rows; use a smaller batch"):
        batches(3, batch_size=4)
    assert len(batches(4, batch_size=4)) == 1  # one token per row is enough


# --- splits ---------------------------------------------------------------------------------------

SYNTHETIC = "".join(chr(ord("a") + i % 26) for i in range(1000))


def test_nanogpt_split_of_a_synthetic_text() -> None:
    splits = text_splits(SYNTHETIC, TextDataConfig(validation_fraction=0.1))
    assert set(splits) == set(SPLIT_NAMES)
    assert len(splits["train"]) == 900
    assert len(splits["val"]) == 100
    assert splits["test"] == ""
    assert splits["train"] == SYNTHETIC[:900]
    assert splits["val"] == SYNTHETIC[900:]


def test_split_with_a_test_part_comes_from_the_very_end() -> None:
    splits = text_splits(SYNTHETIC, TextDataConfig(validation_fraction=0.1, test_fraction=0.1))
    assert [len(splits[name]) for name in SPLIT_NAMES] == [800, 100, 100]
    assert splits["train"] + splits["val"] + splits["test"] == SYNTHETIC
    assert splits["test"] == SYNTHETIC[900:]


def test_text_too_short_to_split() -> None:
    with pytest.raises(DataError, match="too short to split.*use more text"):
        text_splits("a", TextDataConfig(validation_fraction=0.1))
    with pytest.raises(DataError, match="0 characters"):
        text_splits("", TextDataConfig(validation_fraction=0.1))
    assert text_splits("ab", TextDataConfig(validation_fraction=0.1))["val"] == "b"


def test_pick_split() -> None:
    splits = text_splits(SYNTHETIC, TextDataConfig(validation_fraction=0.1))
    assert pick_split(splits, "val") == SYNTHETIC[900:]
    with pytest.raises(DataError, match="unknown split 'dev'; choose one of: train, val, test"):
        pick_split(splits, "dev")
    with pytest.raises(DataError, match="no 'test' split.*--split val or --file"):
        pick_split(splits, "test")


def test_tinyshakespeare_split_matches_nanogpt(data_dir: str) -> None:
    text = load_text("tinyshakespeare", data_dir=data_dir)
    splits = text_splits(text, TextDataConfig())
    assert len(text) == 1_115_394
    assert len(splits["train"]) == int(len(text) * 0.9) == 1_003_854
    assert len(splits["val"]) == 111_540
