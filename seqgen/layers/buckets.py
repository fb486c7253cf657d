"""Matrix products at a few shapes, for bf16 on the CPU.

oneDNN, which runs PyTorch's bf16 products on the CPU, compiles a kernel for each new shape
and keeps it in a cache: about 20 ms per shape on the 2-core Xeon, more than the product
itself. A translator's output layer in training has two sizes that change with every batch
(its real target tokens and, with ``train.shortlist_loss``, its candidate tokens), so under
CPU autocast every step paid for three new kernels (the forward product and two in the
backward) and the output layer took longer in bf16 than in float32. The products over a
whole batch of positions (``rows x source_len`` or ``rows x target_len``: the decoder's
input gates, the attention keys, the encoder's final cell states) change with each new
length too. Padding the sizes up to a multiple of :data:`BUCKET` leaves a few dozen shapes,
compiled once each, for a few percent more multiplications.
"""

from __future__ import annotations

import torch
from torch.nn import functional

BUCKET = 256


def bucketed_linear(
    features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """``functional.linear(features, weight, bias)`` for ``features`` ``(..., inputs)`` and
    ``weight`` ``(outputs, inputs)``: ``(..., outputs)``, the same values, computed with the
    rows (all leading sizes together) and ``outputs`` rounded up to a multiple of
    :data:`BUCKET` where CPU autocast is on (elsewhere the plain product)."""
    if features.device.type != "cpu" or not torch.is_autocast_enabled("cpu"):
        return functional.linear(features, weight, bias)
    leading, outputs = features.shape[:-1], weight.shape[0]
    flat = features.reshape(-1, features.shape[-1])
    rows = flat.shape[0]
    flat = functional.pad(flat, (0, 0, 0, -rows % BUCKET))
    weight = functional.pad(weight, (0, 0, 0, -outputs % BUCKET))
    bias = None if bias is None else functional.pad(bias, (0, -outputs % BUCKET))
    product = functional.linear(flat, weight, bias)[:rows, :outputs]
    return product.reshape(*leading, outputs)
