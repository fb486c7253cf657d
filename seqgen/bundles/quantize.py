"""int8 matrix products for a bundle's exported graphs on the CPU (no torch): the step
graph, and a translator's encoder.

A translator's decoding step is three or four matrix products, all at the CPU's float32
peak in ONNX Runtime (``seqgen bench`` reports the share): the recurrent one (``hidden x 4
hidden``) and, with input feeding, the fed-back vector's (``hidden x 4 hidden``, beside the
embedding's gate table), attention's output layer (``2 hidden x hidden``) and the output
layer over the batch's shortlist (``hidden x M``). :func:`quantize_graph` turns each
``Gemm`` of the graph whose weight is a constant (or a constant slice of one), and the
grouped product by rows that a translator's ``output_rows`` graph gathers from a constant
table once per batch (the shortlisted output layer per group of sentences, rewritten to
gather each group's int8 rows and their scales), into an int8 product: int8 weights with
one scale per output unit, and the activations quantized at each step with one scale per
row, from that row's own range. A translator's int8 encoder
(``encoder.table_lstm``: the first layer's recurrence as a ``Scan``) gets the same for its
products of values within [-1, 1]: the recurrent one inside the ``Scan``'s body, the
attention keys, the bridge from the last hidden states.

Per row, so that a row's result never depends on the other rows of its batch (a sentence
translates the same alone or beside others). ONNX Runtime's ``DynamicQuantizeMatMul``, used
before, takes one scale over every row present, and its ``MatMulInteger`` and
``MatMulIntegerToFloat`` take only one activation scale and zero point. So each row's peak
``|x|`` gives its scale (``peak / 127``, standard operators), the row is quantized
symmetrically to ``round(x / scale) + 128`` in uint8 (one zero point, 128, for every row),
``MatMulIntegerToFloat`` (domain ``com.microsoft``) with that zero point and an activation
scale of 1 gives the exact integer products times the weights' column scales, and a ``Mul``
by the row's scale (then an ``Add`` of the bias) finishes it. Activations that provably lie
within [-1, 1] (:mod:`seqgen.bundles.value_range`: a ``Tanh``'s, an LSTM's hidden state fed
back, attention's context over such states) take the fixed scale 1/127 instead: a
``QuantizeLinear`` and a ``MatMulIntegerToFloat`` that adds the bias in its own pass, two
nodes for the eight a row's own scale takes (at 64 rows a node's fixed cost is a fair part
of its time). Every operation is per row (the integer products exact), so a row's result
does not depend on the batch.

Weights use 7 of their 8 bits (``[-63, 63]``): without VNNI, x86 CPUs multiply uint8 by
int8 with ``vpmaddubsw``, which saturates a pair of products at 32,767 (255 x 127 x 2 does
not fit), the reason ONNX Runtime's own quantizer has ``reduce_range``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from seqgen.bundles.graph_reading import (
    is_float_matrix,
    is_vector,
    names_read,
    plain_gemm,
    sliced_weight,
)
from seqgen.bundles.joined_products import join_summed_products
from seqgen.bundles.value_range import (
    scan_body_values,
    unit_range_inputs,
    unit_range_values,
)

INT8_LIMIT = 63  # 7-bit weights: see the module docstring
MS_DOMAIN = "com.microsoft"
ACTIVATION_LIMIT = 127  # activations: round(x / scale) in [-127, 127], stored + 128 as uint8
ACTIVATION_ZERO = 128
# A row of zeros gets this peak, not 0 (a zero scale would divide 0 by 0): any positive value
# quantizes it to zeros; 1e-30 is far below any activation and far above float32's denormals.
PEAK_FLOOR = 1e-30
# Constants the int8 products read, added to the graph once.
CONSTANTS = {
    "int8_last_axis": np.array([-1], dtype=np.int64),
    "int8_peak_floor": np.array(PEAK_FLOOR, dtype=np.float32),
    "int8_levels": np.array(ACTIVATION_LIMIT, dtype=np.float32),
    "int8_one": np.array(1.0, dtype=np.float32),
    "int8_unit_scale": np.array(1 / ACTIVATION_LIMIT, dtype=np.float32),
    "int8_zero_point": np.array(ACTIVATION_ZERO, dtype=np.uint8),
}


def quantize_weight(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per row: ``weight`` ``(rows, k)`` float -> ``(rows, k)`` int8 and
    ``(rows,)`` float32 scales, ``weight ~= q * scale[:, None]``."""
    peak = np.abs(weight).max(axis=1)
    scale = np.where(peak > 0, peak / INT8_LIMIT, 1.0).astype(np.float32)
    quantized = np.clip(np.rint(weight / scale[:, None]), -INT8_LIMIT, INT8_LIMIT)
    return quantized.astype(np.int8), scale


def quantize_graph(
    path: str | Path,
    output_rows: str | Path | None = None,
    others: Sequence[str | Path] = (),
    *,
    unit_range_only: bool = False,
) -> int:
    """Rewrite the graph file at ``path`` in place; returns how many products became int8.
    ``others``: the bundle's other graph files, whose outputs feed this one (a step's: a
    translator's encoder, a generator's prime), read to learn which of its inputs lie
    within [-1, 1] (:func:`seqgen.bundles.value_range.unit_range_inputs`).

    ``MatMul`` nodes by a float32 matrix initializer change, and ``Gemm`` nodes of the plain
    form ``A @ W.T + C`` (``transB=1``, no ``transA``, ``alpha = beta = 1``) where ``W`` is a
    float32 initializer or a ``Slice`` of one by constant bounds; a ``C`` other than a bias
    vector (the gathered gates, ``(rows, n)``) is added after the product. So does a grouped
    step's ``MatMul`` by each group's rows of an input that the graph file ``output_rows``
    gathers from the rows of a table (the shortlisted output layer, bundle format 7: that
    graph is rewritten too, :func:`_quantize_output_rows`). Products of two
    activations (attention) stay float32. Two products within [-1, 1] that are added (an
    input-fed LSTM's recurrent and fed-back products) first become one
    (:func:`seqgen.bundles.joined_products.join_summed_products`). Inside a ``Scan``'s body
    (an int8 translator's encoder, ``encoder.table_lstm``), a ``MatMul`` of values within
    range by a float32 matrix of the graph's changes (:meth:`_Rewrite.scan_product`).
    ``unit_range_only``: only products of values within range change, the others stay
    float32 (a translator's encoder: its bridge from the cell states runs once per batch,
    where a scale per row's six more nodes would cost more than int8 saves).
    """
    model = onnx.load(str(path))
    graph = model.graph
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=1)
    if opset < 13:  # QuantizeLinear's and ReduceMax's forms used here
        return 0
    rows_model = None if output_rows is None else onnx.load(str(output_rows))
    feeders = [onnx.load(str(other)).graph for other in others]
    unit_range = unit_range_values(graph, unit_range_inputs(graph, feeders))
    unit_range |= join_summed_products(graph, unit_range)
    rewrite = _Rewrite(
        graph,
        axes_input=opset >= 18,
        rows=rows_model,
        unit_range=unit_range,
        unit_range_only=unit_range_only,
    )
    kept, count = _rewritten_nodes(graph, rewrite)
    if not count:
        return 0
    # Drop the float32 weights that only the replaced products read.
    needed = names_read(kept)
    still = [init for init in graph.initializer if init.name in needed]
    del graph.node[:]
    graph.node.extend(kept)
    del graph.initializer[:]
    constants = [  # those the new nodes read (ONNX Runtime warns of unused initializers)
        numpy_helper.from_array(value, name) for name, value in CONSTANTS.items() if name in needed
    ]
    graph.initializer.extend([*still, *rewrite.new_inits, *constants])
    if not any(opset.domain == MS_DOMAIN for opset in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    if rewrite.int8_rows:
        assert rows_model is not None and output_rows is not None  # only then are there any
        _int8_values(graph.input, rewrite.int8_rows)
        _quantize_output_rows(rows_model, rewrite.int8_rows)
        onnx.save(rows_model, str(output_rows))
    onnx.save(model, str(path))
    return count


def _rewritten_nodes(graph: onnx.GraphProto, rewrite: _Rewrite) -> tuple[list[onnx.NodeProto], int]:
    """``graph``'s nodes with its products replaced by ``rewrite``'s int8 nodes (a ``Scan``'s
    body rewritten in place), and how many products were replaced."""
    replaced: dict[int, list[onnx.NodeProto]] = {}
    count = 0
    for position, node in enumerate(graph.node):
        if node.op_type == "Scan" and node.domain in ("", "ai.onnx"):
            count += _rewrite_scan_body(position, node, rewrite)
        nodes = rewrite.product(position, node)
        if nodes is not None:
            replaced[position] = nodes
    kept = [  # the slices that only replaced products read are known once all are replaced
        new_node
        for position, node in enumerate(graph.node)
        if node.output[0] not in rewrite.folded
        for new_node in replaced.get(position, [node])
    ]
    return kept, count + len(replaced)


def _rewrite_scan_body(position: int, scan: onnx.NodeProto, rewrite: _Rewrite) -> int:
    """Replace the products of ``scan``'s body that :meth:`_Rewrite.scan_product` makes int8;
    returns how many."""
    body = next(attribute.g for attribute in scan.attribute if attribute.name == "body")
    within = scan_body_values(scan, rewrite.unit_range)
    nodes: list[onnx.NodeProto] = []
    count = 0
    for inner, node in enumerate(body.node):
        new = rewrite.scan_product(f"int8_{position}_{inner}", node, within)
        count += new is not None
        nodes.extend(new or [node])
    del body.node[:]
    body.node.extend(nodes)
    return count


class _Rewrite:
    """What :func:`quantize_graph` learns of a graph and adds to it, node by node."""

    def __init__(
        self,
        graph: onnx.GraphProto,
        *,
        axes_input: bool,
        rows: onnx.ModelProto | None,
        unit_range: set[str],
        unit_range_only: bool = False,
    ) -> None:
        self.axes_input = axes_input  # ReduceMax takes its axes as an input from opset 18
        self.unit_range = unit_range  # the values within [-1, 1]: one fixed scale
        self.unit_range_only = unit_range_only  # True: products of other values stay float32
        self.weights = {init.name: init for init in graph.initializer}
        # The output_rows graph's outputs gathered from a weight's rows -> their width (k),
        # and those the step's int8 products now read as int8.
        self.gathered_rows = _gathered_rows(rows) if rows is not None else {}
        self.int8_rows: dict[str, int] = {}
        self.producers = {out: node for node in graph.node for out in node.output}
        self.uses = names_read(graph.node)
        self.uses.update(value.name for value in graph.output)  # a graph's output is read too
        self.new_inits: list[onnx.TensorProto] = []
        # Outputs of the GatherNDs and Slices that only replaced products read.
        self.folded: set[str] = set()

    def product(self, position: int, node: onnx.NodeProto) -> list[onnx.NodeProto] | None:
        """The int8 nodes that replace ``node``, or None where it stays as it is."""
        prefix, weights = f"int8_{position}", self.weights
        if self.unit_range_only and (not node.input or node.input[0] not in self.unit_range):
            return None
        if node.input and node.input[0] in weights:
            # A product of two constants (the decoder's gate table: the embedding times the
            # first layer's input weight) is folded into a float32 constant when a session
            # starts, exactly as PyTorch computes it; not a product to run per step.
            return None
        if node.op_type == "MatMul" and is_float_matrix(weights.get(node.input[1])):
            activations, weight_name = node.input  # weight (k, n)
            unit_rows = numpy_helper.to_array(weights[weight_name]).T
            bias_name = ""
        elif node.op_type == "Gemm" and plain_gemm(node):
            activations, weight_name, *bias = node.input  # weight (n, k)
            bias_name = bias[0] if bias else ""
            sliced = sliced_weight(self.producers.get(weight_name), weights)
            if sliced is not None:
                # A constant slice of a weight (the feed's columns of an LSTM's input
                # weight, beside the embedding's gate table), cut here once.
                unit_rows = sliced
                if self.uses[weight_name] == 1:
                    self.folded.add(weight_name)
            elif not is_float_matrix(weights.get(weight_name)):
                return None
            else:
                unit_rows = numpy_helper.to_array(weights[weight_name])
        elif node.op_type == "MatMul" and self._grouped_weight(node):
            return self._grouped(prefix, node)
        else:
            return None
        self.new_inits += _quantized(unit_rows, f"{prefix}_weight", by_column=True)
        # The bias, a vector or a (rows, n) addend (the embedding's gathered gates).
        vector = not bias_name or is_vector(weights.get(bias_name))
        product = _Product(
            prefix, activations, f"{prefix}_weight", f"{prefix}_weight_scale", bias_name, vector
        )
        return self._matmul(product, node.output[0])

    def scan_product(
        self, prefix: str, node: onnx.NodeProto, within: set[str]
    ) -> list[onnx.NodeProto] | None:
        """The int8 nodes that replace ``node`` of a ``Scan``'s body, or None: a ``MatMul`` of
        values ``within`` [-1, 1] (an LSTM's hidden state fed back: the encoder's
        recurrence) by a float32 matrix of the outer graph, with the fixed scale. Products of
        other values stay float32 (a scale per row takes six more nodes at every position)."""
        if node.op_type != "MatMul" or node.domain not in ("", "ai.onnx"):
            return None
        weight = self.weights.get(node.input[1])
        if node.input[0] not in within or not is_float_matrix(weight):
            return None
        unit_rows = numpy_helper.to_array(weight).T  # (n, k): one row per output unit
        self.new_inits += _quantized(unit_rows, f"{prefix}_weight", by_column=True)
        product = _Product(
            prefix, node.input[0], f"{prefix}_weight", f"{prefix}_weight_scale", "", True
        )
        return _unit_range_matmul(product, node.output[0])

    def _matmul(self, product: _Product, output: str) -> list[onnx.NodeProto]:
        """The int8 nodes of ``product``: with a fixed scale where its activations lie
        within [-1, 1], else with a scale per row."""
        if product.activations in self.unit_range:
            return _unit_range_matmul(product, output)
        return _per_row_matmul(product, output, self.axes_input)

    def _grouped_weight(self, node: onnx.NodeProto) -> str:
        """The input that ``node`` multiplies by if it is a grouped step's product
        (``features (G, R, k) @ Transpose(Reshape(rows, (G, U, k)), (0, 2, 1))``,
        ``rows`` gathered by the ``output_rows`` graph and read there only), else ``""``."""
        transpose = self.producers.get(node.input[1])
        if transpose is None or transpose.op_type != "Transpose":
            return ""
        perm = next((a for a in transpose.attribute if a.name == "perm"), None)
        if perm is None or list(perm.ints) != [0, 2, 1]:
            return ""
        reshape = self.producers.get(transpose.input[0])
        if reshape is None or reshape.op_type != "Reshape":
            return ""
        weight_name = reshape.input[0]
        read = (weight_name, reshape.output[0], transpose.output[0])
        if weight_name not in self.gathered_rows or any(self.uses[name] != 1 for name in read):
            return ""
        return weight_name

    def _grouped(self, prefix: str, node: onnx.NodeProto) -> list[onnx.NodeProto]:
        """The int8 product of a grouped step (:meth:`_grouped_weight`): the ``output_rows``
        graph gathers the rows as int8 ``(G, k, U)`` and their scales ``(G, 1, U)`` once per
        batch, so the step's reshape and transpose go and ``MatMulIntegerToFloat`` multiplies
        group by group (no bias: the grouped step adds it after picking the columns)."""
        transpose = self.producers[node.input[1]]
        reshape = self.producers[transpose.input[0]]
        weight_name = reshape.input[0]
        self.folded.update((reshape.output[0], transpose.output[0]))
        self.int8_rows[weight_name] = self.gathered_rows[weight_name]
        scale = weight_name + SCALE_SUFFIX
        product = _Product(prefix, node.input[0], weight_name, scale, "", True)
        return self._matmul(product, node.output[0])


SCALE_SUFFIX = "_scale"  # an int8 weight input's per-column scales: output_weight_scale


def _gathered_rows(rows: onnx.ModelProto) -> dict[str, int]:
    """The outputs of an ``output_rows`` graph that gather whole rows of a float32 matrix
    initializer, with the rows' width."""
    weights = {init.name: init for init in rows.graph.initializer}
    outputs = {o.name for o in rows.graph.output}
    return {
        node.output[0]: int(weights[node.input[0]].dims[1])
        for node in rows.graph.node
        if node.output[0] in outputs and _gathers_rows(node, weights)
    }


def _quantize_output_rows(rows: onnx.ModelProto, int8_rows: dict[str, int]) -> None:
    """Rewrite the ``output_rows`` graph so that each output of ``int8_rows`` (``(M, k)``
    float32 rows of a table) is each group's int8 rows transposed, ``(G, k, U)``, as the
    grouped product reads them, followed by a new output of their scales ``(G, 1, U)``: the
    table becomes int8. The graph's input, the batch's shortlist, becomes the groups' unions
    ``(G, U)`` (bundle format 7), flattened for the other outputs (the bias), which stay."""
    graph = rows.graph
    weights = {init.name: init for init in graph.initializer}
    ids = graph.input[0].name  # the graph's only input
    flat = f"{ids}_flat"
    nodes = [helper.make_node("Reshape", [ids, "int8_flat_shape"], [flat])]
    tables = [
        numpy_helper.from_array(np.array([-1], dtype=np.int64), "int8_flat_shape"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "int8_group_axis"),
    ]
    for node in graph.node:
        name = node.output[0]
        if name not in int8_rows:
            node.input[:] = [flat if value == ids else value for value in node.input]
            nodes.append(node)
            continue
        table = numpy_helper.to_array(weights[node.input[0]])
        tables += _quantized(table, f"{name}_table", by_column=False)
        nodes += [
            helper.make_node("Gather", [f"{name}_table", ids], [f"{name}_rows"], axis=0),
            helper.make_node("Transpose", [f"{name}_rows"], [name], perm=[0, 2, 1]),
            helper.make_node("Gather", [f"{name}_table_scale", ids], [f"{name}_scales"], axis=0),
            helper.make_node(
                "Unsqueeze", [f"{name}_scales", "int8_group_axis"], [name + SCALE_SUFFIX]
            ),
        ]
    needed = {name for node in nodes for name in node.input}
    kept = [init for init in graph.initializer if init.name in needed]
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.initializer[:]
    graph.initializer.extend([*kept, *tables])
    del graph.input[:]
    graph.input.append(helper.make_tensor_value_info(ids, onnx.TensorProto.INT64, GROUPS))
    _int8_values(graph.output, int8_rows)


GROUPS = ["groups", "group_shortlist"]  # the groups' unions, (G, U)


def _int8_values(values: Any, int8_rows: dict[str, int]) -> None:
    """In ``values`` (a graph's inputs or outputs), each of ``int8_rows``, ``(M, k)``
    float32, becomes ``(G, k, U)`` int8 followed by its scales ``(G, 1, U)`` float32."""
    listed = list(values)
    del values[:]
    for value in listed:
        if value.name not in int8_rows:
            values.append(value)
            continue
        (groups, union), k = GROUPS, int8_rows[value.name]
        int8, real = onnx.TensorProto.INT8, onnx.TensorProto.FLOAT
        values.append(helper.make_tensor_value_info(value.name, int8, [groups, k, union]))
        scales = [groups, 1, union]
        values.append(helper.make_tensor_value_info(value.name + SCALE_SUFFIX, real, scales))


def _quantized(unit_rows: np.ndarray, name: str, *, by_column: bool) -> list[onnx.TensorProto]:
    """Initializers ``name``, the int8 weights of ``unit_rows`` ``(n, k)`` (one row per
    output unit; stored ``(k, n)`` with ``by_column``, as DynamicQuantizeMatMul reads them),
    and ``name + "_scale"`` ``(n,)``."""
    table, scale = quantize_weight(unit_rows)
    stored = np.ascontiguousarray(table.T) if by_column else table
    return [numpy_helper.from_array(stored, name), numpy_helper.from_array(scale, f"{name}_scale")]


def _gathers_rows(node: onnx.NodeProto | None, weights: dict[str, onnx.TensorProto]) -> bool:
    """``node`` is a ``GatherND`` (or a ``Gather`` on axis 0) of whole rows of a float32
    matrix initializer."""
    if node is None or node.op_type not in ("GatherND", "Gather") or node.input[0] not in weights:
        return False
    attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    axis = attributes.get("batch_dims" if node.op_type == "GatherND" else "axis", 0)
    return axis == 0 and is_float_matrix(weights[node.input[0]])


@dataclass(frozen=True)
class _Product:
    """A product to make int8: ``activations`` ``(..., k)`` float32 times ``weight`` ``(k, n)``
    int8 with per-column ``scale`` ``(n,)``, plus ``bias`` (``""``, or ``(n,)`` where
    ``bias_is_vector``, else ``(..., n)``)."""

    prefix: str
    activations: str
    weight: str
    scale: str
    bias: str
    bias_is_vector: bool


def _unit_range_matmul(product: _Product, output: str) -> list[onnx.NodeProto]:
    """Activations within [-1, 1] (the attentional vector the output layer reads, an
    LSTM's hidden state): one fixed scale, 1/127, so nothing depends on the rows, and ONNX
    Runtime's ``MatMulIntegerToFloat`` rescales and adds a bias vector in its own pass."""
    p = product
    fused_bias = p.bias if p.bias_is_vector else ""
    result = output if p.bias_is_vector or not p.bias else f"{p.prefix}_product"
    nodes = [
        helper.make_node(
            "QuantizeLinear",
            [p.activations, "int8_unit_scale", "int8_zero_point"],
            [f"{p.prefix}_q"],
            name=f"{p.prefix}_QuantizeLinear",
        ),
        helper.make_node(
            "MatMulIntegerToFloat",
            [
                f"{p.prefix}_q",
                p.weight,
                "int8_unit_scale",
                p.scale,
                "int8_zero_point",
                "",
                fused_bias,
            ],
            [result],
            name=f"{p.prefix}_MatMulIntegerToFloat",
            domain=MS_DOMAIN,
        ),
    ]
    if result != output:
        nodes.append(helper.make_node("Add", [result, p.bias], [output], name=f"{p.prefix}_Add"))
    return nodes


def _per_row_matmul(product: _Product, output: str, axes_input: bool) -> list[onnx.NodeProto]:
    """``output = activations @ (weight * scale) + bias`` in int8 with one activation scale
    per row (see the module docstring)."""

    def node(op: str, inputs: list[str], out: str, **attributes: object) -> onnx.NodeProto:
        return helper.make_node(op, inputs, [out], name=f"{p}_{op}_{out}", **attributes)

    p, activations, bias = product.prefix, product.activations, product.bias
    reduce_axes = {"axes": [-1]} if not axes_input else {}
    axes = ["int8_last_axis"] if axes_input else []
    scaled = f"{p}_product" if bias else output
    return [
        node("Abs", [activations], f"{p}_abs"),
        node("ReduceMax", [f"{p}_abs", *axes], f"{p}_peak", keepdims=1, **reduce_axes),
        node("Max", [f"{p}_peak", "int8_peak_floor"], f"{p}_floored"),
        node("Div", [f"{p}_floored", "int8_levels"], f"{p}_row_scale"),  # (..., 1)
        node("Div", [activations, f"{p}_row_scale"], f"{p}_scaled"),  # within [-127, 127]
        node("QuantizeLinear", [f"{p}_scaled", "int8_one", "int8_zero_point"], f"{p}_q"),
        # (rows, n): the integer products times each column's weight scale, then the row's.
        helper.make_node(
            "MatMulIntegerToFloat",
            [f"{p}_q", product.weight, "int8_one", product.scale, "int8_zero_point"],
            [f"{p}_columns_scaled"],
            name=f"{p}_MatMulIntegerToFloat",
            domain=MS_DOMAIN,
        ),
        node("Mul", [f"{p}_columns_scaled", f"{p}_row_scale"], scaled),
        *([node("Add", [scaled, bias], output)] if bias else []),
    ]
