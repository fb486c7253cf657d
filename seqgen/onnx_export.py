"""Export a language model checkpoint to a bundle ONNX Runtime runs without PyTorch.

The graphs are exactly the callables the PyTorch adapter (``LanguageModelStep``) calls:
``prime`` is ``start``'s ``model(token_ids, state)`` for one group of equal-length prompts,
and ``step`` is ``step``'s ``model(tokens[:, None], state)`` followed by the log-softmax.
Inputs are named after the state keys and outputs ``new_<key>``; rows and the prompt's time
axis are dynamic. The bundle layout and manifest are described in ``seqgen.bundle``.

PyTorch's LSTM/GRU export traps, as met with torch 2.13:

- the TorchScript exporter (``dynamo=False``) writes LSTM graphs that disagree with the
  model, so the ``torch.export`` based exporter is used: it maps LSTM and GRU layers onto the
  ONNX LSTM/GRU operators, whose sequence length is a true dynamic axis;
- it has no such mapping for plain (tanh) RNNs, whose time axis it freezes: they are refused;
- a second export in one process froze the time axis too (see :func:`_forget_rnn_dispatch`);
- where it cannot keep an axis dynamic, it silently makes it static.

So every export is checked: ``onnx.checker``, the dynamic axes, and (float32) a run of both
graphs against PyTorch at other lengths than the example's.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import shutil
import tempfile
import uuid
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import seqgen
from seqgen.bundle import (
    FORMAT_NAME,
    FORMAT_VERSION,
    GRAPH_FILES,
    MANIFEST_FILE,
    TOKENIZER_FILE,
    is_bundle,
)
from seqgen.decoding.onnx_step import NEW_PREFIX, OnnxLanguageModelStep
from seqgen.errors import CheckpointError, SeqgenError
from seqgen.generation import banned_token_ids, default_options_dict
from seqgen.models.language_model import LanguageModel
from seqgen.pipelines import TextGenerator, load

OPSET = 18  # the oldest the torch.export based exporter writes; ONNX Runtime >= 1.14 runs it
EXAMPLE_ROWS, EXAMPLE_TIME = 3, 4  # not 0 or 1, which torch.export would freeze
PARITY_TOLERANCE = 1e-4
EXPORTABLE_CELLS = ("lstm", "gru")


class PrimeGraph(nn.Module):
    """``token_ids`` ``(rows, time)`` int64 + state -> the state after them."""

    def __init__(self, model: LanguageModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, token_ids: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        names = self.model.state_names
        _, new_state = self.model(token_ids, dict(zip(names, state, strict=True)))
        return tuple(new_state[name] for name in names)


class StepGraph(nn.Module):
    """``tokens`` ``(rows,)`` int64 + state -> ``log_probs`` ``(rows, vocab)`` float32 + state."""

    def __init__(self, model: LanguageModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, tokens: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        names = self.model.state_names
        logits, new_state = self.model(tokens.unsqueeze(1), dict(zip(names, state, strict=True)))
        # As LanguageModelStep.step: log-softmax in float32, also for a float16 model.
        log_probs = torch.log_softmax(logits[:, 0].float(), dim=-1)
        return (log_probs, *(new_state[name] for name in names))


def export_bundle(
    checkpoint_path: str | Path, output_dir: str | Path, *, fp16: bool = False
) -> Path:
    """Write the bundle of a language model checkpoint to ``output_dir``; returns it.

    ``fp16`` stores weights and state in float16 (for GPUs; log-probs stay float32). The
    bundle is written to a temporary folder and renamed into place, so a failure leaves
    nothing half-written. An existing ``output_dir`` must be empty or a previous bundle,
    which is replaced. CheckpointError for a bad checkpoint or output folder.
    """
    _check_dependencies()
    output = Path(output_dir)
    _check_output(output)
    generator = _load_generator(Path(checkpoint_path))
    if generator.model.config.cell not in EXPORTABLE_CELLS:
        raise CheckpointError(
            f"{checkpoint_path} is a plain RNN (cell {generator.model.config.cell!r}), which "
            "cannot be exported yet: PyTorch's ONNX exporter fixes its prompt length; "
            f"train with cell {' or '.join(EXPORTABLE_CELLS)}"
        )
    model = copy.deepcopy(generator.model).cpu().eval()
    if fp16:
        model = model.half()
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", suffix=".tmp", dir=output.parent))
    try:
        graphs = {
            "prime": _export_graph(PrimeGraph(model), staging / GRAPH_FILES["prime"]),
            "step": _export_graph(StepGraph(model), staging / GRAPH_FILES["step"]),
        }
        if not fp16:
            _check_parity(generator.model, staging)
        tokenizer = generator.tokenizer.to_dict()
        (staging / TOKENIZER_FILE).write_text(json.dumps(tokenizer), encoding="utf-8")
        manifest = _manifest(generator, model, graphs, fp16=fp16)
        (staging / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        _publish(staging, output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return output


def _check_dependencies() -> None:
    """SeqgenError naming the fix when the exporter's packages are missing."""
    missing = [name for name in ("onnx", "onnxscript") if importlib.util.find_spec(name) is None]
    if missing:
        raise SeqgenError(f"exporting needs {' and '.join(missing)}: pip install 'seqgen[export]'")


def _load_generator(path: Path) -> TextGenerator:
    """The checkpoint as a ``TextGenerator`` on the CPU; CheckpointError for a translator."""
    generator = load(path, device="cpu")
    if not isinstance(generator, TextGenerator):
        raise CheckpointError(
            f"{path} is a translation model; exporting translation models is not supported yet"
        )
    return generator


def _check_output(output: Path) -> None:
    """Refuse a file, or a non-empty folder that is not a previous bundle."""
    if output.exists() and not output.is_dir():
        raise CheckpointError(f"{output} is a file; pass a folder for the bundle")
    if output.is_dir() and any(output.iterdir()) and not is_bundle(output):
        raise CheckpointError(
            f"{output} is not empty and holds no seqgen bundle; pass a new or empty folder"
        )


def _export_graph(module: PrimeGraph | StepGraph, path: Path) -> dict[str, list[dict]]:
    """Export ``module`` to ``path`` with dynamic rows (and time); returns its inputs and
    outputs as the manifest lists them. The checker and the dynamic axes are verified."""
    import onnx  # only exporting needs it (the ``export`` extra)

    model = module.model
    dtype = next(model.parameters()).dtype
    state = [
        torch.zeros(EXAMPLE_ROWS, model.config.num_layers, model.config.hidden_size, dtype=dtype)
        for _ in model.state_names
    ]
    rows = torch.export.Dim("rows", min=1)
    if isinstance(module, PrimeGraph):
        tokens = torch.zeros(EXAMPLE_ROWS, EXAMPLE_TIME, dtype=torch.long)
        first = ("token_ids", {0: rows, 1: torch.export.Dim("time", min=1)})
        outputs = []
    else:
        tokens = torch.zeros(EXAMPLE_ROWS, dtype=torch.long)
        first = ("tokens", {0: rows})
        outputs = ["log_probs"]
    outputs += [NEW_PREFIX + name for name in model.state_names]
    _forget_rnn_dispatch()
    with warnings.catch_warnings():
        # The exporter warns about its own internals (deprecations, tracing notes).
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module.eval(),
            (tokens, *state),
            str(path),
            input_names=[first[0], *model.state_names],
            output_names=outputs,
            dynamic_shapes=(first[1], tuple({0: rows} for _ in state)),
            opset_version=OPSET,
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    graph = onnx.load(str(path))
    onnx.checker.check_model(graph, full_check=True)
    described = {"inputs": _describe(graph.graph.input), "outputs": _describe(graph.graph.output)}
    _check_dynamic_axes(path, described)
    return described


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


def _check_dynamic_axes(path: Path, described: dict[str, list[dict]]) -> None:
    """SeqgenError where the exporter froze rows (or the prompt's time axis) to the example."""
    for value in described["inputs"] + described["outputs"]:
        wanted = ["rows", "time"] if value["name"] == "token_ids" else ["rows"]
        if value["shape"][: len(wanted)] != wanted:
            raise SeqgenError(
                f"exporting {path.name} froze {value['name']}'s shape to {value['shape']} "
                f"(expected it to start with {wanted}); this torch version's ONNX exporter "
                "is not supported"
            )


def _check_parity(model: LanguageModel, folder: Path) -> None:
    """Run both graphs on two shapes and compare with PyTorch; SeqgenError if they disagree.

    The prompt lengths differ from the example's, which catches a frozen time axis that
    the shapes alone would not show.
    """
    onnx_step = OnnxLanguageModelStep.from_files(
        folder / GRAPH_FILES["prime"], folder / GRAPH_FILES["step"], device="cpu", threads=1
    )
    generator = torch.Generator().manual_seed(0)
    worst = 0.0
    for rows, time in ((1, 1), (EXAMPLE_ROWS + 2, EXAMPLE_TIME + 3)):
        token_ids = torch.randint(0, model.vocab_size, (rows, time), generator=generator)
        with torch.inference_mode():
            _, state = model(token_ids[:, :-1]) if time > 1 else (None, model.initial_state(rows))
            logits, new_state = model(token_ids[:, -1:], state)
            expected = [torch.log_softmax(logits[:, 0], -1), *new_state.values()]
        primed = onnx_step.initial_state(rows)
        if time > 1:
            primed = onnx_step.prime(token_ids[:, :-1].numpy(), primed)
        log_probs, stepped = onnx_step.step(token_ids[:, -1].numpy(), primed)
        for got, want in zip([log_probs, *stepped.values()], expected, strict=True):
            worst = max(worst, float(np.abs(got - want.numpy()).max()))
    if worst > PARITY_TOLERANCE:
        raise SeqgenError(
            f"the exported graphs disagree with PyTorch (max difference {worst:.2g} > "
            f"{PARITY_TOLERANCE}); this torch version's ONNX exporter is not supported"
        )


def _manifest(
    generator: TextGenerator, model: LanguageModel, graphs: dict[str, Any], *, fp16: bool
) -> dict[str, Any]:
    """The bundle's self-description; ``seqgen.bundle`` reads and checks it."""
    tokenizer = generator.tokenizer
    config = model.config
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "kind": "language_model",
        "seqgen_version": seqgen.__version__,
        "opset": OPSET,
        "precision": "float16" if fp16 else "float32",
        "model": {
            "cell": config.cell,
            "num_layers": config.num_layers,
            "hidden_size": config.hidden_size,
            "vocab_size": model.vocab_size,
        },
        "state": {
            "names": list(model.state_names),
            "shape": ["rows", config.num_layers, config.hidden_size],
            "dtype": "float16" if fp16 else "float32",
        },
        "graphs": {
            name: {"file": GRAPH_FILES[name], **described} for name, described in graphs.items()
        },
        "tokenizer": {"file": TOKENIZER_FILE, "kind": tokenizer.kind},
        "special_ids": {
            "pad": tokenizer.pad_id,
            "unk": tokenizer.unk_id,
            "bos": tokenizer.bos_id,
            "eos": tokenizer.eos_id,
        },
        "generation": {
            "defaults": default_options_dict(),
            "prompt_starts_with": "bos",
            "banned_token_ids": list(banned_token_ids(tokenizer)),
            "eos_id": None,  # generated text ends at max_new_tokens, never at EOS
        },
        "training_info": generator.info,
    }


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
