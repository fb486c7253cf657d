"""python -m seqgen.benchmark.profile_decode: ONNX Runtime's profile of a decode, by graph
and by the step graph's nodes, with its traces removed afterwards."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest

from seqgen.benchmark import profile_decode
from seqgen.checkpoints import bundled_models
from seqgen.decoding.onnx_session import create_session, profiling_sessions
from seqgen.errors import SeqgenError


@pytest.mark.slow
def test_the_profile_has_the_encoder_and_step_graph_and_leaves_no_trace_behind(
    data_dir: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    scratch = tmp_path / "scratch"  # where the temporary folders go, to see them removed
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    report_file = tmp_path / "profile.json"
    arguments = ["--lines", "12", "--beam-size", "2", "--top", "4", "--json", str(report_file)]
    assert profile_decode.main(arguments) == 0
    report = json.loads(report_file.read_text())
    graphs = report["graphs"]
    assert {"encoder", "step"} <= set(graphs) and report["wall_ms"] > 0
    assert graphs["encoder"]["runs"] >= 1 and graphs["step"]["runs"] > graphs["encoder"]["runs"]
    assert 0 < sum(graph["share"] for graph in graphs.values()) <= 1
    assert graphs["step"]["node_ms"] <= graphs["step"]["run_ms"]
    for listed in ("step_kinds", "step_nodes"):
        assert 1 <= len(report[listed]) <= 4
        assert 0 < sum(row["share"] for row in report[listed]) <= 1 + 1e-9
    assert list(scratch.iterdir()) == []
    output = capsys.readouterr().out
    assert "whole decode:" in output and "step graph's nodes:" in output


def test_sessions_are_profiled_inside_the_block_only(tmp_path: Path) -> None:
    graph = bundled_models()["multi30k-de-en"] / "select.onnx"
    assert create_session(graph, device="cpu").end_profiling() == ""  # the default: none
    with profiling_sessions(tmp_path / "trace"):
        profiled = create_session(graph, device="cpu")
    trace = Path(profiled.end_profiling())
    assert trace.parent == tmp_path and trace.name.startswith("trace-select-")
    assert json.loads(trace.read_text())  # ONNX Runtime's events, as JSON
    assert create_session(graph, device="cpu").end_profiling() == ""


def _run(ts: int) -> dict:
    return {"cat": "Session", "name": "model_run", "ts": ts, "dur": 5}


def test_the_timed_half_starts_at_the_second_half_of_the_runs() -> None:
    node = {"cat": "Node", "name": "n_kernel_time", "ts": 25, "dur": 3, "args": {"op_name": "Add"}}
    events = [_run(10), _run(20), node, _run(30), _run(40)]
    assert profile_decode.second_half(events) == [_run(30), _run(40)]
    with pytest.raises(SeqgenError, match="not the same number each"):
        profile_decode.second_half(events[:4])  # three runs


def test_a_backend_the_profiler_cannot_see_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert profile_decode.main(["--backend", "torch"]) == 1
    captured = capsys.readouterr()
    assert captured.err.startswith("seqgen: error: unknown backend 'torch'")
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err
