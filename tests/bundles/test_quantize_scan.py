"""int8 products inside a ``Scan``'s body (seqgen.bundles.quantize): an int8 translator's
encoder, whose first LSTM layer runs as a ``Scan`` (``encoder.table_lstm``), on a small
hand-made graph of that shape."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="quantizing needs the export extra")
import onnxruntime  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from seqgen.bundles.quantize import quantize_graph  # noqa: E402

H, TIME, ROWS = 16, 7, 5
OUTPUTS = ["keys", "bridge", "cell_products"]


def lstm_body() -> onnx.GraphProto:
    """One LSTM position: states ``h``, ``c`` and the position's input gates ``g`` (rows,
    4H) -> ``h'``, ``c'``, and as scan outputs ``h'`` and ``c @ U`` (a product of the cell
    state, out of range)."""
    nodes = [
        helper.make_node("MatMul", ["h", "W_hh"], ["recurrent"]),
        helper.make_node("Add", ["g", "recurrent"], ["summed"]),
        helper.make_node("Split", ["summed"], ["i", "f", "gg", "o"], axis=1, num_outputs=4),
        *(helper.make_node("Sigmoid", [x], [f"{x}_s"]) for x in ("i", "f", "o")),
        helper.make_node("Tanh", ["gg"], ["gg_t"]),
        helper.make_node("Mul", ["f_s", "c"], ["kept"]),
        helper.make_node("Mul", ["i_s", "gg_t"], ["added"]),
        helper.make_node("Add", ["kept", "added"], ["new_c"]),
        helper.make_node("Tanh", ["new_c"], ["c_t"]),
        helper.make_node("Mul", ["o_s", "c_t"], ["new_h"]),
        helper.make_node("Identity", ["new_h"], ["each_h"]),
        helper.make_node("MatMul", ["c", "U"], ["each_cell_product"]),
    ]
    shapes = {"h": [ROWS, H], "c": [ROWS, H], "g": [ROWS, 4 * H]}
    outputs = {"new_h": [ROWS, H], "new_c": [ROWS, H], "each_h": [ROWS, H]}
    outputs["each_cell_product"] = [ROWS, H]
    return helper.make_graph(nodes, "body", values(shapes), values(outputs))


def values(shapes: dict[str, list[int]]) -> list[onnx.ValueInfoProto]:
    return [
        helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n, shape in shapes.items()
    ]


def encoder_graph(path: Path, *, zeros_start: bool = True) -> None:
    """``gates`` (time, rows, 4H) -> ``keys`` = each position's hidden state @ W_k (within
    range), ``bridge`` = the last cell state @ B.T (Gemm, out of range) and the scan's
    ``cell_products``. The states start from ``ConstantOfShape`` zeros, or with
    ``zeros_start=False`` from the graph input ``start`` (of unknown range)."""
    rng = np.random.default_rng(3)
    weights = {
        "W_hh": rng.standard_normal((H, 4 * H)).astype(np.float32) * 0.3,
        "U": rng.standard_normal((H, H)).astype(np.float32) * 0.3,
        "W_k": rng.standard_normal((H, H)).astype(np.float32) * 0.3,
        "B": rng.standard_normal((H, H)).astype(np.float32) * 0.3,
        "shape": np.array([ROWS, H], dtype=np.int64),
    }
    start = ["zeros", "zeros"] if zeros_start else ["start", "start"]
    nodes = [
        helper.make_node("ConstantOfShape", ["shape"], ["zeros"]),
        helper.make_node(
            "Scan",
            [*start, "gates"],
            ["last_h", "last_c", "hiddens", "cell_products"],
            num_scan_inputs=1,
            body=lstm_body(),
        ),
        helper.make_node("MatMul", ["hiddens", "W_k"], ["keys"]),
        helper.make_node("Gemm", ["last_c", "B"], ["bridge"], transB=1),
    ]
    inputs = [helper.make_tensor_value_info("gates", TensorProto.FLOAT, [TIME, ROWS, 4 * H])]
    if not zeros_start:
        inputs.append(helper.make_tensor_value_info("start", TensorProto.FLOAT, [ROWS, H]))
    graph = helper.make_graph(
        nodes,
        "encoder",
        inputs,
        values({"keys": [TIME, ROWS, H], "bridge": [ROWS, H], "cell_products": [TIME, ROWS, H]}),
        initializer=[numpy_helper.from_array(value, name) for name, value in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    onnx.save(model, str(path))


def run(path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(OUTPUTS, feeds)


def body_ops(path: Path) -> list[str]:
    scan = next(node for node in onnx.load(str(path)).graph.node if node.op_type == "Scan")
    body = next(attribute.g for attribute in scan.attribute if attribute.name == "body")
    return [node.op_type for node in body.node]


def test_the_recurrence_inside_a_scan_and_the_keys_become_int8_and_stay_close(
    tmp_path: Path,
) -> None:
    """The hidden state, from zeros and kept within [-1, 1] at every position, takes the
    fixed scale inside the body; the keys over every position's hidden state too. The cell
    state's products (in the body, and the bridge from the last one) stay float32 with
    ``unit_range_only``; without it, the bridge takes a scale per row, the body's stays."""
    path, every = tmp_path / "encoder.onnx", tmp_path / "every.onnx"
    encoder_graph(path)
    encoder_graph(every)
    gates = np.random.default_rng(4).standard_normal((TIME, ROWS, 4 * H)).astype(np.float32)
    expected = run(path, {"gates": gates})
    assert quantize_graph(path, unit_range_only=True) == 2
    onnx.checker.check_model(onnx.load(str(path)))
    assert body_ops(path)[:3] == ["QuantizeLinear", "MatMulIntegerToFloat", "Add"]
    assert body_ops(path).count("MatMul") == 1  # the cell state's
    main = [node.op_type for node in onnx.load(str(path)).graph.node]
    assert main.count("MatMulIntegerToFloat") == 1 and main.count("Gemm") == 1
    # The outer weight the body read is gone; its int8 copy and the constants are outside.
    names = {init.name for init in onnx.load(str(path)).graph.initializer}
    assert "W_hh" not in names and {"U", "int8_unit_scale", "int8_zero_point"} <= names
    got = run(path, {"gates": gates})
    for before, after in zip(expected, got, strict=True):
        assert np.abs(after - before).max() < 0.05 * np.abs(before).max()
    assert not np.array_equal(got[0], expected[0])  # it really multiplied in int8
    np.testing.assert_allclose(got[2], expected[2], atol=0.05 * np.abs(expected[2]).max())
    assert quantize_graph(every) == 3  # the bridge too, with a scale per row
    assert body_ops(every).count("MatMul") == 1


def test_a_state_that_starts_out_of_range_keeps_its_product_float32(tmp_path: Path) -> None:
    """A state from an input of unknown range is not provably within [-1, 1] at the first
    position, so the body's product of it stays float32; the keys over each position's
    hidden state (a sigmoid times a tanh, whatever the start) still become int8."""
    path = tmp_path / "encoder.onnx"
    encoder_graph(path, zeros_start=False)
    assert quantize_graph(path, unit_range_only=True) == 1
    assert "MatMulIntegerToFloat" not in body_ops(path)
    main = [node.op_type for node in onnx.load(str(path)).graph.node]
    assert main.count("MatMulIntegerToFloat") == 1
