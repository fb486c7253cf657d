"""python -m seqgen.benchmark.grouped_output: the union a group of sentences' shortlists
share, and the output layer's product per group, checked before it is timed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from seqgen.benchmark import grouped_output
from seqgen.errors import SeqgenError


@pytest.mark.parametrize("int8", [False, True])
@pytest.mark.parametrize("groups", [0, 1, 3])
def test_each_product_gives_the_float32_scores(int8: bool, groups: int) -> None:
    run = grouped_output.onnx_runner(int8, groups, 5, 16, 24)  # checks its scores first
    (scores,) = run()
    assert scores.shape == (max(groups, 1) * 5, 24)


def test_a_scale_applied_to_the_wrong_group_fails_the_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    feeds = grouped_output.step_feeds

    def swapped(*args: object, **kwargs: object) -> tuple[dict, np.ndarray]:
        given, expected = feeds(*args, **kwargs)
        given["weight_scale"] = given["weight_scale"][::-1].copy()  # group 0's is group 2's
        return given, expected

    monkeypatch.setattr(grouped_output, "step_feeds", swapped)
    with pytest.raises(SeqgenError, match="int8 product of 3 groups gave wrong scores"):
        grouped_output.onnx_runner(True, 3, 5, 16, 24)


def test_the_torch_product_gives_the_onnx_scores() -> None:
    pytest.importorskip("torch")
    for groups in (0, 3):
        (onnx_scores,) = grouped_output.onnx_runner(False, groups, 5, 16, 24)()
        torch_scores = grouped_output.torch_runner(groups, 5, 16, 24)().numpy()
        np.testing.assert_allclose(torch_scores, onnx_scores, rtol=1e-5, atol=1e-5)


def test_a_group_shares_the_union_of_its_sentences_shortlists() -> None:
    # Source token t (>= 4) suggests target tokens 10 + t and 20 + t; 5 and 6 are frequent.
    table = np.full((12, 2), 3, dtype=np.int64)
    table[4:] = np.stack([np.arange(14, 22), np.arange(24, 32)], axis=1)
    frequent = np.array([5, 6], dtype=np.int64)
    sources = [[4], [5, 6], [4, 7], [8]]  # longest first: [5, 6], [4, 7], [4], [8]
    sizes = grouped_output.union_sizes(
        sources, table, frequent, batch_size=4, group_sizes=[1, 2, 4]
    )
    special = 4  # PAD, UNK, BOS, EOS: in every shortlist
    assert sizes[1] == special + 2 + np.mean([4, 4, 2, 2])
    assert sizes[2] == special + 2 + np.mean([8, 4])  # sources {4, 5, 6, 7} and {4, 8}
    assert sizes[4] == special + 2 + 2 * 5


def test_the_report_covers_each_group_size_up_to_the_batch(
    data_dir: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report_file = tmp_path / "grouped.json"
    arguments = ["--batch-size", "4", "--beam-size", "2", "--repeats", "1"]
    assert grouped_output.main([*arguments, "--json", str(report_file)]) == 0
    report = json.loads(report_file.read_text())
    assert [row["group_size"] for row in report["rows"]] == [1, 2, 4]
    unions = [row["union"] for row in report["rows"]]
    assert unions == sorted(unions) and all(row["int8_us"] > 0 for row in report["rows"])
    assert "faster than the union's" in capsys.readouterr().out


def test_a_bad_setting_is_one_line_and_exit_code_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert grouped_output.main(["--repeats", "0"]) == 1
    error = capsys.readouterr().err
    assert (
        error.startswith("seqgen: error: --repeats must be at least 1") and error.count("\n") == 1
    )
