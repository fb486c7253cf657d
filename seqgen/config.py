"""Typed configuration, shared by every task: checks, parsing, and the training loop's section.

Each component owns a dataclass with its defaults declared once, and each task declares the
dataclasses of its recipe's sections (``seqgen.tasks.<task>.config``); ``seqgen.recipes``
composes them into a :class:`~seqgen.recipes.Recipe`. This module knows no task.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import re
import reprlib
import typing
from dataclasses import dataclass
from typing import Any

from seqgen.errors import ConfigError

# Metadata (a checkpoint's recipe and tokenizer, a bundle's manifest) nests a few levels;
# deeper is a hostile or broken file, refused before any recursive code walks it.
MAX_JSON_DEPTH = 64
# Values quoted in messages are cut short, so an error stays one readable line.
_short = reprlib.Repr()
_short.maxlevel, _short.maxstring, _short.maxother, _short.maxdict, _short.maxlist = 2, 40, 40, 3, 3
QUOTE_LENGTH = 80


def _quote(value: Any) -> str:
    """``repr(value)``, cut to at most :data:`QUOTE_LENGTH` characters."""
    text = _short.repr(value)
    return text if len(text) <= QUOTE_LENGTH else text[: QUOTE_LENGTH - 3] + "..."


class JSONLimitError(ValueError):
    """JSON text that parses, or would, past :data:`MAX_JSON_DEPTH` levels."""


def parse_json(text: str | bytes) -> Any:
    """``json.loads`` with a nesting limit: JSONLimitError (a ValueError, as
    ``json.JSONDecodeError`` is) for text nested deeper than :data:`MAX_JSON_DEPTH`."""
    try:
        value = json.loads(text)
    except RecursionError:  # the parser recursed past Python's limit (about 1,000 levels)
        raise JSONLimitError(f"nested deeper than {MAX_JSON_DEPTH} levels") from None
    if isinstance(value, (dict, list)) and text_depth(text) > MAX_JSON_DEPTH:
        raise JSONLimitError(f"nested deeper than {MAX_JSON_DEPTH} levels")
    return value


# A JSON string (escapes included; the loop unrolled, 18x faster on a tokenizer's 490 KB
# string than an alternation per character), and anything that is not a bracket.
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_EMPTY_PAIR = re.compile(r"\[\]|\{\}")


def text_depth(text: str | bytes) -> int:
    """How deeply valid JSON ``text`` nests, up to ``MAX_JSON_DEPTH + 1``: its brackets
    outside strings, emptied of their innermost pairs one level a pass. Regular expressions
    instead of a walk of the parsed value: a bundle's shortlist holds 8,000 lists, and the
    walk took a tenth of a one-line translation's time."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    brackets = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text))
    depth = 0
    while brackets and depth <= MAX_JSON_DEPTH:
        brackets, depth = _EMPTY_PAIR.sub("", brackets), depth + 1
    return depth


def json_depth(value: Any) -> int:
    """How deeply ``value`` nests (a scalar: 0), walked without recursion."""
    if not isinstance(value, (dict, list)):
        return 0
    deepest, stack = 1, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        children = item.values() if isinstance(item, dict) else item
        # Only containers go on the stack: a bundle's shortlist holds 80,000 numbers, and
        # pushing each one made this walk a fifth of a one-line translation's time.
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return deepest


def check_choice(where: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(
            f"{where} = {_quote(value)} is not valid; choose one of: {', '.join(choices)}"
        )


def check_positive(where: str, value: float, *, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{where} = {value} is not valid; it must be {bound}")


def check_fraction(where: str, value: float) -> None:
    if not 0 <= value < 1:
        raise ConfigError(f"{where} = {value} is not valid; it must be in [0, 1)")


@dataclass
class LoopConfig:
    """What every training loop shares: steps, time budget, AdamW, schedule, checkpoints."""

    max_steps: int = 5000
    # Stop after this many minutes of wall-clock time in this invocation (validation
    # included; a run resumed with --resume gets them afresh); 0 = no limit.
    max_minutes: float = 0.0
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
    # Also write metrics.csv's scalars and a few sample outputs per validation to
    # RUN/tensorboard/ (needs the tensorboard extra).
    tensorboard: bool = False
    # Micro-batches per optimizer step: their gradients add up (weighted by tokens, so two
    # half batches give the update of one full batch) before one update.
    accumulate_steps: int = 1
    # Whether the task's batch size (batch_tokens, batch_sentences, batch_size) is each
    # process's micro-batch ("process": the global batch is processes x accumulate_steps x
    # it) or the whole step's ("global": split over them, which must divide it).
    batch_scope: str = "process"
    # Under torchrun: how long a process waits for the others in a collective (rank 0
    # validating, a stalled or dead peer) before it stops with an error.
    distributed_timeout_minutes: float = 30.0

    def validate(self) -> None:
        for name in ("max_steps", "eval_every", "log_every", "accumulate_steps"):
            check_positive(f"train.{name}", getattr(self, name))
        check_positive("train.learning_rate", self.learning_rate)
        for name in (
            "max_minutes",
            "min_learning_rate",
            "warmup_steps",
            "weight_decay",
            "grad_clip",
        ):
            check_positive(f"train.{name}", getattr(self, name), allow_zero=True)
        check_choice("train.schedule", self.schedule, ("cosine", "constant"))
        check_choice("train.batch_scope", self.batch_scope, ("process", "global"))
        check_positive("train.distributed_timeout_minutes", self.distributed_timeout_minutes)
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ConfigError(
                f"train.device = {_quote(self.device)} is not valid; use auto, cpu, cuda or cuda:N"
            )


def suggest(key: str, valid: typing.Iterable[str]) -> str:
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
        raise ConfigError(f"{where} = {_quote(text)} is not a valid {kind.__name__}") from None


def _coerce(where: str, value: Any, kind: Any) -> Any:
    """Turn a TOML or command-line value into the field's type, or explain why not."""
    if kind == bool | str:  # a switch that may also be decided at run time
        if value == "auto":
            return value
        if isinstance(value, str) and value.strip().lower() not in _BOOL_WORDS:
            raise ConfigError(f'{where} = {_quote(value)} is not valid; use true, false or "auto"')
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
        raise ConfigError(f"{where} = {_quote(value)} is not a valid {kind.__name__}")
    return value


def build_section(cls: type, values: dict[str, Any], where: str) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"[{where}] must be a table of keys, got {_quote(values)}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in values:
        if key not in names:
            name = f"{where}.{key}" if len(key) <= QUOTE_LENGTH else f"{where}.{key[:40]}..."
            raise ConfigError(f"unknown key '{name}'{suggest(key, names)}")
    return cls(**{k: _coerce(f"{where}.{k}", v, hints[k]) for k, v in values.items()})
