"""``rnn_to_lengths``: an RNN stack over a right-padded batch gives what it gives over the
packed batch (outputs, the top layer's final states and every gradient), in float64."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from seqgen.layers.lengths import length_mask, rnn_to_lengths

LENGTHS = torch.tensor([7, 1, 4, 7, 2])
STACKS = {
    "lstm": lambda **kw: nn.LSTM(**kw),
    "gru": lambda **kw: nn.GRU(**kw),
    "rnn": lambda **kw: nn.RNN(**kw),
    "rnn-relu": lambda **kw: nn.RNN(nonlinearity="relu", **kw),
}


def packed(rnn: nn.RNNBase, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference: the stack over the packed batch; the top layer's final hidden states."""
    sequence = pack_padded_sequence(inputs, LENGTHS, batch_first=True, enforce_sorted=False)
    outputs, final = rnn(sequence)
    outputs, _ = pad_packed_sequence(outputs, batch_first=True, total_length=inputs.shape[1])
    hidden = final[0] if isinstance(final, tuple) else final
    return outputs, hidden[-(2 if rnn.bidirectional else 1) :]


@pytest.mark.parametrize("cell", list(STACKS))
@pytest.mark.parametrize(("layers", "bidirectional"), [(1, False), (1, True), (2, True)])
def test_a_padded_batch_runs_as_the_packed_one(cell: str, layers: int, bidirectional: bool) -> None:
    torch.manual_seed(0)
    options = {"num_layers": layers, "bidirectional": bidirectional, "batch_first": True}
    rnn = STACKS[cell](input_size=3, hidden_size=4, **options).double()
    inputs = torch.randn(len(LENGTHS), 7, 3, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(len(LENGTHS), 7, rnn.hidden_size * (2 if bidirectional else 1))
    results = {}
    runs = {
        "padded": lambda: rnn_to_lengths(rnn, inputs, LENGTHS),
        "packed": lambda: packed(rnn, inputs),
    }
    for name, run in runs.items():
        outputs, final = run()
        loss = (outputs * weights.double()).sum() + final.square().sum()
        results[name] = (outputs, final, torch.autograd.grad(loss, [inputs, *rnn.parameters()]))
    (outputs, final, grads), (want_outputs, want_final, want_grads) = results.values()
    torch.testing.assert_close(outputs, want_outputs, rtol=0, atol=1e-12)
    torch.testing.assert_close(final, want_final, rtol=0, atol=1e-12)
    for found, expected in zip(grads, want_grads, strict=True):
        torch.testing.assert_close(found, expected, rtol=0, atol=1e-12)
    assert not outputs[~length_mask(LENGTHS, 7)].any()  # zeros at padding


def test_dropout_between_layers_follows_the_stack_in_training() -> None:
    rnn = nn.LSTM(3, 4, num_layers=2, dropout=0.5, batch_first=True)
    inputs = torch.randn(len(LENGTHS), 7, 3)
    first, _ = rnn_to_lengths(rnn.train(), inputs, LENGTHS)
    second, _ = rnn_to_lengths(rnn, inputs, LENGTHS)
    assert not torch.equal(first, second)  # a fresh mask each call
    evaluated = [rnn_to_lengths(rnn.eval(), inputs, LENGTHS)[0] for _ in range(2)]
    assert torch.equal(*evaluated)
