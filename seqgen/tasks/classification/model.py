"""A many-to-one recurrent classifier: embedding -> RNN/GRU/LSTM -> pooling -> classes.

Training batches hold texts of different lengths. On the CPU they run padded
(``seqgen.layers.lengths.rnn_to_lengths``: the backward direction reads each text reversed
within its own length), elsewhere packed (``nn.utils.rnn.pack_padded_sequence``); either way
the outputs and final states are each text's own, and poolings over time mask the padding.
At inference the pipeline groups texts of equal length, so ``forward`` runs without lengths
and without packing, which is also the graph the ONNX export traces (dynamic rows and time).

The embedding and recurrent layers are named as the language model's
(``seqgen.tasks.generation.model``), so a language model's weights can initialise them
(``model.init_from``).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from seqgen.layers.cells import RNN_CLASSES
from seqgen.layers.dropout import Dropout
from seqgen.layers.lengths import length_mask, rnn_to_lengths
from seqgen.tasks.classification.config import ClassifierConfig


class SequenceClassifier(nn.Module):
    """Reads a text and scores each class: logits ``(rows, classes)``."""

    def __init__(self, config: ClassifierConfig, vocab_size: int, num_classes: int) -> None:
        super().__init__()
        self.config = config
        self.vocab_size, self.num_classes = vocab_size, num_classes
        self.embedding = nn.Embedding(vocab_size, config.embedding_size, padding_idx=0)
        self.dropout = Dropout(config.dropout)
        self.rnn = RNN_CLASSES[config.cell](
            config.embedding_size,
            config.hidden_size,
            num_layers=config.num_layers,
            dropout=config.dropout if config.num_layers > 1 else 0.0,
            batch_first=True,
            bidirectional=config.bidirectional,
        )
        width = config.hidden_size * (2 if config.bidirectional else 1)
        self.attention = nn.Linear(width, 1) if config.pooling == "attention" else None
        self.output = nn.Linear(width, num_classes)

    def forward(self, token_ids: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Class logits of a batch of texts.

        Args:
            token_ids: ``(rows, time)`` int64, right-padded with 0 where ``lengths`` is given.
            lengths: ``(rows,)`` int64 (on any device), each at least 1; None: every row is
                ``time`` tokens long (no padding, no packing: the exported graph).

        Returns:
            logits ``(rows, classes)``.
        """
        embedded = self.dropout(self.embedding(token_ids))
        if lengths is None:
            outputs, final = self.rnn(embedded)
            mask = None
        elif embedded.device.type == "cpu":
            # Packing would leave oneDNN's fused RNN kernel (2-5x the time of a training step's
            # RNN here); padding after each row's tokens gives the same numbers.
            outputs, final = rnn_to_lengths(self.rnn, embedded, lengths)
            mask = length_mask(lengths, token_ids.shape[1])
        else:
            packed = pack_padded_sequence(
                embedded, lengths.cpu(), batch_first=True, enforce_sorted=False
            )
            packed_outputs, final = self.rnn(packed)
            outputs, _ = pad_packed_sequence(
                packed_outputs, batch_first=True, total_length=token_ids.shape[1]
            )
            mask = (
                torch.arange(token_ids.shape[1], device=token_ids.device)[None, :]
                < (lengths.to(token_ids.device)[:, None])
            )
        pooled = self._pool(outputs, final, mask)
        return self.output(self.dropout(pooled))

    def _pool(
        self, outputs: torch.Tensor, final: object, mask: torch.Tensor | None
    ) -> torch.Tensor:
        """``outputs`` ``(rows, time, width)`` -> ``(rows, width)``; ``mask`` ``(rows, time)``
        is True on real tokens (None: all real)."""
        pooling = self.config.pooling
        if pooling == "final":
            hidden = final[0] if isinstance(final, tuple) else final  # (layers * dirs, rows, H)
            directions = 2 if self.config.bidirectional else 1
            return torch.cat(list(hidden[-directions:]), dim=-1)
        if pooling == "max":
            if mask is not None:
                outputs = outputs.masked_fill(~mask[:, :, None], float("-inf"))
            return outputs.max(dim=1).values
        if pooling == "mean":
            if mask is None:
                return outputs.mean(dim=1)
            summed = (outputs * mask[:, :, None]).sum(dim=1)
            return summed / mask.sum(dim=1, keepdim=True).to(outputs.dtype)
        assert self.attention is not None
        scores = self.attention(outputs).squeeze(-1)  # (rows, time)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        weights = torch.softmax(scores, dim=1)
        return (weights[:, :, None] * outputs).sum(dim=1)
