"""Which values of a bundle's graphs provably lie within [-1, 1] (no torch, no run).

The int8 quantizer (:mod:`seqgen.bundles.quantize`) quantizes such activations with one
fixed scale, 1/127: two nodes instead of the eight that a scale per row takes. Most of a
recurrent decoder's activations are of that kind, by construction: an LSTM's or a GRU's
hidden state, a ``Tanh``'s output (the attentional vector fed back), attention's context
(a softmax's convex combination of such states).

:func:`unit_range_values` reads one graph node by node (ONNX graphs are in topological
order) and keeps a value when its operator bounds it (``Tanh``, ``Sigmoid``, ``Softmax``,
an ``LSTM``'s hidden outputs, a comparison's booleans), when it moves or gathers, casts or
multiplies values already kept, when it is a softmax's weights times kept values or a
sigmoid's mix of two (a GRU's next hidden state); a constant is kept when every element
is. A ``Scan``'s body is read the same way (:func:`scan_body_values`), its states by
induction: a state that starts within range and that the body keeps so (an LSTM's hidden
state written as a ``Scan``). Anything else is not, so the answer errs on the side of
"unknown".

:func:`unit_range_inputs` extends that to a step graph's inputs, which other graphs and
earlier steps give: by the decoding contract an input ``X`` is the output ``X`` or
``new_X`` of another graph of the bundle (a translator's encoder, a generator's prime, the
shortlist's ``output_rows``) or the step's own ``new_X``, its rows gathered or repeated on
the way (a generator's state starts at zeros before its prime: within range too).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

from seqgen.decoding.onnx_session import NEW_PREFIX

BOUNDED_OPS = {"Tanh", "Sigmoid", "Softmax"}  # within [-1, 1] whatever their input
BOOLEAN_OPS = {"Less", "LessOrEqual", "Greater", "GreaterOrEqual", "Equal", "Not", "And", "Or"}
# Operators whose output holds elements of their first input only, moved, repeated or
# picked.
MOVING_OPS = {
    "Identity", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Expand", "Tile",
    "Slice", "Split", "Gather", "GatherElements", "GatherND",
    "ReduceMax", "ReduceMin", "MaxPool",  # an element of the input: a classifier's pooling
}  # fmt: skip
# Types a value within [-1, 1] keeps its range in when cast (not unsigned integers: -1 wraps).
SIGNED_TYPES = {
    onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16,
    onnx.TensorProto.BFLOAT16, onnx.TensorProto.INT8, onnx.TensorProto.INT16,
    onnx.TensorProto.INT32, onnx.TensorProto.INT64, onnx.TensorProto.BOOL,
}  # fmt: skip
# Operators whose output is within range when all their (data) inputs are.
COMBINING_OPS = {"Concat": None, "Mul": None, "Where": slice(1, 3)}
# Recurrent operators -> their default activations; with those, their first two outputs
# (every step's hidden state, the last one) stay within [-1, 1].
RECURRENT_OPS = {
    "LSTM": ["Sigmoid", "Tanh", "Tanh"],
    "GRU": ["Sigmoid", "Tanh"],
    "RNN": ["Tanh"],
}


def unit_range_values(graph: onnx.GraphProto, inputs: Collection[str] = ()) -> set[str]:
    """The names of ``graph``'s values provably within [-1, 1], given that its inputs named
    in ``inputs`` are. A softmax's weights count as summing to 1 over the last axis where
    its ``axis`` is -1 or left out (before opset 13, left out means all axes from 1 on: at
    most 1 over the last one, as good for a product)."""
    known = set(inputs) | {
        init.name
        for init in graph.initializer
        if init.data_location != onnx.TensorProto.EXTERNAL  # not loaded: unknown
        and _within(numpy_helper.to_array(init))
    }
    weights: set[str] = set()  # softmaxes over their last axis: >= 0, summing to 1 there
    producers: dict[str, onnx.NodeProto] = {}
    for node in graph.node:
        producers.update((name, node) for name in node.output)
        if node.op_type == "Softmax" and _attributes(node).get("axis", -1) == -1:
            weights.add(node.output[0])
        if _node_within(node, known, weights) or _mixes(node, known, producers):
            known.update(name for name in node.output[: _bounded_outputs(node)] if name)
        elif node.op_type == "Scan" and node.domain in ("", "ai.onnx"):
            known.update(_scan_outputs_within(node, known))
    return known


def unit_range_inputs(step: onnx.GraphProto, others: Sequence[onnx.GraphProto]) -> set[str]:
    """The inputs of the step graph ``step`` provably within [-1, 1] at every step: those
    that graphs of ``others`` give (as ``X`` or ``new_X``), each within range, and where
    the step returns ``new_X``, that is within range whenever the inputs kept are (the
    largest set for which this holds). An input no graph gives is not kept."""
    outputs = {value.name for value in step.output}
    recurrent = {v.name for v in step.input if NEW_PREFIX + v.name in outputs}
    given: dict[str, bool] = {}
    for graph in others:
        within = unit_range_values(graph)
        for value in graph.output:
            name = value.name.removeprefix(NEW_PREFIX)
            given[name] = given.get(name, True) and value.name in within
    assumed = {name for name, ok in given.items() if ok} & {v.name for v in step.input}
    while True:  # drop what one step can carry out of range, until nothing changes
        within = unit_range_values(step, assumed)
        kept = {n for n in assumed if n not in recurrent or NEW_PREFIX + n in within}
        if kept == assumed:
            return assumed
        assumed = kept


def _node_within(node: onnx.NodeProto, known: set[str], weights: set[str]) -> bool:
    """``node``'s outputs (the first :func:`_bounded_outputs` of them) are within range,
    given the values ``known`` to be and the softmax ``weights`` over their last axis."""
    op = node.op_type
    if node.domain not in ("", "ai.onnx"):
        return False
    if op in BOUNDED_OPS or op in BOOLEAN_OPS:
        return True
    if op in RECURRENT_OPS:
        return _recurrent_within(node, known)
    if op == "Constant":
        return _constant_within(node)
    if op == "ConstantOfShape":  # its one value (0 when left out) repeated: a state's zeros
        return not node.attribute or _constant_within(node)
    if op in MOVING_OPS:
        return node.input[0] in known
    if op == "Cast":
        return node.input[0] in known and _attributes(node).get("to") in SIGNED_TYPES
    if op in COMBINING_OPS:
        data = node.input[COMBINING_OPS[op] or slice(None)]
        return all(name in known for name in data)
    if op == "MatMul":  # weights summing to 1 over the axis it sums over, times values
        return node.input[0] in weights and node.input[1] in known
    return False


def scan_body_values(node: onnx.NodeProto, known: set[str]) -> set[str]:
    """The values of a ``Scan`` node's body within range, given the outer values ``known``
    to be: the scan inputs sliced from known ones, and each state whose initial value is
    known and whose update the body keeps within range whenever the states so kept are (by
    induction over the iterations: an LSTM's hidden state from zeros, a sigmoid times a
    tanh at every position; the cell state, a sum, is not)."""
    attributes = _attributes(node)
    body = attributes["body"]
    assert isinstance(body, onnx.GraphProto)
    states = len(node.input) - int(attributes["num_scan_inputs"])  # type: ignore[call-overload]
    sliced = {
        value.name
        for value, name in zip(body.input[states:], node.input[states:], strict=False)
        if name in known
    }
    # State i: body input i in, body output i out. Start from those known at the start and
    # drop any the body can carry out of range, until nothing changes.
    pairs = [(body.input[i].name, body.output[i].name) for i in range(states)]
    assumed = {pairs[i][0] for i in range(states) if node.input[i] in known}
    while True:
        within = unit_range_values(body, sliced | assumed)
        kept = {state for state, update in pairs if state in assumed and update in within}
        if kept == assumed:
            return within
        assumed = kept


def _scan_outputs_within(node: onnx.NodeProto, known: set[str]) -> list[str]:
    """A ``Scan`` node's outputs within range (:func:`scan_body_values`): its final states
    and scan outputs that the body keeps within range (an int8 bundle's encoder,
    ``encoder.table_lstm``: each position's hidden state and the last one)."""
    attributes = _attributes(node)
    body = attributes["body"]
    assert isinstance(body, onnx.GraphProto)
    within = scan_body_values(node, known)
    states = len(node.input) - int(attributes["num_scan_inputs"])  # type: ignore[call-overload]
    # A final state is the last update, or its start where there are no positions: within
    # range when that state was kept (its body input is then among those within).
    return [
        name
        for i, (name, value) in enumerate(zip(node.output, body.output, strict=False))
        if name and value.name in within and (i >= states or body.input[i].name in within)
    ]


def _mixes(node: onnx.NodeProto, known: set[str], producers: dict[str, onnx.NodeProto]) -> bool:
    """``node`` is ``a + z * (b - a)`` with ``a`` and ``b`` within range and ``z`` a
    ``Sigmoid``'s, in [0, 1]: a point between ``a`` and ``b`` (a GRU's next hidden state,
    as PyTorch writes it)."""
    if node.op_type != "Add" or node.domain not in ("", "ai.onnx"):
        return False
    for a, other in (node.input, reversed(node.input)):
        product = producers.get(other)
        if a not in known or product is None or product.op_type != "Mul":
            continue
        for z, difference in (product.input, reversed(product.input)):
            gate, sub = producers.get(z), producers.get(difference)
            if gate is None or sub is None or gate.op_type != "Sigmoid" or sub.op_type != "Sub":
                continue
            if sub.input[1] == a and sub.input[0] in known:
                return True
    return False


def _bounded_outputs(node: onnx.NodeProto) -> int:
    """How many of ``node``'s outputs :func:`_node_within` speaks for (a recurrent
    operator's cell state, its third output, is not bounded)."""
    return 2 if node.op_type in RECURRENT_OPS else len(node.output)


def _recurrent_within(node: onnx.NodeProto, known: set[str]) -> bool:
    """An ``LSTM``, ``GRU`` or ``RNN`` node with its default activations; a GRU's hidden
    state mixes in its initial one (input 5), which must then be within range too."""
    activations = [a.decode() for a in _attributes(node).get("activations", [])]
    default = RECURRENT_OPS[node.op_type]
    if activations and activations not in (default, default * 2):  # * 2: bidirectional
        return False
    initial = node.input[5] if len(node.input) > 5 else ""
    return node.op_type != "GRU" or not initial or initial in known


def _constant_within(node: onnx.NodeProto) -> bool:
    """A ``Constant`` node of a tensor within range (or a ``ConstantOfShape`` of a value
    within range)."""
    for attribute in node.attribute:
        if attribute.name == "value":
            return _within(numpy_helper.to_array(attribute.t))
    return False


def _within(array: np.ndarray) -> bool:
    """Every element of a numeric ``array`` within [-1, 1]."""
    if array.dtype.kind not in "biuf":
        return False
    return array.size == 0 or bool(np.abs(array.astype(np.float64)).max() <= 1.0)


def _attributes(node: onnx.NodeProto) -> dict[str, object]:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}
