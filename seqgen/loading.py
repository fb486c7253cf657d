"""``seqgen.load``: one entry point for checkpoints and ONNX bundles, on either backend.

A bundle folder runs on ONNX Runtime and never imports torch; a checkpoint runs on
PyTorch, or with ``backend="onnx"`` is exported once into the cache
(``$SEQGEN_CACHE_DIR`` or ``~/.cache/seqgen``, under ``bundles/``) and run from there.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from seqgen.errors import CheckpointError, SeqgenError

if TYPE_CHECKING:
    from seqgen.bundle import BundleGenerator
    from seqgen.pipelines import TextGenerator
    from seqgen.translation import Translator

BACKENDS = ("auto", "torch", "onnx")
KIND_NAMES = {"language_model": "language model (generator)", "translation": "translation model"}
COMMANDS = {"language_model": "seqgen generate", "translation": "seqgen translate"}


def load(
    path: str | Path | None = None,
    *,
    kind: str | None = None,
    device: str = "auto",
    backend: str = "auto",
) -> TextGenerator | Translator | BundleGenerator:
    """Load a checkpoint (file or run folder) or an exported ONNX bundle folder.

    Without a path, the bundled model of ``kind`` (default: the generator). With ``kind``,
    a model of another kind is refused with a message naming the right command.
    ``backend``: ``auto`` (ONNX Runtime for a bundle, PyTorch for a checkpoint), ``torch``
    or ``onnx``.
    """
    from seqgen.bundle import bundle_kind, load_bundle

    if backend not in BACKENDS:
        raise SeqgenError(f"unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
    found = bundle_kind(path) if path is not None else None
    if found is not None:
        if backend == "torch":
            raise CheckpointError(
                f"{path} is an ONNX bundle, which runs on ONNX Runtime only; use "
                "--backend onnx, or pass the checkpoint it was exported from"
            )
        _check_kind(path, found, kind)
        return load_bundle(path, device=device)  # type: ignore[arg-type]
    from seqgen.pipelines import bundled_model_path, load_checkpoint_pipeline

    checkpoint = bundled_model_path(kind or "language_model") if path is None else Path(path)
    if backend != "onnx":
        return load_checkpoint_pipeline(checkpoint, kind=kind, device=device)
    bundle = exported_bundle(checkpoint, kind=kind)
    return load_bundle(bundle, device=device)


def exported_bundle(checkpoint: Path, *, kind: str | None = None) -> Path:
    """The bundle of ``checkpoint`` in the cache, exported on first use."""
    from seqgen.onnx_export import export_bundle
    from seqgen.pipelines import load_checkpoint_pipeline
    from seqgen.training.checkpoint import resolve_checkpoint_path

    file = resolve_checkpoint_path(checkpoint)
    status = file.stat()
    key = f"{file.resolve()}:{status.st_size}:{status.st_mtime_ns}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    cache = Path(os.environ.get("SEQGEN_CACHE_DIR") or Path.home() / ".cache" / "seqgen")
    bundle = cache / "bundles" / f"{file.stem}-{digest}"
    if bundle_kind_of(bundle) is None:
        load_checkpoint_pipeline(file, kind=kind, device="cpu")  # the kind check, first
        export_bundle(file, bundle)
    return bundle


def bundle_kind_of(folder: Path) -> str | None:
    from seqgen.bundle import bundle_kind

    return bundle_kind(folder) if folder.is_dir() else None


def _check_kind(path: Any, found: str, kind: str | None) -> None:
    if kind is not None and found in KIND_NAMES and found != kind:
        raise CheckpointError(
            f"{path} is a {KIND_NAMES[found]} bundle, not a {KIND_NAMES[kind]}; "
            f"use {COMMANDS[found]} with it"
        )
