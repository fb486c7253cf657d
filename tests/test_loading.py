"""``seqgen.loading``: a checkpoint run on ONNX Runtime is exported once into the cache."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import seqgen.loading
from seqgen.bundles import reader
from seqgen.bundles.reader import read_manifest
from seqgen.loading import exported_bundle, source_fingerprint, tree_fingerprint

pytest.importorskip("onnxscript", reason="exporting needs the export extra")


def test_a_checkpoint_is_exported_once_per_bundle_format_and_code(
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
    monkeypatch.undo()
    # Nor does a seqgen of other code (an upgrade, another checkout): its graphs may differ.
    monkeypatch.setenv("SEQGEN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(seqgen.loading, "source_fingerprint", lambda: "other code")
    other = exported_bundle(trained_run / "last.safetensors")
    assert other != first and read_manifest(other)["format_version"] == reader.FORMAT_VERSION


def test_a_new_export_replaces_the_checkpoints_older_ones_only(
    trained_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEQGEN_CACHE_DIR", str(tmp_path))
    checkpoint = trained_run / "last.safetensors"
    twin = tmp_path / "twin" / "last.safetensors"  # the same stem, another file
    twin.parent.mkdir()
    twin.write_bytes(checkpoint.read_bytes())
    old, old_int8, old_twin = (
        exported_bundle(checkpoint),
        exported_bundle(checkpoint, int8=True),
        exported_bundle(twin),
    )
    # How seqgen named its exports before the path digest: never read now, so they go too.
    unread = [tmp_path / "bundles" / f"last-{'0123abcd' * 2}{end}" for end in ("", "-int8")]
    for folder in unread:
        shutil.copytree(old, folder)
    monkeypatch.setattr(seqgen.loading, "source_fingerprint", lambda: "upgraded seqgen")
    new = exported_bundle(checkpoint)
    assert new != old and not old.exists() and not unread[0].exists()
    assert old_int8.is_dir() and old_twin.is_dir()  # not this export's kind or file
    assert unread[1].is_dir()
    assert exported_bundle(checkpoint, int8=True) != old_int8 and not old_int8.exists()
    assert sorted(path.name for path in (tmp_path / "bundles").iterdir()) == sorted(
        [new.name, exported_bundle(checkpoint, int8=True).name, old_twin.name]
    )


def test_the_code_fingerprint_follows_the_python_sources(tmp_path: Path) -> None:
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "graphs.py").write_text("A = 1\n")
    (tmp_path / "notes.md").write_text("not code\n")
    first = tree_fingerprint(tmp_path)
    (tmp_path / "notes.md").write_text("still not code\n")
    assert tree_fingerprint(tmp_path) == first
    (tmp_path / "tasks" / "graphs.py").write_text("A = 2\n")
    assert tree_fingerprint(tmp_path) != first
    assert len(source_fingerprint()) == 16
