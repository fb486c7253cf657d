"""Export a checkpoint to a bundle ONNX Runtime runs without PyTorch: the machinery every
task shares.

Each task's ``write_bundle`` hook (``seqgen.tasks.<task>.graphs``) describes its graphs as
:class:`GraphSpec` s (the callables its PyTorch adapter calls, with example inputs named after
the state keys and their dynamic axes), writes them with :func:`export_graph` and returns its
manifest entries. This module checks the checkpoint and the exporter, stages the bundle,
quantizes it (``--int8``), writes the manifest and publishes the folder atomically. The bundle
layout and manifest are described in ``seqgen.bundles.reader`` and ``export/README.md``.

PyTorch's LSTM/GRU export traps, as met with torch 2.13 (older versions are refused, see
``MIN_TORCH``):

- the TorchScript exporter (``dynamo=False``) writes LSTM graphs that disagree with the
  model, so the ``torch.export`` based exporter is used: it maps LSTM and GRU layers onto the
  ONNX LSTM/GRU operators, whose sequence length is a true dynamic axis;
- it has no such mapping for plain (tanh) RNNs, whose time axis it freezes: they are exported
  as the GRU that computes the same (``seqgen.layers.cells.tanh_rnn_as_gru``);
- a second export in one process froze the time axis too (see :func:`_forget_rnn_dispatch`);
- where it cannot keep an axis dynamic, it silently makes it static.

So every export is checked: ``onnx.checker``, the dynamic axes, and (float32) a run of both
graphs against PyTorch at other lengths than the example's.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from seqgen.bundles.reader import (
    FORMAT_NAME,
    FORMAT_VERSION,
    INT8_MATMUL,
    MANIFEST_FILE,
    is_bundle,
)
from seqgen.checkpoints import load_checkpoint_pipeline, model_path
from seqgen.decoding.contract import TOP_CANDIDATES
from seqgen.decoding.onnx_session import SELECTED_PREFIX, STEP_OUTPUTS, TOP_K_INPUT
from seqgen.errors import CheckpointError, SeqgenError
from seqgen.layers.cells import with_exportable_cells
from seqgen.task import task_named
from seqgen.text import Tokenizer
from seqgen.version import __version__

OPSET = 18  # the oldest the torch.export based exporter writes; ONNX Runtime >= 1.14 runs it
# torch 2.11 and 2.12 freeze a bidirectional encoder's time axis and write generator graphs
# onnx.checker rejects; 2.13 and 2.14 export every bundle (checked by hand, 2026-12-04).
MIN_TORCH = (2, 13)
EXAMPLE_ROWS, EXAMPLE_TIME = 3, 4  # not 0 or 1, which torch.export would freeze
EXAMPLE_SELECTED_ROWS = 6  # differs from the others, so torch.export keeps the axes apart
PARITY_TOLERANCE = 1e-4
# Step graphs also return each row's TOP_CANDIDATES best log-probs (seqgen.decoding.contract).


def with_top_candidates(log_probs: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``log_probs`` ``(rows, vocab)`` and its ``top_log_probs`` float32 and ``top_ids`` int64,
    ``(rows, min(TOP_CANDIDATES, vocab))``, best first."""
    top = torch.topk(log_probs, min(TOP_CANDIDATES, log_probs.shape[-1]), dim=-1)
    return log_probs, top.values, top.indices


class SelectGraph(nn.Module):
    """``rows`` ``(new_rows,)`` int64 + state -> every state entry's ``rows`` (a gather on
    axis 0, run on the device where the state lives)."""

    def forward(self, rows: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(tensor.index_select(0, rows) for tensor in state)


@dataclass(frozen=True)
class GraphSpec:
    """What to export: a module, example inputs, names, and each input's dynamic axes."""

    module: nn.Module
    inputs: dict[str, torch.Tensor]  # name -> example, in the order ``forward`` takes them
    outputs: list[str]
    dynamic: dict[str, dict[int, str]]  # input name -> {axis: axis name}
    leading: dict[str, list[str]]  # output name -> the axis names it must start with
    # custom operator -> the function that writes it in ONNX (torch.onnx's
    # custom_translation_table; e.g. the translator encoder's LSTM with sequence lengths)
    translations: dict[Any, Callable[..., Any]] = field(default_factory=dict)


def export_bundle(
    checkpoint_path: str | Path,
    output_dir: str | Path,
    *,
    fp16: bool = False,
    int8: bool = False,
) -> Path:
    """Write the bundle of a checkpoint (generator, translator or classifier) to ``output_dir``.

    ``fp16`` stores weights and state in float16 (for GPUs; log-probs stay float32).
    ``int8`` makes the step graph's matrix products int8 (for CPUs, see
    :mod:`seqgen.bundles.quantize`; a translator's ``write_bundle`` does its encoder's); the
    float32 graphs pass the parity check first. The
    bundle is written to a temporary folder and renamed into place, so a failure leaves
    nothing half-written. An existing ``output_dir`` must be empty or a previous bundle,
    which is replaced. CheckpointError for a bad checkpoint or output folder. Returns the
    bundle's folder.
    """
    _check_dependencies()
    if fp16 and int8:
        raise SeqgenError("choose one of --fp16 (for GPUs) and --int8 (for CPUs), not both")
    output = Path(output_dir)
    _check_output(output)
    checkpoint_path = model_path(checkpoint_path)  # a file, a run folder, or a bundled model's name
    if is_bundle(checkpoint_path):
        raise CheckpointError(f"{checkpoint_path} is already an ONNX bundle; pass a checkpoint")
    pipeline = load_checkpoint_pipeline(Path(checkpoint_path), device="cpu")
    task = task_named(pipeline.task)
    model = pipeline.step_function.model
    staging = _staging_folder(output)
    try:
        # A tanh RNN is exported as the GRU that computes it (layers.cells.tanh_rnn_as_gru).
        exported = with_exportable_cells(copy.deepcopy(model)).cpu().eval()
        write = task.hook("write_bundle")
        model_to_write = exported.half() if fp16 else exported
        manifest = write(pipeline, model_to_write, staging, fp16=fp16, int8=int8)
        # The graph run at every step (a classifier's one graph runs once per batch).
        hot = task.graph_files.get("step") or next(iter(task.graph_files.values()))
        # A shortlisted translator's output_rows graph gathers the rows its step multiplies by.
        rows = staging / task.graph_files.get("output_rows", "output_rows.onnx")
        others = [staging / file for file in task.graph_files.values() if file != hot]
        if int8 and not _quantize(staging / hot, rows if rows.is_file() else None, others):
            raise CheckpointError(
                f"{checkpoint_path}: its step graph has no matrix product to make int8"
            )
        if int8:  # the quantizer may change graphs' inputs and outputs (int8 weight rows)
            manifest["graphs"] = _described_anew(staging, manifest["graphs"])
        manifest = {**manifest_header(task.name, fp16=fp16, int8=int8), **manifest}
        (staging / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        _publish(staging, output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return output


def _quantize(graph: Path, output_rows: Path | None, others: list[Path]) -> int:
    from seqgen.bundles.quantize import quantize_graph  # onnx: the export extra

    return quantize_graph(graph, output_rows, [path for path in others if path.is_file()])


def _described_anew(staging: Path, graphs: dict[str, Any]) -> dict[str, Any]:
    """The manifest's ``graphs`` entries with each graph's inputs and outputs read again
    from its file in ``staging``."""
    import onnx

    described = {}
    for name, entry in graphs.items():
        graph = onnx.load(str(staging / entry["file"]), load_external_data=False).graph
        described[name] = {**entry, **_graph_io(graph)}
    return described


def _staging_folder(output: Path) -> Path:
    """A new private folder beside ``output`` to write the bundle into; CheckpointError, in
    one line, where ``output``'s parent cannot be written."""
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_staging(output)
        # The exporting process's id in the name tells a later export whether it is stale.
        prefix = f".{output.name}.pid{os.getpid()}."
        return Path(tempfile.mkdtemp(prefix=prefix, suffix=".tmp", dir=output.parent))
    except OSError as error:
        raise CheckpointError(
            f"cannot write a bundle beside {output} ({error.strerror or error}); "
            "choose another --output"
        ) from None


def remove_stale_staging(output: Path) -> list[Path]:
    """Remove what killed exports to ``output`` left beside it; returns what it removed.

    A staging folder ``.<name>.pid<PID>.<random>.tmp`` is stale once process PID has ended
    (a live one may be another export writing now); a ``.<name>.old-<hex>`` folder is the
    bundle a killed export was replacing, stale once ``output`` holds a bundle again."""
    removed = []
    for staging in output.parent.glob(f".{output.name}.pid*.tmp"):
        pid = staging.name[len(output.name) + 5 :].partition(".")[0]
        if staging.is_dir() and pid.isdigit() and not _process_alive(int(pid)):
            shutil.rmtree(staging, ignore_errors=True)
            removed.append(staging)
    if is_bundle(output):
        for previous in output.parent.glob(f".{output.name}.old-*"):
            shutil.rmtree(previous, ignore_errors=True)
            removed.append(previous)
    return removed


def _process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (a staging folder another machine is
    writing on a shared disk looks stale here: exporting to one folder from two machines
    at once is not supported)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def manifest_header(kind: str, *, fp16: bool, int8: bool = False) -> dict[str, Any]:
    """The manifest entries every bundle starts with (``matmul`` only for an int8 one)."""
    header = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "seqgen_version": __version__,
        "opset": OPSET,
        "precision": "float16" if fp16 else "float32",
    }
    if int8:
        header["matmul"] = INT8_MATMUL
    return header


def select_spec(state: dict[str, torch.Tensor], state_axes: dict[str, dict[int, str]]) -> GraphSpec:
    """The ``select`` graph over example ``state`` with its dynamic axes."""
    selected = [SELECTED_PREFIX + name for name in state]
    return GraphSpec(
        SelectGraph(),
        {"rows": torch.zeros(EXAMPLE_SELECTED_ROWS, dtype=torch.long), **state},
        selected,
        {"rows": {0: "new_rows"}, **state_axes},
        {name: ["new_rows"] for name in selected},
    )


def special_ids(tokenizer: Tokenizer) -> dict[str, int]:
    return {
        "pad": tokenizer.pad_id,
        "unk": tokenizer.unk_id,
        "bos": tokenizer.bos_id,
        "eos": tokenizer.eos_id,
    }


def _check_dependencies() -> None:
    """SeqgenError naming the fix when the exporter's packages are missing or its torch is
    older than :data:`MIN_TORCH`."""
    missing = [name for name in ("onnx", "onnxscript") if importlib.util.find_spec(name) is None]
    if missing:
        raise SeqgenError(f"exporting needs {' and '.join(missing)}: pip install 'seqgen[export]'")
    if torch.torch_version.TorchVersion(torch.__version__) < MIN_TORCH:
        wanted = ".".join(map(str, MIN_TORCH))
        raise SeqgenError(
            f"exporting needs torch {wanted} or newer (this is {torch.__version__}, whose ONNX "
            f"exporter fixes the RNNs' time axis to the example's length); "
            f"pip install 'torch>={wanted}'"
        )


def _check_output(output: Path) -> None:
    """Refuse a file, or a non-empty folder that is not a previous bundle."""
    if output.exists() and not output.is_dir():
        raise CheckpointError(f"{output} is a file; pass a folder for the bundle")
    if output.is_dir() and any(output.iterdir()) and not is_bundle(output):
        raise CheckpointError(
            f"{output} is not empty and holds no seqgen bundle; pass a new or empty folder"
        )


def export_graph(spec: GraphSpec, path: Path) -> dict[str, list[dict]]:
    """Export ``spec`` to ``path`` with its dynamic axes; returns its inputs and outputs as
    the manifest lists them. The checker and the dynamic axes are verified."""
    import onnx  # only exporting needs it (the ``export`` extra)

    from seqgen.bundles.undone_unsqueezes import drop_undone_unsqueezes  # onnx too

    dims: dict[str, torch.export.Dim] = {}
    for axes in spec.dynamic.values():
        for axis_name in axes.values():
            dims.setdefault(axis_name, torch.export.Dim(axis_name, min=1))
    dynamic_shapes = tuple(
        {axis: dims[axis_name] for axis, axis_name in spec.dynamic.get(name, {}).items()}
        for name in spec.inputs
    )
    _forget_rnn_dispatch()
    # Each RNN call caches its kernel too: a second RNN module in one graph (a
    # bidirectional encoder) would be unrolled, so the cache is cleared before every call.
    hooks = [
        module.register_forward_pre_hook(lambda *_: _forget_rnn_dispatch())
        for module in spec.module.modules()
        if isinstance(module, nn.RNNBase)
    ]
    with warnings.catch_warnings(), contextlib.ExitStack() as cleanup:
        for hook in hooks:
            cleanup.callback(hook.remove)
        # The exporter warns about its own internals (deprecations, tracing notes), and logs
        # one line per torchvision operator it cannot register when torchvision is absent.
        warnings.simplefilter("ignore")
        registration = logging.getLogger("torch.onnx._internal.exporter._registration")
        cleanup.callback(registration.setLevel, registration.level)
        registration.setLevel(logging.ERROR)
        torch.onnx.export(
            _Positional(spec.module.eval()),
            tuple(spec.inputs.values()),
            str(path),
            input_names=list(spec.inputs),
            output_names=spec.outputs,
            dynamic_shapes=(dynamic_shapes,),
            opset_version=OPSET,
            dynamo=True,
            custom_translation_table=spec.translations or None,
            external_data=False,
            verbose=False,
        )
    graph = onnx.load(str(path))
    _name_output_axes(graph, spec.leading)
    _top_k_from_input(graph)
    drop_undone_unsqueezes(graph.graph)
    _drop_trace_metadata(graph.graph)
    onnx.save(graph, str(path))
    onnx.checker.check_model(graph, full_check=True)
    described = _graph_io(graph.graph)
    expected = {
        **{name: [axes[a] for a in sorted(axes)] for name, axes in spec.dynamic.items()},
        **spec.leading,
    }
    _check_dynamic_axes(path, described, expected)
    return described


def _name_output_axes(graph: Any, leading: dict[str, list[str]]) -> None:
    """Write the dynamic axes' names into the outputs' declared shapes.

    The exporter sometimes declares an axis with the example's size (the time axis of a
    bidirectional encoder's memory, after its LSTM's reshape) although the graph computes
    it from the inputs. The declarations are only metadata, but ONNX Runtime reports an
    output's shape from the intermediate ones (``value_info``), so those are dropped (ONNX
    Runtime infers what it needs) and the outputs carry the axis names. The parity check
    runs other sizes than the example's to prove the graph itself is dynamic.
    """
    del graph.graph.value_info[:]
    for output in graph.graph.output:
        dims = output.type.tensor_type.shape.dim
        for dim, name in zip(dims, leading.get(output.name, []), strict=False):
            dim.ClearField("dim_value")
            dim.dim_param = name


def _top_k_from_input(graph: Any) -> None:
    """Let a step graph's reader say how many top candidates it wants (bundle format 5).

    The exporter writes ``torch.topk``'s ``K`` (``min(TOP_CANDIDATES, vocab)``) as a constant.
    ONNX Runtime's ``TopK`` costs about linearly in ``K`` (at 64 rows x 348 shortlisted
    tokens 0.066 ms at 16, 0.027 ms at 5), and greedy search reads 5 (the three banned ids,
    EOS and one), beam 5 reads 14: the graph takes ``top_k`` int64 ``(1,)`` and returns
    ``min(top_k, K)`` candidates per row. A graph without ``top_log_probs`` is left alone.
    """
    import onnx

    nodes = list(graph.graph.node)
    found = [
        i
        for i, node in enumerate(nodes)
        if node.op_type == "TopK" and node.output[0] == STEP_OUTPUTS[1]
    ]
    if not found:
        return
    top = nodes[found[0]]
    capped = f"{TOP_K_INPUT}_capped"
    cap = onnx.helper.make_node("Min", [TOP_K_INPUT, top.input[1]], [capped], name="top_k_cap")
    top.input[1] = capped
    del graph.graph.node[:]  # the Min just before the TopK keeps the nodes in order
    graph.graph.node.extend([*nodes[: found[0]], cap, *nodes[found[0] :]])
    graph.graph.input.append(
        onnx.helper.make_tensor_value_info(TOP_K_INPUT, onnx.TensorProto.INT64, [1])
    )
    for output in graph.graph.output:
        if output.name in STEP_OUTPUTS[1:]:
            dim = output.type.tensor_type.shape.dim[1]
            dim.ClearField("dim_value")
            dim.dim_param = TOP_K_INPUT


def _drop_trace_metadata(graph: Any) -> None:
    """Remove the exporter's per-node debugging notes from ``graph`` and its subgraphs.

    torch.onnx records on every node the FX node, module path and Python stack trace that
    produced it: most of a small graph's bytes (172 of the translator encoder's 212 KB),
    absolute paths of the machine that exported it, and a change in the file whenever a
    line of the model's code moves. ONNX Runtime never reads them.
    """
    for node in graph.node:
        del node.metadata_props[:]
        node.ClearField("doc_string")
        for attribute in node.attribute:
            for subgraph in [attribute.g, *attribute.graphs]:
                _drop_trace_metadata(subgraph)


class _Positional(nn.Module):
    """``forward(*inputs)``: one varargs signature, so one ``dynamic_shapes`` layout fits all."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.module(*inputs)


def _forget_rnn_dispatch() -> None:
    """Clear the dispatcher's cache of the LSTM and GRU operators before an export.

    While it exports, torch.onnx registers decompositions of them that keep the time axis
    dynamic; but an operator caches the kernel it dispatched to, and once a first export
    had cached the default one (which unrolls time), the next export in the same process
    froze the time axis to the example's length. The cache is private, hence the getattr.
    """
    for operator in (torch.ops.aten.lstm.input, torch.ops.aten.gru.input):
        cache = getattr(operator, "_dispatch_cache", None)
        if cache is not None:
            cache.clear()


def _graph_io(graph: Any) -> dict[str, list[dict[str, Any]]]:
    """A graph's ``inputs`` and ``outputs`` as the manifest lists them."""
    return {"inputs": _describe(graph.input), "outputs": _describe(graph.output)}


def _describe(values: Any) -> list[dict[str, Any]]:
    """Name, dtype and shape (ints, or names of dynamic axes) of graph inputs or outputs."""
    import onnx

    described = []
    for value in values:
        tensor_type = value.type.tensor_type
        dims = [d.dim_param if d.dim_param else d.dim_value for d in tensor_type.shape.dim]
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)).name
        described.append({"name": value.name, "dtype": dtype, "shape": dims})
    return described


def _check_dynamic_axes(
    path: Path, described: dict[str, list[dict]], expected: dict[str, list[str]]
) -> None:
    """SeqgenError where the exporter froze an axis that must stay dynamic."""
    for value in described["inputs"] + described["outputs"]:
        wanted = expected.get(value["name"], [])
        if value["shape"][: len(wanted)] != wanted:
            raise SeqgenError(
                f"exporting {path.name} froze {value['name']}'s shape to {value['shape']} "
                f"(expected it to start with {wanted}); this torch version's ONNX exporter "
                "is not supported"
            )


def _publish(staging: Path, output: Path) -> None:
    """Rename the finished ``staging`` folder onto ``output``, replacing a previous bundle."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(staging, 0o777 & ~umask)  # mkdtemp made it private (0700)
    if not output.exists():
        os.rename(staging, output)
        return
    previous = output.parent / f".{output.name}.old-{uuid.uuid4().hex[:8]}"
    os.rename(output, previous)
    try:
        os.rename(staging, output)
    except BaseException:
        os.rename(previous, output)
        raise
    shutil.rmtree(previous, ignore_errors=True)
