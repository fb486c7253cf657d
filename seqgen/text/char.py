"""Character tokenizer: every character, newline included, is one token."""

from __future__ import annotations

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


class CharTokenizer:
    """Maps each character to an id; characters unseen in training map to ``unk_id``.

    ``decode(encode(text)) == text`` whenever every character of ``text`` is in the
    vocabulary (and ``text`` is lower case when ``lowercase`` is set).
    """

    kind = "char"
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
        min_frequency: int = 1,
        lowercase: bool = False,
    ) -> CharTokenizer:
        """Count characters over one corpus string or an iterable of sentences."""
        counts: Counter[str] = Counter()
        for text in [texts] if isinstance(texts, str) else texts:
            counts.update(text.lower() if lowercase else text)
        vocabulary = Vocabulary.build(counts, min_frequency=min_frequency)
        if len(vocabulary) == len(SPECIAL_TOKENS):
            raise DataError(
                "the training text has no character seen at least "
                f"min_frequency={min_frequency} times; is the corpus empty?"
            )
        return cls(vocabulary, lowercase=lowercase)

    @property
    def vocab_size(self) -> int:
        """Number of ids, specials included."""
        return len(self.vocabulary)

    def encode(self, text: str) -> list[int]:
        """One id per character; no BOS/EOS added."""
        return self.vocabulary.lookup_ids(text.lower() if self.lowercase else text)

    def decode(self, token_ids: Sequence[int]) -> str:
        """Concatenate the characters, dropping pad/bos/eos; unk becomes ``<unk>``."""
        kept = [token_id for token_id in token_ids if token_id not in NON_TEXT_IDS]
        return "".join(self.vocabulary.lookup_tokens(kept))

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form, read back by :meth:`from_dict`."""
        return {"kind": self.kind, "tokens": self.vocabulary.to_list(), "lowercase": self.lowercase}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CharTokenizer:
        """Load :meth:`to_dict` output; raises CheckpointError when it is malformed."""
        return cls(read_vocabulary(data), lowercase=read_lowercase(data))
