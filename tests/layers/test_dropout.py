"""Dropout's NumPy-drawn CPU mask: nn.Dropout's behaviour, decided by PyTorch's seed."""

from __future__ import annotations

import pytest
import torch

from seqgen.layers.dropout import Dropout, keep_mask


@pytest.mark.parametrize("p", [0.2, 0.5])
def test_the_mask_keeps_one_minus_p_scaled_by_its_inverse(p: float) -> None:
    torch.manual_seed(0)
    mask = keep_mask((400, 500), p)
    kept = mask > 0
    assert mask.dtype == torch.float32 and mask.shape == (400, 500)
    assert abs(float(kept.float().mean()) - (1 - p)) < 0.005  # 200,000 draws: ~0.001 spread
    assert torch.equal(mask[kept], torch.full_like(mask[kept], 1 / (1 - p)))
    # Neighbouring elements are independent: no pattern repeats along a row.
    assert abs(float((kept[:, 1:] == kept[:, :-1]).float().mean()) - (p**2 + (1 - p) ** 2)) < 0.01


def test_torch_manual_seed_decides_the_masks() -> None:
    layer, inputs = Dropout(0.3).train(), torch.ones(8, 100)
    torch.manual_seed(7)
    first = layer(inputs)
    torch.manual_seed(7)
    assert torch.equal(layer(inputs), first)
    assert not torch.equal(layer(inputs), first)


def test_eval_mode_and_gradients_as_nn_dropout() -> None:
    layer, inputs = Dropout(0.4), torch.randn(6, 50, requires_grad=True)
    assert layer.eval()(inputs) is inputs
    outputs = layer.train()(inputs)
    outputs.sum().backward()
    # The gradient is the mask: 1 / (1 - p) where kept, 0 where dropped.
    assert torch.equal(inputs.grad, (outputs != 0).float() / (1 - 0.4))
    assert torch.equal(Dropout(0.0).train()(inputs), inputs)
    assert not Dropout(1.0).train()(inputs).any()
