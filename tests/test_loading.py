"""``seqgen.loading``: a checkpoint run on ONNX Runtime is exported once into the cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from seqgen.bundles import reader
from seqgen.bundles.reader import read_manifest
from seqgen.loading import exported_bundle

pytest.importorskip("onnxscript", reason="exporting needs the export extra")


def test_a_checkpoint_is_exported_once_per_bundle_format(
    trained_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEQGEN_CACHE_DIR", str(tmp_path))
    first = exported_bundle(trained_run / "last.safetensors")
    written = (first / "manifest.json").stat().st_mtime_ns
    assert exported_bundle(trained_run / "last.safetensors") == first  # from the cache
    assert (first / "manifest.json").stat().st_mtime_ns == written
    assert read_manifest(first)["format_version"] == reader.FORMAT_VERSION
    # A seqgen of another bundle format does not read this export: it writes its own.
    monkeypatch.setattr(reader, "FORMAT_VERSION", reader.FORMAT_VERSION + 1)
    assert exported_bundle(trained_run / "last.safetensors") != first
