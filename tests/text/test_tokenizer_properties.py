"""Property-based tests (hypothesis) of the tokenizers' round trips.

What each tokenizer promises (its module docstring), for any text over what it was trained
on: char gives the text back exactly; sentencepiece gives it back with each line's
whitespace normalised; word and whitespace give back text that encodes to the same ids;
and every tokenizer survives ``to_dict`` -> JSON -> ``tokenizer_from_dict`` unchanged.
Examples are few and small (the suite runs on 2 shared cores).
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seqgen.text import Tokenizer, TokenizerConfig, tokenizer_from_dict, train_tokenizer
from seqgen.text.word import join_words, split_words

FAST = settings(max_examples=60, deadline=None)
CORPUS = (
    "The king and queen of the north ride out at dawn, to meet the army by the river.\n"
    "While the fool sings (of love and war), the old moon hangs over the castle!\n"
    "Don't go; it's late: \"quiet\" now? Yes.\n"
) * 3
ALPHABET = sorted(set(CORPUS))
WORDS = sorted(set(split_words(CORPUS)) - {"\n"})


def trained(kind: str, **options: object) -> Tokenizer:
    return train_tokenizer(TokenizerConfig(kind=kind, **options), CORPUS)  # type: ignore[arg-type]


TOKENIZERS = {
    "char": trained("char"),
    "char-lowercase": trained("char", lowercase=True),
    "word": trained("word", vocab_size=0),
    "whitespace": trained("whitespace", vocab_size=0),
    "sentencepiece": trained("sentencepiece", vocab_size=60),
}
known_text = st.text(alphabet=ALPHABET, max_size=80)


def lines_normalised(text: str) -> str:
    """Each line's runs of spaces and tabs made one space, and no space at its ends."""
    return "\n".join(" ".join(line.split()) for line in text.split("\n"))


@FAST
@given(text=known_text)
def test_char_gives_the_text_back(text: str) -> None:
    tokenizer = TOKENIZERS["char"]
    ids = tokenizer.encode(text)
    assert len(ids) == len(text) and tokenizer.unk_id not in ids
    assert tokenizer.decode(ids) == text


@FAST
@given(text=st.text(alphabet="abcdeTHEWK .\n", max_size=40))
def test_a_lowercasing_char_tokenizer_gives_the_text_back_lower_cased(text: str) -> None:
    tokenizer = TOKENIZERS["char-lowercase"]
    assert tokenizer.decode(tokenizer.encode(text)) == text.lower()


@FAST
@given(text=st.text(alphabet=ALPHABET + ["\t"], max_size=80))
def test_sentencepiece_gives_the_text_back_with_its_whitespace_normalised(text: str) -> None:
    tokenizer = TOKENIZERS["sentencepiece"]
    assert tokenizer.decode(tokenizer.encode(text)) == lines_normalised(text)


word_text = st.lists(
    st.tuples(st.sampled_from([*WORDS, "\n"]), st.sampled_from([" ", "  ", "\t", " \t "])),
    max_size=25,
).map(lambda pairs: "".join(word + space for word, space in pairs))


@FAST
@given(text=word_text)
@pytest.mark.parametrize("kind", ["word", "whitespace"])
def test_word_and_whitespace_decode_to_text_that_encodes_the_same(kind: str, text: str) -> None:
    tokenizer = TOKENIZERS[kind]
    ids = tokenizer.encode(text)
    if kind == "word":
        assert tokenizer.unk_id not in ids
    assert tokenizer.encode(tokenizer.decode(ids)) == ids


@FAST
@given(text=st.text(max_size=40))
def test_joined_words_split_back_into_the_same_tokens(text: str) -> None:
    """For any text at all (any script, any punctuation): what decode joins re-splits into
    the same tokens, so encode(decode(ids)) == ids never depends on the vocabulary."""
    tokens = split_words(text)
    assert split_words(join_words(tokens)) == tokens


@FAST
@given(text=known_text)
@pytest.mark.parametrize("name", sorted(TOKENIZERS))
def test_a_tokenizer_survives_its_json_form(name: str, text: str) -> None:
    tokenizer = TOKENIZERS[name]
    again = tokenizer_from_dict(json.loads(json.dumps(tokenizer.to_dict())))
    assert again.vocab_size == tokenizer.vocab_size
    assert again.encode(text) == tokenizer.encode(text)
    ids = tokenizer.encode(text)
    assert again.decode(ids) == tokenizer.decode(ids)
