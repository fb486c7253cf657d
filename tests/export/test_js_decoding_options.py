"""Decoding options of the JavaScript runtime (export/js) against Python's ONNX path: no
repeated n-grams (translation with beam 5 and greedy, a generator's greedy continuation, set
by a flag or by the bundle's decoding defaults) and n-best output in seqgen's format."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from seqgen.bundles.reader import load_bundle

SENTENCES = 150  # the first of test_2016_flickr: enough for many bans, quick on 2 cores


def _node(package: Path, *arguments: str, stdin: str) -> str:
    command = ["node", str(package / "bin" / "seqgen.js"), *arguments]
    result = subprocess.run(command, input=stdin, capture_output=True, text=True, encoding="utf-8")
    assert result.returncode == 0, result.stderr
    return result.stdout


def _flickr(data_dir: str, count: int) -> list[str]:
    source = Path(data_dir) / "multi30k" / "test_2016_flickr.de.gz"
    return gzip.decompress(source.read_bytes()).decode("utf-8").splitlines()[:count]


def _with_decoding(bundle: Path, folder: Path, **defaults: object) -> Path:
    """A copy of a translator ``bundle`` whose decoding defaults hold ``defaults``: the
    manifest's ``decoding`` (which the JavaScript runtime reads) and its recipe's (Python's),
    as a model trained with them carries them. Files are copied: a bundle reader refuses
    links that lead outside the folder."""
    shutil.copytree(bundle, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["decoding"].update(defaults)
    manifest["recipe"]["decoding"].update(defaults)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


@pytest.mark.parametrize("beam_size", [5, 1])
def test_no_repeat_translations_equal_python(
    node_package: Path,
    bundled: Callable[[str], Path],
    data_dir: str,
    tmp_path: Path,
    beam_size: int,
) -> None:
    # Set in the bundle's decoding defaults, as a model trained with it would carry it.
    bundle = _with_decoding(bundled("multi30k-de-en"), tmp_path / "bundle", no_repeat_ngram_size=2)
    sentences = _flickr(data_dir, SENTENCES)
    translator = load_bundle(bundle, device="cpu")
    expected = translator.translate(sentences, beam_size=beam_size)
    plain = translator.translate(sentences, beam_size=beam_size, no_repeat_ngram_size=0)
    assert sum(a != b for a, b in zip(expected, plain, strict=True)) >= 10  # the bans bite
    stdin = "\n".join(sentences) + "\n"
    arguments = ("translate", str(bundle), "--beam-size", str(beam_size))
    found = _node(node_package, *arguments, stdin=stdin)
    assert found.splitlines() == expected


def test_no_repeat_continuation_equals_python(
    node_package: Path, bundled: Callable[[str], Path]
) -> None:
    bundle = bundled("shakespeare-char")
    prompts = ["ROMEO:", "First Citizen:", ""]  # one line each: stdin holds one per line
    generator = load_bundle(bundle, device="cpu")
    common = {"strategy": "greedy", "max_new_tokens": 150}
    expected = [generator.generate(p, no_repeat_ngram_size=4, **common)[0] for p in prompts]
    assert expected != [generator.generate(p, **common)[0] for p in prompts]
    arguments = ("generate", str(bundle), "--strategy", "greedy", "--max-length", "150")
    stdin = "\n".join(prompts) + "\n"
    found = _node(node_package, *arguments, "--no-repeat-ngram-size", "4", stdin=stdin)
    assert [json.loads(line) for line in found.splitlines()] == expected


def test_n_best_equals_python_cli(
    node_package: Path, bundled: Callable[[str], Path], data_dir: str, tmp_path: Path
) -> None:
    bundle = bundled("multi30k-de-en")
    sentences = [*_flickr(data_dir, 30), "", "Ein Hund."]  # an empty line has one, empty
    source = tmp_path / "source.txt"
    source.write_text("\n".join(sentences) + "\n", encoding="utf-8")
    command = [sys.executable, "-m", "seqgen", "translate", "--model", str(bundle)]
    command += ["--input", str(source)]
    options = ["--beam-size", "5", "--n-best", "3"]
    python = subprocess.run([*command, *options], capture_output=True, text=True, encoding="utf-8")
    assert python.returncode == 0, python.stderr
    found = _node(node_package, "translate", str(bundle), *options, stdin=source.read_text())
    assert found == python.stdout
    assert "30 |||  ||| 0.0000\n" in found and found.count("\n") == 31 * 3 + 1
