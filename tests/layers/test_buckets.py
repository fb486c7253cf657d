"""Products at bucketed shapes give the plain product's values and gradients."""

from __future__ import annotations

import torch
from torch.nn import functional

from seqgen.layers.buckets import BUCKET, bucketed_linear


def test_without_autocast_it_is_the_plain_product() -> None:
    features, weight, bias = torch.randn(5, 7, 3), torch.randn(11, 3), torch.randn(11)
    assert torch.equal(
        bucketed_linear(features, weight, bias), functional.linear(features, weight, bias)
    )


def test_under_cpu_autocast_padding_changes_no_value_or_gradient() -> None:
    torch.manual_seed(0)
    # Sizes off the bucket, so both are padded; leading sizes flatten into rows.
    leading, inputs, outputs = (3, BUCKET // 3 + 1), 16, BUCKET + 5
    features = torch.randn(*leading, inputs, requires_grad=True)
    weight = torch.randn(outputs, inputs, requires_grad=True)
    bias = torch.randn(outputs, requires_grad=True)
    results = []
    for product in (functional.linear, bucketed_linear):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            result = product(features, weight, bias)
        gradient_of = torch.randn(result.shape, generator=torch.Generator().manual_seed(1))
        grads = torch.autograd.grad((result.float() * gradient_of).sum(), (features, weight, bias))
        results.append((result, grads))
    (plain, plain_grads), (bucketed, bucketed_grads) = results
    assert bucketed.shape == (*leading, outputs) and bucketed.dtype == plain.dtype
    torch.testing.assert_close(bucketed, plain, rtol=1e-2, atol=1e-2)
    for got, expected in zip(bucketed_grads, plain_grads, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-2, atol=5e-2)
