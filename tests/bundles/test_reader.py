"""The bundle reader refuses hostile manifests: a bundle never reads outside its folder.

Every file name a manifest states (``graphs.*.file``, ``tokenizer.file``, ``tokenizers.*.file``,
``tokenizers.*.sentencepiece_model``, ``shortlist.file``) must be a plain name of a file in
the bundle folder, and no file the reader opens may be a link leading out of it. These
checks run in ``read_manifest``, before any graph is loaded, so a stand-in bundle of empty
files is enough to test them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from seqgen.bundles.reader import (
    FORMAT_NAME,
    FORMAT_VERSION,
    MANIFEST_FILE,
    graph_files,
    load_bundle,
    read_manifest,
    tokenizer_file,
)
from seqgen.errors import CheckpointError

TRANSLATOR_GRAPHS = ("encoder", "step", "output_rows", "select")  # a shortlisted one's


def stand_in_translator(folder: Path) -> dict[str, Any]:
    """A translator bundle's manifest and empty files in ``folder``; returns the manifest."""
    graphs = {name: {"file": f"{name}.onnx"} for name in TRANSLATOR_GRAPHS}
    tokenizers = {
        side: {"file": f"{side}_tokenizer.json", "sentencepiece_model": f"{side}.model"}
        for side in ("source", "target")
    }
    manifest = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "kind": "translation",
        "graphs": graphs,
        "tokenizers": tokenizers,
        "shortlist": {"file": "shortlist.json", "per_source": 4, "frequent": 2},
    }
    folder.mkdir(parents=True, exist_ok=True)
    names = [e["file"] for e in graphs.values()] + ["shortlist.json"]
    names += [name for entry in tokenizers.values() for name in entry.values()]
    for name in names:
        (folder / name).write_bytes(b"")
    write_manifest(folder, manifest)
    return manifest


def write_manifest(folder: Path, manifest: Any) -> None:
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest), encoding="utf-8")


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    folder = tmp_path / "bundle"
    stand_in_translator(folder)
    (tmp_path / "outside.json").write_text("{}", encoding="utf-8")
    return folder


def refused(folder: Path, *fragments: str) -> str:
    with pytest.raises(CheckpointError) as error:
        read_manifest(folder)
    message = str(error.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


def test_the_stand_in_bundle_passes(bundle: Path) -> None:
    manifest = read_manifest(bundle)
    assert graph_files(manifest) == {n: f"{n}.onnx" for n in TRANSLATOR_GRAPHS}
    assert tokenizer_file(manifest, "x.json", "target") == "target_tokenizer.json"


def test_output_rows_is_the_one_graph_a_translator_may_leave_out(bundle: Path) -> None:
    """A translator without a shortlist has no output_rows graph: its bundle lists three
    graphs and loads; one without its step graph, or listing a graph no translator has,
    is refused in one line naming the graphs."""
    manifest = json.loads((bundle / MANIFEST_FILE).read_text(encoding="utf-8"))
    del manifest["graphs"]["output_rows"]
    write_manifest(bundle, manifest)
    assert list(graph_files(read_manifest(bundle))) == ["encoder", "step", "select"]
    for graphs in (
        {name: entry for name, entry in manifest["graphs"].items() if name != "step"},
        {**manifest["graphs"], "prime": {"file": "step.onnx"}},
    ):
        write_manifest(bundle, {**manifest, "graphs": graphs})
        refused(bundle, "must list the graphs encoder, step, select (and may list output_rows)")


def test_one_tokenizer_file_both_sides_name_passes_and_is_required(bundle: Path) -> None:
    """A joint vocabulary's bundle stores its tokenizer once, named by both sides (the
    stand-in's two copies are what older seqgen wrote, and pass above)."""
    manifest = json.loads((bundle / MANIFEST_FILE).read_text(encoding="utf-8"))
    for side in ("source", "target"):
        (bundle / f"{side}_tokenizer.json").unlink()
        (bundle / f"{side}.model").unlink()
        joint = {"file": "tokenizer.json", "sentencepiece_model": "tokenizer.model"}
        manifest["tokenizers"][side] = joint
    (bundle / "tokenizer.json").write_bytes(b"")
    (bundle / "tokenizer.model").write_bytes(b"")
    write_manifest(bundle, manifest)
    checked = read_manifest(bundle)
    files = {tokenizer_file(checked, "x.json", side) for side in ("source", "target")}
    assert files == {"tokenizer.json"}
    (bundle / "tokenizer.json").unlink()
    refused(bundle, "missing tokenizer.json", "re-export")


HOSTILE_NAMES = [
    "../outside.json",
    "../../etc/passwd",
    "/etc/passwd",
    "sub/step.onnx",
    "..\\outside.json",
    "C:outside.json",
    "..",
    ".",
    "",
    "nul\0.json",
    5,
    None,
    ["step.onnx"],
]
FIELDS = [
    ("graphs", "step", "file"),
    ("tokenizers", "source", "file"),
    ("tokenizers", "target", "sentencepiece_model"),
    ("shortlist", None, "file"),
]


@pytest.mark.parametrize("name", HOSTILE_NAMES, ids=repr)
@pytest.mark.parametrize("field", FIELDS, ids=lambda f: ".".join(p for p in f if p))
def test_a_file_name_that_is_not_plain_is_refused(
    bundle: Path, field: tuple[str, str | None, str], name: object
) -> None:
    manifest = json.loads((bundle / MANIFEST_FILE).read_text(encoding="utf-8"))
    section, entry, key = field
    (manifest[section][entry] if entry else manifest[section])[key] = name
    write_manifest(bundle, manifest)
    where = ".".join(p for p in field if p)
    refused(bundle, f"{where} = {name!r}", "not a plain file name", "re-export")


def test_a_generators_tokenizer_file_is_checked(tmp_path: Path) -> None:
    folder = tmp_path / "generator"
    folder.mkdir()
    graphs = {name: {"file": f"{name}.onnx"} for name in ("prime", "step", "select")}
    for entry in graphs.values():
        (folder / entry["file"]).write_bytes(b"")
    (folder / "tokenizer.json").write_text("{}", encoding="utf-8")
    manifest = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "kind": "generation"}
    manifest |= {"graphs": graphs, "tokenizer": {"file": "../../etc/passwd"}}
    write_manifest(folder, manifest)
    refused(folder, "tokenizer.file = '../../etc/passwd'", "not a plain file name")
    manifest["tokenizer"]["file"] = "tokenizer.json"
    write_manifest(folder, manifest)
    assert read_manifest(folder)["kind"] == "generation"


@pytest.mark.parametrize("name", ["step.onnx", "shortlist.json", "source.model", MANIFEST_FILE])
def test_a_link_out_of_the_bundle_is_refused(bundle: Path, name: str) -> None:
    (bundle / name).unlink()
    os.symlink(bundle.parent / "outside.json", bundle / name)
    refused(bundle, str(bundle / name), "leads outside the bundle")


def test_a_link_inside_the_bundle_is_followed(bundle: Path) -> None:
    (bundle / "step.onnx").rename(bundle / "real-step.onnx")
    os.symlink("real-step.onnx", bundle / "step.onnx")
    assert read_manifest(bundle)["kind"] == "translation"


def test_a_link_loop_is_refused(bundle: Path) -> None:
    (bundle / "step.onnx").unlink()
    os.symlink("step.onnx", bundle / "step.onnx")
    refused(bundle, "step.onnx")


def test_a_manifest_nested_200000_deep_is_one_line(bundle: Path) -> None:
    (bundle / MANIFEST_FILE).write_text("[" * 200_000 + "]" * 200_000, encoding="utf-8")
    refused(bundle, "not readable JSON", "nested deeper than")
    with pytest.raises(CheckpointError, match="nested deeper than"):
        load_bundle(bundle)


def test_a_tokenizer_nested_too_deep_is_one_line(bundle: Path) -> None:
    from seqgen.bundles.reader import read_json

    (bundle / "source_tokenizer.json").write_text("{" + '"a":{' * 100 + "}" * 101)
    with pytest.raises(CheckpointError, match="nested deeper than 64 levels"):
        read_json(bundle / "source_tokenizer.json")
