"""Model classes by the kind name stored in checkpoints (a plain dict registry)."""

from __future__ import annotations

from seqgen.models.language_model import LanguageModel

MODELS = {"language_model": LanguageModel}

__all__ = ["MODELS", "LanguageModel"]
