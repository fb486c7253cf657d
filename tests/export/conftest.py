"""Fixtures for the JavaScript runtime's tests: the package, and the bundled models exported
once per session (a translator, a generator, classifiers)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[2] / "export" / "js"
WEB = Path(__file__).parents[2] / "export" / "web"


@pytest.fixture(scope="session")
def node_package() -> Path:
    """export/js with its dependencies installed, or skip (CI installs them: .ci/run)."""
    if shutil.which("node") is None:
        pytest.skip("node is not installed")
    if not (PACKAGE / "node_modules" / "onnxruntime-node").is_dir():
        pytest.skip("npm ci --prefix export/js has not run (ONNXRUNTIME_NODE_INSTALL=skip offline)")
    return PACKAGE


@pytest.fixture(scope="session")
def bundled(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """``bundled(name, int8=False)``: the bundle of a bundled model (``multi30k-de-en``,
    ``sentiment``...), exported on first use (``int8``: with ``--int8``)."""
    folder = tmp_path_factory.mktemp("bundles")
    exported: dict[tuple[str, bool], Path] = {}

    def bundle(name: str, *, int8: bool = False) -> Path:
        if (name, int8) not in exported:
            output = folder / (f"{name}-int8" if int8 else name)
            command = [
                sys.executable,
                "-m",
                "seqgen",
                "export",
                "--model",
                name,
                "--output",
                str(output),
                *(["--int8"] if int8 else []),
            ]
            result = subprocess.run(command, capture_output=True, text=True)
            assert result.returncode == 0, result.stderr
            exported[name, int8] = output
        return exported[name, int8]

    return bundle
