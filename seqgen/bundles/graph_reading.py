"""Readers of exported graphs' nodes and constants, shared by the rewrites (no torch):
:mod:`seqgen.bundles.quantize`, :mod:`seqgen.bundles.joined_products` and
:mod:`seqgen.bundles.undone_unsqueezes`."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper


def plain_gemm(node: onnx.NodeProto) -> bool:
    """``Gemm`` computing ``A @ B.T + C``."""
    attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    return (
        attributes.get("transB", 0) == 1
        and attributes.get("transA", 0) == 0
        and attributes.get("alpha", 1.0) == 1.0
        and attributes.get("beta", 1.0) == 1.0
    )


def is_float_matrix(init: onnx.TensorProto | None) -> bool:
    """A non-empty float32 matrix (the exporter leaves empty ones, e.g. ``(n, 0)``, behind)."""
    return (
        init is not None
        and init.data_type == onnx.TensorProto.FLOAT
        and len(init.dims) == 2
        and all(init.dims)
    )


def is_vector(init: onnx.TensorProto | None) -> bool:
    """A float32 initializer of one axis (a bias added in the product's own pass)."""
    return init is not None and init.data_type == onnx.TensorProto.FLOAT and len(init.dims) == 1


def sliced_weight(
    node: onnx.NodeProto | None, weights: dict[str, onnx.TensorProto]
) -> np.ndarray | None:
    """The matrix a ``Slice`` of a float32 matrix initializer by constant bounds gives, or
    None when ``node`` is not such a slice or the slice is empty (a product by nothing)."""
    if node is None or node.op_type != "Slice" or not all(n in weights for n in node.input):
        return None
    if not is_float_matrix(weights[node.input[0]]):
        return None
    data, starts, ends, *rest = (numpy_helper.to_array(weights[n]) for n in node.input)
    axes = rest[0] if rest else np.arange(len(starts))
    steps = rest[1] if len(rest) > 1 else np.ones(len(starts), dtype=np.int64)
    index = [slice(None)] * data.ndim
    for axis, start, end, step in zip(axes, starts, ends, steps, strict=True):
        index[int(axis)] = slice(int(start), int(end), int(step))
    sliced = data[tuple(index)]
    return np.ascontiguousarray(sliced) if sliced.size else None


def names_read(nodes: Sequence[onnx.NodeProto]) -> Counter[str]:
    """How often ``nodes`` read each name, the nodes of their subgraphs (a ``Scan``'s body,
    which may read the outer graph's values) included."""
    reads = Counter(name for node in nodes for name in node.input)
    for node in nodes:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                reads.update(names_read(attribute.g.node))
    return reads
