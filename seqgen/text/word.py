"""Word tokenizer: words, single punctuation characters and newlines are tokens.

Round trips are exact up to whitespace normalisation: spaces and tabs only separate
tokens, so ``decode`` rebuilds them by rule (see :func:`join_words`). What always holds, unless
``text`` has unknown words, is ``encode(decode(encode(text))) == encode(text)``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from seqgen.text.vocabulary_tokenizer import VocabularyTokenizer

# A word may hold apostrophes between letters ("don't", "rock'n'roll"); any other
# non-space character is a token of its own; "\n" is kept so generated text has lines.
TOKEN_PATTERN = re.compile(r"\w+(?:['\u2019]\w+)*|\n|[^\w\s]")

NO_SPACE_BEFORE = frozenset(",.;:!?)]}'\u2019\n")
NO_SPACE_AFTER = frozenset("([{\n")


def split_words(text: str) -> list[str]:
    """Split ``text`` into word, punctuation and newline tokens."""
    return TOKEN_PATTERN.findall(text)


def join_words(tokens: Iterable[str]) -> str:
    """Join tokens with single spaces, except around punctuation and newlines.

    No space goes before ``, . ; : ! ? ) ] } '`` or a newline, nor after ``( [ {`` or a
    newline. A space is never left out between two word tokens, so re-splitting the
    result gives back the same tokens.
    """
    pieces: list[str] = []
    previous = "\n"  # as if after a newline: no leading space
    for token in tokens:
        if previous not in NO_SPACE_AFTER and token not in NO_SPACE_BEFORE:
            pieces.append(" ")
        pieces.append(token)
        previous = token
    return "".join(pieces)


class WordTokenizer(VocabularyTokenizer):
    """Maps words, punctuation characters and newlines to ids; unseen words map to unk."""

    kind = "word"
    unit = "word"
    split = staticmethod(split_words)
    join = staticmethod(join_words)
