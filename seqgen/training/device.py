"""Choosing the device and the mixed-precision mode."""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterable

import torch

from seqgen.errors import ConfigError

logger = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when present, else CPU; asking for CUDA without one is an error, and
    so is any name but auto, cpu, cuda and cuda:N (ConfigError, one line)."""
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", name):
        raise ConfigError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"device {name!r} was asked for but CUDA is not available; use --device cpu"
        )
    return torch.device(name)


# torch.cpu's checks of the CPU's instruction sets (through cpuinfo; private, newer PyTorch).
_NATIVE_BF16_CHECKS = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")


def cpu_has_bf16() -> bool:
    """Whether the CPU multiplies bf16 natively: AVX512-BF16 or AMX.

    Not oneDNN's ``_is_mkldnn_bf16_supported()``: it says yes on every AVX-512 CPU and then
    emulates bf16 where these instructions are missing; on an Intel Xeon with AVX-512 and VNNI
    but neither, the peer model trained at half its float32 speed (5,784 against 11,661
    pieces/s). A PyTorch without these checks cannot tell: float32 there.
    """
    checks = [getattr(torch.cpu, name, None) for name in _NATIVE_BF16_CHECKS]
    return any(check() for check in checks if check is not None)


def use_cpu_bf16(device: torch.device, setting: bool | str) -> bool:
    """Whether training on ``device`` runs bf16 autocast on the CPU, from
    ``train.cpu_mixed_precision``: ``"auto"`` where the CPU has bf16 instructions, ``True``
    always (refused on a CPU without them: its products would be emulated, about 8x slower
    than float32 on an AVX2 EPYC and 2x on an AVX-512 Xeon, and oneDNN's LSTM refuses bf16
    on AVX2), ``False`` never."""
    if device.type != "cpu" or setting is False:
        return False
    if cpu_has_bf16():
        return True
    if setting == "auto":
        logger.info("this CPU has no bf16 instructions: training in float32")
        return False
    raise ConfigError(
        "train.cpu_mixed_precision = true needs a CPU with bf16 instructions (AVX512-BF16 "
        'or AMX) and this one has none; set train.cpu_mixed_precision = "auto" or false'
    )


def autocast(
    device: torch.device, *, enabled: bool, cpu_enabled: bool = False
) -> contextlib.AbstractContextManager:
    """bf16 autocast: on CUDA when ``enabled``, on CPU when ``cpu_enabled``; else a no-op.

    Weights, optimizer state and the loss stay float32; only matrix products and the
    recurrent kernels run in bf16, so no loss scaling is needed.
    """
    if device.type == "cuda" and enabled:
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast(device_type="cuda", dtype=dtype)
    if device.type == "cpu" and cpu_enabled:
        return torch.autocast(device_type="cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def adamw(
    parameters: Iterable[torch.nn.Parameter],
    device: torch.device,
    *,
    lr: float,
    weight_decay: float,
) -> torch.optim.AdamW:
    """AdamW with its fused kernel on the CPU and CUDA: one pass over each parameter instead
    of one operator per update term. For the peer comparison's translator on one CPU thread
    the update took 34 ms unfused and 7 ms fused, against ~0.4 s for the whole step."""
    fused = device.type in ("cpu", "cuda")
    return torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay, fused=fused or None)


def clip_gradients(parameters: Iterable[torch.nn.Parameter], max_norm: float) -> None:
    """``torch.nn.utils.clip_grad_norm_(parameters, max_norm)``, which scales every gradient
    by ``min(1, max_norm / (norm + 1e-6))``; on the CPU, where reading the norm costs no
    device sync, the scaling by exactly 1 is skipped (one pass over every gradient: 2.5% of
    the peer model's training step)."""
    parameters = list(parameters)
    grads = [p.grad for p in parameters if p.grad is not None]
    norm = total_norm(grads)
    if norm.device.type == "cpu" and float(norm) + 1e-6 <= max_norm:
        return
    torch.nn.utils.clip_grads_with_norm_(parameters, max_norm, norm)


def total_norm(grads: list[torch.Tensor]) -> torch.Tensor:
    """The 2-norm of all ``grads`` together, a 0-d tensor: ``get_total_norm(grads)``. On the
    CPU each float32 gradient's square sum is a BLAS dot product, which reads it at about
    twice the speed of ``linalg.vector_norm`` (the peer model's three embedding-sized
    gradients: 0.16 against 0.32 ms each, in cache)."""
    if not grads or any(g.device.type != "cpu" or g.dtype != torch.float32 for g in grads):
        return torch.nn.utils.get_total_norm(grads)
    squares = [torch.dot(flat, flat) for flat in (g.reshape(-1) for g in grads)]
    return torch.stack(squares).sum().sqrt()


def optimizer_step(
    loss: torch.Tensor, model: torch.nn.Module, optimizer: torch.optim.Optimizer, grad_clip: float
) -> None:
    """One update from ``loss``: back-propagate, clip the global gradient norm to
    ``grad_clip`` (0 = off), step the optimizer. Every task's trainer ends a step with it."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip > 0:
        clip_gradients(model.parameters(), grad_clip)
    optimizer.step()
