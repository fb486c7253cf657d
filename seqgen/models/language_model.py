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

from seqgen.config import LanguageModelConfig
from seqgen.models.cells import EmbeddedGates, embedding_gates, gate_table_fits, step_cells

RNN_CLASSES: dict[str, type[nn.RNNBase]] = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}

LanguageModelState = dict[str, torch.Tensor]


class LanguageModel(nn.Module):
    """Predicts the next token at every position of a token sequence."""

    def __init__(self, config: LanguageModelConfig, vocab_size: int) -> None:
        super().__init__()
        self.config = config
        self.vocab_size = vocab_size
        self.embedding = nn.Embedding(vocab_size, config.embedding_size)
        self.dropout = nn.Dropout(config.dropout)
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
        # PyTorch's RNNs want layer-major (num_layers, rows, hidden) state.
        layer_major = [state[name].transpose(0, 1).contiguous() for name in self.state_names]
        rnn_state = tuple(layer_major) if self.config.cell == "lstm" else layer_major[0]
        embedded = self.dropout(self.embedding(token_ids))
        outputs, rnn_state = self.rnn(embedded, rnn_state)
        logits = self.output(self.dropout(outputs))
        new_layer_major = rnn_state if self.config.cell == "lstm" else (rnn_state,)
        new_state = {
            name: tensor.transpose(0, 1)
            for name, tensor in zip(self.state_names, new_layer_major, strict=True)
        }
        return logits, new_state

    def step(
        self,
        tokens: torch.Tensor,
        state: LanguageModelState,
        embedding_gates: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, LanguageModelState]:
        """One position per row, as ``forward(tokens[:, None], state)`` computes it, through
        the cell functions (:mod:`seqgen.models.cells`: half the cost of a whole RNN call for
        one position).

        Args:
            tokens: ``(rows,)`` int64.
            state: ``(rows, num_layers, hidden_size)`` per name (never mutated).
            embedding_gates: optional :meth:`embedding_gates` of these weights (eval mode
                only): the first layer's input product is gathered from it.

        Returns:
            logits ``(rows, vocab)`` and the new state.
        """
        layer_major = [state[name].transpose(0, 1) for name in self.state_names]
        rnn_state = tuple(layer_major) if self.config.cell == "lstm" else layer_major[0]
        first = None
        if embedding_gates is not None and not self.training:
            weight = self.rnn.weight_ih_l0
            first = EmbeddedGates(embedding_gates[tokens], weight[:, weight.shape[1] :])
            inputs = first.gates[:, :0]  # the embedding was the first layer's only input
        else:
            inputs = self.dropout(self.embedding(tokens))
        top, rnn_state = step_cells(self.rnn, inputs, rnn_state, first)
        logits = self.output(self.dropout(top))
        new_layer_major = rnn_state if isinstance(rnn_state, tuple) else (rnn_state,)
        new_state = {
            name: tensor.transpose(0, 1)
            for name, tensor in zip(self.state_names, new_layer_major, strict=True)
        }
        return logits, new_state

    @property
    def uses_gate_table(self) -> bool:
        """Whether decoding builds :meth:`embedding_gates` (within ``GATE_TABLE_LIMIT``)."""
        return gate_table_fits(self.embedding, self.rnn)

    def embedding_gates(self) -> torch.Tensor:
        """Every token's first-layer input product with its input-side bias: ``(vocab,
        gates)`` (:func:`seqgen.models.cells.embedding_gates`); for decoding only."""
        return embedding_gates(self.embedding, self.rnn)
