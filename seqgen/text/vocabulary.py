"""A fixed list of tokens with the four special tokens at ids 0..3.

Every seqgen tokenizer (sentencepiece included) uses the same special ids, so models,
search and exported bundles can rely on them without asking the tokenizer.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

from seqgen.errors import CheckpointError

PAD_ID = 0
UNK_ID = 1
BOS_ID = 2
EOS_ID = 3
PAD_TEXT = "<pad>"
UNK_TEXT = "<unk>"
BOS_TEXT = "<s>"
EOS_TEXT = "</s>"
SPECIAL_TOKENS = (PAD_TEXT, UNK_TEXT, BOS_TEXT, EOS_TEXT)

# Ids that carry no text: decoding drops them (UNK is kept, it stands for real text).
NON_TEXT_IDS = frozenset({PAD_ID, BOS_ID, EOS_ID})


class Vocabulary:
    """A bijection between tokens and ids; ids 0..3 are ``<pad> <unk> <s> </s>``."""

    def __init__(self, tokens: Sequence[str]) -> None:
        """Wrap ``tokens`` (index = id); raises ValueError unless they start with the specials."""
        tokens = list(tokens)
        if tuple(tokens[: len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
            raise ValueError(f"a vocabulary must start with {list(SPECIAL_TOKENS)}")
        if not all(isinstance(token, str) for token in tokens):
            raise ValueError("every vocabulary token must be a string")
        self._tokens = tokens
        self._ids = {token: token_id for token_id, token in enumerate(tokens)}
        if len(self._ids) != len(tokens):
            duplicates = sorted(token for token, count in Counter(tokens).items() if count > 1)
            raise ValueError(f"duplicate vocabulary tokens: {duplicates[:10]}")

    @classmethod
    def build(
        cls,
        tokens: Mapping[str, int] | Iterable[str],
        *,
        max_size: int | None = None,
        min_frequency: int = 1,
    ) -> Vocabulary:
        """Build from token counts (a mapping) or from a stream of tokens.

        Tokens are ordered by frequency (most frequent first), ties by the token itself, so
        the same input always gives the same ids. ``max_size`` counts the four specials;
        tokens seen fewer than ``min_frequency`` times are left out (they become UNK).
        """
        if max_size is not None and max_size < len(SPECIAL_TOKENS):
            raise ValueError(f"max_size must be at least {len(SPECIAL_TOKENS)}, got {max_size}")
        counts = tokens if isinstance(tokens, Mapping) else Counter(tokens)
        kept = [
            (token, count)
            for token, count in counts.items()
            if count >= min_frequency and token not in SPECIAL_TOKENS
        ]
        kept.sort(key=lambda item: (-item[1], item[0]))
        if max_size is not None:
            kept = kept[: max_size - len(SPECIAL_TOKENS)]
        return cls([*SPECIAL_TOKENS, *(token for token, _ in kept)])

    @classmethod
    def from_list(cls, tokens: Sequence[str]) -> Vocabulary:
        """Load from :meth:`to_list` output; raises CheckpointError when it is malformed."""
        if not isinstance(tokens, list | tuple):
            raise CheckpointError(
                f"vocabulary must be a list of strings, got {type(tokens).__name__}"
            )
        try:
            return cls(tokens)
        except ValueError as error:
            raise CheckpointError(f"corrupt vocabulary in checkpoint: {error}") from error

    def to_list(self) -> list[str]:
        """The tokens in id order (JSON-serialisable)."""
        return list(self._tokens)

    def __len__(self) -> int:
        return len(self._tokens)

    def __contains__(self, token: object) -> bool:
        return token in self._ids

    def id_of(self, token: str) -> int:
        """The id of ``token``, or UNK_ID when it is not in the vocabulary."""
        return self._ids.get(token, UNK_ID)

    def token_of(self, token_id: int) -> str:
        """The token with id ``token_id`` (IndexError when out of range)."""
        return self._tokens[token_id]

    def lookup_ids(self, tokens: Iterable[str]) -> list[int]:
        """Ids of ``tokens``; unknown tokens map to UNK_ID."""
        get = self._ids.get  # bound once: this runs per character on megabyte corpora
        return [get(token, UNK_ID) for token in tokens]

    def lookup_tokens(self, token_ids: Iterable[int]) -> list[str]:
        """Tokens of ``token_ids``, specials included."""
        tokens = self._tokens
        return [tokens[token_id] for token_id in token_ids]
