"""Whitespace tokenizer: for text that another pipeline has already split into tokens.

Each whitespace-separated token (a sentencepiece piece, a Moses word...) is one unit and
``decode`` joins units with single spaces, so a piece file goes in and a piece file comes
out: what the peer benchmark (``seqgen/benchmark/peer_plugin.py``) feeds every toolkit.
"""

from __future__ import annotations

from collections.abc import Sequence

from seqgen.text.vocabulary_tokenizer import VocabularyTokenizer


def split_whitespace(text: str) -> list[str]:
    return text.split()


def join_whitespace(tokens: Sequence[str]) -> str:
    return " ".join(tokens)


class WhitespaceTokenizer(VocabularyTokenizer):
    """Maps whitespace-separated tokens to ids; unseen tokens map to unk."""

    kind = "whitespace"
    unit = "token"
    split = staticmethod(split_whitespace)
    join = staticmethod(join_whitespace)
