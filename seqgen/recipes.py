"""Recipes: a task's config sections, composed from a TOML file and ``--set`` overrides.

A recipe is a TOML file with the task's name and one table per section::

    task = "generation"
    [data]       corpus = "tinyshakespeare"
    [tokenizer]  kind = "char"
    [model]      cell = "lstm"
    [train]      max_steps = 5000
    [decoding]   temperature = 0.8

Each task declares its sections' dataclasses in the registry (``seqgen.tasks``); defaults are
declared once, on their fields. ``--set train.learning_rate=3e-4`` overrides a value; an
unknown key is rejected with the nearest valid key suggested. Checkpoints and bundles store
the resolved recipe, so inference never reads model settings from flags.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomllib

from seqgen.config import build_section, suggest
from seqgen.errors import ConfigError
from seqgen.task import task_named

DEFAULT_TASK = "generation"


@dataclass
class Recipe:
    """Everything needed to reproduce a training run: the task and its sections.

    A section left out (None) takes its dataclass's defaults, as the task declares it.
    """

    task: str = DEFAULT_TASK
    data: Any = None
    tokenizer: Any = None
    model: Any = None
    train: Any = None
    decoding: Any = None

    def __post_init__(self) -> None:
        task = task_named(self.task)
        self.task = task.name
        for name, section in task.sections.items():
            if getattr(self, name) is None:
                setattr(self, name, section())

    def validate(self) -> None:
        task = task_named(self.task)
        for name in task.sections:
            getattr(self, name).validate()
        if "check_recipe" in task.hooks:
            task.hook("check_recipe")(self)


def recipe_from_dict(values: dict[str, Any]) -> Recipe:
    """Build and validate a recipe from nested dicts (a parsed TOML file or a checkpoint)."""
    if not isinstance(values, dict):
        raise ConfigError(f"a recipe must be a table of sections, got {type(values).__name__}")
    values = dict(values)
    task = task_named(values.pop("task", DEFAULT_TASK))
    sections = task.sections
    for key in values:
        if key not in sections:
            # repr: a hostile file's name stays on one line (a newline is shown as \n), cut short
            name = repr(key) if len(key) <= 80 else f"{key[:40]!r}..."
            raise ConfigError(f"unknown section {name}{suggest(key, ['task', *sections])}")
    built = {name: build_section(cls, values.get(name, {}), name) for name, cls in sections.items()}
    recipe = Recipe(task=task.name, **built)
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
    recipe = recipe_from_dict(apply_overrides(values, overrides))
    check_data_sources(recipe, overrides)
    return recipe


def recipe_to_dict(recipe: Recipe) -> dict[str, Any]:
    """The recipe as plain nested dicts (JSON- and TOML-friendly)."""
    sections = task_named(recipe.task).sections
    return {
        "task": recipe.task,
        **{name: dataclasses.asdict(getattr(recipe, name)) for name in sections},
    }


# A data section's fields that name the user's own files: read only when its corpus is "".
FILE_FIELD_ENDINGS = ("_source", "_target", "_file")


def check_data_sources(recipe: Recipe, overrides: typing.Sequence[str] = ()) -> None:
    """ConfigError where the data section names a corpus and files too, so the files would
    never be read, without a word (``--set data.train_source=FILE`` on a recipe naming
    ``data.corpus``). A corpus given with ``--set`` over a recipe of files is what was asked
    for, so that is allowed. Checked for recipes being trained, not for the recipes stored
    in checkpoints, which were trained as they say."""
    corpus = getattr(recipe.data, "corpus", "")
    if not corpus:
        return
    given = {item.partition("=")[0].strip() for item in overrides}
    for field in dataclasses.fields(recipe.data):
        value = getattr(recipe.data, field.name)
        if not (field.name.endswith(FILE_FIELD_ENDINGS) and value):
            continue
        if "data.corpus" in given and f"data.{field.name}" not in given:
            continue  # the recipe's files, replaced by the corpus asked for on the command line
        raise ConfigError(
            f"data.{field.name} = {value!r} would be ignored: files are read only when "
            f"data.corpus is empty, and this recipe names data.corpus = {corpus!r}; add "
            f"--set data.corpus= to train on your files, or leave data.{field.name} out"
        )
