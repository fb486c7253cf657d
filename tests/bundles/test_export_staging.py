"""A killed export leaves a staging folder beside its output; the next export removes it
when that is safe (its process has ended), and never another export's live one."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from seqgen.bundles.export import _staging_folder, remove_stale_staging
from seqgen.bundles.reader import FORMAT_NAME, MANIFEST_FILE


def dead_pid() -> int:
    """The id of a process that has ended."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_a_dead_exports_staging_folder_is_removed_a_live_ones_kept(tmp_path: Path) -> None:
    output = tmp_path / "bundle"
    stale = tmp_path / f".bundle.pid{dead_pid()}.x1y2.tmp"
    live = tmp_path / f".bundle.pid{os.getpid()}.z3w4.tmp"
    other = tmp_path / ".other.pid1.q5.tmp"  # another output's
    for folder in (stale, live, other):
        folder.mkdir()
        (folder / "step.onnx").write_bytes(b"half")
    assert remove_stale_staging(output) == [stale]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, other.name])


def test_the_staging_folder_names_its_process(tmp_path: Path) -> None:
    staging = _staging_folder(tmp_path / "bundle")
    assert staging.name.startswith(f".bundle.pid{os.getpid()}.") and staging.is_dir()
    assert remove_stale_staging(tmp_path / "bundle") == []  # ours: alive


def test_the_bundle_a_killed_export_was_replacing_is_removed_once_replaced(
    tmp_path: Path,
) -> None:
    output = tmp_path / "bundle"
    previous = tmp_path / ".bundle.old-1a2b3c4d"
    previous.mkdir()
    assert remove_stale_staging(output) == []  # no bundle in place: keep the only copy
    output.mkdir()
    manifest = {"format": FORMAT_NAME, "kind": "generation"}
    (output / MANIFEST_FILE).write_text(json.dumps(manifest), encoding="utf-8")
    assert remove_stale_staging(output) == [previous]
    assert not previous.exists()
