"""Open an exported bundle with ONNX Runtime: read and check its manifest, hand it to its task.

A bundle is a folder written by ``seqgen.bundles.export``; ``export/README.md`` is its full
contract. Its manifest's ``kind`` names the task (``seqgen.tasks``), whose ``from_bundle``
hook builds the pipeline. A generator bundle::

    manifest.json    format name and version, kind, seqgen version, opset, precision,
                     "matmul": "int8" for int8 products (seqgen.bundles.quantize), each
                     graph's inputs and outputs (name, dtype, shape with symbolic axes
                     such as "rows" and "time"), state names, special token ids,
                     generation defaults and the ids generation bans
    prime.onnx       token_ids (rows, time) int64 + state -> new_<state>
    step.onnx        tokens (rows,) int64 + state (+ top_k (1,) int64, format 5) ->
                     log_probs (rows, vocab) float32, top_log_probs and top_ids
                     (rows, min(top_k, 16, vocab)), new_<state>
    select.onnx      rows (new_rows,) int64 + state -> selected_<state> (for GPUs)
    tokenizer.json   the tokenizer's to_dict()

A translator bundle::

    manifest.json    as above, with the recipe (decoding defaults, source length limit)
    encoder.onnx     source_ids (rows, source_len) int64 + source_lengths (rows,) int64
                     -> the first decoder state
    step.onnx        tokens (rows,) int64 + state -> log_probs, top_log_probs, top_ids
                     as above + new_<recurrent state>
    select.onnx      rows (new_rows,) int64 + state -> selected_<state> (for GPUs)
    source_tokenizer.json, target_tokenizer.json   the tokenizers' to_dict()
    source.model, target.model   the raw sentencepiece models, for other languages' ports
    tokenizer.json, tokenizer.model   instead, for a joint vocabulary: stored once, and
                     both ``tokenizers`` entries name them (older bundles: two copies)

This module, the ONNX Runtime adapters (each task's ``onnx_step``), the search, the
pipelines and the tokenizers import numpy, onnxruntime and sentencepiece only, so other apps
can run a bundle without PyTorch installed.

>>> generator = load_bundle("shakespeare-bundle")
>>> print(generator.generate("ROMEO:", max_new_tokens=100, seed=1)[0])
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnxruntime

from seqgen.config import parse_json
from seqgen.errors import CheckpointError, SeqgenError
from seqgen.task import is_task, registered_tasks, task_named

FORMAT_NAME = "seqgen-bundle"
FORMAT_VERSION = 7
# Format 2 changed the translator's graphs (the source side once per sentence, not per row),
# format 3 its shortlisted step (each row scored over its sentence's shortlist columns,
# ``output_columns``, not a mask over the batch's union), and format 4 took the shortlist's
# output-layer rows out of the step graph into an ``output_rows`` graph run once per batch;
# a graph cannot be migrated without its checkpoint, so older translator bundles are
# refused. Generator and classifier graphs did not change: their older bundles still load.
# Format 5 gave step graphs a ``top_k`` input (how many candidates per row they return); a
# format 4 step returns its fixed 16 and still loads. Format 6 lets a shortlisted translator's
# step score each group of sentences against its own shortlists' union (two more inputs,
# ``output_group_rows`` and ``output_row_offsets``; float32 exports); format 4 and 5 steps
# score the batch's union and still load. Format 7 groups int8 steps too: their output_rows
# graph takes the groups' unions ``(G, U)`` and gives each group's int8 rows ``(G, k, U)``,
# which a format 6 reader would feed ``(M,)``; float32 graphs are as in format 6.
MIN_FORMAT_VERSION = {"translation": 4}
MANIFEST_FILE = "manifest.json"
# manifest["matmul"] of a bundle whose step graph multiplies in int8 (seqgen.bundles.quantize)
INT8_MATMUL = "int8"
ONNX_TYPE_NAMES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(int64)": "int64",
    "tensor(int8)": "int8",
    "tensor(bool)": "bool",
}
EXPORT_HINT = "export one with: seqgen export --model CHECKPOINT --output DIR"
# The keys under which a manifest entry names a file of the bundle.
FILE_KEYS = ("file", "sentencepiece_model")


def load_bundle(
    path: str | Path,
    *,
    device: str = "auto",
    threads: int | None = None,
    io_binding: bool | None = None,
) -> Any:
    """Open a bundle folder as its task's pipeline on ``device`` (``auto``: CUDA when usable,
    else the CPU; an int8 bundle runs on the CPU).

    ``threads``: a generator's ONNX Runtime CPU threads per operator (None: one per core);
    for a translator on the CPU, how many batches decode at once, each operator on one
    thread (None: one per core; see ``OnnxTranslatorStep.from_files``).
    ``io_binding`` keeps the state in ONNX Runtime's memory between steps (None: on CUDA
    only).

    Raises CheckpointError, in one line naming the problem, for a folder that is not a
    bundle, a missing or unreadable file, a newer format version, or graphs whose inputs
    and outputs are not those the manifest lists.
    """
    folder = Path(path)
    manifest = read_manifest(folder)
    device = _device_for(folder, manifest, device)
    from_bundle = task_named(manifest["kind"]).hook("from_bundle")
    return from_bundle(folder, manifest, device=device, threads=threads, io_binding=io_binding)


def _device_for(folder: Path, manifest: dict[str, Any], device: str) -> str:
    """``device``, or the CPU for an int8 bundle: ONNX Runtime's int8 products
    (``DynamicQuantizeMatMul``) have CPU kernels only."""
    matmul = manifest.get("matmul")  # absent: float products
    if matmul is None:
        return device
    if matmul != INT8_MATMUL:
        raise CheckpointError(
            f"{folder / MANIFEST_FILE} asks for {matmul!r} matrix products, which this seqgen "
            "does not know; upgrade seqgen or re-export the bundle"
        )
    if device == "cuda":
        raise SeqgenError(
            f"{folder} is an int8 bundle, which runs on the CPU; use --device cpu, or export "
            "without --int8 (--fp16 for GPUs)"
        )
    return "cpu"


def open_step_function(
    step_type: Any, folder: Path, manifest: dict[str, Any], files: dict[str, str], **runtime: Any
) -> Any:
    """A task's ONNX Runtime step function (``step_type.from_files``) on the bundle's graphs,
    with ``runtime`` (device, threads, io_binding), checked against the manifest."""
    step_function = step_type.from_files(folder, files, **runtime)
    check_graphs(folder, files, step_function.sessions, manifest)
    return step_function


def check_graphs(
    folder: Path,
    files: dict[str, str],
    sessions: dict[str, onnxruntime.InferenceSession | None],
    manifest: dict[str, Any],
) -> None:
    """CheckpointError where an open graph's inputs or outputs are not the manifest's."""
    for name, session in sessions.items():
        if session is not None:
            check_graph(folder / files[name], session, manifest["graphs"][name])


def is_bundle(path: str | Path) -> bool:
    """True when ``path`` is a folder with a seqgen bundle manifest (of any version)."""
    return bundle_kind(path) is not None


def bundle_kind(path: str | Path) -> str | None:
    """The ``kind`` a bundle's manifest states (``""`` if none), or None for no bundle."""
    try:
        manifest = parse_json((Path(path) / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):  # a JSONLimitError too: read_manifest names it
        return None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        return None
    return str(manifest.get("kind", ""))


def read_manifest(folder: Path) -> dict[str, Any]:
    """The manifest of a bundle folder, checked: format, version, kind, and files present,
    each a plain name inside the folder (a bundle never reads outside it)."""
    if not (folder / MANIFEST_FILE).is_file():
        what = "no such folder" if not folder.exists() else f"no {MANIFEST_FILE}"
        raise CheckpointError(f"{folder} is not a seqgen bundle ({what}); {EXPORT_HINT}")
    check_inside(folder, MANIFEST_FILE, folder / MANIFEST_FILE)
    manifest = read_json(folder / MANIFEST_FILE)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise CheckpointError(
            f"{folder / MANIFEST_FILE} is not a seqgen bundle manifest "
            f"(no format {FORMAT_NAME!r}); {EXPORT_HINT}"
        )
    version = manifest.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise CheckpointError(f"{folder} has a damaged format_version {version!r}; re-export it")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{folder} has bundle format {version}, newer than this seqgen reads "
            f"({FORMAT_VERSION}); upgrade seqgen"
        )
    kind = manifest.get("kind")
    if not is_task(kind):
        known = ", ".join(registered_tasks())
        raise CheckpointError(f"{folder} holds a {kind!r} bundle; this seqgen runs {known} bundles")
    if version < MIN_FORMAT_VERSION.get(kind, 1):
        raise CheckpointError(
            f"{folder} is a {kind} bundle of format {version}, older than this seqgen reads "
            f"({MIN_FORMAT_VERSION[kind]}); re-export it with this seqgen"
        )
    task = task_named(kind)
    graphs = manifest.get("graphs")
    required = [name for name in task.graph_files if name not in task.optional_graphs]
    if not isinstance(graphs, dict) or not set(required) <= set(graphs) <= set(task.graph_files):
        optional = f" (and may list {', '.join(task.optional_graphs)})" * bool(task.optional_graphs)
        raise CheckpointError(
            f"{folder / MANIFEST_FILE} is damaged: it must list the graphs "
            f"{', '.join(required)}{optional}; re-export the bundle"
        )
    _check_files(folder, manifest, task)
    return manifest


def _check_files(folder: Path, manifest: dict[str, Any], task: Any) -> None:
    """CheckpointError unless every file the manifest names is a plain name inside the
    bundle and every file the task reads is there (and no link out of the folder)."""
    listed = listed_files(manifest)
    for field, name in listed.items():
        check_plain_name(folder, field, name)
    required = {f"graphs.{graph}.file": file for graph, file in graph_files(manifest).items()}
    # The tokenizer files the manifest names (a hand-written one may name none: the usual).
    named = {k: v for k, v in listed.items() if k.startswith("tokenizer") and k.endswith(".file")}
    required.update(named or {name: name for name in task.tokenizer_files})
    required.update({k: v for k, v in listed.items() if k.startswith("weights.")})
    for field, name in {**listed, **required}.items():
        path = folder / name
        if field in required and not path.is_file():
            raise CheckpointError(f"{folder} is missing {name}; re-export the bundle")
        check_inside(folder, field, path)
    # A graph may name external data files the manifest does not list: ONNX Runtime refuses
    # names that leave the folder, and no file in it may be a link that does.
    for path in folder.iterdir():
        check_inside(folder, path.name, path)


def listed_files(manifest: dict[str, Any]) -> dict[str, Any]:
    """Every file name the manifest states, by its field (``graphs.step.file``,
    ``tokenizers.source.sentencepiece_model``, ``shortlist.file``, ...)."""
    entries: dict[str, Any] = {}
    for name, entry in manifest["graphs"].items():
        entries[f"graphs.{name}"] = entry
    entries["tokenizer"] = manifest.get("tokenizer")
    tokenizers = manifest.get("tokenizers")
    for side, entry in tokenizers.items() if isinstance(tokenizers, dict) else ():
        entries[f"tokenizers.{side}"] = entry
    entries["shortlist"] = manifest.get("shortlist")
    # The checkpoint whose tensors the graphs read as external data (a bundled model's
    # folder, seqgen.bundles.packing).
    entries["weights"] = manifest.get("weights")
    listed = {}
    for where, entry in entries.items():
        for key in FILE_KEYS:
            if isinstance(entry, dict) and key in entry:
                listed[f"{where}.{key}"] = entry[key]
    return listed


def graph_files(manifest: dict[str, Any]) -> dict[str, str]:
    """Graph name -> its file, as the manifest names it (the task's usual name where the
    manifest names none), for the graphs it lists (an optional graph it leaves out is not
    there); :func:`read_manifest` has checked each is a plain name."""
    task = task_named(manifest["kind"])
    graphs = manifest["graphs"]
    return {
        name: graphs[name]["file"]
        if isinstance(graphs.get(name), dict) and "file" in graphs[name]
        else default
        for name, default in task.graph_files.items()
        if name in graphs or name not in task.optional_graphs
    }


def tokenizer_file(manifest: dict[str, Any], default: str, side: str | None = None) -> str:
    """The file of the bundle's tokenizer (of ``side``, for a task with several), as the
    manifest names it, else ``default``; :func:`read_manifest` has checked the name."""
    entry = manifest.get("tokenizer") if side is None else manifest.get("tokenizers")
    if side is not None and isinstance(entry, dict):
        entry = entry.get(side)
    return entry["file"] if isinstance(entry, dict) and "file" in entry else default


def bundle_file(folder: Path, name: Any, field: str) -> Path:
    """``folder / name`` for a file name read from the manifest's ``field``, checked to be
    a plain name of a file inside the bundle (CheckpointError otherwise)."""
    check_plain_name(folder, field, name)
    path = folder / name
    check_inside(folder, field, path)
    return path


def check_plain_name(folder: Path, field: str, name: Any) -> None:
    """CheckpointError unless ``name`` is a plain file name: a bundle never reads outside
    its folder, so no separators, no ``..``, no absolute path (the JavaScript runtime
    follows these names too)."""
    plain = (
        isinstance(name, str)
        and name not in ("", ".", "..")
        and not any(mark in name for mark in ("/", "\\", "\0", ":"))
    )
    if not plain:
        raise CheckpointError(
            f"{folder / MANIFEST_FILE}: {field} = {name!r} is not a plain file name inside "
            "the bundle (a bundle reads only its own folder); re-export the bundle"
        )


def check_inside(folder: Path, field: str, path: Path) -> None:
    """CheckpointError where ``path`` is a link that leads out of ``folder``."""
    try:
        inside = path.resolve().is_relative_to(folder.resolve())
    except (OSError, RuntimeError):  # a link loop
        inside = False
    if not inside:
        raise CheckpointError(
            f"{path} ({field}) is a link that leads outside the bundle, which a bundle "
            "never reads; copy the file into the bundle folder or re-export it"
        )


def check_graph(path: Path, session: onnxruntime.InferenceSession, listed: Any) -> None:
    """CheckpointError unless the session's inputs and outputs are those the manifest lists."""
    found = {"inputs": session.get_inputs(), "outputs": session.get_outputs()}
    for side, nodes in found.items():
        actual = [_describe(n.name, ONNX_TYPE_NAMES.get(n.type, n.type), n.shape) for n in nodes]
        try:
            expected = [_describe(e["name"], e["dtype"], e["shape"]) for e in listed[side]]
        except (KeyError, TypeError):
            raise CheckpointError(
                f"the manifest's entry for {path.name} is damaged (no {side}); re-export the bundle"
            ) from None
        if actual != expected:
            raise CheckpointError(
                f"{path} does not match the manifest: its {side} are {', '.join(actual)}, "
                f"the manifest lists {', '.join(expected)}; re-export the bundle"
            )


def _describe(name: str, dtype: str, shape: Any) -> str:
    """``name:dtype[dim,...]``, e.g. ``tokens:int64[rows]``."""
    return f"{name}:{dtype}[{','.join(str(d) for d in shape)}]"


def read_json(path: Path) -> Any:
    """A bundle's JSON file, nested no deeper than config.MAX_JSON_DEPTH; CheckpointError,
    in one line, for a missing, unreadable or damaged one."""
    try:
        return parse_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(
            f"{path.parent} is missing {path.name}; re-export the bundle"
        ) from None
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{path} is not readable JSON ({error}); re-export it") from None
