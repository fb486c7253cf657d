"""Batches for truncated back-propagation through time (TBPTT) over one long token stream.

The stream is cut into ``batch_size`` contiguous rows (as in pytorch/examples'
word_language_model), so window ``i + 1`` of a row continues window ``i``: the training
loop carries each row's hidden state across batches and only detaches it. Every row starts
with the BOS token, which is how generation from an empty prompt starts too.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch


class StreamBatches:
    """Consecutive ``(inputs, targets)`` windows over a token stream.

    Args:
        token_ids: ``(length,)`` int64, the whole corpus split.
        batch_size: number of parallel rows.
        sequence_length: tokens per window (the BPTT length).
        bos_id: prepended to every row.
    """

    def __init__(
        self, token_ids: torch.Tensor, *, batch_size: int, sequence_length: int, bos_id: int
    ) -> None:
        row_length = token_ids.numel() // batch_size
        if row_length < 1:
            raise ValueError(
                f"{token_ids.numel()} tokens cannot fill {batch_size} rows; use a smaller batch"
            )
        rows = token_ids[: row_length * batch_size].view(batch_size, row_length)
        bos = torch.full((batch_size, 1), bos_id, dtype=rows.dtype)
        self.rows = torch.cat([bos, rows], dim=1)  # (batch_size, 1 + row_length)
        self.sequence_length = sequence_length

    def __len__(self) -> int:
        """Windows per pass; the last one may be shorter."""
        predicted = self.rows.shape[1] - 1
        return -(-predicted // self.sequence_length)

    @property
    def num_tokens(self) -> int:
        """Tokens predicted in one pass."""
        return self.rows.shape[0] * (self.rows.shape[1] - 1)

    def window(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Window ``index``: inputs and targets, both ``(batch_size, <= sequence_length)``."""
        start = index * self.sequence_length
        end = min(start + self.sequence_length, self.rows.shape[1] - 1)
        return self.rows[:, start:end], self.rows[:, start + 1 : end + 1]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for index in range(len(self)):
            yield self.window(index)
