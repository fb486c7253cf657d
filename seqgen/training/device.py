"""Choosing the device and the mixed-precision mode."""

from __future__ import annotations

import contextlib

import torch

from seqgen.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when present, else CPU; asking for CUDA without one is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"device {name!r} was asked for but CUDA is not available; use --device cpu"
        )
    return torch.device(name)


def autocast(device: torch.device, *, enabled: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA when asked for (no loss scaling needed); a no-op on CPU."""
    if device.type != "cuda" or not enabled:
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast(device_type="cuda", dtype=dtype)
