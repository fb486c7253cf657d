"""A many-to-many recurrent language model: embedding -> RNN/GRU/LSTM stack -> vocabulary.

The recurrent state crosses this module's boundary batch-major, as the decoding contract
wants (``seqgen.decoding.contract``): ``hidden`` (and ``cell`` for an LSTM) of shape
``(rows, num_layers, hidden_size)``. PyTorch's RNNs keep it layer-major internally, so
``forward`` transposes on the way in and out; nothing is cached on the module, which keeps
``forward`` a pure function of its inputs and makes it exportable to ONNX.
"""

from __future__ import annotations

import torch
from torch import nn

from seqgen.layers.cells import (
    RNN_CLASSES,
    EmbeddedGates,
    RnnState,
    batch_major,
    embedding_gates,
    layer_major,
    step_cells,
)
from seqgen.layers.dropout import Dropout
from seqgen.tasks.generation.config import LanguageModelConfig

LanguageModelState = dict[str, torch.Tensor]


class LanguageModel(nn.Module):
    """Predicts the next token at every position of a token sequence."""

    def __init__(self, config: LanguageModelConfig, vocab_size: int) -> None:
        super().__init__()
        self.config = config
        self.vocab_size = vocab_size
        self.embedding = nn.Embedding(vocab_size, config.embedding_size)
        self.dropout = Dropout(config.dropout)
        self.rnn = RNN_CLASSES[config.cell](
            config.embedding_size,
            config.hidden_size,
            num_layers=config.num_layers,
            dropout=config.dropout if config.num_layers > 1 else 0.0,
            batch_first=True,
        )
        self.output = nn.Linear(config.hidden_size, vocab_size)
        if config.tie_weights:
            self.output.weight = self.embedding.weight

    @property
    def state_names(self) -> tuple[str, ...]:
        return ("hidden", "cell") if self.config.cell == "lstm" else ("hidden",)

    def initial_state(self, rows: int, *, device: torch.device | None = None) -> LanguageModelState:
        """Zeros, ``(rows, num_layers, hidden_size)`` per state name."""
        shape = (rows, self.config.num_layers, self.config.hidden_size)
        device = device or self.embedding.weight.device
        return {name: torch.zeros(shape, device=device) for name in self.state_names}

    def forward(
        self, token_ids: torch.Tensor, state: LanguageModelState | None = None
    ) -> tuple[torch.Tensor, LanguageModelState]:
        """Run the model over a batch of sequences.

        Args:
            token_ids: ``(rows, time)`` int64.
            state: ``(rows, num_layers, hidden_size)`` per name, or None for zeros.

        Returns:
            logits ``(rows, time, vocab)`` and the state after the last position.
        """
        if state is None:
            state = self.initial_state(token_ids.shape[0], device=token_ids.device)
        embedded = self.dropout(self.embedding(token_ids))
        outputs, rnn_state = self.rnn(embedded, self._layer_major(state))
        logits = self.output(self.dropout(outputs))
        return logits, self._batch_major(rnn_state)

    def step(
        self,
        tokens: torch.Tensor,
        state: LanguageModelState,
        embedding_gates: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, LanguageModelState]:
        """One position per row, as ``forward(tokens[:, None], state)`` computes it, through
        the cell functions (:mod:`seqgen.layers.cells`: half the cost of a whole RNN call for
        one position).

        Args:
            tokens: ``(rows,)`` int64.
            state: ``(rows, num_layers, hidden_size)`` per name (never mutated).
            embedding_gates: optional :meth:`embedding_gates` of these weights (eval mode
                only): the first layer's input product is gathered from it.

        Returns:
            logits ``(rows, vocab)`` and the new state.
        """
        first = None
        if embedding_gates is not None and not self.training:
            weight = self.rnn.weight_ih_l0
            first = EmbeddedGates(
                embedding_gates.index_select(0, tokens), weight[:, weight.shape[1] :]
            )
            inputs = first.gates[:, :0]  # the embedding was the first layer's only input
        else:
            inputs = self.dropout(self.embedding(tokens))
        top, rnn_state = step_cells(self.rnn, inputs, self._layer_major(state), first)
        return self.output(self.dropout(top)), self._batch_major(rnn_state)

    def embedding_gates(self) -> torch.Tensor:
        """Every token's first-layer input product with its input-side bias: ``(vocab,
        gates)`` (:func:`seqgen.layers.cells.embedding_gates`); for decoding only."""
        return embedding_gates(self.embedding, self.rnn)

    def _layer_major(self, state: LanguageModelState) -> RnnState:
        """Batch-major ``(rows, layers, hidden)`` -> PyTorch's ``(layers, rows, hidden)``."""
        tensors = [layer_major(state[name]) for name in self.state_names]
        return (tensors[0], tensors[1]) if self.config.cell == "lstm" else tensors[0]

    def _batch_major(self, rnn_state: RnnState) -> LanguageModelState:
        """The layer-major state back to the batch-major state names."""
        tensors = rnn_state if isinstance(rnn_state, tuple) else (rnn_state,)
        return {
            name: batch_major(tensor)
            for name, tensor in zip(self.state_names, tensors, strict=True)
        }
