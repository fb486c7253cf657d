"""Drop each ``Unsqueeze`` that a ``Squeeze`` of the same axes undoes (no torch).

The decoders keep their state batch-major ``(rows, layers, hidden)`` between steps and hand
PyTorch's cells layer-major ``(layers, rows, hidden)`` (``seqgen.layers.cells.layer_major``);
with one layer both turns are a squeeze and an unsqueeze, and the cell function then takes
``state[0]``. PyTorch's views cost nothing; the exporter writes each as a node, so a
translator's step graph held four ``Unsqueeze`` -> ``Squeeze`` pairs that give back their
input, eight of its 71 nodes after ONNX Runtime's own optimisations (which keep them). At
64 rows a node's fixed cost is a fair part of a greedy step: the harness model's int8 step
on captured inputs ran 1.6% faster without them, beam 5 0.3%.

A pair is the identity whatever the axes' signs: the ``Unsqueeze``'s axes index its
output, the ``Squeeze``'s its input, the same tensor. Only pairs whose ``Unsqueeze`` output
nothing else reads, and whose ``Squeeze`` output is not a graph output, go; the readers of
the ``Squeeze``'s output (subgraphs included) read the ``Unsqueeze``'s input instead.
"""

from __future__ import annotations

import onnx
from onnx import helper, numpy_helper

from seqgen.bundles.graph_reading import names_read


def drop_undone_unsqueezes(graph: onnx.GraphProto) -> int:
    """Remove the ``Unsqueeze`` -> ``Squeeze`` pairs of ``graph`` (in place) that give back
    their input; returns how many pairs went."""
    constants = {init.name: init for init in graph.initializer}
    producers = {name: node for node in graph.node for name in node.output}
    reads = names_read(graph.node)
    outputs = {value.name for value in graph.output}
    renamed: dict[str, str] = {}  # a Squeeze's output -> the Unsqueeze's input
    dropped: set[int] = set()
    for node in graph.node:
        unsqueeze = producers.get(node.input[0]) if node.op_type == "Squeeze" else None
        if unsqueeze is None or unsqueeze.op_type != "Unsqueeze" or node.output[0] in outputs:
            continue
        if reads[unsqueeze.output[0]] != 1 or unsqueeze.output[0] in outputs:
            continue
        axes = _axes(unsqueeze, constants)
        if axes is None or axes != _axes(node, constants):
            continue
        renamed[node.output[0]] = unsqueeze.input[0]
        dropped |= {id(node), id(unsqueeze)}
    if not dropped:
        return 0
    kept = [node for node in graph.node if id(node) not in dropped]
    _rename_inputs(kept, renamed)
    del graph.node[:]
    graph.node.extend(kept)
    return len(dropped) // 2


def _axes(node: onnx.NodeProto, constants: dict[str, onnx.TensorProto]) -> list[int] | None:
    """A ``Squeeze``'s or ``Unsqueeze``'s axes: its constant second input (opset 13 on) or
    its ``axes`` attribute; None where they are not known (computed, or left out: a
    ``Squeeze`` of every axis of size 1)."""
    if len(node.input) > 1 and node.input[1]:
        axes = constants.get(node.input[1])
        return None if axes is None else [int(a) for a in numpy_helper.to_array(axes).ravel()]
    for attribute in node.attribute:
        if attribute.name == "axes":
            return [int(a) for a in helper.get_attribute_value(attribute)]
    return None


def _rename_inputs(nodes: list[onnx.NodeProto], renamed: dict[str, str]) -> None:
    """Make ``nodes`` (and their subgraphs) read ``renamed[name]`` for ``name``, through
    chains of pairs."""

    def final(name: str) -> str:
        while name in renamed:
            name = renamed[name]
        return name

    for node in nodes:
        for position, name in enumerate(node.input):
            node.input[position] = final(name)
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                _rename_inputs(list(attribute.g.node), renamed)
