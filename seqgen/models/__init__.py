"""Model classes by the kind name stored in checkpoints (a plain dict registry)."""

from __future__ import annotations

from seqgen.models.language_model import LanguageModel
from seqgen.models.translator import Translator

MODELS = {"language_model": LanguageModel, "translation": Translator}

__all__ = ["MODELS", "LanguageModel", "Translator"]
