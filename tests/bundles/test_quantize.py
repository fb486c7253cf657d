"""int8 matrix products in a step graph (seqgen.bundles.quantize), on a small hand-made graph."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="quantizing needs the export extra")
import onnxruntime  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from seqgen.bundles.quantize import INT8_LIMIT, quantize_graph, quantize_weight  # noqa: E402

K, N, VOCAB = 32, 24, 50


def test_quantize_weight_is_symmetric_per_row_within_half_a_step() -> None:
    weight = np.random.default_rng(0).standard_normal((6, K)).astype(np.float32)
    weight[3] = 0.0  # an all-zero row keeps a usable scale
    table, scale = quantize_weight(weight)
    assert table.dtype == np.int8 and scale.dtype == np.float32
    assert np.abs(table).max() == INT8_LIMIT  # 7 bits: vpmaddubsw cannot saturate
    assert np.all(np.abs(table * scale[:, None] - weight) <= scale[:, None] / 2 + 1e-7)
    assert np.all(table[3] == 0) and scale[3] == 1.0


def small_graphs(folder: Path, gather: str = "GatherND", groups: int = 1) -> dict[str, np.ndarray]:
    """Two graphs, as a translator's step and output_rows graphs: ``rows.onnx``, ids (M,) ->
    rows = table[ids] and row_bias = bias[ids] (``gather``: GatherND of the ids unsqueezed,
    or Gather on axis 0, as torch.onnx may write either), and ``step.onnx``, x (rows, K),
    rows and row_bias -> hidden = x @ W.T + b (Gemm, constant), out = hidden @ V (MatMul,
    constant), logits (G, R, U) = each of ``groups`` groups of rows of hidden times its own
    U = M / G of the gathered rows, plus their bias (a grouped step's product, as
    ``Decoder.grouped_scores`` exports it), and attention = hidden @ out.T (two activations:
    stays float32)."""
    rng = np.random.default_rng(1)
    weights = {
        "W": rng.standard_normal((K, K)).astype(np.float32) * 0.2,
        "b": rng.standard_normal(K).astype(np.float32),
        "V": rng.standard_normal((K, N)).astype(np.float32) * 0.2,
        "by_group": np.array([groups, -1, K], dtype=np.int64),
        "bias_by_group": np.array([groups, 1, -1], dtype=np.int64),
    }
    step = helper.make_graph(
        [
            helper.make_node("Gemm", ["x", "W", "b"], ["hidden"], transB=1),
            helper.make_node("MatMul", ["hidden", "V"], ["out"]),
            helper.make_node("Reshape", ["hidden", "by_group"], ["grouped"]),
            helper.make_node("Reshape", ["rows", "by_group"], ["group_rows"]),
            helper.make_node("Transpose", ["group_rows"], ["group_rows_t"], perm=[0, 2, 1]),
            helper.make_node("MatMul", ["grouped", "group_rows_t"], ["products"]),
            helper.make_node("Reshape", ["row_bias", "bias_by_group"], ["group_bias"]),
            helper.make_node("Add", ["products", "group_bias"], ["logits"]),
            helper.make_node("Gemm", ["hidden", "hidden"], ["attention"], transB=1),
        ],
        "step",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["rows", K]),
            helper.make_tensor_value_info("rows", TensorProto.FLOAT, ["M", K]),
            helper.make_tensor_value_info("row_bias", TensorProto.FLOAT, ["M"]),
        ],
        [
            helper.make_tensor_value_info("out", TensorProto.FLOAT, ["rows", N]),
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, [groups, "R", "U"]),
            helper.make_tensor_value_info("attention", TensorProto.FLOAT, ["rows", "rows"]),
        ],
        initializer=[numpy_helper.from_array(value, name) for name, value in weights.items()],
    )
    tables = {
        "table": rng.standard_normal((VOCAB, K)).astype(np.float32) * 0.2,
        "bias": rng.standard_normal(VOCAB).astype(np.float32),
    }
    indices = "indices" if gather == "GatherND" else "ids"
    rows = helper.make_graph(
        [
            helper.make_node("Unsqueeze", ["ids", "axis"], ["indices"]),
            helper.make_node(gather, ["table", indices], ["rows"]),
            helper.make_node(gather, ["bias", indices], ["row_bias"]),
        ],
        "output_rows",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["M"])],
        [
            helper.make_tensor_value_info("rows", TensorProto.FLOAT, ["M", K]),
            helper.make_tensor_value_info("row_bias", TensorProto.FLOAT, ["M"]),
        ],
        initializer=[
            *(numpy_helper.from_array(value, name) for name, value in tables.items()),
            numpy_helper.from_array(np.array([-1], dtype=np.int64), "axis"),
        ],
    )
    for graph, name in ((step, "step.onnx"), (rows, "rows.onnx")):
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
        onnx.save(model, str(folder / name))
    x = rng.uniform(-1, 1, (3 * groups, K)).astype(np.float32)
    return {"x": x, "ids": np.array([3, 0, 49, 7] * groups, dtype=np.int64)}


def run(folder: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The rows graph on the ids, then the step graph on x and every output of it by name,
    as the translator's adapter feeds them: the ids ``(M,)``, or the groups' ``(G, U)``
    where the rows graph takes those (int8, bundle format 7)."""

    def session(name: str) -> onnxruntime.InferenceSession:
        return onnxruntime.InferenceSession(str(folder / name), providers=["CPUExecutionProvider"])

    rows, step = session("rows.onnx"), session("step.onnx")
    ids = feeds["ids"]
    if len(rows.get_inputs()[0].shape) == 2:
        ids = ids.reshape(step.get_outputs()[1].shape[0], -1)
    names = [output.name for output in rows.get_outputs()]
    gathered = dict(zip(names, rows.run(names, {"ids": ids}), strict=True))
    return step.run(["out", "logits", "attention"], {"x": feeds["x"], **gathered})


@pytest.mark.parametrize("gather", ["GatherND", "Gather"])
def test_constant_and_gathered_products_become_int8_and_stay_close(
    tmp_path: Path, gather: str
) -> None:
    feeds = small_graphs(tmp_path, gather, groups=2)
    expected = run(tmp_path, feeds)
    step, rows = tmp_path / "step.onnx", tmp_path / "rows.onnx"
    assert quantize_graph(step, rows) == 3  # both Gemms by weights and the grouped MatMul
    model, rows_model = onnx.load(str(step)), onnx.load(str(rows))
    for graph in (model, rows_model):
        onnx.checker.check_model(graph)
    ops = [node.op_type for node in model.graph.node]
    assert ops.count("MatMulIntegerToFloat") == 3 and ops.count("Gemm") == 1  # attention
    assert "DynamicQuantizeMatMul" not in ops  # one activation scale over all rows
    assert not {"GatherND", "Gather", "Transpose"} & set(ops)  # the rows come made, per batch
    # The float32 weights are gone; only their int8 copies (and the bias rows) remain.
    kept = {init.name for graph in (model, rows_model) for init in graph.graph.initializer}
    assert not {"W", "V", "table"} & kept and "bias" in kept
    # The rows go from one graph to the other as each group's int8 (K, U) and their scales
    # (1, U); the rows graph takes the groups' ids (G, U).
    int8, groups = TensorProto.INT8, ["groups", "group_shortlist"]
    wanted = [("rows", int8, ["groups", K, groups[1]])]
    wanted += [("rows_scale", TensorProto.FLOAT, ["groups", 1, groups[1]])]

    def described(values: object) -> list[tuple[str, int, list[object]]]:
        return [
            (
                v.name,
                v.type.tensor_type.elem_type,
                [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim],
            )
            for v in values
        ]

    for values in (rows_model.graph.output, model.graph.input):
        assert described(values)[-3:] == [*wanted, ("row_bias", TensorProto.FLOAT, ["M"])]
    assert described(rows_model.graph.input) == [("ids", TensorProto.INT64, groups)]
    got = run(tmp_path, feeds)
    for before, after in zip(expected, got, strict=True):
        assert after.shape == before.shape
        assert np.abs(after - before).max() < 0.05 * np.abs(before).max()
    assert not np.array_equal(got[1], expected[1])  # it really multiplied in int8


def test_without_its_rows_graph_a_product_by_an_input_stays_float32(tmp_path: Path) -> None:
    """A Gemm by a graph input that no output_rows graph is known to gather from a table
    (a generator's step has none) is a product of two activations."""
    feeds = small_graphs(tmp_path)
    expected = run(tmp_path, feeds)
    rows_before = (tmp_path / "rows.onnx").read_bytes()
    assert quantize_graph(tmp_path / "step.onnx") == 2  # the two constant products
    assert (tmp_path / "rows.onnx").read_bytes() == rows_before
    ops = [node.op_type for node in onnx.load(str(tmp_path / "step.onnx")).graph.node]
    assert ops.count("MatMul") == 1 and ops.count("MatMulIntegerToFloat") == 2
    got = run(tmp_path, feeds)  # the rows still go in as float32
    assert np.abs(got[1] - expected[1]).max() < 0.05 * np.abs(expected[1]).max()


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
    assert quantize_graph(path) == 0
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
    assert quantize_graph(path) == 0
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
    assert quantize_graph(path) == 1
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
    feeds = small_graphs(tmp_path)
    quantize_graph(tmp_path / "step.onnx", tmp_path / "rows.onnx")
    x = feeds["x"]
    alone = [run(tmp_path, {"x": x[i : i + 1], "ids": feeds["ids"]}) for i in range(len(x))]
    loud = np.concatenate([x, 100 * x[:1], np.zeros((1, K), np.float32)])
    together = run(tmp_path, {"x": loud, "ids": feeds["ids"]})
    for i, outputs in enumerate(alone):
        for name, (one, many) in enumerate(zip(outputs[:2], together[:2], strict=True)):
            width = one.shape[-1]  # out (rows, N), logits (1, rows, U): a row each
            row, rows = one.reshape(-1, width)[0], many.reshape(-1, width)[i]
            assert np.array_equal(row, rows), (i, ["out", "logits"][name])
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
    assert quantize_graph(path) == 1
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
    assert quantize_graph(path) == 1
    ops = [node.op_type for node in onnx.load(str(path)).graph.node]
    assert ops == ["Tanh", "QuantizeLinear", "MatMulIntegerToFloat"]
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = rng.uniform(-3, 3, (6, K)).astype(np.float32)
    (got,) = session.run(["y"], {"x": x})
    alone = [session.run(["y"], {"x": x[i : i + 1]})[0][0] for i in range(len(x))]
    assert all(np.array_equal(row, got[i]) for i, row in enumerate(alone))
    expected = np.tanh(x) @ weight.T + bias
    assert np.abs(got - expected).max() < 0.03 * np.abs(expected).max()


def test_a_product_of_a_state_kept_within_range_takes_the_fixed_scale(tmp_path: Path) -> None:
    """A step input that the bundle's other graphs give within [-1, 1] and the step keeps
    there (an LSTM's hidden state) takes the fixed scale; read without those graphs, or an
    input the step takes out of range, a scale per row."""
    rng = np.random.default_rng(5)
    weight = rng.standard_normal((N, K)).astype(np.float32) * 0.2
    step = helper.make_graph(
        [
            helper.make_node("Gemm", ["hidden", "W"], ["y"], transB=1),
            helper.make_node("Gemm", ["cell", "W"], ["z"], transB=1),
            helper.make_node("Tanh", ["y"], ["new_hidden"]),
            helper.make_node("Add", ["cell", "hidden"], ["new_cell"]),
        ],
        "step",
        [
            helper.make_tensor_value_info(n, TensorProto.FLOAT, ["rows", K])
            for n in ("hidden", "cell")
        ],
        [
            helper.make_tensor_value_info(n, TensorProto.FLOAT, None)
            for n in ("z", "new_hidden", "new_cell")
        ],
        initializer=[numpy_helper.from_array(weight, "W")],
    )
    start = helper.make_graph(
        [helper.make_node("Tanh", ["s"], ["hidden"]), helper.make_node("Tanh", ["s"], ["cell"])],
        "encoder",
        [helper.make_tensor_value_info("s", TensorProto.FLOAT, ["rows", K])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("hidden", "cell")],
    )
    opsets = {"opset_imports": [helper.make_opsetid("", 18)], "ir_version": 9}
    for graph, name in ((step, "step.onnx"), (start, "encoder.onnx")):
        onnx.save(helper.make_model(graph, **opsets), str(tmp_path / name))
    plain = tmp_path / "plain.onnx"
    onnx.save(helper.make_model(step, **opsets), str(plain))
    assert quantize_graph(tmp_path / "step.onnx", others=[tmp_path / "encoder.onnx"]) == 2
    assert quantize_graph(plain) == 2
    graph = onnx.load(str(tmp_path / "step.onnx")).graph
    ops = [node.op_type for node in graph.node]
    assert ops[:2] == ["QuantizeLinear", "MatMulIntegerToFloat"]  # hidden: 1/127
    assert ops.count("ReduceMax") == 1  # cell: its own scale per row
    assert [n.op_type for n in onnx.load(str(plain)).graph.node].count("ReduceMax") == 2
    read = {name for node in graph.node for name in node.input}
    assert all(init.name in read for init in graph.initializer)  # ONNX Runtime warns else
    hidden = np.tanh(rng.uniform(-3, 3, (6, K))).astype(np.float32)
    cell = rng.uniform(-3, 3, (6, K)).astype(np.float32)
    session = onnxruntime.InferenceSession(
        str(tmp_path / "step.onnx"), providers=["CPUExecutionProvider"]
    )
    got_y, got_z = session.run(["new_hidden", "z"], {"hidden": hidden, "cell": cell})
    assert np.abs(got_y - np.tanh(hidden @ weight.T)).max() < 0.03
    assert np.abs(got_z - cell @ weight.T).max() < 0.03 * np.abs(cell @ weight.T).max()


def test_a_weight_slice_that_is_also_an_output_is_kept(tmp_path: Path) -> None:
    """A constant slice of a weight read by a product that becomes int8 is dropped with the
    float32 weight, unless something else reads it: a graph output counts."""
    weight = np.random.default_rng(6).standard_normal((N, 2 * K)).astype(np.float32)
    bounds = {"starts": [K], "ends": [2 * K], "axes": [1]}
    graph = helper.make_graph(
        [
            helper.make_node("Slice", ["W", "starts", "ends", "axes"], ["W_part"]),
            helper.make_node("Gemm", ["x", "W_part"], ["y"], transB=1),
        ],
        "step",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["rows", K])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("y", "W_part")],
        initializer=[
            numpy_helper.from_array(weight, "W"),
            *(numpy_helper.from_array(np.array(v, np.int64), n) for n, v in bounds.items()),
        ],
    )
    path = tmp_path / "step.onnx"
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    onnx.save(model, str(path))
    assert quantize_graph(path) == 1
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (part,) = session.run(["W_part"], {"x": np.zeros((2, K), dtype=np.float32)})
    np.testing.assert_array_equal(part, weight[:, K:])


def _summed_products_graph(rng: np.random.Generator, path: Path) -> dict[str, np.ndarray]:
    """An input-fed LSTM step's gates, as exported: ``tanh(x) @ W_hh.T + b_hh`` plus
    ``tanh(f) @ W_ih[:, K:].T + addend`` (the fed vector's columns, a Slice, beside the
    gathered gate rows); returns the weights by name."""
    arrays = {
        "w_hh": rng.standard_normal((N, K)).astype(np.float32) * 0.2,
        "b_hh": rng.standard_normal(N).astype(np.float32),
        "w_ih": rng.standard_normal((N, 2 * K)).astype(np.float32) * 0.1,
    }
    bounds = {"starts": [K], "ends": [2**63 - 1], "axes": [1], "steps": [1]}
    nodes = [
        helper.make_node("Tanh", ["x"], ["hidden"]),
        helper.make_node("Tanh", ["f"], ["feed"]),
        helper.make_node("Gemm", ["hidden", "w_hh", "b_hh"], ["recurrent"], transB=1),
        helper.make_node("Slice", ["w_ih", *bounds], ["sliced"]),
        helper.make_node("Gemm", ["feed", "sliced", "addend"], ["fed"], transB=1),
        helper.make_node("Add", ["recurrent", "fed"], ["y"]),
    ]
    inits = [numpy_helper.from_array(value, name) for name, value in arrays.items()]
    inits += [numpy_helper.from_array(np.array(v, dtype=np.int64), k) for k, v in bounds.items()]
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["rows", K]) for n in "xf"]
    inputs.append(helper.make_tensor_value_info("addend", TensorProto.FLOAT, ["rows", N]))
    graph = helper.make_graph(
        nodes,
        "step",
        inputs,
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["rows", N])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    onnx.save(model, str(path))
    return arrays


def test_two_summed_products_within_range_become_one_int8_product(tmp_path: Path) -> None:
    """The recurrent and the fed vector's products of an input-fed LSTM, added: one
    quantization of the joined activations and one product by the stacked weights, the
    bias in the product and the gathered gate rows added after."""
    rng = np.random.default_rng(7)
    path = tmp_path / "step.onnx"
    arrays = _summed_products_graph(rng, path)
    assert quantize_graph(path) == 1
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    ops = [node.op_type for node in model.graph.node]
    assert ops == ["Tanh", "Tanh", "Concat", "QuantizeLinear", "MatMulIntegerToFloat", "Add"]
    assert {"w_hh", "w_ih", "sliced"}.isdisjoint(init.name for init in model.graph.initializer)
    feeds = {
        "x": rng.uniform(-3, 3, (6, K)).astype(np.float32),
        "f": rng.uniform(-3, 3, (6, K)).astype(np.float32),
        "addend": rng.standard_normal((6, N)).astype(np.float32),
    }
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(["y"], feeds)
    expected = (
        np.tanh(feeds["x"]) @ arrays["w_hh"].T
        + arrays["b_hh"]
        + np.tanh(feeds["f"]) @ arrays["w_ih"][:, K:].T
        + feeds["addend"]
    )
    assert np.abs(got - expected).max() < 0.03 * np.abs(expected).max()
    assert not np.allclose(got, expected, atol=1e-6)  # it really multiplied in int8
    alone = [
        session.run(["y"], {k: v[i : i + 1] for k, v in feeds.items()})[0][0] for i in range(6)
    ]
    assert all(np.array_equal(row, got[i]) for i, row in enumerate(alone))


def test_summed_products_of_values_out_of_range_stay_two(tmp_path: Path) -> None:
    """Without the fixed scale (an input not known within [-1, 1]) each row's two halves
    would need their own scales: the products are quantized apart, as before."""
    rng = np.random.default_rng(8)
    path = tmp_path / "step.onnx"
    _summed_products_graph(rng, path)
    model = onnx.load(str(path))
    for node in model.graph.node:
        if node.output[0] == "feed":
            node.op_type = "Relu"  # unbounded
    onnx.save(model, str(path))
    assert quantize_graph(path) == 2
    ops = [node.op_type for node in onnx.load(str(path)).graph.node]
    assert "Concat" not in ops and ops.count("MatMulIntegerToFloat") == 2
