"""seqgen: train, run and ship recurrent sequence models for text generation and translation."""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"

if TYPE_CHECKING:
    from pathlib import Path

    from seqgen.pipelines import TextGenerator
    from seqgen.translation import Translator


def load(
    path: str | Path | None = None, *, kind: str | None = None, device: str = "auto"
) -> TextGenerator | Translator:
    """Load a trained model (a checkpoint file or run folder) as a generator or translator.

    Without a path, the bundled model of ``kind``: ``"language_model"`` (the default, the
    Shakespeare generator) or ``"translation"`` (the de-en translator).
    """
    from seqgen.pipelines import load as load_pipeline  # torch is imported only when needed

    return load_pipeline(path, kind=kind, device=device)


__all__ = ["__version__", "load"]
