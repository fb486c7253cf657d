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
def bundled(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """``bundled(name)``: the bundle of a bundled model (``multi30k-de-en``, ``sentiment``...),
    exported on first use."""
    folder = tmp_path_factory.mktemp("bundles")
    exported: dict[str, Path] = {}

    def bundle(name: str) -> Path:
        if name not in exported:
            output = folder / name
            command = [
                sys.executable,
                "-m",
                "seqgen",
                "export",
                "--model",
                name,
                "--output",
                str(output),
            ]
            result = subprocess.run(command, capture_output=True, text=True)
            assert result.returncode == 0, result.stderr
            exported[name] = output
        return exported[name]

    return bundle
