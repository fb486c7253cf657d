"""seqgen: train, run and ship recurrent sequence models for text generation, translation
and classification."""

from __future__ import annotations

from typing import TYPE_CHECKING

from seqgen.version import __version__

if TYPE_CHECKING:
    from pathlib import Path

    from seqgen.tasks.generation.pipeline import Generator
    from seqgen.tasks.translation.pipeline import Translator


def load(
    path: str | Path | None = None,
    *,
    kind: str | None = None,
    device: str = "auto",
    backend: str = "auto",
) -> Generator | Translator:
    """Load a trained model: a checkpoint file or run folder, or an exported ONNX bundle.

    The pipeline of the model's task: a ``Generator`` or a ``Translator``, on either
    backend. Without a path, the bundled model of task ``kind``: ``"generation"`` (the
    default, the Shakespeare generator) or ``"translation"`` (the de-en translator). ``backend``:
    ``auto`` (ONNX Runtime for a bundle, PyTorch for a checkpoint), ``torch`` or ``onnx``
    (a checkpoint is exported once into the cache). A bundle never imports torch.
    """
    from seqgen.loading import load as load_model

    return load_model(path, kind=kind, device=device, backend=backend)


__all__ = ["__version__", "load"]
