"""One position of an RNN stack through PyTorch's cell functions, on the stack's own weights.

For one position ``torch.lstm_cell`` (``gru_cell``, ``rnn_tanh_cell``) costs about half of a
whole ``nn.LSTM`` call, whose oneDNN kernel is set up for sequences. The translator's decoder
runs a position at a time (every decoding step, and every target position when input feeding
trains it stepwise), and so does a language model when it generates.

Decoding also skips the first layer's product over the embedding: :func:`embedding_gates`
computes it once for every token of the vocabulary (a "gate table") and a step gathers its
tokens' rows (:class:`EmbeddedGates`), which the cell takes as its input-side bias.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

RnnState = torch.Tensor | tuple[torch.Tensor, torch.Tensor]  # layer-major, as nn.RNNBase wants

# Decoding's gate table is used up to this many values: 64 MiB in float32 (the peer model's
# is 8,000 x 1,024); beyond, it would cost more memory than it saves.
RNN_CLASSES: dict[str, type[nn.RNNBase]] = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}
GATE_TABLE_LIMIT = 1 << 24


@dataclass(frozen=True)
class EmbeddedGates:
    """The first RNN layer's input product for one position, the embedding's share done
    ahead: ``gates`` ``(rows, gates)`` = the embedded token times the embedding's columns of
    ``weight_ih_l0`` + ``bias_ih_l0``; ``weight`` the remaining columns, for the inputs that
    join at this step (Bahdanau's context, input feeding's h~; none in a language model)."""

    gates: torch.Tensor
    weight: torch.Tensor


def embedding_gates(
    embedding: nn.Embedding, rnn: nn.RNNBase, multiply_in: torch.dtype | None = None
) -> torch.Tensor:
    """Every token's share of ``rnn``'s first-layer input product, with its input-side bias:
    ``(vocab, gates)``, the embedding times its columns of ``weight_ih_l0`` (the first ones),
    in the weights' dtype or in ``multiply_in``. No dropout, so for decoding only.

    An exported float16 step graph asks for ``torch.float32``: ONNX Runtime folds the
    product into a constant only with a CPU kernel for its type, and it has no float16 Gemm
    on x86 or in WebAssembly (a browser ran the product at every step: 13 sentences/s greedy
    instead of 105). The step casts the rows it gathers to the weights' type."""
    size = embedding.embedding_dim
    table, weight, bias = embedding.weight, rnn.weight_ih_l0[:, :size], rnn.bias_ih_l0
    if multiply_in is not None:
        table, weight, bias = table.to(multiply_in), weight.to(multiply_in), bias.to(multiply_in)
    return nn.functional.linear(table, weight, bias)


def gate_table_fits(embedding: nn.Embedding, rnn: nn.RNNBase, limit: int | None = None) -> bool:
    """Whether :func:`embedding_gates` holds at most ``limit`` (``GATE_TABLE_LIMIT``) values."""
    limit = GATE_TABLE_LIMIT if limit is None else limit
    return embedding.num_embeddings * rnn.weight_ih_l0.shape[0] <= limit


def layer_major(tensor: torch.Tensor) -> torch.Tensor:
    """A batch-major state ``(rows, layers, hidden)`` as PyTorch's RNNs take it, ``(layers,
    rows, hidden)``. One layer moves no data: a squeeze and an unsqueeze, which an exported
    step graph runs without a copy, where a ``Transpose`` copied the state at every step."""
    if tensor.shape[1] == 1:
        return tensor.squeeze(1).unsqueeze(0)
    return tensor.transpose(0, 1).contiguous()


def batch_major(tensor: torch.Tensor) -> torch.Tensor:
    """:func:`layer_major` undone: ``(layers, rows, hidden)`` -> ``(rows, layers, hidden)``."""
    if tensor.shape[0] == 1:
        return tensor.squeeze(0).unsqueeze(1)
    return tensor.transpose(0, 1)


def step_cells(
    rnn: nn.RNNBase,
    inputs: torch.Tensor,
    rnn_state: RnnState,
    first: EmbeddedGates | None = None,
) -> tuple[torch.Tensor, RnnState]:
    """``rnn`` (batch-first or not) on one position: ``inputs`` ``(rows, input_size)`` ->
    the top hidden state ``(rows, hidden)`` and the new layer-major state, as
    ``rnn(inputs.unsqueeze(1), rnn_state)`` computes them (dropout between layers in
    training mode, as nn.RNNBase applies it). With ``first``, ``inputs`` holds only the first
    layer's inputs after the embedding (``(rows, 0)`` when there are none)."""
    is_lstm = isinstance(rnn, nn.LSTM)
    hidden, cell = rnn_state if isinstance(rnn_state, tuple) else (rnn_state, None)
    if is_lstm:
        function = torch.lstm_cell
    elif isinstance(rnn, nn.GRU):
        function = torch.gru_cell
    else:
        function = torch.rnn_tanh_cell if rnn.nonlinearity == "tanh" else torch.rnn_relu_cell
    hiddens, cells = [], []
    layer_input = inputs
    # all_weights: per layer [weight_ih, weight_hh, bias_ih, bias_hh], the cells' order.
    for layer, layer_weights in enumerate(rnn.all_weights):
        weights = list(layer_weights)
        if layer == 0 and first is not None:
            # The cell adds its input-side bias to input @ weight_ih.T, so the embedding's
            # precomputed share ``(rows, gates)`` goes in as that bias.
            weights[0], weights[2] = first.weight, first.gates
        # One layer's state by squeeze, not index: a view either way, but exported a Squeeze
        # runs without a copy where a Gather copies.
        layer_hidden = hidden.squeeze(0) if rnn.num_layers == 1 else hidden[layer]
        if is_lstm:
            layer_cell = cell.squeeze(0) if rnn.num_layers == 1 else cell[layer]
            new_hidden, new_cell = function(layer_input, (layer_hidden, layer_cell), *weights)
            cells.append(new_cell)
        else:
            new_hidden = function(layer_input, layer_hidden, *weights)
        hiddens.append(new_hidden)
        # nn.RNNBase's dropout: between layers, not after the top one.
        if layer + 1 < rnn.num_layers:
            layer_input = nn.functional.dropout(new_hidden, rnn.dropout, rnn.training)
    stacked = torch.stack(hiddens)
    return hiddens[-1], ((stacked, torch.stack(cells)) if is_lstm else stacked)


# sigmoid(+-1e4) is exactly 1 or 0 in float32 and in float16 (whose largest value is 65504).
SATURATED = 1e4


def tanh_rnn_as_gru(rnn: nn.RNN) -> nn.GRU:
    """An ``nn.GRU`` that computes what the tanh ``rnn`` computes, for export.

    With its update gate shut (z = 0) and its reset gate open (r = 1) by saturated biases and
    zero weights, a GRU's step is ``h' = tanh(W_ih x + b_ih + W_hh h + b_hh)``: the tanh RNN's,
    the same sums. ONNX exporters map ``nn.GRU`` onto ONNX's GRU operator, whose time axis
    stays dynamic; ``nn.RNN`` maps onto nothing, and its time axis froze.
    """
    gru = nn.GRU(
        rnn.input_size,
        rnn.hidden_size,
        num_layers=rnn.num_layers,
        batch_first=rnn.batch_first,
        dropout=rnn.dropout,
        bidirectional=rnn.bidirectional,
    )
    reference = rnn.weight_ih_l0
    gru = gru.to(device=reference.device, dtype=reference.dtype)
    size = rnn.hidden_size
    with torch.no_grad():
        for name, parameter in gru.named_parameters():  # gates in PyTorch's order: r, z, n
            parameter.zero_()
            source = getattr(rnn, name, None)
            if source is not None:
                parameter[2 * size :] = source
            if name.startswith("bias_ih"):
                parameter[:size] = SATURATED
                parameter[size : 2 * size] = -SATURATED
    return gru.train(rnn.training)


def with_exportable_cells(model: nn.Module) -> nn.Module:
    """``model`` with every tanh ``nn.RNN`` replaced by its :func:`tanh_rnn_as_gru`, in place."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.RNN and child.nonlinearity == "tanh":
                setattr(parent, name, tanh_rnn_as_gru(child))
    return model
