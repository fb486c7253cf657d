"""What the character and word tokenizers share: a vocabulary of whole units.

A subclass says how text splits into units and how units join back into text; training,
encoding, decoding and serialisation are the same for both.
"""

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


class VocabularyTokenizer:
    """Maps units (characters or words) to ids; units unseen in training map to ``unk_id``."""

    kind = ""  # set by subclasses: "char" | "word"
    unit = ""  # "character" | "word", for messages
    pad_id = PAD_ID
    unk_id = UNK_ID
    bos_id = BOS_ID
    eos_id = EOS_ID

    def __init__(self, vocabulary: Vocabulary, *, lowercase: bool = False) -> None:
        self.vocabulary = vocabulary
        self.lowercase = lowercase

    @staticmethod
    def split(text: str) -> Iterable[str]:
        """Text -> units."""
        raise NotImplementedError

    @staticmethod
    def join(units: Sequence[str]) -> str:
        """Units -> text."""
        raise NotImplementedError

    @classmethod
    def train(
        cls,
        texts: Iterable[str] | str,
        *,
        max_size: int | None = None,
        min_frequency: int = 1,
        lowercase: bool = False,
    ) -> VocabularyTokenizer:
        """Count units over one corpus string or an iterable of sentences.

        ``max_size`` bounds the vocabulary, the four specials included (None: no bound).
        """
        counts: Counter[str] = Counter()
        for text in [texts] if isinstance(texts, str) else texts:
            counts.update(cls.split(text.lower() if lowercase else text))
        vocabulary = Vocabulary.build(counts, max_size=max_size, min_frequency=min_frequency)
        if len(vocabulary) == len(SPECIAL_TOKENS):
            raise DataError(
                f"the training text has no {cls.unit} seen at least "
                f"min_frequency={min_frequency} times; is the corpus empty?"
            )
        return cls(vocabulary, lowercase=lowercase)

    @property
    def vocab_size(self) -> int:
        """Number of ids, specials included."""
        return len(self.vocabulary)

    def encode(self, text: str) -> list[int]:
        """One id per unit; no BOS/EOS added."""
        return self.vocabulary.lookup_ids(self.split(text.lower() if self.lowercase else text))

    def decode(self, token_ids: Sequence[int]) -> str:
        """The units joined back into text, dropping pad/bos/eos; unk becomes ``<unk>``."""
        kept = [token_id for token_id in token_ids if token_id not in NON_TEXT_IDS]
        return self.join(self.vocabulary.lookup_tokens(kept))

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form, read back by :meth:`from_dict`."""
        return {"kind": self.kind, "tokens": self.vocabulary.to_list(), "lowercase": self.lowercase}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VocabularyTokenizer:
        """Load :meth:`to_dict` output; raises CheckpointError when it is malformed."""
        return cls(read_vocabulary(data), lowercase=read_lowercase(data))
