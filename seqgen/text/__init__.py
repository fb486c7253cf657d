"""Tokenizers (char, word, whitespace, sentencepiece) behind one small protocol; no torch needed."""

from seqgen.text.char import CharTokenizer
from seqgen.text.sentencepiece import SentencePieceTokenizer
from seqgen.text.tokenizer import (
    Tokenizer,
    TokenizerConfig,
    tokenizer_from_dict,
    train_tokenizer,
)
from seqgen.text.vocabulary import Vocabulary
from seqgen.text.whitespace import WhitespaceTokenizer
from seqgen.text.word import WordTokenizer

__all__ = [
    "CharTokenizer",
    "SentencePieceTokenizer",
    "Tokenizer",
    "TokenizerConfig",
    "Vocabulary",
    "WhitespaceTokenizer",
    "WordTokenizer",
    "tokenizer_from_dict",
    "train_tokenizer",
]
