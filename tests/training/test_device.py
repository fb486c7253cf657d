"""Which CPUs train in bf16 under ``train.cpu_mixed_precision = "auto"``."""

from __future__ import annotations

import pytest
import torch

from seqgen.errors import ConfigError
from seqgen.training import device

CHECKS = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")


@pytest.mark.parametrize(
    ("avx512_bf16", "amx", "native"),
    [(False, False, False), (True, False, True), (False, True, True), (True, True, True)],
)
def test_bf16_is_native_only_with_avx512_bf16_or_amx(
    monkeypatch: pytest.MonkeyPatch, avx512_bf16: bool, amx: bool, native: bool
) -> None:
    # oneDNN's own check says yes on any AVX-512 CPU (it emulates bf16 there): not asked.
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    for name, value in zip(CHECKS, (avx512_bf16, amx), strict=True):
        monkeypatch.setattr(torch.cpu, name, lambda value=value: value)
    assert device.cpu_has_bf16() is native
    assert device.use_cpu_bf16(torch.device("cpu"), "auto") is native


def test_a_torch_without_the_checks_trains_in_float32(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in CHECKS:
        monkeypatch.delattr(torch.cpu, name, raising=False)
    assert device.cpu_has_bf16() is False
    assert device.use_cpu_bf16(torch.device("cpu"), "auto") is False


def test_asking_for_bf16_on_a_cpu_that_would_emulate_it_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in CHECKS:
        monkeypatch.setattr(torch.cpu, name, lambda: False)
    with pytest.raises(ConfigError, match="needs a CPU with bf16 instructions"):
        device.use_cpu_bf16(torch.device("cpu"), True)
    assert device.use_cpu_bf16(torch.device("cpu"), False) is False
