"""The blockwise training cross-entropy equals PyTorch's, loss and gradient."""

import pytest
import torch
from torch.nn import functional

from seqgen.training import loss as loss_module
from seqgen.training.loss import cross_entropy_sum


def _reference(logits: torch.Tensor, targets: torch.Tensor, smoothing: float) -> torch.Tensor:
    return functional.cross_entropy(
        logits.float(), targets, label_smoothing=smoothing, reduction="sum"
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("block_values", [1 << 20, 50])  # one block; blocks of 1-2 rows
def test_loss_and_gradient_equal_pytorch(dtype, smoothing, block_values, monkeypatch):
    monkeypatch.setattr(loss_module, "_BLOCK_VALUES", block_values)
    torch.manual_seed(0)
    values = (torch.randn(37, 29) * 4).to(dtype)
    targets = torch.randint(0, 29, (37,))
    ours, theirs = values.clone().requires_grad_(), values.clone().requires_grad_()
    loss = cross_entropy_sum(ours, targets, label_smoothing=smoothing)
    expected = _reference(theirs, targets, smoothing)
    (loss * 0.3).backward()
    (expected * 0.3).backward()
    assert loss.dtype == torch.float32 and loss.shape == ()
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-4)
    assert ours.grad.dtype == dtype
    tolerance = 1e-6 if dtype == torch.float32 else 4e-3  # one bf16 rounding step
    torch.testing.assert_close(ours.grad.float(), theirs.grad.float(), rtol=0, atol=tolerance)


def test_float32_logits_are_not_changed_by_backward():
    logits = torch.randn(5, 7, requires_grad=True)
    before = logits.detach().clone()
    cross_entropy_sum(logits, torch.tensor([0, 1, 2, 3, 6])).backward()
    assert torch.equal(logits.detach(), before)


def test_a_second_backward_of_the_kept_softmax_is_refused_not_wrong():
    """The float32 backward turns the softmax it kept into the gradient in place, so autograd
    refuses to run it twice (retain_graph) rather than return a wrong second gradient."""
    logits = torch.randn(5, 7, requires_grad=True)
    loss = cross_entropy_sum(logits, torch.tensor([0, 1, 2, 3, 6]))
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_gradient_flows_through_the_layer_before():
    torch.manual_seed(1)
    layer = torch.nn.Linear(6, 11)
    inputs, targets = torch.randn(9, 6), torch.randint(0, 11, (9,))
    cross_entropy_sum(layer(inputs), targets).backward()
    ours = layer.weight.grad.clone()
    layer.zero_grad()
    _reference(layer(inputs), targets, 0.0).backward()
    torch.testing.assert_close(ours, layer.weight.grad)


def test_label_smoothing_out_of_range_is_refused():
    with pytest.raises(ValueError, match="label_smoothing"):
        cross_entropy_sum(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long), label_smoothing=1.0)
