"""Word tokenizer: words, single punctuation characters and newlines are tokens.

Round trips are exact up to whitespace normalisation: spaces and tabs only separate
tokens, so ``decode`` rebuilds them by rule (see :func:`join_words`). What always holds, unless
``text`` has unknown words, is ``encode(decode(encode(text))) == encode(text)``.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from seqgen.errors import DataError
from seqgen.text.serialisation import read_lowercase, read_vocabulary
from seqgen.text.vocabulary import (
    BOS_ID,
    EOS_ID,
    NON_TEXT_IDS,
    PAD_ID,
    SPECIAL_TOKENS,
    UNK_ID,
    Vocabulary,
)

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


class WordTokenizer:
    """Maps words, punctuation characters and newlines to ids; unseen words map to unk."""

    kind = "word"
    pad_id = PAD_ID
    unk_id = UNK_ID
    bos_id = BOS_ID
    eos_id = EOS_ID

    def __init__(self, vocabulary: Vocabulary, *, lowercase: bool = False) -> None:
        self.vocabulary = vocabulary
        self.lowercase = lowercase

    @classmethod
    def train(
        cls,
        texts: Iterable[str] | str,
        *,
        max_size: int | None = None,
        min_frequency: int = 1,
        lowercase: bool = False,
    ) -> WordTokenizer:
        """Count tokens over one corpus string or an iterable of sentences.

        ``max_size`` bounds the vocabulary, the four specials included (None: no bound).
        """
        counts: Counter[str] = Counter()
        for text in [texts] if isinstance(texts, str) else texts:
            counts.update(split_words(text.lower() if lowercase else text))
        vocabulary = Vocabulary.build(counts, max_size=max_size, min_frequency=min_frequency)
        if len(vocabulary) == len(SPECIAL_TOKENS):
            raise DataError(
                "the training text has no word seen at least "
                f"min_frequency={min_frequency} times; is the corpus empty?"
            )
        return cls(vocabulary, lowercase=lowercase)

    @property
    def vocab_size(self) -> int:
        """Number of ids, specials included."""
        return len(self.vocabulary)

    def encode(self, text: str) -> list[int]:
        """One id per word, punctuation character or newline; no BOS/EOS added."""
        return self.vocabulary.lookup_ids(split_words(text.lower() if self.lowercase else text))

    def decode(self, token_ids: Sequence[int]) -> str:
        """Readable text (see :func:`join_words`), dropping pad/bos/eos; unk is ``<unk>``."""
        kept = [token_id for token_id in token_ids if token_id not in NON_TEXT_IDS]
        return join_words(self.vocabulary.lookup_tokens(kept))

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form, read back by :meth:`from_dict`."""
        return {"kind": self.kind, "tokens": self.vocabulary.to_list(), "lowercase": self.lowercase}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WordTokenizer:
        """Load :meth:`to_dict` output; raises CheckpointError when it is malformed."""
        return cls(read_vocabulary(data), lowercase=read_lowercase(data))
