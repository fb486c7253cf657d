"""``Unsqueeze`` -> ``Squeeze`` pairs that give back their input leave exported graphs
(seqgen.bundles.undone_unsqueezes), on small hand-made graphs."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="rewriting graphs needs the export extra")
import onnxruntime  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from seqgen.bundles.undone_unsqueezes import drop_undone_unsqueezes  # noqa: E402

AXES = {"zero": [0], "one": [1], "last": [-1]}


def model(nodes: list[onnx.NodeProto], outputs: list[str]) -> onnx.ModelProto:
    """A graph over ``x`` float32 ``(3, 4)`` with the axes constants of :data:`AXES`."""
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 4])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in outputs],
        initializer=[
            numpy_helper.from_array(np.array(axes, dtype=np.int64), name)
            for name, axes in AXES.items()
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)


def node(op: str, inputs: list[str], output: str) -> onnx.NodeProto:
    return helper.make_node(op, inputs, [output])


def run(m: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    session = onnxruntime.InferenceSession(
        m.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    return session.run(None, {"x": x})


def test_a_squeeze_of_the_unsqueezed_axes_goes_with_its_unsqueeze() -> None:
    """Two pairs in a chain (as a decoder's one-layer state turns around), the second on a
    negative axis; an Unsqueeze no Squeeze undoes stays."""
    m = model(
        [
            node("Unsqueeze", ["x", "zero"], "u0"),
            node("Squeeze", ["u0", "zero"], "s0"),
            node("Unsqueeze", ["s0", "last"], "u1"),
            node("Squeeze", ["u1", "last"], "s1"),
            node("Tanh", ["s1"], "y"),
            node("Unsqueeze", ["y", "one"], "u2"),
            node("Identity", ["u2"], "kept"),
        ],
        ["y", "kept"],
    )
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    expected = run(m, x)
    assert drop_undone_unsqueezes(m.graph) == 2
    assert [n.op_type for n in m.graph.node] == ["Tanh", "Unsqueeze", "Identity"]
    assert list(m.graph.node[0].input) == ["x"]
    for before, after in zip(expected, run(m, x), strict=True):
        np.testing.assert_array_equal(after, before)


def test_pairs_whose_values_are_read_elsewhere_or_are_outputs_stay() -> None:
    """An unsqueezed value read twice, a squeezed one that is the graph's output, and
    different axes: nothing to drop."""
    m = model(
        [
            node("Unsqueeze", ["x", "zero"], "u0"),
            node("Squeeze", ["u0", "zero"], "s0"),
            node("Identity", ["u0"], "also"),
            node("Unsqueeze", ["x", "one"], "u1"),
            node("Squeeze", ["u1", "one"], "out"),
            node("Unsqueeze", ["x", "zero"], "u2"),
            node("Squeeze", ["u2", "one"], "other"),
        ],
        ["s0", "also", "out", "other"],
    )
    assert drop_undone_unsqueezes(m.graph) == 0
    assert len(m.graph.node) == 7


def test_a_subgraph_reading_the_squeezed_value_reads_the_original() -> None:
    """A ``Scan`` body that reads the pair's result from the outer graph reads ``x`` then."""
    body = helper.make_graph(
        [node("Add", ["state", "s0"], "next"), node("Identity", ["next"], "each")],
        "body",
        [helper.make_tensor_value_info("state", TensorProto.FLOAT, [3, 4])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [3, 4]) for n in ("next", "each")],
    )
    m = model(
        [
            node("Unsqueeze", ["x", "zero"], "u0"),
            node("Squeeze", ["u0", "zero"], "s0"),
            helper.make_node(
                "Scan", ["x"], ["last", "all"], num_scan_inputs=0, body=body, name="scan"
            ),
        ],
        ["last"],
    )
    assert drop_undone_unsqueezes(m.graph) == 1
    scan_body = m.graph.node[0].attribute[0].g
    assert list(scan_body.node[0].input) == ["state", "x"]
