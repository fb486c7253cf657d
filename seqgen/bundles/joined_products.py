"""Two products that are summed, joined into one before the int8 rewrite (no torch).

An input-feeding LSTM decoder's step adds two products of the same width: the fed-back
attentional vector's (``feed @ W_feed.T``, beside the embedding's gate table) and the
recurrent one (``hidden @ W_hh.T + b_hh``); a second LSTM layer adds its input's and its
recurrent product the same way. In int8 each is a ``QuantizeLinear`` and a
``MatMulIntegerToFloat`` over ``k = hidden``, and an ``Add`` joins them. Joined, the
activations are concatenated and multiplied once by the stacked weights, ``[a, b] @ [W_a,
W_b].T``: one quantization, one product over ``k_a + k_b`` (VNNI's inner loop runs twice as
long for each output it finishes) and one ``Add`` fewer.

Only where both activations lie within [-1, 1] (:mod:`seqgen.bundles.value_range`), so
that one fixed activation scale serves both halves; the joined weight then takes one scale
per output column over both halves (the larger of the two): the half with the smaller
peak keeps a little less precision.
"""

from __future__ import annotations

from collections import Counter

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


def join_summed_products(graph: onnx.GraphProto, unit_range: set[str]) -> set[str]:
    """Rewrite ``graph`` in place: each ``Add`` of two plain ``Gemm`` products (``A @ W.T
    + C``, ``W`` ``(n, k)`` a float32 initializer or a constant ``Slice`` of one, each
    product read only by that ``Add``) whose activations are in ``unit_range`` becomes a
    ``Concat`` of the activations and one ``Gemm`` by the stacked weights, followed by an
    ``Add`` of any ``C`` that is not a bias vector (a ``(rows, n)`` addend: the gathered
    gate-table rows).

    Returns the names of the new concatenated activations (within [-1, 1] too).
    """
    weights = {init.name: init for init in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}
    uses = names_read(graph.node)  # a Scan's body may read a product or a slice too
    uses.update(value.name for value in graph.output)
    replaced: dict[int, list[onnx.NodeProto]] = {}
    dropped: set[int] = set()
    joined: set[str] = set()
    positions = {id(node): position for position, node in enumerate(graph.node)}
    for position, node in enumerate(graph.node):
        parts = _summed_parts(node, producers, uses, weights, unit_range)
        if parts is None:
            continue
        prefix = f"joined_{position}"
        new_nodes, new_inits = _joined(prefix, node.output[0], parts, weights)
        replaced[position] = new_nodes
        graph.initializer.extend(new_inits)
        joined.add(f"{prefix}_activations")
        for part in parts:
            dropped.add(positions[id(part.gemm)])
            if part.slice_node is not None and uses[part.slice_node.output[0]] == 1:
                dropped.add(positions[id(part.slice_node)])
    if replaced:
        kept = [
            new
            for position, node in enumerate(graph.node)
            if position not in dropped
            for new in replaced.get(position, [node])
        ]
        del graph.node[:]
        graph.node.extend(kept)
    return joined


class _Part:
    """One of the two summed products: its ``Gemm`` node, its weight ``(n, k)`` and the
    ``Slice`` node that cut it from a larger weight (or None)."""

    def __init__(
        self, gemm: onnx.NodeProto, weight: np.ndarray, slice_node: onnx.NodeProto | None
    ) -> None:
        self.gemm, self.weight, self.slice_node = gemm, weight, slice_node
        self.activations = gemm.input[0]
        self.addend = gemm.input[2] if len(gemm.input) > 2 else ""


def _summed_parts(
    node: onnx.NodeProto,
    producers: dict[str, onnx.NodeProto],
    uses: Counter,
    weights: dict[str, onnx.TensorProto],
    unit_range: set[str],
) -> tuple[_Part, _Part] | None:
    """The two products ``node`` adds, when it is an ``Add`` that can be joined."""
    if node.op_type != "Add" or len(node.input) != 2:
        return None
    parts = []
    for name in node.input:
        gemm = producers.get(name)
        if gemm is None or gemm.op_type != "Gemm" or not plain_gemm(gemm) or uses[name] != 1:
            return None
        if gemm.input[0] not in unit_range or gemm.input[0] in weights:
            return None
        weight_name = gemm.input[1]
        slice_node = producers.get(weight_name)
        if weight_name in weights:
            if not is_float_matrix(weights[weight_name]):
                return None
            weight, slice_node = numpy_helper.to_array(weights[weight_name]), None
        else:
            weight = sliced_weight(slice_node, weights)
            if weight is None:
                return None
        parts.append(_Part(gemm, weight, slice_node))
    first, second = parts
    if first.weight.shape[0] != second.weight.shape[0] or first.activations == second.activations:
        return None
    return first, second


def _joined(
    prefix: str, output: str, parts: tuple[_Part, _Part], weights: dict[str, onnx.TensorProto]
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """The nodes and initializers that compute ``output`` as one product."""
    stacked = np.concatenate([part.weight for part in parts], axis=1).astype(np.float32)
    inits = [numpy_helper.from_array(stacked, f"{prefix}_weight")]
    biases = [p.addend for p in parts if is_vector(weights.get(p.addend))]
    vectors = [numpy_helper.to_array(weights[name]) for name in biases]
    addends = [p.addend for p in parts if p.addend and p.addend not in biases]
    gemm_inputs = [f"{prefix}_activations", f"{prefix}_weight"]
    if vectors:
        inits.append(numpy_helper.from_array(np.sum(vectors, axis=0, dtype=np.float32), prefix))
        gemm_inputs.append(prefix)
    activations = [part.activations for part in parts]
    product = output if not addends else f"{prefix}_product"
    nodes = [
        helper.make_node("Concat", activations, [gemm_inputs[0]], name=f"{prefix}_Concat", axis=1),
        helper.make_node("Gemm", gemm_inputs, [product], name=f"{prefix}_Gemm", transB=1),
    ]
    for count, addend in enumerate(addends):
        result = output if count == len(addends) - 1 else f"{prefix}_sum{count}"
        nodes.append(
            helper.make_node("Add", [product, addend], [result], name=f"{prefix}_Add{count}")
        )
        product = result
    return nodes, inits
