"""The encoder's LSTM with its cell state held over padding (``held_lstm``): each row's final
cell state and every gradient equal running the row alone, in float64."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from seqgen.layers.lengths import held_lstm, length_mask
from seqgen.tasks.translation import encoder as encoder_module
from seqgen.tasks.translation.config import EncoderDecoderConfig
from seqgen.tasks.translation.encoder import Encoder

ROWS, TIME, INPUTS, HIDDEN = 6, 9, 5, 4
LENGTHS = torch.tensor([9, 1, 4, 9, 6, 2])


def case(dtype: torch.dtype) -> tuple[nn.LSTM, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    rnn = nn.LSTM(INPUTS, HIDDEN, batch_first=True).to(dtype)
    inputs = torch.randn(ROWS, TIME, INPUTS, dtype=dtype, requires_grad=True)
    return rnn, inputs, length_mask(LENGTHS, TIME).unsqueeze(-1)


def row_by_row(rnn: nn.LSTM, inputs: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Each row alone, cut to its length: its outputs and final cell state."""
    runs = [rnn(inputs[row : row + 1, :length]) for row, length in enumerate(LENGTHS.tolist())]
    return [outputs[0] for outputs, _ in runs], torch.cat([cell[0] for _, (_, cell) in runs])


def test_the_final_cell_state_and_the_real_outputs_are_each_rows_own() -> None:
    rnn, inputs, real = case(torch.float64)
    outputs, cell = held_lstm(rnn, inputs, ~real)
    alone_outputs, alone_cell = row_by_row(rnn, inputs)
    torch.testing.assert_close(cell, alone_cell, rtol=0, atol=1e-12)
    for row, length in enumerate(LENGTHS.tolist()):
        torch.testing.assert_close(outputs[row, :length], alone_outputs[row], rtol=0, atol=1e-12)


def test_no_gradient_comes_from_padding() -> None:
    rnn, inputs, real = case(torch.float64)
    weights = torch.randn(ROWS, TIME, HIDDEN, dtype=torch.float64)
    cell_weights = torch.randn(ROWS, HIDDEN, dtype=torch.float64)
    parameters = [inputs, *rnn.parameters()]

    outputs, cell = held_lstm(rnn, inputs, ~real)  # padded outputs masked, as the encoder does
    loss = (outputs * real * weights).sum() + (cell * cell_weights).sum()
    held = torch.autograd.grad(loss, parameters)

    alone_outputs, alone_cell = row_by_row(rnn, inputs)
    alone_loss = (alone_cell * cell_weights).sum() + sum(
        (found * weights[row, : len(found)]).sum() for row, found in enumerate(alone_outputs)
    )
    for found, expected in zip(held, torch.autograd.grad(alone_loss, parameters), strict=True):
        torch.testing.assert_close(found, expected, rtol=0, atol=1e-12)


@pytest.mark.skipif(
    not torch.ops.mkldnn._is_mkldnn_bf16_supported(), reason="oneDNN runs no bf16 LSTM here"
)
def test_the_cell_holds_under_cpu_bf16_autocast() -> None:
    rnn, inputs, real = case(torch.float32)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        _, cell = held_lstm(rnn, inputs, ~real)
        # The same rows with no padding at all: the full-length rows, and one-token rows.
        _, full = held_lstm(rnn, inputs[[0, 3]], torch.zeros(2, TIME, 1, dtype=torch.bool))
    torch.testing.assert_close(cell[[0, 3]].float(), full.float(), rtol=0, atol=0)
    _, alone_cell = row_by_row(rnn, inputs.detach())
    torch.testing.assert_close(cell.float(), alone_cell, rtol=0, atol=0.05)


def test_the_cpu_encoder_reads_its_final_cells_from_the_held_lstm(monkeypatch) -> None:
    config = EncoderDecoderConfig(
        cell="lstm", embedding_size=INPUTS, encoder_hidden_size=HIDDEN, encoder_layers=2
    )
    encoder = Encoder(config, nn.Embedding(20, INPUTS, padding_idx=0))
    calls = []
    monkeypatch.setattr(
        encoder_module, "final_cell_state", lambda *args: calls.append(args) or None
    )
    source_ids = torch.randint(1, 20, (ROWS, TIME)) * length_mask(LENGTHS, TIME)
    _, final = encoder(source_ids, LENGTHS)
    assert not calls and final["cell"].shape == (ROWS, 2 * HIDDEN)


def test_the_exported_table_lstm_gives_each_rows_own_outputs_and_final_cell() -> None:
    """``table_lstm`` (an int8 bundle's first encoder layer): the embedding's gates from a
    table and the recurrence in a scan, each row as if alone, in float64."""
    torch.manual_seed(0)
    embedding = nn.Embedding(11, INPUTS).double()
    rnn = nn.LSTM(INPUTS, HIDDEN, batch_first=True).double()
    token_ids = torch.randint(0, 11, (ROWS, TIME))
    with torch.no_grad():
        outputs, cell = encoder_module.table_lstm(rnn, embedding, token_ids, LENGTHS)
        alone_outputs, alone_cell = row_by_row(rnn, embedding(token_ids))
    torch.testing.assert_close(cell, alone_cell, rtol=0, atol=1e-12)
    for row, length in enumerate(LENGTHS.tolist()):
        torch.testing.assert_close(outputs[row, :length], alone_outputs[row], rtol=0, atol=1e-12)
