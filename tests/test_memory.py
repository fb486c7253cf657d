"""seqgen.memory: malloc is told to keep freed memory, where it is glibc's."""

from __future__ import annotations

import ctypes
import platform
import subprocess
import sys

import pytest

from seqgen import memory


def test_mallopt_gets_the_three_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    class FakeMallopt:
        def __call__(self, parameter: int, value: int) -> int:
            calls.append((parameter, value))
            return 1

    class FakeLibc:
        mallopt = FakeMallopt()

    monkeypatch.setattr(memory.sys, "platform", "linux")
    monkeypatch.setattr(memory.ctypes, "CDLL", lambda name: FakeLibc())
    assert memory.keep_freed_memory() is True
    assert calls == [(-3, 32 << 20), (-1, 1 << 30), (-2, 256 << 20)]


def test_without_glibc_nothing_happens(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str) -> ctypes.CDLL:
        raise OSError(f"{name}: cannot open shared object file")

    monkeypatch.setattr(memory.sys, "platform", "linux")
    monkeypatch.setattr(memory.ctypes, "CDLL", missing)
    assert memory.keep_freed_memory() is False
    monkeypatch.setattr(memory.sys, "platform", "darwin")
    assert memory.keep_freed_memory() is False


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc")
def test_glibc_takes_the_settings_in_a_fresh_process() -> None:
    code = "from seqgen.memory import keep_freed_memory; print(keep_freed_memory())"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "True"
