"""``seqgen.load``: one entry point for checkpoints and ONNX bundles, on either backend, for
every task.

A bundle folder runs on ONNX Runtime and never imports torch; a checkpoint runs on
PyTorch, or with ``backend="onnx"`` is exported once into the cache
(``$SEQGEN_CACHE_DIR`` or ``~/.cache/seqgen``, under ``bundles/``) and run from there. The
task a file holds (its ``kind``) picks the pipeline, through the task registry.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from seqgen.checkpoints import (
    PACKAGED_CHECKPOINT,
    bundled_model_path,
    bundled_models,
    check_task,
    default_bundled_model,
    load_checkpoint_pipeline,
    packaged_bundle,
    task_of_kind,
)
from seqgen.errors import CheckpointError, SeqgenError
from seqgen.recipes import DEFAULT_TASK
from seqgen.task import is_task, task_named

BACKENDS = ("auto", "torch", "onnx")


def load(
    path: str | Path | None = None,
    *,
    kind: str | None = None,
    device: str = "auto",
    backend: str = "auto",
) -> Any:
    """Load a checkpoint (file or run folder) or an exported ONNX bundle folder: the
    pipeline of its task (a ``Generator``, a ``Translator``).

    ``path`` may name a bundled model instead (``"sentiment"``, ``"spam"``,
    ``"shakespeare-char"``, ``"multi30k-de-en"``); without a path, the bundled model of task
    ``kind`` (default: the generator). A bundled model runs on ONNX Runtime, without
    importing torch, unless ``backend="torch"`` asks for its checkpoint. With
    ``kind``, a model of another task is refused with a message naming the right command.
    ``backend``: ``auto`` (ONNX Runtime for a bundle, PyTorch for a checkpoint), ``torch``
    or ``onnx``.
    """
    from seqgen.bundles.reader import MANIFEST_FILE, bundle_kind, load_bundle, read_manifest

    if backend not in BACKENDS:
        raise SeqgenError(f"unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
    if isinstance(path, list | tuple):
        raise SeqgenError(
            "seqgen.load takes one model; for an ensemble of translators: load_ensemble(paths) "
            "from seqgen.tasks.translation.ensemble (seqgen translate --model A --model B)"
        )
    expected = task_of_kind(kind)
    # A bundled model is both a bundle and the checkpoint its graphs read: ONNX Runtime
    # (no torch) unless PyTorch is asked for. The default one is never a folder of the
    # working directory that happens to share its name.
    default = path is None
    folder = bundled_models()[default_bundled_model(kind or DEFAULT_TASK)] if default else None
    folder = folder or packaged_bundle(path)  # type: ignore[arg-type]
    if folder is None:
        path = Path(path)  # type: ignore[arg-type]
    elif backend == "torch" or bundle_kind(folder) is None:
        path = folder / PACKAGED_CHECKPOINT
    else:
        path = folder
    found = bundle_kind(path)
    if found is None and (Path(path) / MANIFEST_FILE).is_file():
        read_manifest(Path(path))  # a damaged manifest: the one-line error that names it
    if found is not None:
        if backend == "torch":
            raise CheckpointError(
                f"{path} is an ONNX bundle, which runs on ONNX Runtime only; use "
                "--backend onnx, or pass the checkpoint it was exported from"
            )
        if is_task(found):
            check_task(path, task_named(found), expected)
        return load_bundle(path, device=device)  # type: ignore[arg-type]
    checkpoint = Path(path)
    if backend != "onnx":
        return load_checkpoint_pipeline(checkpoint, kind=kind, device=device)
    return load_bundle(exported_bundle(checkpoint, kind=kind), device=device)


def exported_bundle(checkpoint: Path, *, kind: str | None = None, int8: bool = False) -> Path:
    """The bundle of ``checkpoint`` in the cache (its ``int8`` one), exported on first use;
    a new export replaces the checkpoint's older ones (other code, format or file)."""
    from seqgen.bundles.export import export_bundle
    from seqgen.bundles.reader import FORMAT_VERSION, bundle_kind
    from seqgen.training.checkpoint import resolve_checkpoint_path

    file = resolve_checkpoint_path(checkpoint)
    status = file.stat()
    # The format and the code too: after an upgrade, or in another checkout, the checkpoint
    # is exported anew by this seqgen (an older format may load slower or be refused, older
    # graphs run slower), never read stale; `seqgen bench` times this code's graphs.
    version = f"{status.st_size}:{status.st_mtime_ns}:{FORMAT_VERSION}:{source_fingerprint()}"
    suffix = "-int8" if int8 else ""
    cache = Path(os.environ.get("SEQGEN_CACHE_DIR") or Path.home() / ".cache" / "seqgen")
    # One folder name per checkpoint file, then per version of it and of seqgen.
    stem = f"{file.stem}-{_digest(str(file.resolve()), 8)}-"
    bundle = cache / "bundles" / f"{stem}{_digest(version, 16)}{suffix}"
    if not bundle.is_dir() or bundle_kind(bundle) is None:
        load_checkpoint_pipeline(file, kind=kind, device="cpu")  # the kind check, first
        export_bundle(file, bundle, int8=int8)
        _remove_older_exports(bundle, (stem, f"{file.stem}-"), suffix)
    return bundle


def _digest(text: str, digits: int) -> str:
    import hashlib  # here: a one-line call on a bundle never needs it

    return hashlib.sha256(text.encode()).hexdigest()[:digits]


def _remove_older_exports(bundle: Path, stems: tuple[str, str], suffix: str) -> None:
    """Delete the cache's other exports of ``bundle``'s checkpoint (named by ``stems[0]``
    + a version + ``suffix``): after each upgrade or retraining they would pile up (tens of
    MB each). ``stems[1]``: the file's stem alone, how seqgen before the path digest named
    its exports; this seqgen never reads those, so they go too, whichever file they were
    of. Another process reading one keeps its open files (POSIX); it loads no more."""
    import re
    import shutil

    version = "[0-9a-f]{16}" + re.escape(suffix)
    patterns = [re.compile(re.escape(stem) + version) for stem in stems]
    for folder in bundle.parent.iterdir():
        if folder != bundle and any(pattern.fullmatch(folder.name) for pattern in patterns):
            shutil.rmtree(folder, ignore_errors=True)


@functools.cache
def source_fingerprint() -> str:
    """A digest of this seqgen's Python sources (:func:`tree_fingerprint` of the package, about
    0.9 MB; once per process, on the path that exports a checkpoint, never a bundle's)."""
    return tree_fingerprint(Path(__file__).resolve().parent)


def tree_fingerprint(root: Path) -> str:
    """16 hex digits of SHA-256 over the ``*.py`` files under ``root``: names and bytes."""
    import hashlib

    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def load_as_one(paths: Sequence[str], *, device: str = "auto", backend: str = "auto") -> Any:
    """The pipeline of one model (:func:`load`; no path: the default bundled model), or of
    several decoding as one through their task's ``ensemble`` hook (translators: the
    members' log-probabilities averaged at every step); SeqgenError for a task without one."""
    if len(paths) < 2:
        return load(paths[0] if paths else None, device=device, backend=backend)
    pipelines = [load(path, device=device, backend=backend) for path in paths]
    task = task_named(pipelines[0].task)
    if "ensemble" not in task.hooks:
        raise SeqgenError(f"{paths[0]} is a {task.title}; only translators decode as an ensemble")
    return task.hook("ensemble")(pipelines, list(paths))


__all__ = [
    "BACKENDS",
    "bundled_model_path",
    "exported_bundle",
    "load",
    "load_as_one",
    "load_checkpoint_pipeline",
]
