"""Right-padded batches of sequences: masks, reversing each row within its own length, and
an RNN stack run over such a batch without packing.

``nn.utils.rnn.pack_padded_sequence`` keeps padding out of an RNN, but on the CPU a packed
sequence leaves oneDNN's fused RNN kernel for one operator per position. Over a padded batch
padding only ever comes *after* a row's tokens for the forward direction; the backward
direction reads each row reversed within its own length (:func:`reverse_index`), so its
padding comes last too. Real positions then see only real positions, and each row's final
state is its output at its last real position: the same numbers as packing. An LSTM's final
*cell* state is not among its outputs; :func:`held_lstm` holds it still over padding instead.

Mask convention: ``True`` = a real token, ``False`` = padding.
"""

from __future__ import annotations

import torch
from torch import nn

from seqgen.layers.dropout import dropout


def length_mask(lengths: torch.Tensor, max_length: int) -> torch.Tensor:
    """``(rows, max_length)`` bool, True at positions ``< lengths[row]`` (real tokens)."""
    positions = torch.arange(max_length, device=lengths.device)
    return positions.unsqueeze(0) < lengths.unsqueeze(1)


def reverse_index(lengths: torch.Tensor, max_length: int) -> torch.Tensor:
    """``(rows, max_length)`` int64 indices reversing each row within its own length.

    Real position ``t`` maps to ``length - 1 - t``; padding positions map to themselves.
    The map is its own inverse, so the same index reverses the outputs back.
    """
    positions = torch.arange(max_length, device=lengths.device).unsqueeze(0)
    reversed_positions = lengths.unsqueeze(1) - 1 - positions
    return torch.where(positions < lengths.unsqueeze(1), reversed_positions, positions)


def gather_time(sequence: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``sequence[row, index[row, t]]`` for ``(rows, time, features)`` and ``(rows, t')``.

    Whole feature vectors are copied by one ``index_select`` over ``rows x time``, not by a
    ``gather`` whose index is expanded over the features: that one read a stride-0 index per
    element (64 x 40 x 256 float32, one thread: 1.3-1.6 ms forward and 3.3-5.4 ms with its
    backward, against 0.28 and 0.79 ms), and in ONNX an ``Expand`` of that index (5 MB of
    int64) fed a ``GatherElements``. The same values and gradients either way."""
    rows, time, features = sequence.shape
    flat = index + torch.arange(rows, device=index.device).unsqueeze(1) * time  # (rows, t')
    gathered = sequence.reshape(rows * time, features).index_select(0, flat.reshape(-1))
    return gathered.reshape(rows, index.shape[1], features)


def last_output(outputs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """``(rows, hidden)``: each row's output at its last real position ``length - 1``."""
    return gather_time(outputs, (lengths - 1).unsqueeze(1)).squeeze(1)


# What nn.LSTM, nn.GRU and nn.RNN call, per layer and direction: (input, hx, weights,
# has_biases, num_layers, dropout, train, bidirectional, batch_first) -> (output, h_n[, c_n]).
_FUNCTIONS = {
    "LSTM": torch.lstm,
    "GRU": torch.gru,
    "RNN_TANH": torch.rnn_tanh,
    "RNN_RELU": torch.rnn_relu,
}


def rnn_to_lengths(
    rnn: nn.RNNBase, inputs: torch.Tensor, lengths: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch-first ``nn.LSTM``, ``nn.GRU`` or ``nn.RNN`` over a right-padded batch, as
    over its packed sequence, without packing.

    Args:
        rnn: the stack (any layers, one or two directions; no LSTM projections).
        inputs: ``(rows, time, input_size)``; lengths ``(rows,)`` int64, each >= 1.

    Returns:
        the top layer's outputs ``(rows, time, directions * hidden)``, zeros at padding, and
        its final hidden states ``(directions, rows, hidden)`` at each row's own length.
    """
    real = length_mask(lengths, inputs.shape[1]).unsqueeze(-1)
    index = reverse_index(lengths, inputs.shape[1])
    directions = 2 if rnn.bidirectional else 1
    for layer in range(rnn.num_layers):
        if layer:  # between layers, as the stack's own dropout does
            inputs = dropout(inputs, rnn.dropout, rnn.training)
        forward = run_direction(rnn, inputs, layer_weights(rnn, layer))[0]
        outputs, finals = [forward], [last_output(forward, lengths)]
        if directions == 2:
            reversed_inputs = gather_time(inputs, index)
            weights = layer_weights(rnn, layer, "_reverse")
            reversed_outputs = run_direction(rnn, reversed_inputs, weights)[0]
            outputs.append(gather_time(reversed_outputs, index))
            finals.append(last_output(reversed_outputs, lengths))
        inputs = torch.cat(outputs, dim=-1) * real
    return inputs, torch.stack(finals)


def layer_weights(rnn: nn.RNNBase, layer: int, suffix: str = "") -> list[torch.Tensor]:
    """One layer's weights of ``rnn`` as its own call takes them (``suffix`` ``"_reverse"``:
    the backward direction's): ``weight_ih``, ``weight_hh`` and the biases it has."""
    names = ("weight_ih", "weight_hh") + (("bias_ih", "bias_hh") if rnn.bias else ())
    return [getattr(rnn, f"{name}_l{layer}{suffix}") for name in names]


def run_direction(
    rnn: nn.RNNBase, inputs: torch.Tensor, weights: list[torch.Tensor]
) -> tuple[torch.Tensor, ...]:
    """One direction of one layer of ``rnn``'s kind over ``inputs`` ``(rows, time, input)``
    from zero state, with ``weights``: ``(outputs, h_n)``, and ``c_n`` for an LSTM."""
    start = inputs.new_zeros(1, inputs.shape[0], rnn.hidden_size)
    state = (start, start) if rnn.mode == "LSTM" else start
    return _FUNCTIONS[rnn.mode](inputs, state, weights, rnn.bias, 1, 0.0, rnn.training, False, True)


# A gate pre-activation this far out saturates its sigmoid to exactly 0 or 1 (float32, bf16).
HOLD = 1e4


def held_lstm(
    rnn: nn.LSTM, inputs: torch.Tensor, padding: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """A one-layer batch-first LSTM whose cell state holds still on padding: its outputs
    ``(rows, time, hidden)`` (past a row's length: not the row's, to be masked) and each
    row's cell state after its last real position, ``(rows, hidden)``.

    One more input, ``padding`` ``(rows, time, 1)`` (1.0 at padding, else 0.0), enters the
    input gate with weight ``-HOLD`` and the forget gate with ``+HOLD``: at padding they are
    exactly 0 and 1, so ``c_t = c_{t-1}`` and the LSTM's own final cell state is the one
    after the row's last token, and no gradient comes from padding (the saturated sigmoids'
    derivatives are 0). The translator's encoder uses it on the CPU instead of recomputing the
    cell state (``final_cell_state``: three gate products over the whole source, a tenth of a
    training step) at the cost of one input column.
    """
    hidden = rnn.hidden_size
    hold = inputs.new_zeros(4 * hidden, 1)
    hold[:hidden], hold[hidden : 2 * hidden] = -HOLD, HOLD  # PyTorch's gate order: i, f, g, o
    weights = layer_weights(rnn, 0)
    weights[0] = torch.cat([weights[0], hold.to(weights[0].dtype)], dim=1)
    extended = torch.cat([inputs, padding.to(inputs.dtype)], dim=-1)
    outputs, _, cells = run_direction(rnn, extended, weights)
    return outputs, cells[0]
