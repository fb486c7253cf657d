"""seqgen: train, run and ship recurrent sequence models for text generation and translation."""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"

if TYPE_CHECKING:
    from pathlib import Path

    from seqgen.bundle import BundleGenerator
    from seqgen.pipelines import TextGenerator
    from seqgen.translation import Translator


def load(
    path: str | Path | None = None,
    *,
    kind: str | None = None,
    device: str = "auto",
    backend: str = "auto",
) -> TextGenerator | Translator | BundleGenerator:
    """Load a trained model: a checkpoint file or run folder, or an exported ONNX bundle.

    Without a path, the bundled model of ``kind``: ``"language_model"`` (the default, the
    Shakespeare generator) or ``"translation"`` (the de-en translator). ``backend``:
    ``auto`` (ONNX Runtime for a bundle, PyTorch for a checkpoint), ``torch`` or ``onnx``
    (a checkpoint is exported once into the cache). A bundle never imports torch.
    """
    from seqgen.loading import load as load_model

    return load_model(path, kind=kind, device=device, backend=backend)


__all__ = ["__version__", "load"]
