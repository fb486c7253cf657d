"""Right-padded batches of sequences: masks, reversing each row within its own length, and
an RNN stack run over such a batch without packing.

``nn.utils.rnn.pack_padded_sequence`` keeps padding out of an RNN, but on the CPU a packed
sequence leaves oneDNN's fused RNN kernel for one operator per position. Over a padded batch
padding only ever comes *after* a row's tokens for the forward direction; the backward
direction reads each row reversed within its own length (:func:`reverse_index`), so its
padding comes last too. Real positions then see only real positions, and each row's final
state is its output at its last real position: the same numbers as packing.

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
    """``sequence[row, index[row, t]]`` for ``(rows, time, features)`` and ``(rows, time)``."""
    return sequence.gather(1, index.unsqueeze(-1).expand(-1, -1, sequence.shape[-1]))


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
        forward = _direction(rnn, layer, "", inputs)
        outputs, finals = [forward], [last_output(forward, lengths)]
        if directions == 2:
            reversed_outputs = _direction(rnn, layer, "_reverse", gather_time(inputs, index))
            outputs.append(gather_time(reversed_outputs, index))
            finals.append(last_output(reversed_outputs, lengths))
        inputs = torch.cat(outputs, dim=-1) * real
    return inputs, torch.stack(finals)


def _direction(rnn: nn.RNNBase, layer: int, suffix: str, inputs: torch.Tensor) -> torch.Tensor:
    """One direction of one layer of ``rnn`` over ``inputs``, from zero state."""
    names = ("weight_ih", "weight_hh") + (("bias_ih", "bias_hh") if rnn.bias else ())
    weights = [getattr(rnn, f"{name}_l{layer}{suffix}") for name in names]
    start = inputs.new_zeros(1, inputs.shape[0], rnn.hidden_size)
    state = (start, start) if rnn.mode == "LSTM" else start
    outputs = _FUNCTIONS[rnn.mode](
        inputs, state, weights, rnn.bias, 1, 0.0, rnn.training, False, True
    )
    return outputs[0]
