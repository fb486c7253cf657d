"""Dropout with its mask drawn by NumPy on the CPU.

PyTorch draws a CPU dropout mask with ``bernoulli_``, element by element from its Mersenne
Twister: 4.2 ms for the ``(64, 16, 256)`` mask of one of the peer model's layers on the
2-core Xeon, and a translator's training step draws three or four of them (a tenth of the
step). NumPy's PCG64 draws 16 random bits per element in a fifth of that time
(``Generator.integers`` into ``uint16``), and a bit pattern below ``(1 - p) * 2**16`` keeps
its element: the keep probability is ``1 - p`` rounded to a multiple of ``2**-16``.

Each mask's generator is seeded from PyTorch's own generator, so ``torch.manual_seed`` and
a resumed run's restored RNG state still decide every mask. On other devices, and for ``p``
of 0 or 1, the layer is ``nn.functional.dropout``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

_BITS = 1 << 16


def keep_mask(
    shape: tuple[int, ...] | torch.Size, p: float, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Dropout's scaled mask on the CPU: ``1 / (1 - p)`` where an element is kept (with
    probability ``1 - p``), 0 where it is dropped; ``shape``, ``dtype``."""
    seed = int(torch.randint(0, 2**62, (1,)))
    bits = np.random.default_rng(seed).integers(0, _BITS, size=tuple(shape), dtype=np.uint16)
    kept = torch.from_numpy(bits < round((1 - p) * _BITS))
    return kept.to(dtype).mul_(1 / (1 - p))


def dropout(inputs: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """``nn.functional.dropout(inputs, p, training)``, its CPU mask from :func:`keep_mask`."""
    if not training or p == 0:
        return inputs
    if inputs.device.type != "cpu" or p >= 1:
        return nn.functional.dropout(inputs, p, True)
    return inputs * keep_mask(inputs.shape, p, inputs.dtype)


class Dropout(nn.Module):
    """``nn.Dropout(p)`` (no parameters, identity in eval mode) whose CPU mask comes from
    :func:`keep_mask`."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """``inputs`` of any shape, with elements zeroed with probability ``p`` and the rest
        scaled by ``1 / (1 - p)`` in training mode."""
        return dropout(inputs, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"
