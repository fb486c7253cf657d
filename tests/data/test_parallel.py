"""Token-budgeted, length-bucketed batches of sentence pairs."""

from __future__ import annotations

import random

import pytest
import torch

from seqgen.data.parallel import ParallelBatches, pad_batch

BOS, EOS, PAD = 2, 3, 0


def make_pairs(count: int = 40, seed: int = 0) -> tuple[list[list[int]], list[list[int]]]:
    rng = random.Random(seed)
    sources = [[rng.randrange(4, 20) for _ in range(rng.randrange(1, 12))] for _ in range(count)]
    targets = [[rng.randrange(4, 20) for _ in range(rng.randrange(1, 12))] for _ in range(count)]
    return sources, targets


def pair_key(source: list[int], target: list[int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    return tuple(source), tuple(target)


def test_pad_batch() -> None:
    ids, lengths = pad_batch([[5, 6, 7], [8], []], pad_id=PAD)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0], [0, 0, 0]]
    assert lengths.tolist() == [3, 1, 0] and ids.dtype == lengths.dtype == torch.int64


def test_every_pair_once_per_epoch_within_the_token_budget() -> None:
    sources, targets = make_pairs()
    batches = ParallelBatches(sources, targets, batch_tokens=48, seed=1)
    seen = []
    for batch in batches:
        rows, source_len = batch.source_ids.shape
        assert rows * max(source_len, batch.target_in.shape[1]) <= 48
        for row in range(rows):
            length = int(batch.source_lengths[row])
            source = batch.source_ids[row, : length - 1].tolist()
            target = batch.target_out[row].tolist()
            seen.append(pair_key(source, target[: target.index(EOS)]))
    assert sorted(seen) == sorted(pair_key(s, t) for s, t in zip(sources, targets, strict=True))
    assert len(list(batches)) == len(batches)


def test_batch_layout_bos_eos_and_padding() -> None:
    sources = [[5, 6, 7], [8]]
    targets = [[9, 10], [11, 12, 13, 14]]
    batches = ParallelBatches(sources, targets, batch_tokens=100, shuffle=False)
    (batch,) = list(batches)
    # Sorted by source length: the pair with the shorter source comes first.
    assert batch.source_ids.tolist() == [[8, EOS, PAD, PAD], [5, 6, 7, EOS]]
    assert batch.source_lengths.tolist() == [2, 4]
    assert batch.target_in.tolist() == [[BOS, 11, 12, 13, 14], [BOS, 9, 10, PAD, PAD]]
    assert batch.target_out.tolist() == [[11, 12, 13, 14, EOS], [9, 10, EOS, PAD, PAD]]
    assert batch.num_tokens == 5 + 3 and batch.rows == 2


def test_filters_by_length_and_drops_empty_pairs() -> None:
    sources = [[4] * 3, [4] * 9, [], [4] * 2, [4] * 5]
    targets = [[5] * 3, [5] * 2, [5] * 2, [], [5] * 7]
    batches = ParallelBatches(
        sources, targets, batch_tokens=64, max_source_length=8, max_target_length=6
    )
    assert batches.pairs == [0] and batches.num_dropped == 4
    assert [index for batch in batches.batch_indices(0) for index in batch] == [0]


def test_deterministic_by_seed_and_epoch_and_reshuffled_across_epochs() -> None:
    sources, targets = make_pairs(60)
    first = ParallelBatches(sources, targets, batch_tokens=40, seed=7)
    second = ParallelBatches(sources, targets, batch_tokens=40, seed=7)
    assert first.batch_indices(3) == second.batch_indices(3)
    assert first.batch_indices(0) != first.batch_indices(1)
    assert len(first.batch_indices(0)) == len(first.batch_indices(1)) == len(first)
    other_seed = ParallelBatches(sources, targets, batch_tokens=40, seed=8)
    assert other_seed.batch_indices(0) != first.batch_indices(0)
    first.set_epoch(2)
    second.set_epoch(2)
    for one, two in zip(first, second, strict=True):
        assert torch.equal(one.source_ids, two.source_ids)
        assert torch.equal(one.target_in, two.target_in)


def test_an_oversized_pair_gets_a_batch_alone_and_bad_arguments_are_rejected() -> None:
    batches = ParallelBatches([[4] * 10, [4]], [[5] * 10, [5]], batch_tokens=4, shuffle=False)
    assert [len(indices) for indices in batches.batch_indices(0)] == [1, 1]
    with pytest.raises(ValueError, match="sources"):
        ParallelBatches([[4]], [], batch_tokens=4)
    with pytest.raises(ValueError, match="batch_tokens"):
        ParallelBatches([[4]], [[5]], batch_tokens=0)


def test_sentence_batches_hold_a_fixed_number_of_pairs() -> None:
    # As OpenNMT-py and JoeyNMT batch: 64 sentences (here 8), sorted by length, shuffled.
    sources, targets = make_pairs(count=42)
    batches = ParallelBatches(sources, targets, batch_tokens=1, batch_sentences=8, seed=3)
    sizes = sorted(len(indices) for indices in batches.batch_indices(0))
    assert sizes == [2, 8, 8, 8, 8, 8] and len(batches) == 6
    seen = sorted(index for indices in batches.batch_indices(1) for index in indices)
    assert seen == list(range(42))
    for indices in batches.batch_indices(0):  # length-sorted: neighbours in one batch
        lengths = [len(sources[index]) for index in indices]
        assert max(lengths) - min(lengths) <= 3
