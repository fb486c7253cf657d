"""seqgen's ONNX Runtime sessions flush denormals to zero for speed, but only while they run:
the caller's thread gets its floating-point environment back (numpy keeps its subnormals).

ONNX Runtime sets the flags at a process's first session only, so each check runs in a
fresh interpreter: in a pytest worker another test may have opened a session first."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from seqgen.decoding.onnx_session import create_session, run_session


def in_a_fresh_process(check: str, folder: Path) -> None:
    """Run this module's function ``check(folder)`` in a new interpreter; fail if it fails."""
    code = (
        f"import sys, pathlib; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
        f"import test_float_environment as t; t.{check}(pathlib.Path({str(folder)!r}))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def flushes_subnormals() -> bool:
    """Whether this thread flushes float32 subnormals to zero (FTZ/DAZ set)."""
    tiny = np.array([1e-39], dtype=np.float32)  # a float32 subnormal
    return bool((tiny * np.float32(1.0))[0] == 0)


def caller_s_arithmetic_left_alone(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "x"], ["y"])],
        "square",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None])],
    )
    path = tmp_path / "square.onnx"
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    onnx.save(model, path)
    assert not flushes_subnormals()
    session = create_session(path, device="cpu", threads=1)
    assert not flushes_subnormals()
    x = np.array([1e-20, 3.0], dtype=np.float32)  # 1e-40 is subnormal: flushed inside the run
    (y,) = run_session(session, {"x": x}, host_outputs=["y"]).values()
    assert y[0] == 0.0 and y[1] == 9.0
    assert not flushes_subnormals()


def another_thread_flushes_too(tmp_path: Path) -> None:
    """A translator's workers and a server's decoding thread run sessions they did not create."""
    from concurrent.futures import ThreadPoolExecutor

    caller_s_arithmetic_left_alone(tmp_path)
    session = create_session(tmp_path / "square.onnx", device="cpu", threads=1)
    x = np.array([1e-20], dtype=np.float32)
    with ThreadPoolExecutor(1) as pool:
        (y,) = pool.submit(run_session, session, {"x": x}, host_outputs=["y"]).result().values()
        assert y[0] == 0.0
        assert not pool.submit(flushes_subnormals).result()


def test_creating_and_running_a_session_leaves_the_caller_s_arithmetic_alone(
    tmp_path: Path,
) -> None:
    in_a_fresh_process("caller_s_arithmetic_left_alone", tmp_path)


def test_a_run_on_another_thread_flushes_too(tmp_path: Path) -> None:
    in_a_fresh_process("another_thread_flushes_too", tmp_path)
