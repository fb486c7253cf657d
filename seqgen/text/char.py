"""Character tokenizer: every character, newline included, is one token."""

from __future__ import annotations

from collections.abc import Sequence

from seqgen.text.vocabulary_tokenizer import VocabularyTokenizer


class CharTokenizer(VocabularyTokenizer):
    """Maps each character to an id; characters unseen in training map to ``unk_id``.

    ``decode(encode(text)) == text`` whenever every character of ``text`` is in the
    vocabulary (and ``text`` is lower case when ``lowercase`` is set).
    """

    kind = "char"
    unit = "character"

    @staticmethod
    def split(text: str) -> str:
        return text

    @staticmethod
    def join(units: Sequence[str]) -> str:
        return "".join(units)
