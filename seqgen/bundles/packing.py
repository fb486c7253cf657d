"""The models shipped inside the package: bundles whose graphs read their weights from the
checkpoint beside them.

A packaged model is a folder ``seqgen/assets/<name>/``: ``model.safetensors`` (the
checkpoint, float16 weights) and the bundle exported from it, whose graphs keep no copy of
those weights. Each large initializer of a graph that is a checkpoint tensor, or its
transpose, becomes an ONNX external-data reference into ``model.safetensors`` (float16, at
the tensor's offset there), cast to float32 by a ``Cast`` node. ONNX Runtime folds those
nodes (and the ``Gemm`` of the embedding and the first layer's input weight that a
translator's step graph computes its gate table with) into constants when a session starts,
so a step runs as it did with the stored float32 values, and:

- inference on the bundled models needs no torch (``seqgen.load("multi30k-de-en")``);
- the wheel holds each weight once (the checkpoint serves ``--backend torch`` too);
- the float16 weights cast to float32 are exactly those PyTorch loads, so both backends
  decode the same tokens (the gate table agrees to float32 rounding: the parity tests).

Run when a bundled model changes (needs the export extra)::

    python -m seqgen.bundles.packing            # every bundled model
    python -m seqgen.bundles.packing spam       # one
"""

from __future__ import annotations

import json
import shutil
import struct
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from seqgen.bundles.reader import MANIFEST_FILE, graph_files
from seqgen.checkpoints import ASSETS, PACKAGED_CHECKPOINT, bundled_models
from seqgen.errors import SeqgenError

WEIGHTS_FILE = PACKAGED_CHECKPOINT
# Initializers smaller than this stay in the graph: biases and small projections, whose
# bytes do not matter and which are often sums or slices of checkpoint tensors.
SMALLEST_REFERENCED = 16 * 1024
# An initializer this large that matches no checkpoint tensor fails the packing: storing it
# would double the wheel's share of that model.
LARGEST_STORED = 1 << 20


@dataclass(frozen=True)
class StoredTensor:
    """One tensor of a safetensors file: where its bytes are and what they hold."""

    name: str
    dtype: str  # safetensors' name: "F16", "F32", "I64"
    shape: tuple[int, ...]
    offset: int  # from the start of the file
    length: int
    values: np.ndarray  # as float32 (exactly, from float16) for floating-point tensors


def read_stored_tensors(path: Path) -> dict[str, StoredTensor]:
    """Every tensor of the safetensors file ``path`` with its absolute byte offset."""
    data = path.read_bytes()
    (header_length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + header_length])
    start = 8 + header_length
    numpy_types = {"F16": np.float16, "F32": np.float32, "I64": np.int64}
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__" or entry["dtype"] not in numpy_types:
            continue
        begin, end = entry["data_offsets"]
        values = np.frombuffer(data[start + begin : start + end], dtype=numpy_types[entry["dtype"]])
        values = values.reshape(entry["shape"])
        if values.dtype.kind == "f":
            values = values.astype(np.float32)
        tensors[name] = StoredTensor(
            name, entry["dtype"], tuple(entry["shape"]), start + begin, end - begin, values
        )
    return tensors


def pack_bundle(bundle: Path, checkpoint: Path) -> list[str]:
    """Make ``bundle`` (just exported from ``checkpoint``) read its weights from a copy of
    the checkpoint inside it. Returns one line per initializer left stored, for the log.
    SeqgenError where a large initializer matches no checkpoint tensor."""
    import onnx

    shutil.copyfile(checkpoint, bundle / WEIGHTS_FILE)
    stored = read_stored_tensors(bundle / WEIGHTS_FILE)
    left = []
    manifest = json.loads((bundle / MANIFEST_FILE).read_text(encoding="utf-8"))
    for file in graph_files(manifest).values():
        model = onnx.load(str(bundle / file))
        left += [f"{file}: {line}" for line in _pack_graph(model.graph, stored)]
        onnx.save(model, str(bundle / file))
    manifest["weights"] = {"file": WEIGHTS_FILE}
    (bundle / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return left


def _pack_graph(graph, stored: dict[str, StoredTensor]) -> list[str]:
    """Replace ``graph``'s large float32 initializers by nodes over external float16 data."""
    from onnx import numpy_helper

    builder = _NodeBuilder(graph, stored)
    left = []
    for initializer in list(graph.initializer):
        if initializer.data_type != 1:  # float32 only
            continue
        values = numpy_helper.to_array(initializer)
        if values.nbytes < SMALLEST_REFERENCED:
            continue
        if not builder.replace(initializer.name, values):
            if values.nbytes > LARGEST_STORED:
                raise SeqgenError(
                    f"{initializer.name} {values.shape} matches no checkpoint tensor; teach "
                    "seqgen.bundles.packing how the export derives it"
                )
            left.append(f"{initializer.name} {values.shape} stored ({values.nbytes:,} bytes)")
            continue
        graph.initializer.remove(initializer)
    builder.prepend_nodes()
    return left


class _NodeBuilder:
    """The external initializers and the nodes that rebuild a graph's float32 constants."""

    def __init__(self, graph, stored: dict[str, StoredTensor]) -> None:
        self.graph = graph
        self.stored = stored
        self.nodes: list = []
        self.cast: dict[str, str] = {}  # checkpoint tensor -> its float32 value's name

    def replace(self, name: str, values: np.ndarray) -> bool:
        """Nodes that compute initializer ``name`` (``values``) from the checkpoint, if any."""
        from onnx import helper

        for tensor in self.stored.values():
            if tensor.values.dtype != np.float32 or tensor.values.size != values.size:
                continue
            if tensor.shape == values.shape and np.array_equal(tensor.values, values):
                self.nodes.append(helper.make_node("Identity", [self.float32(tensor)], [name]))
                return True
            if tensor.shape[::-1] == values.shape and np.array_equal(tensor.values.T, values):
                node = helper.make_node("Transpose", [self.float32(tensor)], [name], perm=[1, 0])
                self.nodes.append(node)
                return True
        return False

    def float32(self, tensor: StoredTensor) -> str:
        """The name of ``tensor`` cast to float32, adding its external initializer once."""
        if tensor.name not in self.cast:
            from onnx import TensorProto, helper

            half = tensor.dtype == "F16"
            external = TensorProto(
                name=tensor.name, data_type=TensorProto.FLOAT16 if half else TensorProto.FLOAT
            )
            external.dims.extend(tensor.shape)
            external.data_location = TensorProto.EXTERNAL
            for key, value in (
                ("location", WEIGHTS_FILE),
                ("offset", str(tensor.offset)),
                ("length", str(tensor.length)),
            ):
                external.external_data.add(key=key, value=value)
            self.graph.initializer.append(external)
            self.cast[tensor.name] = f"{tensor.name}:float32" if half else tensor.name
            if half:
                cast = helper.make_node(
                    "Cast", [tensor.name], [self.cast[tensor.name]], to=TensorProto.FLOAT
                )
                self.nodes.append(cast)
        return self.cast[tensor.name]

    def prepend_nodes(self) -> None:
        """Put the new nodes first: they read initializers only, so the order stays
        topological."""
        kept = list(self.graph.node)
        del self.graph.node[:]
        self.graph.node.extend([*self.nodes, *kept])


def package_model(name: str, assets: Path) -> None:
    """Re-export bundled model ``name`` from its checkpoint and pack it into ``assets/name``."""
    from seqgen.bundles.export import export_bundle

    folder = assets / name
    checkpoint = folder / WEIGHTS_FILE
    with tempfile.TemporaryDirectory() as scratch:
        kept = Path(scratch) / WEIGHTS_FILE
        shutil.copyfile(checkpoint, kept)
        staging = Path(scratch) / name
        export_bundle(kept, staging)
        for line in pack_bundle(staging, kept):
            print(f"{name}: {line}")
        shutil.rmtree(folder)
        shutil.copytree(staging, folder)
    size = sum(path.stat().st_size for path in folder.iterdir())
    print(f"{name}: {size / 1e6:.1f} MB in {folder}")


def main(names: list[str]) -> None:
    for name in names or list(bundled_models()):
        package_model(bundled_models()[name].name, ASSETS)


if __name__ == "__main__":
    main(sys.argv[1:])
