"""The JavaScript runtime (export/js) against Python's ONNX path, on real data: the same
translations (beam 5 and greedy, all of test_2016_flickr), the same greedy continuations, the
same labels; and one line for each kind of bad input."""

from __future__ import annotations

import gzip
import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from seqgen.bundles.reader import load_bundle


def run_cli(package: Path, *arguments: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """``node export/js/bin/seqgen.js ARGUMENTS`` with ``stdin``."""
    command = ["node", str(package / "bin" / "seqgen.js"), *arguments]
    return subprocess.run(command, input=stdin, capture_output=True, text=True, encoding="utf-8")


def differing(expected: list[str], found: list[str]) -> list[str]:
    """The lines that differ, for the failure message."""
    assert len(found) == len(expected), f"{len(found)} lines for {len(expected)}"
    pairs = enumerate(zip(expected, found, strict=True), start=1)
    return [f"line {i}: {a!r} != {b!r}" for i, (a, b) in pairs if a != b]


def test_node_unit_tests_pass(node_package: Path) -> None:
    result = subprocess.run(
        ["node", "--test", "test/"], cwd=node_package, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    assert "# fail 0" in result.stdout and "# skipped 0" in result.stdout


@pytest.mark.parametrize("beam_size", [5, 1])
def test_translations_equal_python_on_test_2016_flickr(
    node_package: Path, bundled: Callable[[str], Path], data_dir: str, beam_size: int
) -> None:
    bundle = bundled("multi30k-de-en")
    source = Path(data_dir) / "multi30k" / "test_2016_flickr.de.gz"
    sentences = gzip.decompress(source.read_bytes()).decode("utf-8").splitlines()
    assert len(sentences) == 1000
    expected = load_bundle(bundle, device="cpu").translate(sentences, beam_size=beam_size)
    stdin = "\n".join(sentences) + "\n"
    result = run_cli(
        node_package, "translate", str(bundle), "--beam-size", str(beam_size), stdin=stdin
    )
    assert result.returncode == 0, result.stderr
    assert differing(expected, result.stdout.splitlines()) == []


def test_int8_translations_equal_python(
    node_package: Path, bundled: Callable[..., Path], data_dir: str
) -> None:
    """An int8 bundle (its step's and encoder's products int8, some inside the encoder's
    ``Scan``s: ONNX Runtime's ``MatMulIntegerToFloat``) translates in Node.js as in Python."""
    bundle = bundled("multi30k-de-en", int8=True)
    source = Path(data_dir) / "multi30k" / "test_2016_flickr.de.gz"
    sentences = gzip.decompress(source.read_bytes()).decode("utf-8").splitlines()[:200]
    expected = load_bundle(bundle, device="cpu").translate(sentences, beam_size=5)
    stdin = "\n".join(sentences) + "\n"
    result = run_cli(node_package, "translate", str(bundle), "--beam-size", "5", stdin=stdin)
    assert result.returncode == 0, result.stderr
    assert differing(expected, result.stdout.splitlines()) == []


def test_greedy_continuations_equal_python(
    node_package: Path, bundled: Callable[[str], Path], data_dir: str
) -> None:
    bundle = bundled("shakespeare-char")
    text = (Path(data_dir) / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")
    prompts = [line for line in text[:4000].splitlines() if line][:4] + [""]
    generator = load_bundle(bundle, device="cpu")
    expected = [generator.generate(p, strategy="greedy", max_new_tokens=80)[0] for p in prompts]
    arguments = ("generate", str(bundle), "--strategy", "greedy", "--max-length", "80")
    result = run_cli(node_package, *arguments, stdin="\n".join(prompts) + "\n")
    assert result.returncode == 0, result.stderr
    assert differing(expected, [json.loads(line) for line in result.stdout.splitlines()]) == []


def test_packaged_models_run_from_their_folder_as_python_runs_them(
    node_package: Path, data_dir: str
) -> None:
    """The models inside the seqgen package read their weights from the checkpoint beside
    their graphs (ONNX external data): onnxruntime-node opens those graphs by path, and
    each prints what seqgen.load(NAME) gives (``generate --prompt``, Python's flag)."""
    from seqgen.checkpoints import packaged_bundle

    source = Path(data_dir) / "multi30k" / "test_2016_flickr.de.gz"
    sentences = gzip.decompress(source.read_bytes()).decode("utf-8").splitlines()[:40]
    translator = packaged_bundle("multi30k-de-en")
    assert json.loads((translator / "manifest.json").read_text())["weights"]
    expected = load_bundle(translator, device="cpu").translate(sentences, beam_size=5)
    stdin = "\n".join(sentences) + "\n"
    result = run_cli(node_package, "translate", str(translator), "--workers", "1", stdin=stdin)
    assert result.returncode == 0, result.stderr
    assert differing(expected, result.stdout.splitlines()) == []
    generator = packaged_bundle("shakespeare-char")
    expected_text = load_bundle(generator, device="cpu").generate(
        "ROMEO:", strategy="greedy", max_new_tokens=60
    )[0]
    arguments = ("--prompt", "ROMEO:", "--strategy", "greedy", "--max-new-tokens", "60")
    result = run_cli(node_package, "generate", str(generator), *arguments)
    assert result.returncode == 0, result.stderr
    assert [json.loads(line) for line in result.stdout.splitlines()] == [expected_text]
    classifier = packaged_bundle("sentiment")
    texts = ["a gorgeous , witty , seductive movie .", "a dull , lifeless mess ."]
    best = load_bundle(classifier, device="cpu").classify(texts)
    result = run_cli(node_package, "classify", str(classifier), stdin="\n".join(texts) + "\n")
    assert result.returncode == 0, result.stderr
    assert [line.split("\t")[0] for line in result.stdout.splitlines()] == [b[0][0] for b in best]


def test_generate_prompt_and_max_new_tokens_are_the_generators_own(node_package: Path) -> None:
    from seqgen.checkpoints import packaged_bundle

    translator = str(packaged_bundle("multi30k-de-en"))
    for flag in ("--prompt", "--max-new-tokens"):
        result = run_cli(node_package, "translate", translator, flag, "5")
        assert result.returncode == 1 and result.stdout == ""
        assert result.stderr.startswith(f"seqgen-js: error: {flag} is not an option of translate")
        assert len(result.stderr.splitlines()) == 1


@pytest.mark.parametrize(
    ("model", "corpus"),
    [("sentiment", "sst2/sentiment-test"), ("spam", "sms_spam/SMSSpamCollection")],
)
def test_labels_equal_python(
    node_package: Path, bundled: Callable[[str], Path], data_dir: str, model: str, corpus: str
) -> None:
    bundle = bundled(model)
    rows = (Path(data_dir) / corpus).read_text(encoding="utf-8").splitlines()
    texts = [row.split("\t")[0 if model == "sentiment" else 1] for row in rows]
    classified = load_bundle(bundle, device="cpu").classify(texts)
    expected = [f"{label}\t{probability:.4f}" for ((label, probability),) in classified]
    result = run_cli(node_package, "classify", str(bundle), stdin="\n".join(texts) + "\n")
    assert result.returncode == 0, result.stderr
    assert differing(expected, result.stdout.splitlines()) == []


def _bundle_copy(bundle: Path, folder: Path, **changes: object) -> Path:
    """A copy of ``bundle``'s manifest (graphs linked) with ``changes`` applied."""
    folder.mkdir()
    for file in bundle.iterdir():
        if file.name != "manifest.json":
            (folder / file.name).symlink_to(file)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest.update(changes)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def test_bad_input_is_one_line(
    node_package: Path, bundled: Callable[[str], Path], tmp_path: Path
) -> None:
    classifier = bundled("sentiment")
    manifest = json.loads((classifier / "manifest.json").read_text())
    outside = {"classify": {**manifest["graphs"]["classify"], "file": "../sentiment/classify.onnx"}}
    cases = {
        "not a bundle": (
            ["classify", str(tmp_path)],
            "",
            "is not a seqgen bundle|no readable manifest",
        ),
        "no folder": (["classify", str(tmp_path / "nothing")], "", "no such folder"),
        "newer format": (
            ["classify", str(_bundle_copy(classifier, tmp_path / "newer", format_version=99))],
            "good\n",
            "newer than this runtime reads",
        ),
        "another task": (
            ["translate", str(classifier)],
            "gut\n",
            "is a classification bundle, not a translation",
        ),
        "a file outside": (
            ["classify", str(_bundle_copy(classifier, tmp_path / "outside", graphs=outside))],
            "good\n",
            "plain file name inside the bundle folder",
        ),
        "empty line": (["classify", str(classifier)], "good\n\n", "line 2 of the input is empty"),
        "bad option": (
            ["translate", str(classifier), "--beam-size", "two"],
            "",
            "expected a whole number",
        ),
        "unknown option": (
            ["classify", str(classifier), "--colour", "red"],
            "",
            "unknown option --colour",
        ),
    }
    for name, (arguments, stdin, message) in cases.items():
        result = run_cli(node_package, *arguments, stdin=stdin)
        lines = result.stderr.splitlines()
        assert result.returncode == 1 and len(lines) == 1, (name, result.stderr)
        assert result.stdout == "", name
        assert re.search(message, lines[0]), (name, lines[0])


def test_empty_and_long_lines_translate(node_package: Path, bundled: Callable[[str], Path]) -> None:
    bundle = bundled("multi30k-de-en")
    long_line = " ".join(["Ein Hund läuft über die Wiese."] * 60)
    result = run_cli(
        node_package,
        "translate",
        str(bundle),
        "--beam-size",
        "1",
        stdin=f"Ein Hund.\n\n{long_line}\n",
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.split("\n")
    assert lines[1] == "" and lines[2] and len(lines) == 4  # empty in, empty out; the long one cut
    assert result.stderr.count("\n") == 1 and "were cut to it" in result.stderr
