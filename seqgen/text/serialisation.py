"""Reading the entries shared by serialised tokenizers, with checkpoint-grade errors."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from seqgen.errors import CheckpointError
from seqgen.text.vocabulary import Vocabulary


def read_vocabulary(data: Mapping[str, Any]) -> Vocabulary:
    """The ``tokens`` entry of a serialised char/word tokenizer as a Vocabulary."""
    if "tokens" not in data:
        raise CheckpointError(f"{data.get('kind')} tokenizer entry has no 'tokens' list")
    return Vocabulary.from_list(data["tokens"])


def read_lowercase(data: Mapping[str, Any]) -> bool:
    """The ``lowercase`` flag of a serialised tokenizer (False when absent)."""
    lowercase = data.get("lowercase", False)
    if not isinstance(lowercase, bool):
        raise CheckpointError(f"tokenizer 'lowercase' must be true or false, got {lowercase!r}")
    return lowercase
