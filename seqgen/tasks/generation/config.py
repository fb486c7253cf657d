"""The sections of a generation recipe: ``[data]``, ``[model]``, ``[train]``, ``[decoding]``.

(``[tokenizer]`` is ``seqgen.text.TokenizerConfig``, shared by every task.)
"""

from __future__ import annotations

from dataclasses import dataclass

from seqgen.config import LoopConfig, check_choice, check_fraction, check_positive
from seqgen.errors import ConfigError

STRATEGIES = ("greedy", "sample", "beam")
# Above it sampling is uniform to float32's precision, and scores / temperature underflow.
MAX_TEMPERATURE = 100.0


@dataclass
class TextDataConfig:
    """Where a language model's text comes from and how it is split."""

    corpus: str = "tinyshakespeare"  # a named corpus or a path to a UTF-8 text file
    validation_fraction: float = 0.1  # the last 10% of characters validate (nanoGPT's split)
    test_fraction: float = 0.0  # taken from the very end, after validation, when > 0

    def validate(self) -> None:
        check_fraction("data.validation_fraction", self.validation_fraction)
        check_fraction("data.test_fraction", self.test_fraction)
        if self.validation_fraction <= 0:
            raise ConfigError(
                "data.validation_fraction must be > 0: training needs a validation split"
            )
        if self.validation_fraction + self.test_fraction >= 1:
            raise ConfigError("data.validation_fraction + data.test_fraction must be < 1")


@dataclass
class LanguageModelConfig:
    """An embedding, a stack of recurrent layers and an output layer."""

    cell: str = "lstm"  # lstm | gru | rnn (tanh)
    embedding_size: int = 256
    hidden_size: int = 512
    num_layers: int = 2
    dropout: float = 0.2  # on embeddings, between layers and before the output layer
    tie_weights: bool = False  # share the embedding and output matrices (Press & Wolf, 2017)

    def validate(self) -> None:
        check_choice("model.cell", self.cell, ("lstm", "gru", "rnn"))
        for name in ("embedding_size", "hidden_size", "num_layers"):
            check_positive(f"model.{name}", getattr(self, name))
        check_fraction("model.dropout", self.dropout)
        if self.tie_weights and self.embedding_size != self.hidden_size:
            raise ConfigError(
                "model.tie_weights needs model.embedding_size == model.hidden_size "
                f"(got {self.embedding_size} and {self.hidden_size})"
            )


@dataclass
class LanguageModelTrainConfig(LoopConfig):
    """A language model's loop: truncated BPTT over parallel streams."""

    batch_size: int = 64  # parallel streams, each carrying its hidden state across batches
    sequence_length: int = 128  # tokens per truncated back-propagation window
    eval_batch_size: int = 16

    def validate(self) -> None:
        super().validate()
        for name in ("batch_size", "sequence_length", "eval_batch_size"):
            check_positive(f"train.{name}", getattr(self, name))


@dataclass
class GenerationDecodingConfig:
    """A generator's decoding defaults, stored with the model (checkpoint or bundle); the
    options of each call override them (``seqgen.decoding.options``)."""

    max_new_tokens: int = 300
    strategy: str = "sample"  # greedy | sample | beam
    temperature: float = 0.8  # sample only; 0 means greedy
    top_k: int = 0  # sample only; 0 = off
    top_p: float = 1.0  # sample only; 1 = off
    beam_size: int = 5  # beam only
    num_samples: int = 1  # independent samples, or the n best beams
    length_penalty: float = 1.0  # beam only: GNMT alpha (Wu et al., 2016); 0 = raw sums
    no_repeat_ngram_size: int = 0  # ban repeating any n-gram of this size; 0 = off

    def validate(self) -> None:
        if self.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens = {self.max_new_tokens}; it must be at least 1")
        check_choice("strategy", self.strategy, STRATEGIES)
        if not 0 <= self.temperature <= MAX_TEMPERATURE:  # NaN fails too
            raise ConfigError(
                f"temperature = {self.temperature}; it must be >= 0 (0 means greedy) and at "
                f"most {MAX_TEMPERATURE:g}"
            )
        if self.top_k < 0:
            raise ConfigError(f"top_k = {self.top_k}; it must be >= 0 (0 turns it off)")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p = {self.top_p}; it must be in (0, 1]")
        if self.num_samples < 1 or self.beam_size < 1:
            raise ConfigError("num_samples and beam_size must be at least 1")
        if self.strategy == "beam" and self.num_samples > self.beam_size:
            raise ConfigError(
                f"num_samples = {self.num_samples} beams asked for, "
                f"but beam_size is {self.beam_size}; raise --beam-size"
            )
        check_positive("length_penalty", self.length_penalty, allow_zero=True)
        check_positive("no_repeat_ngram_size", self.no_repeat_ngram_size, allow_zero=True)
