"""The sections of a translation recipe: ``[data]``, ``[tokenizer]``, ``[model]``, ``[train]``,
``[decoding]``.

(``[tokenizer]`` is ``seqgen.text.TokenizerConfig``, shared by every task, plus ``copy_from``.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from seqgen.config import LoopConfig, check_choice, check_fraction, check_positive
from seqgen.decoding.contract import TOP_CANDIDATES
from seqgen.errors import ConfigError
from seqgen.text import TokenizerConfig


@dataclass
class TranslationDataConfig:
    """A translator's parallel text: a named corpus or the user's own aligned files."""

    corpus: str = "multi30k:de-en"  # multi30k:SRC-TGT, or "" to read the files below
    # Aligned files, one sentence per line (used when corpus = ""); a *_source ending in .tsv
    # with an empty *_target holds both sides, tab-separated.
    train_source: str = ""
    train_target: str = ""
    validation_source: str = ""
    validation_target: str = ""
    max_source_length: int = 100  # training pairs longer than this (in pieces) are skipped
    max_target_length: int = 100
    # Stream the training pairs from disk instead of loading them (corpora larger than
    # memory; seqgen.data.streaming): memory then depends on the three settings below, not
    # on the corpus. The tokenizer trains on a uniform sample of tokenizer_sample pairs
    # (word, whitespace and char vocabularies count the whole corpus in one pass).
    streaming: bool = False
    shuffle_buffer: int = 50_000  # pairs held for shuffling
    bucket_pairs: int = 5_000  # pairs sorted by length together and cut into batches
    tokenizer_sample: int = 100_000  # pairs
    # 1: read and tokenize the stream in a background process, beside training (for GPUs:
    # one process supplies about what one GPU trains); 0: inside the training loop.
    stream_workers: int = 0

    def validate(self) -> None:
        check_choice("data.stream_workers", str(self.stream_workers), ("0", "1"))
        for name in ("shuffle_buffer", "bucket_pairs", "tokenizer_sample"):
            check_positive(f"data.{name}", getattr(self, name))
        if not self.corpus and not (self.train_source and self.validation_source):
            raise ConfigError(
                "data.corpus is empty, so data.train_source and data.validation_source must name "
                "files (with data.train_target and data.validation_target, or as .tsv files)"
            )
        check_positive("data.max_source_length", self.max_source_length)
        check_positive("data.max_target_length", self.max_target_length)


@dataclass
class TranslationTokenizerConfig(TokenizerConfig):
    """How to train a translator's tokenizers (:class:`seqgen.text.TokenizerConfig`), or
    ``copy_from``: a trained translator (a bundled model's name, a checkpoint or a bundle)
    whose two tokenizers are used as they are, the settings above then unused. Models of one
    ensemble must share their target tokenizer (``seqgen translate --model A --model B``); a
    tokenizer trained on other text (a distilled corpus, more data) is another vocabulary."""

    copy_from: str = ""

    def validate(self) -> None:
        if not isinstance(self.copy_from, str):
            raise ConfigError(
                f"tokenizer.copy_from must be a translator's name or path (a string), got "
                f"{self.copy_from!r}"
            )
        if not self.copy_from:
            super().validate()


@dataclass
class EncoderDecoderConfig:
    """An attentional encoder-decoder: a bidirectional RNN encoder and an RNN decoder.

    The defaults follow OpenNMT-py's RNN baseline for Multi30k: a 1-layer bidirectional
    LSTM encoder of 2 x 128, an LSTM decoder of 256, Luong general attention with input
    feeding, embeddings of 256 and dropout 0.2.
    """

    cell: str = "lstm"  # lstm | gru, for the encoder and the decoder
    embedding_size: int = 256  # source and target embeddings
    encoder_hidden_size: int = 128  # per direction: the memory is 2 x this wide
    encoder_layers: int = 1
    decoder_hidden_size: int = 256
    decoder_layers: int = 1
    attention: str = "general"  # bahdanau (additive) | dot | general (Luong et al., 2015)
    input_feeding: bool = True  # feed the previous attentional vector (Luong et al., 2015, 3.3)
    dropout: float = 0.2  # on embeddings, between RNN layers and on the attentional vector
    # Share the target embedding with the output layer (Press & Wolf, 2017); when
    # embedding_size != decoder_hidden_size a projection to embedding_size comes first.
    tie_target_embeddings: bool = False
    share_embeddings: bool = False  # one embedding for source and target (a joint vocabulary)
    # A lexical shortlist for decoding (seqgen.tasks.translation.shortlist): the target tokens that
    # co-occur most with each source token in the training pairs (shortlist of them, 0 = no
    # shortlist) plus the shortlist_frequent most frequent ones; decoding then scores only
    # the batch's union of them instead of the whole vocabulary.
    shortlist: int = 0
    shortlist_frequent: int = 200
    # The decoder's first state from the encoder's final states: "learned" (Linear + tanh,
    # seqgen.tasks.translation.encoder.Bridge) or "copy" (the states as they are,
    # OpenNMT-py's default; needs decoder_hidden_size == 2 * encoder_hidden_size).
    bridge: str = "learned"
    # 0 keeps PyTorch's initialisation; > 0 draws every parameter from U(-init_range,
    # init_range), as OpenNMT-py's param_init does (0.1 in its RNN recipes).
    init_range: float = 0.0

    def validate(self) -> None:
        check_choice("model.cell", self.cell, ("lstm", "gru"))
        check_choice("model.bridge", self.bridge, ("learned", "copy"))
        check_positive("model.init_range", self.init_range, allow_zero=True)
        for name in ("shortlist", "shortlist_frequent"):
            check_positive(f"model.{name}", getattr(self, name), allow_zero=True)
        if self.shortlist and self.shortlist_frequent < TOP_CANDIDATES:
            # A step graph's top-k reads TOP_CANDIDATES per row, which the union must hold.
            raise ConfigError(
                f"model.shortlist_frequent = {self.shortlist_frequent} is too small; with "
                f"model.shortlist it must be at least {TOP_CANDIDATES}"
            )
        check_choice("model.attention", self.attention, ("bahdanau", "dot", "general"))
        for name in (
            "embedding_size",
            "encoder_hidden_size",
            "encoder_layers",
            "decoder_hidden_size",
            "decoder_layers",
        ):
            check_positive(f"model.{name}", getattr(self, name))
        check_fraction("model.dropout", self.dropout)
        memory_size = 2 * self.encoder_hidden_size
        if self.attention == "dot" and self.decoder_hidden_size != memory_size:
            raise ConfigError(
                "model.attention = 'dot' needs model.decoder_hidden_size == "
                f"2 * model.encoder_hidden_size (got {self.decoder_hidden_size} and "
                f"2 * {self.encoder_hidden_size}); use 'general' for different sizes"
            )
        if self.bridge == "copy" and self.decoder_hidden_size != memory_size:
            raise ConfigError(
                "model.bridge = 'copy' needs model.decoder_hidden_size == "
                f"2 * model.encoder_hidden_size (got {self.decoder_hidden_size} and "
                f"2 * {self.encoder_hidden_size}); use 'learned' for different sizes"
            )


@dataclass
class TranslationTrainConfig(LoopConfig):
    """A translator's loop: token-count batches, label smoothing, BLEU-based selection."""

    batch_tokens: int = 4096  # padded source or target tokens per batch, whichever is larger
    batch_sentences: int = 0  # > 0: batches of this many sentence pairs instead of batch_tokens
    label_smoothing: float = 0.1  # Szegedy et al. (2016)
    patience: int = 0  # stop after this many validations without a better BLEU; 0 = off
    average_last: int = 0  # average the last N validated checkpoints at the end; 0 = off
    validation_beam_size: int = 0  # beam for validation BLEU; 0 = decoding.beam_size
    # Normalise the loss over each batch's candidates only: its sources' lexical shortlist
    # (model.shortlist, what decoding scores) and its targets (Jean et al., 2015), so the
    # output layer multiplies a quarter of the vocabulary's rows or fewer.
    shortlist_loss: bool = False

    def validate(self) -> None:
        super().validate()
        check_positive("train.batch_tokens", self.batch_tokens)
        check_fraction("train.label_smoothing", self.label_smoothing)
        for name in ("batch_sentences", "patience", "average_last", "validation_beam_size"):
            check_positive(f"train.{name}", getattr(self, name), allow_zero=True)


@dataclass
class TranslationDecodingConfig:
    """A translator's decoding defaults, stored with the model (checkpoint or bundle); the
    options of each call override them (``seqgen.decoding.options``)."""

    beam_size: int = 5
    length_penalty: float = 1.0  # GNMT alpha (Wu et al., 2016); 0 = raw log-prob sums
    max_length_ratio: float = 2.0  # at most ratio * source_len + offset target pieces
    max_length_offset: int = 10
    min_length_ratio: float = 0.0  # at least ratio * source_len pieces before EOS
    no_repeat_ngram_size: int = 0  # 0 = off
    batch_size: int = 64  # sentences decoded together

    def validate(self) -> None:
        for name in ("beam_size", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(
                    f"decoding.{name} = {getattr(self, name)} is not valid; it must be at least 1"
                )
        for name in (
            "length_penalty",
            "max_length_ratio",
            "max_length_offset",
            "min_length_ratio",
            "no_repeat_ngram_size",
        ):
            check_positive(f"decoding.{name}", getattr(self, name), allow_zero=True)


def check_recipe(recipe: Any) -> None:
    """What no single section can check: the shortlist loss needs the model's shortlist."""
    if recipe.train.shortlist_loss and not recipe.model.shortlist:
        raise ConfigError(
            "train.shortlist_loss needs the model's lexical shortlist; set model.shortlist "
            "(e.g. 10) or train.shortlist_loss = false"
        )
