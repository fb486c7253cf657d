"""Batches of sentence pairs for training a translator, cut by a token budget.

Pairs are filtered by length, sorted by ``(source_len, target_len)`` so that a batch holds
sentences of nearly equal length (little padding, as in fairseq and OpenNMT-py), and cut so
that ``rows * longest_padded_length <= batch_tokens`` (or, with ``batch_sentences``, into
batches of that many pairs, as OpenNMT-py's and JoeyNMT's sentence batches). Every epoch
breaks ties between equal lengths with a fresh seeded permutation (so a batch's company
changes between epochs) and shuffles the batch order. The lengths alone decide where batches
are cut, so every epoch has the same number of batches.

Layout of a :class:`ParallelBatch` (0 = PAD, ignored by the loss and by attention):

- ``source_ids`` ``(rows, source_len)``: source + EOS (no BOS; as ``TranslatorStep.start``);
- ``source_lengths`` ``(rows,)``: counting the EOS;
- ``target_in`` ``(rows, target_len)``: BOS + target; ``target_out``: target + EOS.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from seqgen.text.vocabulary import BOS_ID, EOS_ID, PAD_ID


def pad_batch(
    sequences: Sequence[Sequence[int]], pad_id: int = PAD_ID
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token id lists into one tensor.

    Returns:
        ids ``(rows, max_len)`` int64 padded with ``pad_id``, and lengths ``(rows,)`` int64.
    """
    lengths = np.array([len(sequence) for sequence in sequences], dtype=np.int64)
    max_length = int(lengths.max()) if len(sequences) else 0
    ids = np.full((len(sequences), max_length), pad_id, dtype=np.int64)
    # One masked assignment instead of a copy per row (row-major order matches the concat).
    real = np.arange(max_length) < lengths[:, None]
    if real.any():
        ids[real] = np.concatenate([np.asarray(s, dtype=np.int64) for s in sequences if len(s)])
    return torch.from_numpy(ids), torch.from_numpy(lengths)


@dataclass(frozen=True)
class ParallelBatch:
    """One training batch of sentence pairs (layout in the module docstring)."""

    source_ids: torch.Tensor  # (rows, source_len) int64
    source_lengths: torch.Tensor  # (rows,) int64
    target_in: torch.Tensor  # (rows, target_len) int64
    target_out: torch.Tensor  # (rows, target_len) int64
    num_tokens: int  # non-pad target tokens (EOS included): the loss's denominator

    @property
    def rows(self) -> int:
        return self.source_ids.shape[0]

    def to(self, device: torch.device | str) -> ParallelBatch:
        """The same batch with every tensor on ``device``."""
        return ParallelBatch(
            source_ids=self.source_ids.to(device, non_blocking=True),
            source_lengths=self.source_lengths.to(device, non_blocking=True),
            target_in=self.target_in.to(device, non_blocking=True),
            target_out=self.target_out.to(device, non_blocking=True),
            num_tokens=self.num_tokens,
        )


class ParallelBatches:
    """Length-bucketed, token-budgeted batches over sentence pairs; deterministic per epoch.

    Args:
        sources, targets: token id lists (no BOS/EOS), pair ``i`` = ``(sources[i], targets[i])``.
        batch_tokens: budget per batch: ``rows * max(source_len, target_len) <= batch_tokens``
            counting the added BOS/EOS (a single pair longer than that gets a batch alone).
        max_source_length, max_target_length: longer pairs are dropped (counted before
            BOS/EOS); empty sources or targets are dropped too.
        batch_sentences: when > 0, batches of exactly this many pairs (the last one of an
            epoch may be smaller) instead of the token budget.
        seed: with the epoch (see :meth:`set_epoch`), fixes the batches and their order.
        shuffle: False keeps batches sorted by length (e.g. for validation loss).
    """

    def __init__(
        self,
        sources: Sequence[Sequence[int]],
        targets: Sequence[Sequence[int]],
        *,
        batch_tokens: int,
        max_source_length: int = 100,
        max_target_length: int = 100,
        batch_sentences: int = 0,
        seed: int = 0,
        shuffle: bool = True,
    ) -> None:
        if len(sources) != len(targets):
            raise ValueError(f"{len(sources)} sources but {len(targets)} targets")
        if batch_tokens < 1:
            raise ValueError(f"batch_tokens = {batch_tokens} is not valid; it must be >= 1")
        self.sources = sources
        self.targets = targets
        self.batch_tokens = batch_tokens
        self.batch_sentences = batch_sentences
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0
        self.pairs = [
            index
            for index, (source, target) in enumerate(zip(sources, targets, strict=True))
            if 0 < len(source) <= max_source_length and 0 < len(target) <= max_target_length
        ]
        self.num_dropped = len(sources) - len(self.pairs)
        self._num_batches = len(self.batch_indices(0))

    def __len__(self) -> int:
        """Batches per epoch (the same every epoch)."""
        return self._num_batches

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch the next iteration yields (as torch's DistributedSampler does)."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[ParallelBatch]:
        for indices in self.batch_indices(self.epoch):
            yield self.make_batch(indices)

    def batch_indices(self, epoch: int) -> list[list[int]]:
        """Pair indices (into ``sources``/``targets``) of every batch of ``epoch``, in order."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        permutation = torch.randperm(len(self.pairs), generator=generator).tolist()
        # A stable sort by length after a random permutation: random ties, same lengths.
        order = sorted(
            (self.pairs[position] for position in permutation),
            key=lambda index: (len(self.sources[index]), len(self.targets[index])),
        )
        batches = self._cut(order)
        if self.shuffle:
            batch_order = torch.randperm(len(batches), generator=generator).tolist()
            batches = [batches[position] for position in batch_order]
        return batches

    def _cut(self, order: list[int]) -> list[list[int]]:
        """Split length-sorted pairs greedily so that ``rows * longest <= batch_tokens``."""
        if self.batch_sentences > 0:
            size = self.batch_sentences
            return [order[start : start + size] for start in range(0, len(order), size)]
        batches: list[list[int]] = []
        current: list[int] = []
        longest = 0
        for index in order:
            # +1: the EOS on the source, BOS/EOS on target_in/target_out.
            length = max(len(self.sources[index]), len(self.targets[index])) + 1
            if current and (len(current) + 1) * max(longest, length) > self.batch_tokens:
                batches.append(current)
                current, longest = [], 0
            current.append(index)
            longest = max(longest, length)
        if current:
            batches.append(current)
        return batches

    def make_batch(self, indices: Sequence[int]) -> ParallelBatch:
        """The padded tensors for the pairs ``indices``."""
        source_ids, source_lengths = pad_batch([[*self.sources[i], EOS_ID] for i in indices])
        target_in, target_lengths = pad_batch([[BOS_ID, *self.targets[i]] for i in indices])
        target_out, _ = pad_batch([[*self.targets[i], EOS_ID] for i in indices])
        return ParallelBatch(
            source_ids=source_ids,
            source_lengths=source_lengths,
            target_in=target_in,
            target_out=target_out,
            num_tokens=int(target_lengths.sum()),
        )
