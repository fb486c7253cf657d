"""The tokenizer protocol, its config, training and loading from a checkpoint dict.

Every tokenizer turns text into ids and back with the same special ids (pad 0, unk 1,
bos 2, eos 3) and serialises to a JSON-able dict holding everything it needs, so a
checkpoint or bundle is self-contained and loads without executing code.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from seqgen.errors import CheckpointError, ConfigError
from seqgen.text.char import CharTokenizer
from seqgen.text.sentencepiece import NEWLINE_ID, SentencePieceTokenizer
from seqgen.text.vocabulary import SPECIAL_TOKENS
from seqgen.text.whitespace import WhitespaceTokenizer
from seqgen.text.word import WordTokenizer

TOKENIZER_KINDS = ("char", "word", "whitespace", "sentencepiece")
MODEL_TYPES = ("bpe", "unigram")


@runtime_checkable
class Tokenizer(Protocol):
    """Text <-> ids. ``encode`` adds no BOS/EOS; ``decode`` drops pad/bos/eos ids."""

    @property
    def kind(self) -> str:
        """``"char"``, ``"word"``, ``"whitespace"`` or ``"sentencepiece"``."""
        ...

    @property
    def vocab_size(self) -> int: ...

    @property
    def pad_id(self) -> int: ...

    @property
    def unk_id(self) -> int: ...

    @property
    def bos_id(self) -> int: ...

    @property
    def eos_id(self) -> int: ...

    def encode(self, text: str) -> list[int]: ...

    def decode(self, token_ids: Sequence[int]) -> str: ...

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form holding ``"kind"``; read back by tokenizer_from_dict."""
        ...


def encode_all(tokenizer: Tokenizer, texts: Sequence[str]) -> list[list[int]]:
    """``tokenizer.encode`` of each text, in one call where the tokenizer batches
    (sentencepiece's ``encode_many``)."""
    many = getattr(tokenizer, "encode_many", None)
    return many(texts) if many is not None else [tokenizer.encode(text) for text in texts]


def decode_all(tokenizer: Tokenizer, token_ids: Sequence[Sequence[int]]) -> list[str]:
    """``tokenizer.decode`` of each id sequence, batched where the tokenizer can."""
    many = getattr(tokenizer, "decode_many", None)
    return many(token_ids) if many is not None else [tokenizer.decode(ids) for ids in token_ids]


@dataclass
class TokenizerConfig:
    """How to train a tokenizer.

    ``vocab_size`` is the sentencepiece vocabulary size, or for ``word`` and ``whitespace``
    the largest vocabulary kept (specials included; 0 keeps every token); ``char`` ignores
    it. ``whitespace`` is for text already split into tokens by another pipeline.
    ``min_frequency`` applies to char, word and whitespace; ``model_type`` and
    ``character_coverage`` to sentencepiece only.
    """

    kind: str = "char"
    vocab_size: int = 8000
    min_frequency: int = 1
    model_type: str = "bpe"
    character_coverage: float = 1.0
    lowercase: bool = False
    joint: bool = True  # translation: one vocabulary trained on source and target text

    def validate(self) -> None:
        """Raise ConfigError naming the first bad field, its value and what is allowed."""
        if self.kind not in TOKENIZER_KINDS:
            raise ConfigError(invalid("kind", self.kind, "one of " + ", ".join(TOKENIZER_KINDS)))
        if not is_integer(self.vocab_size) or self.vocab_size < 0:
            raise ConfigError(invalid("vocab_size", self.vocab_size, "an integer >= 0"))
        smallest = len(SPECIAL_TOKENS) + 1
        if self.kind in ("word", "whitespace") and 0 < self.vocab_size < smallest:
            expected = f"0 (unlimited) or an integer >= {smallest} for {self.kind}"
            raise ConfigError(invalid("vocab_size", self.vocab_size, expected))
        if self.kind == "sentencepiece" and self.vocab_size <= NEWLINE_ID + 1:
            expected = f"an integer >= {NEWLINE_ID + 2} for sentencepiece"
            raise ConfigError(invalid("vocab_size", self.vocab_size, expected))
        if not is_integer(self.min_frequency) or self.min_frequency < 1:
            raise ConfigError(invalid("min_frequency", self.min_frequency, "an integer >= 1"))
        if self.model_type not in MODEL_TYPES:
            expected = "one of " + ", ".join(MODEL_TYPES)
            raise ConfigError(invalid("model_type", self.model_type, expected))
        coverage = self.character_coverage
        if isinstance(coverage, bool) or not isinstance(coverage, int | float):
            raise ConfigError(invalid("character_coverage", coverage, "a number in (0, 1]"))
        if not 0.0 < coverage <= 1.0:
            raise ConfigError(invalid("character_coverage", coverage, "a number in (0, 1]"))
        if not isinstance(self.lowercase, bool):
            raise ConfigError(invalid("lowercase", self.lowercase, "true or false"))


def invalid(field: str, value: object, expected: str) -> str:
    """The message for a bad config value: field, value and what is valid."""
    return f"tokenizer.{field} = {value!r} is not valid; expected {expected}"


def is_integer(value: object) -> bool:
    """True for ints but not bools (TOML and JSON give ``true`` where a number was meant)."""
    return isinstance(value, int) and not isinstance(value, bool)


def train_tokenizer(config: TokenizerConfig, texts: Iterable[str] | str) -> Tokenizer:
    """Train the tokenizer ``config`` describes.

    ``texts`` is one corpus string (a language model's text) or an iterable of sentences
    (one side of a translation corpus). Raises ConfigError for a bad config and
    DataError for a corpus with nothing to learn from.
    """
    config.validate()
    if config.kind == "char":
        return CharTokenizer.train(
            texts, min_frequency=config.min_frequency, lowercase=config.lowercase
        )
    if config.kind in ("word", "whitespace"):
        kind = WordTokenizer if config.kind == "word" else WhitespaceTokenizer
        return kind.train(
            texts,
            max_size=config.vocab_size or None,
            min_frequency=config.min_frequency,
            lowercase=config.lowercase,
        )
    return SentencePieceTokenizer.train(
        texts,
        vocab_size=config.vocab_size,
        model_type=config.model_type,
        character_coverage=config.character_coverage,
        lowercase=config.lowercase,
    )


LOADERS: dict[str, Callable[[Mapping[str, Any]], Tokenizer]] = {
    "char": CharTokenizer.from_dict,
    "word": WordTokenizer.from_dict,
    "whitespace": WhitespaceTokenizer.from_dict,
    "sentencepiece": SentencePieceTokenizer.from_dict,
}


def tokenizer_from_dict(data: Mapping[str, Any]) -> Tokenizer:
    """Rebuild a tokenizer from its ``to_dict()`` form; raises CheckpointError if malformed."""
    if not isinstance(data, Mapping):
        raise CheckpointError(f"tokenizer entry must be a JSON object, got {type(data).__name__}")
    kind = data.get("kind")
    if kind not in LOADERS:
        raise CheckpointError(
            f"unknown tokenizer kind {kind!r}; expected one of {', '.join(LOADERS)}. "
            "Was the checkpoint written by a newer seqgen?"
        )
    return LOADERS[kind](data)
