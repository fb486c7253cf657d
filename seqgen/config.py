"""Typed configuration: one dataclass per component, composed into a :class:`Recipe`.

A recipe is a TOML file with one table per component::

    task = "language_model"
    [data]       corpus = "tinyshakespeare"
    [tokenizer]  kind = "char"
    [model]      cell = "lstm"
    [train]      max_steps = 5000

Defaults are declared once, on the dataclass fields. ``--set train.learning_rate=3e-4``
overrides a value; an unknown key is rejected with the nearest valid key suggested.
Checkpoints store the resolved recipe, so inference never reads model settings from flags.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from seqgen.decoding.contract import TOP_CANDIDATES
from seqgen.errors import ConfigError
from seqgen.text import TokenizerConfig


def _check_choice(where: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{where} = {value!r} is not valid; choose one of: {', '.join(choices)}")


def _check_positive(where: str, value: float, *, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{where} = {value} is not valid; it must be {bound}")


def _check_fraction(where: str, value: float) -> None:
    if not 0 <= value < 1:
        raise ConfigError(f"{where} = {value} is not valid; it must be in [0, 1)")


@dataclass
class DataConfig:
    """Where a language model's text comes from and how it is split."""

    corpus: str = "tinyshakespeare"  # a named corpus or a path to a UTF-8 text file
    validation_fraction: float = 0.1  # the last 10% of characters validate (nanoGPT's split)
    test_fraction: float = 0.0  # taken from the very end, after validation, when > 0

    def validate(self) -> None:
        _check_fraction("data.validation_fraction", self.validation_fraction)
        _check_fraction("data.test_fraction", self.test_fraction)
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
        _check_choice("model.cell", self.cell, ("lstm", "gru", "rnn"))
        for name in ("embedding_size", "hidden_size", "num_layers"):
            _check_positive(f"model.{name}", getattr(self, name))
        _check_fraction("model.dropout", self.dropout)
        if self.tie_weights and self.embedding_size != self.hidden_size:
            raise ConfigError(
                "model.tie_weights needs model.embedding_size == model.hidden_size "
                f"(got {self.embedding_size} and {self.hidden_size})"
            )


@dataclass
class LoopConfig:
    """What every training loop shares: steps, time budget, AdamW, schedule, checkpoints."""

    max_steps: int = 5000
    max_minutes: float = 0.0  # stop after this much wall-clock training time; 0 = no limit
    learning_rate: float = 2e-3
    min_learning_rate: float = 1e-4  # where the cosine schedule ends
    warmup_steps: int = 100
    schedule: str = "cosine"  # cosine | constant (after warmup)
    weight_decay: float = 0.0
    grad_clip: float = 1.0  # max global gradient norm; 0 = off
    eval_every: int = 500  # validate and checkpoint every this many steps
    log_every: int = 50
    seed: int = 1234
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    mixed_precision: bool = True  # bf16/fp16 autocast on CUDA
    # bf16 autocast on CPU as well: about 1.35x faster training where the CPU has bf16 dot
    # products (AVX512-BF16 or AMX); without them bf16 is emulated and oneDNN's LSTM refuses
    # it. "auto": bf16 where the CPU has them, float32 elsewhere; true: bf16, refused without.
    cpu_mixed_precision: bool | str = False

    def validate(self) -> None:
        for name in ("max_steps", "eval_every", "log_every"):
            _check_positive(f"train.{name}", getattr(self, name))
        _check_positive("train.learning_rate", self.learning_rate)
        for name in (
            "max_minutes",
            "min_learning_rate",
            "warmup_steps",
            "weight_decay",
            "grad_clip",
        ):
            _check_positive(f"train.{name}", getattr(self, name), allow_zero=True)
        _check_choice("train.schedule", self.schedule, ("cosine", "constant"))
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ConfigError(
                f"train.device = {self.device!r} is not valid; use auto, cpu, cuda or cuda:N"
            )


@dataclass
class TrainConfig(LoopConfig):
    """A language model's loop: truncated BPTT over parallel streams."""

    batch_size: int = 64  # parallel streams, each carrying its hidden state across batches
    sequence_length: int = 128  # tokens per truncated back-propagation window
    eval_batch_size: int = 16

    def validate(self) -> None:
        super().validate()
        for name in ("batch_size", "sequence_length", "eval_batch_size"):
            _check_positive(f"train.{name}", getattr(self, name))


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

    def validate(self) -> None:
        if not self.corpus and not (self.train_source and self.validation_source):
            raise ConfigError(
                "data.corpus is empty, so data.train_source and data.validation_source must name "
                "files (with data.train_target and data.validation_target, or as .tsv files)"
            )
        _check_positive("data.max_source_length", self.max_source_length)
        _check_positive("data.max_target_length", self.max_target_length)


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
        _check_positive("train.batch_tokens", self.batch_tokens)
        _check_fraction("train.label_smoothing", self.label_smoothing)
        for name in ("batch_sentences", "patience", "average_last", "validation_beam_size"):
            _check_positive(f"train.{name}", getattr(self, name), allow_zero=True)


@dataclass
class DecodingConfig:
    """A translator's decoding defaults, stored with the model; flags override them."""

    beam_size: int = 5
    length_penalty: float = 1.0  # GNMT alpha (Wu et al., 2016); 0 = raw log-prob sums
    max_length_ratio: float = 2.0  # at most ratio * source_len + offset target pieces
    max_length_offset: int = 10
    min_length_ratio: float = 0.0  # at least ratio * source_len pieces before EOS
    no_repeat_ngram_size: int = 0  # 0 = off
    batch_size: int = 64  # sentences decoded together

    def validate(self) -> None:
        for name in ("beam_size", "batch_size"):
            _check_positive(f"decoding.{name}", getattr(self, name))
        for name in (
            "length_penalty",
            "max_length_ratio",
            "max_length_offset",
            "min_length_ratio",
            "no_repeat_ngram_size",
        ):
            _check_positive(f"decoding.{name}", getattr(self, name), allow_zero=True)


@dataclass
class TranslatorConfig:
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
    # A lexical shortlist for decoding (seqgen.decoding.shortlist): the target tokens that
    # co-occur most with each source token in the training pairs (shortlist of them, 0 = no
    # shortlist) plus the shortlist_frequent most frequent ones; decoding then scores only
    # the batch's union of them instead of the whole vocabulary.
    shortlist: int = 0
    shortlist_frequent: int = 200
    # The decoder's first state from the encoder's final states: "learned" (Linear + tanh,
    # seqgen.models.encoder.Bridge) or "copy" (the states as they are, OpenNMT-py's default;
    # needs decoder_hidden_size == 2 * encoder_hidden_size).
    bridge: str = "learned"
    # 0 keeps PyTorch's initialisation; > 0 draws every parameter from U(-init_range,
    # init_range), as OpenNMT-py's param_init does (0.1 in its RNN recipes).
    init_range: float = 0.0

    def validate(self) -> None:
        _check_choice("model.cell", self.cell, ("lstm", "gru"))
        _check_choice("model.bridge", self.bridge, ("learned", "copy"))
        _check_positive("model.init_range", self.init_range, allow_zero=True)
        for name in ("shortlist", "shortlist_frequent"):
            _check_positive(f"model.{name}", getattr(self, name), allow_zero=True)
        if self.shortlist and self.shortlist_frequent < TOP_CANDIDATES:
            # A step graph's top-k reads TOP_CANDIDATES per row, which the union must hold.
            raise ConfigError(
                f"model.shortlist_frequent = {self.shortlist_frequent} is too small; with "
                f"model.shortlist it must be at least {TOP_CANDIDATES}"
            )
        _check_choice("model.attention", self.attention, ("bahdanau", "dot", "general"))
        for name in (
            "embedding_size",
            "encoder_hidden_size",
            "encoder_layers",
            "decoder_hidden_size",
            "decoder_layers",
        ):
            _check_positive(f"model.{name}", getattr(self, name))
        _check_fraction("model.dropout", self.dropout)
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
class Recipe:
    """Everything needed to reproduce a training run."""

    task: str = "language_model"  # language_model | translation
    data: DataConfig | TranslationDataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: LanguageModelConfig | TranslatorConfig = field(default_factory=LanguageModelConfig)
    train: TrainConfig | TranslationTrainConfig = field(default_factory=TrainConfig)
    decoding: DecodingConfig | None = None  # translation only

    def validate(self) -> None:
        _check_choice("task", self.task, tuple(TASK_SECTIONS))
        for section in TASK_SECTIONS[self.task]:
            getattr(self, section).validate()
        shortlist_loss = getattr(self.train, "shortlist_loss", False)
        if shortlist_loss and not getattr(self.model, "shortlist", 0):
            raise ConfigError(
                "train.shortlist_loss needs the model's lexical shortlist; set model.shortlist "
                "(e.g. 10) or train.shortlist_loss = false"
            )


# Each task names the dataclass of each of its sections.
TASK_SECTIONS: dict[str, dict[str, type]] = {
    "language_model": {
        "data": DataConfig,
        "tokenizer": TokenizerConfig,
        "model": LanguageModelConfig,
        "train": TrainConfig,
    },
    "translation": {
        "data": TranslationDataConfig,
        "tokenizer": TokenizerConfig,
        "model": TranslatorConfig,
        "train": TranslationTrainConfig,
        "decoding": DecodingConfig,
    },
}


def _suggest(key: str, valid: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(valid), n=1)
    return f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(valid)}"


_BOOL_WORDS = ("true", "false", "1", "0", "yes", "no")


def _parse(where: str, text: str, kind: type) -> Any:
    """A command-line string as a bool, int or float (``1e3`` reads as an int too)."""
    text = text.strip()
    try:
        if kind is bool:
            if text.lower() not in _BOOL_WORDS:
                raise ValueError
            return text.lower() in ("true", "1", "yes")
        if kind is int and "e" in text.lower():
            return float(text)  # then checked to be a whole number, so 1.5e0 is refused
        return kind(text)
    except ValueError:
        raise ConfigError(f"{where} = {text!r} is not a valid {kind.__name__}") from None


def _coerce(where: str, value: Any, kind: Any) -> Any:
    """Turn a TOML or command-line value into the field's type, or explain why not."""
    if kind == bool | str:  # a switch that may also be decided at run time
        if value == "auto":
            return value
        if isinstance(value, str) and value.strip().lower() not in _BOOL_WORDS:
            raise ConfigError(f'{where} = {value!r} is not valid; use true, false or "auto"')
        kind = bool
    if isinstance(value, str) and kind is not str:
        value = _parse(where, value, kind)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is float and isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{where} = {value!r} is not valid; it must be a finite number")
    if kind is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{where} = {value!r} is not a valid {kind.__name__}")
    return value


def _build(cls: type, values: dict[str, Any], where: str) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"[{where}] must be a table of keys, got {values!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in values:
        if key not in names:
            raise ConfigError(f"unknown key '{where}.{key}'{_suggest(key, names)}")
    return cls(**{k: _coerce(f"{where}.{k}", v, hints[k]) for k, v in values.items()})


def recipe_from_dict(values: dict[str, Any]) -> Recipe:
    """Build and validate a recipe from nested dicts (a parsed TOML file or a checkpoint)."""
    values = dict(values)
    task = values.pop("task", "language_model")
    if task not in TASK_SECTIONS:
        raise ConfigError(
            f"task = {task!r} is not valid; choose one of: {', '.join(TASK_SECTIONS)}"
        )
    sections = TASK_SECTIONS[task]
    for key in values:
        if key not in sections:
            raise ConfigError(f"unknown section '{key}'{_suggest(key, ['task', *sections])}")
    built = {name: _build(cls, values.get(name, {}), name) for name, cls in sections.items()}
    recipe = Recipe(task=task, **built)
    recipe.validate()
    return recipe


def apply_overrides(values: dict[str, Any], overrides: typing.Sequence[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` strings to nested dicts; types are checked when building."""
    result = {k: dict(v) if isinstance(v, dict) else v for k, v in values.items()}
    for item in overrides:
        path, sep, value = item.partition("=")
        section, dot, key = path.strip().partition(".")
        if not sep or not dot or not key:
            raise ConfigError(
                f"--set {item!r} is not of the form section.key=value "
                "(e.g. train.learning_rate=3e-4)"
            )
        result.setdefault(section, {})
        if not isinstance(result[section], dict):
            raise ConfigError(f"--set {item!r}: '{section}' is not a section")
        result[section][key] = value
    return result


def load_recipe(path: str | Path, overrides: typing.Sequence[str] = ()) -> Recipe:
    """Read a TOML recipe, apply ``--set`` overrides, validate, and return it."""
    path = Path(path)
    try:
        values = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"no such recipe: {path}; see the recipes/ folder for examples") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path} is not valid TOML: {error}") from None
    except OSError as error:  # a folder, no permission, ...
        raise ConfigError(f"cannot read recipe {path} ({error.strerror or error})") from None
    return recipe_from_dict(apply_overrides(values, overrides))


def recipe_to_dict(recipe: Recipe) -> dict[str, Any]:
    """The recipe as plain nested dicts (JSON- and TOML-friendly)."""
    return {
        "task": recipe.task,
        **{name: dataclasses.asdict(getattr(recipe, name)) for name in TASK_SECTIONS[recipe.task]},
    }
