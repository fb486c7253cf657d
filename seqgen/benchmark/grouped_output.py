"""Would a shortlisted output layer per group of sentences pay? Measured before building it
(float32 bundles do it since format 6, int8 ones since format 7).

A shortlisted translator's step computes the output layer for the union of its batch's
shortlists (``seqgen.tasks.translation.shortlist``): each sentence keeps about 250 of the
union's columns, so most of the product is thrown away. Splitting a batch's sentences into
groups, each with the union of its own shortlists, would cut the columns and keep a product
per group (a batched MatMul) instead of one.

``python -m seqgen.benchmark.grouped_output`` reads test_2016_flickr as the translation
pipeline batches it (longest first, ``--batch-size`` sentences), and for each group size
prints the mean union a group's sentences share (the product's columns) and, on the CPU with
one thread, the time of one step's product: ``rows`` = ``--beam-size`` rows per sentence,
``(rows, hidden) x (hidden, union)`` as ``G`` groups of ``rows / G`` rows each, with the
gathers that grouping adds (the rows into groups and back). Three kernels: ONNX Runtime's
int8 ``MatMulIntegerToFloat`` (an int8 bundle's product, its weight scale per group and
column), its float32 ``MatMul`` (a float32 bundle's) and, with ``--torch``, PyTorch's
``baddbmm``. The last row, the batch's own union, is the union step's product (bundle
format 5, and int8 bundles before format 7): one matrix, no gathers. The weights are random
(the time depends on the shapes only), and each product is checked against float32 before
it is timed, so a figure is of a product that computes what the step would.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from seqgen.benchmark.paired import read_lines
from seqgen.benchmark.report import print_report
from seqgen.errors import SeqgenError

GROUP_SIZES = (1, 2, 4, 8, 16, 32, 64)


def union_sizes(
    sources: Sequence[Sequence[int]],
    table: np.ndarray,
    frequent: np.ndarray,
    *,
    batch_size: int,
    group_sizes: Sequence[int],
) -> dict[int, float]:
    """Per group size, the mean union of a group's shortlists over the batches of
    ``sources`` (token ids, EOS not included), batched longest first as the pipeline does."""
    from seqgen.tasks.translation.shortlist import shortlist_ids
    from seqgen.text.vocabulary import EOS_ID

    order = sorted(range(len(sources)), key=lambda i: -len(sources[i]))
    ids = [np.asarray([*sources[i], EOS_ID], dtype=np.int64) for i in order]
    batches = [ids[start : start + batch_size] for start in range(0, len(ids), batch_size)]
    sizes = {}
    for size in group_sizes:
        unions = [
            len(shortlist_ids(table, frequent, np.concatenate(batch[start : start + size])))
            for batch in batches
            for start in range(0, len(batch), size)
        ]
        sizes[size] = float(np.mean(unions))
    return sizes


def product_graph(int8: bool, groups: int, rows: int, hidden: int, union: int) -> Any:
    """An ONNX model of a step's output-layer product, ``scores`` ``(groups * rows, union)``.

    ``groups`` 0: the union's, ``features`` ``(rows, hidden)`` times ``weight`` plus ``bias``
    ``(union,)``, as the step graph has it: float32 a ``Gemm`` of the ``(union, hidden)``
    rows transposed, int8 ``(hidden, union)``. Else grouped: ``features`` ``(rows * groups,
    hidden)`` gathered by ``group_rows`` into ``(groups, rows, hidden)``, times ``weight``
    ``(groups, hidden, union)`` plus ``bias`` ``(groups, 1, union)``, the rows gathered back
    by ``slots`` (a batch's rows need not come grouped, nor the groups be equal). int8 as an
    int8 bundle's output layer (``seqgen.bundles.quantize``): the activations at the fixed
    scale 1/127 in uint8 around 128, 7-bit weights with a scale per column (and group)."""
    from onnx import TensorProto, helper

    from seqgen.bundles.quantize import ACTIVATION_LIMIT, ACTIVATION_ZERO, MS_DOMAIN

    node, value = helper.make_node, helper.make_tensor_value_info
    grouped = groups > 0
    # The union's float32 step (format 5) is a Gemm of the output_rows graph's (union,
    # hidden) rows, transposed in the product, its bias fused; its int8 step reads them
    # (hidden, union).
    shape = [groups, hidden, union] if grouped else [hidden, union] if int8 else [union, hidden]
    vector = [groups, 1, union] if grouped else [union]
    source = "grouped" if grouped else "features"
    nodes = [node("Gather", ["features", "group_rows"], ["grouped"])] if grouped else []
    # MatMulIntegerToFloat adds a bias vector of B's last dimension only: grouped, an Add.
    fused = "" if grouped else "bias"
    product = "product" if grouped else "scores"
    if int8:
        nodes += [
            node("QuantizeLinear", [source, "unit_scale", "zero_point"], ["quantized"]),
            node(
                "MatMulIntegerToFloat",
                ["quantized", "weight", "unit_scale", "weight_scale", "zero_point", "", fused],
                [product],
                domain=MS_DOMAIN,
            ),
        ]
    elif grouped:
        nodes += [node("MatMul", [source, "weight"], ["product"])]
    else:
        nodes += [node("Gemm", [source, "weight", "bias"], ["scores"], transB=1)]
    if grouped:
        nodes += [
            node("Add", ["product", "bias"], ["logits"]),
            node("Reshape", ["logits", "flat_shape"], ["flat"]),
            node("Gather", ["flat", "slots"], ["scores"]),
        ]
    inputs = [
        value("features", TensorProto.FLOAT, [max(groups, 1) * rows, hidden]),
        value("weight", TensorProto.INT8 if int8 else TensorProto.FLOAT, shape),
        value("bias", TensorProto.FLOAT, vector),
    ]
    inputs += [value("weight_scale", TensorProto.FLOAT, vector)] if int8 else []
    if grouped:
        inputs += [
            value("group_rows", TensorProto.INT64, [groups, rows]),
            value("slots", TensorProto.INT64, [groups * rows]),
        ]
    constants = [
        helper.make_tensor("unit_scale", TensorProto.FLOAT, [], [1 / ACTIVATION_LIMIT]),
        helper.make_tensor("zero_point", TensorProto.UINT8, [], [ACTIVATION_ZERO]),
        helper.make_tensor("flat_shape", TensorProto.INT64, [2], [-1, union]),
    ]
    outputs = [value("scores", TensorProto.FLOAT, [max(groups, 1) * rows, union])]
    graph = helper.make_graph(nodes, "output_layer", inputs, outputs, constants)
    opsets = [helper.make_opsetid("", 18), helper.make_opsetid(MS_DOMAIN, 1)]
    return helper.make_model(graph, opset_imports=opsets, ir_version=9)


def step_feeds(
    int8: bool, groups: int, rows: int, hidden: int, union: int, seed: int = 0
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Random inputs of :func:`product_graph` (each group's weights at its own scale, so a
    scale applied to the wrong group shows) and the float32 scores they should give."""
    generator = np.random.default_rng(seed)
    count = max(groups, 1)
    features = generator.uniform(-1, 1, (count * rows, hidden)).astype(np.float32)
    scale = np.arange(1, count + 1, dtype=np.float32)[:, None, None] / 20
    weight = (generator.standard_normal((count, hidden, union)) * scale).astype(np.float32)
    bias = generator.standard_normal((count, 1, union)).astype(np.float32)
    expected = (features.reshape(count, rows, hidden) @ weight + bias).reshape(-1, union)
    feeds = {"features": features, "weight": weight, "bias": bias}
    if int8:
        from seqgen.bundles.quantize import quantize_weight

        # quantize_weight scales rows (one per output unit): here a group's columns.
        quantized = [quantize_weight(np.ascontiguousarray(w.T)) for w in weight]
        feeds["weight"] = np.stack([np.ascontiguousarray(table.T) for table, _ in quantized])
        feeds["weight_scale"] = np.stack([scales[None, :] for _, scales in quantized])
    if groups:
        feeds["group_rows"] = np.arange(groups * rows, dtype=np.int64).reshape(groups, rows)
        feeds["slots"] = np.arange(groups * rows, dtype=np.int64)
    else:  # the union's: one matrix and vectors
        feeds = {name: array[0] if name != "features" else array for name, array in feeds.items()}
        feeds["bias"] = feeds["bias"][0]
        if int8:
            feeds["weight_scale"] = feeds["weight_scale"][0]
        else:
            feeds["weight"] = np.ascontiguousarray(feeds["weight"].T)  # (union, hidden) rows
    return feeds, expected


def onnx_runner(int8: bool, groups: int, rows: int, hidden: int, union: int) -> Callable[[], Any]:
    """One thread's session of :func:`product_graph`, checked against float32, as a call."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    model = product_graph(int8, groups, rows, hidden, union).SerializeToString()
    session = onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    feeds, expected = step_feeds(int8, groups, rows, hidden, union)
    (scores,) = session.run(None, feeds)
    # int8: activations to 1/127 and weights to a 63rd of their column's largest; far
    # under this, and a scale applied to the wrong group or column is far over it.
    tolerance = (0.03 if int8 else 1e-4) * float(np.abs(expected).max())
    if not np.abs(scores - expected).max() <= tolerance:
        kind = "int8" if int8 else "float32"
        raise SeqgenError(f"the {kind} product of {groups} groups gave wrong scores")
    return lambda: session.run(None, feeds)


def torch_runner(groups: int, rows: int, hidden: int, union: int) -> Callable[[], Any]:
    """PyTorch's product (as :func:`product_graph`'s float32) on one thread, as a call."""
    import torch

    torch.set_num_threads(1)
    arrays, _ = step_feeds(False, groups, rows, hidden, union)
    feeds = {name: torch.from_numpy(array) for name, array in arrays.items()}
    features, weight, bias = feeds["features"], feeds["weight"], feeds["bias"]
    if not groups:
        return lambda: torch.nn.functional.linear(features, weight, bias)  # as the step
    group_rows, slots = feeds["group_rows"].flatten(), feeds["slots"]

    def run() -> torch.Tensor:
        grouped = features.index_select(0, group_rows).view(groups, rows, hidden)
        return torch.baddbmm(bias, grouped, weight).view(-1, union).index_select(0, slots)

    return run


def microseconds(runs: dict[Any, Callable[[], Any]], repeats: int, blocks: int = 7) -> dict:
    """Each call's µs: the median over ``blocks`` blocks of ``repeats`` calls, the calls'
    blocks interleaved (this machine's speed drifts by 10-30% within a minute, which timing
    one call's blocks after another's would read as a difference between them)."""
    for run in runs.values():
        for _ in range(max(repeats // 5, 3)):
            run()
    times: dict[Any, list[float]] = {key: [] for key in runs}
    for _ in range(blocks):
        for key, run in runs.items():
            started = time.perf_counter()
            for _ in range(repeats):
                run()
            times[key].append((time.perf_counter() - started) / repeats)
    return {key: 1e6 * float(np.median(block)) for key, block in times.items()}


def read_bundle(model: str) -> tuple[list[list[int]], np.ndarray, np.ndarray, int]:
    """test_2016_flickr's sources as ``model``'s token ids (a bundled model's name or a
    bundle folder), its shortlist's table and frequent tokens, and its output layer's width."""
    import onnxruntime

    from seqgen.bundles.reader import bundle_kind, load_bundle
    from seqgen.checkpoints import packaged_bundle

    folder = packaged_bundle(model) or Path(model)
    if bundle_kind(folder) != "translation":
        raise SeqgenError(f"{model} is not a translator's bundle; name a bundled translator")
    translator = load_bundle(folder, device="cpu", threads=1)
    shortlist = getattr(translator.step_function, "shortlist", None)
    if shortlist is None:
        raise SeqgenError(f"{model} has no shortlist; its output layer scores every token")
    rows = onnxruntime.InferenceSession(str(folder / "output_rows.onnx"))
    hidden = int(rows.get_outputs()[0].shape[1])
    sources = [translator.source_tokenizer.encode(line) for line in read_lines()]
    return sources, *shortlist, hidden


def measure(arguments: argparse.Namespace) -> dict[str, Any]:
    """The union per group size and each kernel's µs for a step's product."""
    sources, table, frequent, hidden = read_bundle(arguments.model)
    batch = arguments.batch_size
    sizes = [size for size in GROUP_SIZES if size < batch and batch % size == 0] + [batch]
    unions = union_sizes(sources, table, frequent, batch_size=batch, group_sizes=sizes)
    runs = {}
    for size in sizes:
        # The batch's own union: the union step's product, one matrix and no gathers.
        groups = batch // size if size < batch else 0
        shape = (groups, size * arguments.beam_size, hidden, round(unions[size]))
        runs[size, "int8_us"] = onnx_runner(True, *shape)
        runs[size, "float32_us"] = onnx_runner(False, *shape)
        if arguments.torch:
            runs[size, "torch_us"] = torch_runner(*shape)
    timed = microseconds(runs, arguments.repeats)
    rows = [
        {
            "group_size": size,
            "groups": batch // size,
            "union": unions[size],
            **{kernel: us for (of, kernel), us in timed.items() if of == size},
        }
        for size in sizes
    ]
    return {
        "model": arguments.model,
        "batch_size": batch,
        "beam_size": arguments.beam_size,
        "hidden": hidden,
        "rows": rows,
    }


def format_report(report: dict[str, Any]) -> str:
    """A row per group size: each kernel's time, and how much faster than the union's (the last
    row)."""
    whole = report["rows"][-1]  # the batch's union: the union step's product
    kernels = [name for name in ("int8_us", "float32_us", "torch_us") if name in whole]
    titles = {"int8_us": "ORT int8", "float32_us": "ORT float32", "torch_us": "PyTorch"}
    lines = [
        f"{report['model']}: batches of {report['batch_size']}, "
        f"{report['beam_size']} rows a sentence, output layer width {report['hidden']}; "
        "one thread, µs for a step's product (x: faster than the union's, the last row)",
        f"{'group':>6} {'groups':>7} {'union':>8} "
        + " ".join(f"{titles[name]:>20}" for name in kernels),
    ]
    for row in report["rows"]:
        cells = [f"{row[name]:>10,.1f} ({whole[name] / row[name]:>5.2f}x)" for name in kernels]
        lines.append(
            f"{row['group_size']:>6} {row['groups']:>7} {row['union']:>8,.1f} "
            + " ".join(f"{cell:>20}" for cell in cells)
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Measure and print; 1 on bad input."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="multi30k-de-en")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=50, help="calls per timed block")
    parser.add_argument("--torch", action="store_true", help="also time PyTorch's product")
    parser.add_argument("--json", dest="json_file", type=Path)
    arguments = parser.parse_args(argv)
    report = print_report(lambda: run(arguments), format_report, arguments.json_file)
    return 0 if report else 1


def run(arguments: argparse.Namespace) -> dict[str, Any]:
    """Check the arguments, then measure."""
    for name in ("batch_size", "beam_size", "repeats"):
        if getattr(arguments, name) < 1:
            flag = "--" + name.replace("_", "-")
            raise SeqgenError(f"{flag} must be at least 1, got {getattr(arguments, name)}")
    return measure(arguments)


if __name__ == "__main__":
    raise SystemExit(main())
