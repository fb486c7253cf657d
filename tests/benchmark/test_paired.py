"""python -m seqgen.benchmark.paired: one tree against itself decodes the same lines at a
positive rate, and bad input is one line on stderr, not a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import seqgen
from seqgen.benchmark import paired

# The checkout (or site-packages folder) this seqgen comes from: a tree the workers can run.
ROOT = Path(seqgen.__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_same_tree_twice_translates_the_same_lines_at_positive_rates(
    data_dir: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report_file = tmp_path / "paired.json"
    arguments = ["--tree", str(ROOT), "--tree", str(ROOT), "--backend", "torch"]
    arguments += ["--beam-size", "2", "--pairs", "2", "--lines", "8", "--json", str(report_file)]
    assert paired.main(arguments) == 0
    report = json.loads(report_file.read_text())
    assert (report["lines"], report["pairs"], report["differing_lines"]) == (8, 2, 0)
    for tree in report["trees"].values():
        assert tree["tree"] == str(ROOT)
        assert len(tree["cpu_sentences_per_second"]) == 2
        assert tree["median_wall_sentences_per_second"] > 0
        assert tree["median_cpu_sentences_per_second"] > 0
    for clock in ("cpu_ratio", "wall_ratio"):
        ratio = report[clock]
        assert 0 < ratio["min"] <= ratio["median"] <= ratio["max"]
    assert "lines differing between the trees' outputs: 0 of 8" in capsys.readouterr().out


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()
    assert captured.out == "" and "Traceback" not in captured.err
    assert captured.err.startswith("seqgen: error: ") and captured.err.count("\n") == 1
    return captured.err


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--backend", "tensorflow"], "unknown backend 'tensorflow'; choose one of"),
        (["--pairs", "0"], "--pairs must be at least 1"),
    ],
)
def test_bad_options_are_one_line(
    extra: list[str], words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert paired.main(["--tree", str(ROOT), "--tree", str(ROOT), *extra]) == 1
    assert words in _one_line_error(capsys)


def test_a_folder_without_seqgen_is_refused_before_any_worker_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert paired.main(["--tree", str(tmp_path), "--tree", str(ROOT)]) == 1
    assert f"{tmp_path} holds no seqgen checkout" in _one_line_error(capsys)


def test_a_tree_whose_worker_fails_is_named_in_one_line(
    data_dir: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A seqgen package without the modules the worker needs: the installed checkout (an
    # editable install's import hook) must not stand in for them.
    (tmp_path / "seqgen").mkdir()
    (tmp_path / "seqgen" / "__init__.py").write_text("")
    assert paired.main(["--tree", str(tmp_path), "--tree", str(ROOT), "--lines", "2"]) == 1
    error = _one_line_error(capsys)
    assert f"the worker for {tmp_path}" in error and "seqgen.benchmark" in error
