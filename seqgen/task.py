"""The task registry: what a task registers, and where the shared layers find it.

A task (generation, translation, ...) lives in one folder, ``seqgen/tasks/<name>/``, and
describes itself with one :class:`Task`, the ``TASK`` of that folder's ``__init__.py``;
:data:`TASK_PACKAGES` lists those folders. Adding a task is one folder and one line there.
The shared layers (recipes, loading, bundles, training, the command line) look a task up
with :func:`task_named` and call its hooks; none of them names a task, and none imports one:
the registry imports the task packages by name when first asked, so every import arrow
points from the tasks down to the shared layers.

Hooks are ``"module:attribute"`` strings imported on first use, so that reading the registry
imports neither torch nor ONNX Runtime (``seqgen --help`` stays instant, and a bundle runs
without torch installed).
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from seqgen.errors import ConfigError

# The registry: each task's package, whose ``TASK`` is its entry, in the order commands and
# messages list them.
TASK_PACKAGES = (
    "seqgen.tasks.generation",
    "seqgen.tasks.translation",
    "seqgen.tasks.classification",
)


@dataclass(frozen=True)
class Task:
    """One task's registry entry.

    Hooks (each ``"module:attribute"``, see :meth:`hook`):

    - ``from_checkpoint(checkpoint, recipe, path, device) -> pipeline`` on PyTorch;
    - ``from_bundle(folder, manifest, **runtime) -> pipeline`` on ONNX Runtime (``runtime``:
      device, threads, io_binding; imports no torch);
    - ``write_bundle(pipeline, model, staging, *, fp16, int8) -> manifest entries`` (export;
      ``int8``: a bundle for the CPU, whose step the quantizer rewrites after);
    - ``trainer``: a class ``(recipe, output_dir, *, resume, data_dir)`` with ``run()``;
    - ``evaluate(pipeline, request) -> lines``: what ``seqgen evaluate`` prints;
    - ``command``: the click command named :attr:`command` (``seqgen generate``, ...);
    - ``serve``: the :class:`~seqgen.serving.endpoint.Endpoint` of ``seqgen serve``.
    - ``ensemble(pipelines, names) -> pipeline``: several models decoding as one (optional;
      ``seqgen evaluate --model A --model B``).
    """

    name: str  # the recipe's ``task``, a checkpoint's and a bundle's ``kind``
    title: str  # what a user calls a model of it: "generator", "translator"
    command: str  # the command that runs such a model: "generate", "translate"
    sections: Mapping[str, type]  # recipe section -> dataclass, in order
    graph_files: Mapping[str, str]  # bundle graph name -> file
    tokenizer_files: tuple[str, ...]  # a bundle's tokenizer files
    # The models shipped in the package: name (``--model NAME``) -> folder in assets/; the first is
    # the task's default model.
    bundled_models: Mapping[str, str]
    hooks: Mapping[str, str]  # hook name -> "module:attribute"
    aliases: tuple[str, ...] = field(default=())  # older names, read in old files
    # Graphs of graph_files that a bundle may leave out (a translator's output_rows: a
    # shortlisted model's only).
    optional_graphs: tuple[str, ...] = field(default=())

    @staticmethod
    def hooks_in(package: str, *, trainer: str, **more: str) -> dict[str, str]:
        """The hooks of a task folder laid out as every task's is: ``loading.py``
        (``from_checkpoint``, ``from_bundle``), ``graphs.py`` (``write_bundle``),
        ``training.py`` (the ``trainer`` class named), ``cli.py`` (``evaluate`` and the
        command, passed as ``command="cli:NAME"``), ``serving.py`` (``ENDPOINT``, the HTTP
        route); ``more`` adds or replaces hooks, each
        ``"module:attribute"`` inside the folder."""
        hooks = {
            "from_checkpoint": "loading:from_checkpoint",
            "from_bundle": "loading:from_bundle",
            "write_bundle": "graphs:write_bundle",
            "trainer": f"training:{trainer}",
            "evaluate": "cli:evaluate",
            "serve": "serving:ENDPOINT",
            **more,
        }
        return {name: f"{package}.{where}" for name, where in hooks.items()}

    def hook(self, name: str) -> Any:
        """The hook ``name``, imported now."""
        module, _, attribute = self.hooks[name].partition(":")
        return getattr(importlib.import_module(module), attribute)


@functools.cache
def registered_tasks() -> dict[str, Task]:
    """Every registered task by name (its package imported on the first call)."""
    entries = (importlib.import_module(package).TASK for package in TASK_PACKAGES)
    return {task.name: task for task in entries}


@functools.cache
def _aliases() -> dict[str, Task]:
    return {alias: task for task in registered_tasks().values() for alias in task.aliases}


def task_named(name: object) -> Task:
    """The task called ``name`` (or by an older name of it); ConfigError for any other."""
    if isinstance(name, str):
        found = registered_tasks().get(name) or _aliases().get(name)
        if found is not None:
            return found
    names = ", ".join(registered_tasks())
    raise ConfigError(f"task = {name!r} is not valid; choose one of: {names}")


def is_task(name: object) -> bool:
    """Whether ``name`` names a task (or an older name of one)."""
    return isinstance(name, str) and (name in registered_tasks() or name in _aliases())
