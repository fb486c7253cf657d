"""Tests for seqgen.text: the three tokenizers, their config, serialisation and vocabulary."""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from seqgen.errors import CheckpointError, ConfigError, DataError
from seqgen.text import (
    CharTokenizer,
    SentencePieceTokenizer,
    Tokenizer,
    TokenizerConfig,
    Vocabulary,
    WordTokenizer,
    tokenizer_from_dict,
    train_tokenizer,
)
from seqgen.text.tokenizer import decode_all, encode_all
from seqgen.text.word import split_words

REPO_ROOT = Path(__file__).parents[2]

CONFIGS = {
    "char": TokenizerConfig(kind="char"),
    "word": TokenizerConfig(kind="word"),
    "whitespace": TokenizerConfig(kind="whitespace"),
    "bpe": TokenizerConfig(kind="sentencepiece", vocab_size=120, model_type="bpe"),
    "unigram": TokenizerConfig(kind="sentencepiece", vocab_size=90, model_type="unigram"),
}


def make_sentences(count: int, *, seed: int = 0) -> list[str]:
    """Seeded random sentences over a small made-up word list, with some punctuation."""
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = ["".join(rng.choices(letters, k=rng.randint(2, 8))) for _ in range(80)]
    words += ["don't", "it's", "Alice", "Bob"]
    sentences = []
    for _ in range(count):
        body = " ".join(rng.choice(words) for _ in range(rng.randint(3, 10)))
        sentences.append(body.replace(" ", ", ", 1) + rng.choice([".", "!", "?", ""]))
    return sentences


@pytest.fixture(scope="module")
def sentences() -> list[str]:
    return make_sentences(400)


@pytest.fixture(scope="module")
def corpus(sentences: list[str]) -> str:
    """A language-model corpus: one string with newlines and a blank line."""
    return "\n".join(sentences[:200]) + "\n\n" + "\n".join(sentences[200:]) + "\n"


@pytest.fixture(scope="module")
def trained(corpus: str) -> dict[str, Tokenizer]:
    return {name: train_tokenizer(config, corpus) for name, config in CONFIGS.items()}


# --- shared behaviour -------------------------------------------------------------------


@pytest.mark.parametrize("name", CONFIGS)
def test_protocol_and_special_ids(trained: dict[str, Tokenizer], name: str) -> None:
    tokenizer = trained[name]
    assert isinstance(tokenizer, Tokenizer)
    assert tokenizer.kind == CONFIGS[name].kind
    assert (tokenizer.pad_id, tokenizer.unk_id, tokenizer.bos_id, tokenizer.eos_id) == (0, 1, 2, 3)
    assert max(tokenizer.encode("Alice, don't.\nBob!")) < tokenizer.vocab_size


@pytest.mark.parametrize("name", CONFIGS)
def test_empty_text_encodes_to_nothing(trained: dict[str, Tokenizer], name: str) -> None:
    assert trained[name].encode("") == []
    assert trained[name].decode([]) == ""


@pytest.mark.parametrize("name", CONFIGS)
def test_decode_skips_pad_bos_eos_and_accepts_numpy(
    trained: dict[str, Tokenizer], name: str
) -> None:
    tokenizer = trained[name]
    text = "Alice, don't.\nBob!"
    token_ids = tokenizer.encode(text)
    padded = [tokenizer.bos_id, *token_ids, tokenizer.eos_id, tokenizer.pad_id]
    assert tokenizer.decode(padded) == tokenizer.decode(token_ids)
    assert tokenizer.decode(np.array(padded, dtype=np.int64)) == tokenizer.decode(token_ids)


@pytest.mark.parametrize("name", CONFIGS)
def test_json_round_trip_gives_identical_encodings(
    trained: dict[str, Tokenizer], corpus: str, name: str
) -> None:
    tokenizer = trained[name]
    data = tokenizer.to_dict()
    assert data["kind"] == tokenizer.kind
    loaded = tokenizer_from_dict(json.loads(json.dumps(data)))
    assert type(loaded) is type(tokenizer)
    assert loaded.vocab_size == tokenizer.vocab_size
    assert loaded.encode(corpus) == tokenizer.encode(corpus)
    assert loaded.decode(tokenizer.encode(corpus)) == tokenizer.decode(tokenizer.encode(corpus))


@pytest.mark.parametrize("name", CONFIGS)
def test_training_is_deterministic(
    trained: dict[str, Tokenizer], corpus: str, sentences: list[str], name: str
) -> None:
    assert train_tokenizer(CONFIGS[name], corpus).to_dict() == trained[name].to_dict()
    # Sentences, a generator included, train like the same text given as one string.
    first = train_tokenizer(CONFIGS[name], iter(sentences)).to_dict()
    assert train_tokenizer(CONFIGS[name], list(sentences)).to_dict() == first


@pytest.mark.parametrize("kind", ["char", "word", "whitespace", "sentencepiece"])
def test_empty_corpus_is_a_data_error(kind: str) -> None:
    config = TokenizerConfig(kind=kind, vocab_size=50)
    with pytest.raises(DataError, match="empty"):
        train_tokenizer(config, "")
    with pytest.raises(DataError, match="empty"):
        train_tokenizer(config, [])


def test_sentencepiece_blank_lines_are_not_training_text() -> None:
    with pytest.raises(DataError, match="empty"):
        train_tokenizer(TokenizerConfig(kind="sentencepiece", vocab_size=50), "\n \n")


@pytest.mark.parametrize("name", CONFIGS)
def test_lowercase_folds_case_when_training_and_encoding(corpus: str, name: str) -> None:
    tokenizer = train_tokenizer(dataclasses.replace(CONFIGS[name], lowercase=True), corpus)
    assert tokenizer.encode("ALICE, BOB") == tokenizer.encode("alice, bob")
    assert tokenizer_from_dict(tokenizer.to_dict()).encode("ALICE") == tokenizer.encode("alice")


# --- char -------------------------------------------------------------------------------


def test_char_round_trip_is_exact(trained: dict[str, Tokenizer], corpus: str) -> None:
    tokenizer = trained["char"]
    assert tokenizer.decode(tokenizer.encode(corpus)) == corpus
    assert len(tokenizer.encode("ab\nc")) == 4


def test_char_unknown_characters_map_to_unk(trained: dict[str, Tokenizer]) -> None:
    tokenizer = trained["char"]
    token_ids = tokenizer.encode("a\u00e9Z")
    assert token_ids[1:] == [tokenizer.unk_id, tokenizer.unk_id]
    assert tokenizer.decode(token_ids) == "a<unk><unk>"


def test_char_min_frequency_drops_rare_characters() -> None:
    tokenizer = CharTokenizer.train("aaab", min_frequency=2)
    assert tokenizer.vocab_size == 5
    assert tokenizer.encode("ab") == [4, tokenizer.unk_id]


# --- word -------------------------------------------------------------------------------


def test_word_splitting_keeps_contractions_punctuation_and_newlines() -> None:
    assert split_words("Don't stop,\tnow!\n(ok)") == [
        "Don't", "stop", ",", "now", "!", "\n", "(", "ok", ")"
    ]  # fmt: skip


def test_word_decode_rebuilds_readable_text() -> None:
    text = "Hello, world! (Yes) it's\nfine: really; ok? Bob's [x]."
    tokenizer = WordTokenizer.train(text)
    assert tokenizer.decode(tokenizer.encode(text)) == text
    messy = "Hello ,   world !\t( Yes )  it's \n  fine : really ; ok ?"
    assert (
        tokenizer.decode(tokenizer.encode(messy)) == "Hello, world! (Yes) it's\nfine: really; ok?"
    )


def test_whitespace_tokens_are_another_pipelines_pieces() -> None:
    # Sentencepiece pieces as the peer benchmark gives them: a piece line in, the same out.
    lines = ["\u2581Ein \u2581Mann \u2581f\u00e4hrt \u2581Fahr rad .", "\u2581Zwei \u2581Hunde ."]
    tokenizer = train_tokenizer(TokenizerConfig(kind="whitespace"), lines)
    assert tokenizer.vocab_size == 4 + 8
    for line in lines:
        assert tokenizer.decode(tokenizer.encode(line)) == line
    assert tokenizer.decode(tokenizer.encode("  \u2581Zwei\t\u2581Katzen  .")) == (
        "\u2581Zwei <unk> ."
    )
    capped = train_tokenizer(TokenizerConfig(kind="whitespace", vocab_size=6), lines)
    assert capped.vocab_size == 6  # the two most frequent tokens: "." and "\u2581Zwei"...


def test_word_round_trip_up_to_whitespace(trained: dict[str, Tokenizer], corpus: str) -> None:
    tokenizer = trained["word"]
    token_ids = tokenizer.encode(corpus)
    decoded = tokenizer.decode(token_ids)
    assert tokenizer.encode(decoded) == token_ids
    assert decoded.split() == corpus.split()


def test_word_unknown_words_map_to_unk(trained: dict[str, Tokenizer]) -> None:
    tokenizer = trained["word"]
    token_ids = tokenizer.encode("Alice zzzzzz Bob")
    assert token_ids[1] == tokenizer.unk_id
    assert tokenizer.unk_id not in (token_ids[0], token_ids[2])
    assert tokenizer.decode(token_ids) == "Alice <unk> Bob"


def test_word_vocab_size_limits_the_vocabulary(corpus: str) -> None:
    tokenizer = train_tokenizer(TokenizerConfig(kind="word", vocab_size=20), corpus)
    assert tokenizer.vocab_size == 20
    unlimited = train_tokenizer(TokenizerConfig(kind="word", vocab_size=0), corpus)
    assert unlimited.vocab_size > 80


# --- sentencepiece ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["bpe", "unigram"])
def test_sentencepiece_round_trip_is_exact_with_newlines(
    trained: dict[str, Tokenizer], corpus: str, name: str
) -> None:
    tokenizer = trained[name]
    assert tokenizer.vocab_size == CONFIGS[name].vocab_size
    token_ids = tokenizer.encode(corpus)
    assert tokenizer.decode(token_ids) == corpus
    newline_id = tokenizer.newline_id
    assert token_ids.count(newline_id) == corpus.count("\n")
    assert tokenizer.encode("\n\n") == [newline_id, newline_id]


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("lowercase", [False, True])
def test_encode_all_and_decode_all_equal_one_call_per_text(
    trained: dict[str, Tokenizer], sentences: list[str], name: str, lowercase: bool
) -> None:
    # From 64 texts on, sentencepiece batches them through its thread pool: the same ids and
    # texts as one call each, newlines, empty texts and non-text ids included.
    tokenizer = tokenizer_from_dict({**trained[name].to_dict(), "lowercase": lowercase})
    texts = [*sentences[:80], "", "\n", "Alice\n\nBob SAID", "x\ny"]
    encoded = encode_all(tokenizer, texts)
    assert encoded == [tokenizer.encode(text) for text in texts]
    token_ids = [*encoded, [2, 5, 3, 0], np.array(encoded[0], dtype=np.int64)]
    assert decode_all(tokenizer, token_ids) == [tokenizer.decode(ids) for ids in token_ids]
    assert decode_all(tokenizer, token_ids[:3]) == [tokenizer.decode(i) for i in token_ids[:3]]


def test_sentencepiece_literal_newline_piece_stays_text(trained: dict[str, Tokenizer]) -> None:
    tokenizer = trained["bpe"]
    assert tokenizer.newline_id not in tokenizer.encode("a <nl> b")


def test_sentencepiece_unknown_characters_map_to_unk(trained: dict[str, Tokenizer]) -> None:
    tokenizer = trained["bpe"]
    assert tokenizer.unk_id in tokenizer.encode("alice \u4e2d")


def test_sentencepiece_too_large_vocab_trains_the_largest_possible(
    sentences: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    config = TokenizerConfig(kind="sentencepiece", vocab_size=5000)
    with caplog.at_level(logging.WARNING, logger="seqgen.text.sentencepiece"):
        tokenizer = train_tokenizer(config, sentences)
    assert 100 < tokenizer.vocab_size < 5000
    assert "too large" in caplog.text
    assert tokenizer.decode(tokenizer.encode(sentences[0])) == sentences[0]


def test_sentencepiece_vocab_below_the_alphabet_is_a_config_error(sentences: list[str]) -> None:
    config = TokenizerConfig(kind="sentencepiece", vocab_size=10)
    with pytest.raises(ConfigError, match="character_coverage"):
        train_tokenizer(config, sentences)


# --- config and loading -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"kind": "bytes"}, r"tokenizer\.kind = 'bytes'.*char, word, whitespace, sentencepiece"),
        ({"vocab_size": -1}, r"tokenizer\.vocab_size = -1.*>= 0"),
        ({"vocab_size": True}, r"tokenizer\.vocab_size = True"),
        ({"kind": "word", "vocab_size": 3}, r"tokenizer\.vocab_size = 3.*word"),
        ({"kind": "sentencepiece", "vocab_size": 5}, r"vocab_size = 5.*sentencepiece"),
        ({"min_frequency": 0}, r"tokenizer\.min_frequency = 0.*>= 1"),
        ({"model_type": "wordpiece"}, r"tokenizer\.model_type = 'wordpiece'.*bpe, unigram"),
        ({"character_coverage": 1.5}, r"tokenizer\.character_coverage = 1\.5.*\(0, 1\]"),
        ({"character_coverage": "all"}, r"tokenizer\.character_coverage = 'all'"),
        ({"lowercase": "yes"}, r"tokenizer\.lowercase = 'yes'.*true or false"),
    ],
)
def test_config_validation_names_field_value_and_choices(changes: dict, expected: str) -> None:
    config = TokenizerConfig(**changes)
    with pytest.raises(ConfigError, match=expected):
        config.validate()
    with pytest.raises(ConfigError, match=expected):
        train_tokenizer(config, "some text")


def test_default_config_is_valid() -> None:
    TokenizerConfig().validate()
    TokenizerConfig(kind="word", vocab_size=0).validate()


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"kind": "bytes"}, "unknown tokenizer kind 'bytes'"),
        ({}, "unknown tokenizer kind None"),
        (["char"], "must be a JSON object"),
        ({"kind": "char"}, "no 'tokens'"),
        ({"kind": "word", "tokens": ["a", "b"]}, "must start with"),
        ({"kind": "char", "tokens": ["<pad>", "<unk>", "<s>", "</s>", "a", "a"]}, "duplicate"),
        ({"kind": "char", "tokens": "abc"}, "list of strings"),
        ({"kind": "char", "tokens": ["<pad>", "<unk>", "<s>", "</s>"], "lowercase": 1}, "true"),
        ({"kind": "sentencepiece"}, "model_proto"),
        ({"kind": "sentencepiece", "model_proto": "not base64!"}, "base64"),
        ({"kind": "sentencepiece", "model_proto": "AAAA"}, "sentencepiece model"),
    ],
)
def test_tokenizer_from_dict_rejects_malformed_entries(data: object, expected: str) -> None:
    with pytest.raises(CheckpointError, match=expected):
        tokenizer_from_dict(data)  # type: ignore[arg-type]


def test_sentencepiece_model_without_seqgen_pieces_is_rejected(sentences: list[str]) -> None:
    import io

    import sentencepiece

    model_writer = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences), model_writer=model_writer, vocab_size=60, minloglevel=2
    )
    with pytest.raises(CheckpointError, match="must start with pieces"):
        SentencePieceTokenizer(model_writer.getvalue())


# --- vocabulary -------------------------------------------------------------------------


def test_vocabulary_orders_by_frequency_then_token() -> None:
    vocabulary = Vocabulary.build(["b", "c", "a", "c", "b", "d", "<s>"], max_size=7)
    assert vocabulary.to_list() == ["<pad>", "<unk>", "<s>", "</s>", "b", "c", "a"]
    assert vocabulary.id_of("d") == 1
    assert vocabulary.lookup_ids(["a", "zzz"]) == [6, 1]
    assert vocabulary.lookup_tokens([4, 1]) == ["b", "<unk>"]
    assert Vocabulary.build({"x": 1, "y": 3}, min_frequency=2).to_list()[4:] == ["y"]
    assert Vocabulary.from_list(vocabulary.to_list()).to_list() == vocabulary.to_list()


def test_vocabulary_rejects_max_size_below_the_specials() -> None:
    with pytest.raises(ValueError, match="max_size"):
        Vocabulary.build(["a"], max_size=3)


# --- no torch ---------------------------------------------------------------------------


def test_import_works_without_torch() -> None:
    code = (
        "import sys; sys.modules['torch'] = None; import seqgen.text; "
        "t = seqgen.text.train_tokenizer(seqgen.text.TokenizerConfig(), 'ab'); "
        "assert t.decode(t.encode('ab')) == 'ab'; "
        "assert sys.modules['torch'] is None"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
