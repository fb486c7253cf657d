"""A bidirectional RNN encoder without packed sequences, and the bridge to the decoder.

PyTorch keeps padding out of a bidirectional RNN with ``pack_padded_sequence``, which ties
the graph to the example's lengths when exported to ONNX. Here each direction of each layer
is a plain one-layer RNN over the padded batch ``(rows, source_len)``, and padding still
never reaches a real position:

- the forward direction reads left to right, and padding only comes after a row's tokens;
- the backward direction reads each row's tokens reversed *within its own length* (a gather
  with per-row indices: ``t -> length - 1 - t`` for real positions, padding left in place),
  so its padding also comes last; its outputs are put back in order with the same gather.

Both match ``nn.LSTM(bidirectional=True)`` over packed sequences (``tests/test_translator.py``
proves it). A row's final hidden state is its output at its last real position; an LSTM's
final *cell* state is not among its outputs. On the CPU :func:`held_lstm` holds each row's
cell state still over its padding (one more input closes the input gate and opens the forget
gate there), so the LSTM's own final cell state is the row's; elsewhere
:func:`final_cell_state` recomputes it from the outputs in parallel over time. Everything is
a pure function of tensors.

In an exported graph each LSTM layer runs as :func:`lstm_to_lengths`, a custom operator that
ONNX export writes as one ``LSTM`` node given each row's length (``sequence_lens``), which
returns that cell state itself (``Y_c``) and skips the padding: the recomputation's four
products over the whole source (a third of the encoder graph's time) leave the graph. An int8
bundle (for the CPU) exports the first layer as :func:`table_lstm` instead: the input product
depends only on the source token, so it is a table of the vocabulary's gates, and the
recurrence an ONNX ``Scan``.

Mask convention: ``True`` = a real token, ``False`` = padding.
"""

from __future__ import annotations

import importlib.util
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from seqgen.layers.buckets import bucketed_linear
from seqgen.layers.cells import RNN_CLASSES, gate_table_fits
from seqgen.layers.dropout import Dropout
from seqgen.layers.lengths import (
    gather_time,
    held_lstm,
    last_output,
    length_mask,
    reverse_index,
)
from seqgen.tasks.translation.config import EncoderDecoderConfig


def final_cell_state(
    rnn: nn.LSTM, inputs: torch.Tensor, outputs: torch.Tensor, lengths: torch.Tensor
) -> torch.Tensor:
    """A one-layer LSTM's cell state after each row's last real token, ``(rows, hidden)``.

    The gates of every step depend only on the step's input and the previous output, both
    known, so they are computed for all steps at once. The cell recurrence
    ``c_t = f_t * c_{t-1} + i_t * g_t`` (from ``c_{-1} = 0``) is linear, so
    ``c_{L-1} = sum_{s < L} exp(A_{L-1} - A_s) * i_s * g_s`` with ``A = cumsum(log f)``:
    exact up to rounding, stable (the exponents are <= 0) and free of Python loops.

    Args:
        rnn: the direction's one-layer ``nn.LSTM`` (batch_first).
        inputs: ``(rows, time, input_size)``, what ``rnn`` read.
        outputs: ``(rows, time, hidden)``, what it wrote.
        lengths: ``(rows,)`` int64, each >= 1.
    """
    previous = torch.cat([torch.zeros_like(outputs[:, :1]), outputs[:, :-1]], dim=1)
    # PyTorch stacks the gates as i, f, g, o; the output gate o is not needed here.
    needed = slice(0, 3 * rnn.hidden_size)
    gates = bucketed_linear(inputs, rnn.weight_ih_l0[needed], rnn.bias_ih_l0[needed])
    gates = gates + bucketed_linear(previous, rnn.weight_hh_l0[needed], rnn.bias_hh_l0[needed])
    input_gate, forget_gate, cell_gate = gates.float().chunk(3, dim=-1)
    update = torch.sigmoid(input_gate) * torch.tanh(cell_gate)
    log_decay = F.logsigmoid(forget_gate).cumsum(dim=1)  # A_t = sum_{r <= t} log f_r
    exponent = last_output(log_decay, lengths).unsqueeze(1) - log_decay
    # Steps past a row's end must not count; -inf (not a multiplied mask) keeps gradients finite.
    real = length_mask(lengths, outputs.shape[1]).unsqueeze(-1)
    exponent = exponent.masked_fill(~real, float("-inf"))
    return (torch.exp(exponent) * update).sum(dim=1).to(outputs.dtype)


@torch.library.custom_op("seqgen::lstm_to_lengths", mutates_args=())
def lstm_to_lengths(
    inputs: torch.Tensor,
    lengths: torch.Tensor,
    weight_ih: torch.Tensor,
    weight_hh: torch.Tensor,
    bias_ih: torch.Tensor,
    bias_hh: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A one-layer batch-first LSTM over ``inputs`` ``(rows, time, input_size)``, from zero
    state: its outputs ``(rows, time, hidden)`` and each row's cell state after position
    ``lengths[row] - 1``, ``(rows, hidden)`` (:func:`final_cell_state`).

    For export only (:meth:`Encoder._run_exported`): ``graphs.onnx_lstm_to_lengths`` writes it as
    one ONNX ``LSTM`` node with ``sequence_lens``, whose ``Y_c`` is that cell state; its
    outputs past a row's length are zeros there (the encoder zeroes them anyway)."""
    rnn = nn.LSTM(inputs.shape[-1], weight_hh.shape[1], batch_first=True)
    rnn = rnn.to(device=inputs.device, dtype=inputs.dtype)
    weights = {"weight_ih": weight_ih, "weight_hh": weight_hh, "bias_ih": bias_ih}
    with torch.no_grad():
        for name, value in {**weights, "bias_hh": bias_hh}.items():
            getattr(rnn, f"{name}_l0").copy_(value)
        outputs, _ = rnn(inputs)
        return outputs, final_cell_state(rnn, inputs, outputs, lengths)


@lstm_to_lengths.register_fake
def _(
    inputs: torch.Tensor, *lengths_and_weights: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The shapes only, for tracing: ``lengths``, ``weight_ih``, ``weight_hh``, biases."""
    rows, time, hidden = inputs.shape[0], inputs.shape[1], lengths_and_weights[2].shape[1]
    return inputs.new_empty(rows, time, hidden), inputs.new_empty(rows, hidden)


def table_lstm(
    rnn: nn.LSTM, embedding: nn.Embedding, token_ids: torch.Tensor, lengths: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """A first-layer LSTM direction over embedded ``token_ids`` ``(rows, time)``, for an
    exported CPU graph: its outputs ``(rows, time, hidden)`` (past a row's length, values the
    encoder zeroes) and each row's cell state after its last real token ``(rows, hidden)``.

    The input product ``embedding(token) @ weight_ih.T + bias_ih`` depends only on the token,
    so the graph gathers it from a table of every token's gates (with ``bias_hh``: a
    constant product that ONNX Runtime folds when a session starts, as the decoder's gate
    table) instead of multiplying at every position, and runs the recurrence as a ``Scan``
    (``torch._higher_order_ops.scan``; the exporter writes it as ONNX ``Scan``). The cell
    state stands still past a row's length; nothing reads the outputs there. No dropout
    (decoding only)."""
    from torch._higher_order_ops.scan import scan  # export only; torch's own scan

    table = F.linear(embedding.weight, rnn.weight_ih_l0, rnn.bias_ih_l0 + rnn.bias_hh_l0)
    time_major = token_ids.t()  # (time, rows): the Scan runs over the first axis
    gates = table.index_select(0, time_major.reshape(-1)).reshape(*time_major.shape, -1)
    real = length_mask(lengths, token_ids.shape[1]).t().unsqueeze(-1)  # (time, rows, 1)
    weight_hh = rnn.weight_hh_l0.t()

    def position(
        carry: tuple[torch.Tensor, torch.Tensor], inputs: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
        (hidden, cell), (gate, is_real) = carry, inputs
        # PyTorch stacks the gates as i, f, g, o.
        input_gate, forget_gate, cell_gate, output_gate = (gate + hidden @ weight_hh).chunk(4, -1)
        new_cell = torch.sigmoid(forget_gate) * cell + torch.sigmoid(input_gate) * torch.tanh(
            cell_gate
        )
        new_hidden = torch.sigmoid(output_gate) * torch.tanh(new_cell)
        # The output a tensor of its own: a scan's carry and output may not alias.
        return (new_hidden, torch.where(is_real, new_cell, cell)), new_hidden.clone()

    rows, size = token_ids.shape[0], rnn.hidden_size
    start = (gates.new_zeros(rows, size), gates.new_zeros(rows, size))  # two, not one aliased
    (_, cell), outputs = scan(position, start, (gates, real))
    return outputs.transpose(0, 1), cell


class DirectionRun(NamedTuple):
    """What a bidirectional layer's final states are read from (batch-major tensors)."""

    forward_outputs: torch.Tensor  # (rows, source_len, hidden), in source order
    reversed_inputs: torch.Tensor  # (rows, source_len, input_size), reversed within length
    reversed_outputs: torch.Tensor  # (rows, source_len, hidden), in the reversed frame
    # LSTMs exported or on the CPU: each direction's final cell state (rows, hidden), from the
    # graph's LSTM node (lstm_to_lengths) or held_lstm; else None and _final_states computes
    # them (final_cell_state).
    final_cells: tuple[torch.Tensor, torch.Tensor] | None = None


class Encoder(nn.Module):
    """Embedding + a stack of bidirectional RNN layers; writes the attention memory.

    Args:
        config: the translator's config (cell, sizes, layers, dropout).
        embedding: the source embedding, ``(source_vocab, embedding_size)`` (maybe shared).
    """

    def __init__(self, config: EncoderDecoderConfig, embedding: nn.Embedding) -> None:
        super().__init__()
        self.cell = config.cell
        self.hidden_size = config.encoder_hidden_size
        self.embedding = embedding
        self.dropout = Dropout(config.dropout)
        rnn_class = RNN_CLASSES[config.cell]
        input_sizes = [config.embedding_size] + [self.memory_size] * (config.encoder_layers - 1)
        # One one-layer RNN per direction and layer: the backward one reads reversed rows.
        self.forward_layers = nn.ModuleList(
            rnn_class(size, self.hidden_size, batch_first=True) for size in input_sizes
        )
        self.backward_layers = nn.ModuleList(
            rnn_class(size, self.hidden_size, batch_first=True) for size in input_sizes
        )
        # Set on an int8 bundle's copy before export: the first LSTM layer as table_lstm.
        self.export_table_lstm = False

    @property
    def memory_size(self) -> int:
        """Width of the memory: forward and backward outputs side by side."""
        return 2 * self.hidden_size

    def forward(
        self, source_ids: torch.Tensor, source_lengths: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Encode a padded batch of sources.

        Args:
            source_ids: ``(rows, source_len)`` int64, padded after each row's tokens.
            source_lengths: ``(rows,)`` int64, each >= 1.

        Returns:
            memory ``(rows, source_len, 2 * encoder_hidden)``, zeros at padding; and the top
            layer's final states ``(rows, 2 * encoder_hidden)`` ([forward; backward]) named
            ``hidden`` (and ``cell`` for an LSTM), to initialise the decoder.
        """
        source_len = source_ids.shape[1]
        real = length_mask(source_lengths, source_len).unsqueeze(-1)
        index = reverse_index(source_lengths, source_len)
        inputs = self.dropout(self.embedding(source_ids))
        if self._exports_table_lstm():
            memory, run = self._table_layer(source_ids, inputs, index, real, source_lengths)
        else:
            memory, run = self._bidirectional_layer(0, inputs, index, real, source_lengths)
        for layer in range(1, len(self.forward_layers)):
            inputs = self.dropout(memory)  # between layers, as nn.LSTM's dropout does
            memory, run = self._bidirectional_layer(layer, inputs, index, real, source_lengths)
        return memory, self._final_states(inputs, run, source_lengths)

    def _bidirectional_layer(
        self,
        layer: int,
        inputs: torch.Tensor,
        index: torch.Tensor,
        real: torch.Tensor,
        lengths: torch.Tensor,
    ) -> tuple[torch.Tensor, DirectionRun]:
        """One layer: ``(rows, source_len, input_size) -> (rows, source_len, 2 * hidden)``."""
        reversed_inputs = gather_time(inputs, index)
        if self.cell == "lstm" and torch.onnx.is_in_onnx_export():
            forward_outputs, forward_cell = self._run_exported(
                self.forward_layers[layer], inputs, lengths
            )
            reversed_outputs, backward_cell = self._run_exported(
                self.backward_layers[layer], reversed_inputs, lengths
            )
            cells = (forward_cell, backward_cell)
        elif self.cell == "lstm" and inputs.device.type == "cpu":
            padding = ~real  # (rows, source_len, 1)
            forward_outputs, forward_cell = held_lstm(self.forward_layers[layer], inputs, padding)
            reversed_outputs, backward_cell = held_lstm(
                self.backward_layers[layer], reversed_inputs, padding
            )
            cells = (forward_cell, backward_cell)
        else:
            forward_outputs, _ = self.forward_layers[layer](inputs)
            reversed_outputs, _ = self.backward_layers[layer](reversed_inputs)
            cells = None
        return self._joined(forward_outputs, reversed_inputs, reversed_outputs, cells, index, real)

    def _exports_table_lstm(self) -> bool:
        """Whether the first layer is exported as :func:`table_lstm` (an int8 bundle's LSTM
        encoder, when the gate tables stay within the decoder's limit and this torch has the
        scan it is written with; else the LSTM node, as a float32 bundle's)."""
        return (
            self.export_table_lstm
            and self.cell == "lstm"
            and torch.onnx.is_in_onnx_export()
            and gate_table_fits(self.embedding, self.forward_layers[0])
            and importlib.util.find_spec("torch._higher_order_ops.scan") is not None
        )

    def _table_layer(
        self,
        source_ids: torch.Tensor,
        inputs: torch.Tensor,
        index: torch.Tensor,
        real: torch.Tensor,
        lengths: torch.Tensor,
    ) -> tuple[torch.Tensor, DirectionRun]:
        """The first layer in export as :func:`table_lstm`; the backward direction reads
        each row's token ids reversed within its length."""
        forward_outputs, forward_cell = table_lstm(
            self.forward_layers[0], self.embedding, source_ids, lengths
        )
        reversed_outputs, backward_cell = table_lstm(
            self.backward_layers[0], self.embedding, source_ids.gather(1, index), lengths
        )
        cells = (forward_cell, backward_cell)
        reversed_inputs = gather_time(inputs, index)  # unused in export (final_cells given)
        return self._joined(forward_outputs, reversed_inputs, reversed_outputs, cells, index, real)

    @staticmethod
    def _joined(
        forward_outputs: torch.Tensor,
        reversed_inputs: torch.Tensor,
        reversed_outputs: torch.Tensor,
        cells: tuple[torch.Tensor, torch.Tensor] | None,
        index: torch.Tensor,
        real: torch.Tensor,
    ) -> tuple[torch.Tensor, DirectionRun]:
        """The layer's memory ``(rows, source_len, 2 * hidden)`` from its two directions."""
        backward_outputs = gather_time(reversed_outputs, index)
        # Zeros at padding, so nothing downstream can read garbage from there.
        outputs = torch.cat([forward_outputs, backward_outputs], dim=-1) * real
        return outputs, DirectionRun(forward_outputs, reversed_inputs, reversed_outputs, cells)

    @staticmethod
    def _run_exported(
        rnn: nn.LSTM, inputs: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A layer's direction ``rnn`` in export: outputs ``(rows, source_len, hidden)`` and
        each row's final cell state ``(rows, hidden)`` (:func:`lstm_to_lengths`). Every
        layer runs so, since ONNX Runtime's LSTM also stops each row at its length instead
        of running the padding; the top layer's cell states start the decoder."""
        weights = (rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0, rnn.bias_hh_l0)
        return torch.ops.seqgen.lstm_to_lengths(inputs, lengths, *weights)

    def _final_states(
        self, inputs: torch.Tensor, run: DirectionRun, lengths: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """The top layer's states after each row's last real token, ``(rows, 2 * hidden)``.

        Both directions end at ``length - 1`` of their own frame: the backward direction's
        last step reads position 0, which is ``length - 1`` in its reversed frame.
        """
        final = {
            "hidden": torch.cat(
                [
                    last_output(run.forward_outputs, lengths),
                    last_output(run.reversed_outputs, lengths),
                ],
                dim=-1,
            )
        }
        if run.final_cells is not None:
            final["cell"] = torch.cat(run.final_cells, dim=-1)
        elif self.cell == "lstm":
            forward_cell = final_cell_state(
                self.forward_layers[-1], inputs, run.forward_outputs, lengths
            )
            backward_cell = final_cell_state(
                self.backward_layers[-1], run.reversed_inputs, run.reversed_outputs, lengths
            )
            final["cell"] = torch.cat([forward_cell, backward_cell], dim=-1)
        return final


class Bridge(nn.Module):
    """Initial decoder state from the encoder's final states.

    ``kind = "learned"``: ``tanh(W [forward; backward] + b)``, one Linear + tanh per state name
    (``hidden``, and ``cell`` for an LSTM), as OpenNMT-py's ``bridge`` and JoeyNMT's decoder
    initialisation do; sizes need not match. ``kind = "copy"``: the final states as they are
    (OpenNMT-py's default), which needs ``decoder_hidden_size == memory_size``. Either way the
    top encoder layer's final states start every decoder layer.
    """

    def __init__(
        self,
        *,
        memory_size: int,
        decoder_hidden_size: int,
        decoder_layers: int,
        cell: str,
        kind: str = "learned",
    ) -> None:
        super().__init__()
        self.decoder_hidden_size = decoder_hidden_size
        self.decoder_layers = decoder_layers
        self.names = ("hidden", "cell") if cell == "lstm" else ("hidden",)
        self.layers = nn.ModuleDict()
        if kind == "learned":
            self.layers.update(
                {
                    name: nn.Linear(memory_size, decoder_layers * decoder_hidden_size)
                    for name in self.names
                }
            )

    def forward(self, final: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``(rows, memory_size)`` per name -> ``(rows, decoder_layers, decoder_hidden)``."""
        shape = (-1, self.decoder_layers, self.decoder_hidden_size)
        if not self.layers:  # copy
            return {
                name: final[name].unsqueeze(1).expand(shape).contiguous() for name in self.names
            }
        return {
            name: torch.tanh(layer(final[name])).view(shape) for name, layer in self.layers.items()
        }
