"""int8 matrix products in a step graph (seqgen.bundles.quantize), on a small hand-made graph."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="quantizing needs the export extra")
import onnxruntime  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from seqgen.bundles.quantize import INT8_LIMIT, quantize_step_graph, quantize_weight  # noqa: E402

K, N, VOCAB = 32, 24, 50


def test_quantize_weight_is_symmetric_per_row_within_half_a_step() -> None:
    weight = np.random.default_rng(0).standard_normal((6, K)).astype(np.float32)
    weight[3] = 0.0  # an all-zero row keeps a usable scale
    table, scale = quantize_weight(weight)
    assert table.dtype == np.int8 and scale.dtype == np.float32
    assert np.abs(table).max() == INT8_LIMIT  # 7 bits: vpmaddubsw cannot saturate
    assert np.all(np.abs(table * scale[:, None] - weight) <= scale[:, None] / 2 + 1e-7)
    assert np.all(table[3] == 0) and scale[3] == 1.0


def small_step_graph(path: Path) -> dict[str, np.ndarray]:
    """x (rows, K) -> hidden = x @ W.T + b (Gemm, constant), out = hidden @ V (MatMul,
    constant), logits = hidden @ table[ids].T + bias[ids] (Gemm of gathered rows), and
    attention = hidden @ out.T (two activations: stays float32)."""
    rng = np.random.default_rng(1)
    weights = {
        "W": rng.standard_normal((K, K)).astype(np.float32) * 0.2,
        "b": rng.standard_normal(K).astype(np.float32),
        "V": rng.standard_normal((K, N)).astype(np.float32) * 0.2,
        "table": rng.standard_normal((VOCAB, K)).astype(np.float32) * 0.2,
        "bias": rng.standard_normal(VOCAB).astype(np.float32),
    }
    nodes = [
        helper.make_node("Gemm", ["x", "W", "b"], ["hidden"], transB=1),
        helper.make_node("MatMul", ["hidden", "V"], ["out"]),
        helper.make_node("Unsqueeze", ["ids", "axis"], ["indices"]),
        helper.make_node("GatherND", ["table", "indices"], ["rows"]),
        helper.make_node("GatherND", ["bias", "indices"], ["row_bias"]),
        helper.make_node("Gemm", ["hidden", "rows", "row_bias"], ["logits"], transB=1),
        helper.make_node("Gemm", ["hidden", "hidden"], ["attention"], transB=1),
    ]
    inits = [numpy_helper.from_array(value, name) for name, value in weights.items()]
    inits.append(numpy_helper.from_array(np.array([-1], dtype=np.int64), "axis"))
    graph = helper.make_graph(
        nodes,
        "step",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["rows", K]),
            helper.make_tensor_value_info("ids", TensorProto.INT64, ["M"]),
        ],
        [
            helper.make_tensor_value_info("out", TensorProto.FLOAT, ["rows", N]),
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["rows", "M"]),
            helper.make_tensor_value_info("attention", TensorProto.FLOAT, ["rows", "rows"]),
        ],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    onnx.save(model, str(path))
    x = rng.uniform(-1, 1, (5, K)).astype(np.float32)
    return {"x": x, "ids": np.array([3, 0, 49, 7], dtype=np.int64)}


def run(path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["out", "logits", "attention"], feeds)


def test_constant_and_gathered_products_become_int8_and_stay_close(tmp_path: Path) -> None:
    path = tmp_path / "step.onnx"
    feeds = small_step_graph(path)
    expected = run(path, feeds)
    assert quantize_step_graph(path) == 3  # both Gemms by weights and the MatMul
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    ops = [node.op_type for node in model.graph.node]
    assert ops.count("MatMulIntegerToFloat") == 3 and ops.count("Gemm") == 1  # attention
    assert "DynamicQuantizeMatMul" not in ops  # one activation scale over all rows
    # The float32 weights are gone; only their int8 copies (and the bias rows) remain.
    kept = {init.name for init in model.graph.initializer}
    assert not {"W", "V", "table"} & kept and "bias" in kept
    got = run(path, feeds)
    for before, after in zip(expected, got, strict=True):
        assert after.shape == before.shape
        assert np.abs(after - before).max() < 0.05 * np.abs(before).max()
    assert not np.array_equal(got[1], expected[1])  # it really multiplied in int8


def test_a_graph_without_weight_products_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "step.onnx"
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])],
        "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2, 2]) for n in "ab"],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [2, 2])],
    )
    onnx.save(helper.make_model(graph, ir_version=9), str(path))
    before = path.read_bytes()
    assert quantize_step_graph(path) == 0
    assert path.read_bytes() == before


def test_a_product_of_two_constants_is_left_to_fold_in_float32(tmp_path: Path) -> None:
    """The translator's gate table, ``embedding @ weight.T + bias``: ONNX Runtime folds it
    into a constant when a session starts; quantizing it would round every table entry."""
    path = tmp_path / "step.onnx"
    rng = np.random.default_rng(2)
    weights = {
        "embedding": rng.standard_normal((VOCAB, K)).astype(np.float32),
        "W": rng.standard_normal((N, K)).astype(np.float32),
        "b": rng.standard_normal(N).astype(np.float32),
    }
    graph = helper.make_graph(
        [
            helper.make_node("Gemm", ["embedding", "W", "b"], ["table"], transB=1),
            helper.make_node("Gather", ["table", "ids"], ["gates"]),
        ],
        "g",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["rows"])],
        [helper.make_tensor_value_info("gates", TensorProto.FLOAT, ["rows", N])],
        initializer=[numpy_helper.from_array(value, name) for name, value in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    onnx.save(model, str(path))
    before = path.read_bytes()
    assert quantize_step_graph(path) == 0
    assert path.read_bytes() == before


def test_a_constant_slice_of_a_weight_with_a_per_row_addend_becomes_int8(tmp_path: Path) -> None:
    """The input-fed LSTM step's product: ``feed @ weight_ih[:, K:].T + gathered_gates``, the
    weight a Slice of an initializer and the addend ``(rows, n)``, not a bias."""
    rng = np.random.default_rng(2)
    weight = rng.standard_normal((N, 2 * K)).astype(np.float32) * 0.2
    bounds = {"starts": [K], "ends": [2**63 - 1], "axes": [1], "steps": [1]}  # as exported
    nodes = [
        helper.make_node("Slice", ["weight", *bounds], ["sliced"]),
        helper.make_node("Gemm", ["x", "sliced", "addend"], ["y"], transB=1),
    ]
    inits = [numpy_helper.from_array(weight, "weight")]
    inits += [numpy_helper.from_array(np.array(v, dtype=np.int64), k) for k, v in bounds.items()]
    graph = helper.make_graph(
        nodes,
        "step",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["rows", K]),
            helper.make_tensor_value_info("addend", TensorProto.FLOAT, ["rows", N]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["rows", N])],
        initializer=inits,
    )
    path = tmp_path / "step.onnx"
    onnx.save(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9), path
    )
    feeds = {
        "x": rng.uniform(-1, 1, (5, K)).astype(np.float32),
        "addend": rng.standard_normal((5, N)).astype(np.float32),
    }
    expected = feeds["x"] @ weight[:, K:].T + feeds["addend"]
    assert quantize_step_graph(path) == 1
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    ops = [node.op_type for node in model.graph.node]
    assert ops.count("MatMulIntegerToFloat") == 1 and ops[-1] == "Add"
    assert "weight" not in {init.name for init in model.graph.initializer}
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(["y"], feeds)
    assert np.abs(got - expected).max() < 0.05 * np.abs(expected).max()
    assert not np.allclose(got, expected, atol=1e-6)  # it really multiplied in int8


def test_each_row_is_quantized_alone_so_its_result_ignores_the_other_rows(tmp_path: Path) -> None:
    """A row's int8 product is the same alone, beside a row of far larger values (which a
    scale over all rows would coarsen it by) and among many, bit for bit; and it is the
    per-row arithmetic the module describes."""
    path = tmp_path / "step.onnx"
    feeds = small_step_graph(path)
    quantize_step_graph(path)
    x = feeds["x"]
    alone = [run(path, {"x": x[i : i + 1], "ids": feeds["ids"]}) for i in range(len(x))]
    loud = np.concatenate([x, 100 * x[:1], np.zeros((1, K), np.float32)])
    together = run(path, {"x": loud, "ids": feeds["ids"]})
    for i, outputs in enumerate(alone):
        for name, (one, many) in enumerate(zip(outputs[:2], together[:2], strict=True)):
            assert np.array_equal(one[0], many[i]), (i, ["out", "logits"][name])
    assert all(np.isfinite(output).all() for output in together)  # a row of zeros: no 0 / 0


def test_the_int8_product_is_the_per_row_arithmetic_of_the_module_docstring(
    tmp_path: Path,
) -> None:
    rng = np.random.default_rng(3)
    weight = rng.standard_normal((K, N)).astype(np.float32) * 0.2
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "V"], ["y"])],
        "step",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["rows", K])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["rows", N])],
        initializer=[numpy_helper.from_array(weight, "V")],
    )
    path = tmp_path / "step.onnx"
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    onnx.save(model, str(path))
    assert quantize_step_graph(path) == 1
    x = rng.uniform(-1, 1, (7, K)).astype(np.float32)
    x[2] *= 50  # rows of very different ranges
    x[4] = 0.0  # and a row of zeros, which must give zeros (not 0 / 0)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(["y"], {"x": x})
    table, scale = quantize_weight(weight.T)  # per output unit
    row_scale = np.maximum(np.abs(x).max(axis=1, keepdims=True), 1e-30) / np.float32(127)
    q = np.rint(x / row_scale).astype(np.int32)  # within [-127, 127]
    expected = (q @ table.T.astype(np.int32)).astype(np.float32) * row_scale * scale
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
    assert np.all(got[4] == 0)
    np.testing.assert_allclose(got, x @ weight, atol=0.03 * np.abs(x @ weight).max())


def test_activations_of_a_tanh_take_one_fixed_scale_and_the_bias_in_the_product(
    tmp_path: Path,
) -> None:
    """The output layer reads tanh's output, within [-1, 1]: quantized with 1/127 whatever the
    rows (no per-row range to find), the bias added by MatMulIntegerToFloat itself."""
    rng = np.random.default_rng(4)
    weight = rng.standard_normal((N, K)).astype(np.float32) * 0.2
    bias = rng.standard_normal(N).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Tanh", ["x"], ["h"]),
            helper.make_node("Gemm", ["h", "W", "b"], ["y"], transB=1),
        ],
        "step",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["rows", K])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["rows", N])],
        initializer=[numpy_helper.from_array(weight, "W"), numpy_helper.from_array(bias, "b")],
    )
    path = tmp_path / "step.onnx"
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    onnx.save(model, str(path))
    assert quantize_step_graph(path) == 1
    ops = [node.op_type for node in onnx.load(str(path)).graph.node]
    assert ops == ["Tanh", "QuantizeLinear", "MatMulIntegerToFloat"]
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = rng.uniform(-3, 3, (6, K)).astype(np.float32)
    (got,) = session.run(["y"], {"x": x})
    alone = [session.run(["y"], {"x": x[i : i + 1]})[0][0] for i in range(len(x))]
    assert all(np.array_equal(row, got[i]) for i, row in enumerate(alone))
    expected = np.tanh(x) @ weight.T + bias
    assert np.abs(got - expected).max() < 0.03 * np.abs(expected).max()
