"""seqgen: train, run and ship recurrent sequence models for text generation and translation."""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"

if TYPE_CHECKING:
    from pathlib import Path

    from seqgen.pipelines import TextGenerator


def load(path: str | Path | None = None, *, device: str = "auto") -> TextGenerator:
    """Load a trained model (a checkpoint file or run folder); no path = the bundled generator."""
    from seqgen.pipelines import load as load_pipeline  # torch is imported only when needed

    return load_pipeline(path, device=device)


__all__ = ["__version__", "load"]
