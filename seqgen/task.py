"""What a task registers: the one place where the shared layers learn what a task has.

A task (generation, translation, ...) lives in one folder, ``seqgen/tasks/<name>/``, and
describes itself with one :class:`Task` in that folder's ``__init__.py``; the registry
(``seqgen.tasks``) lists them. The shared layers (recipes, loading, bundles, training, the
command line) look a task up there and call its hooks; none of them names a task.

Hooks are ``"module:attribute"`` strings imported on first use, so that reading the registry
imports neither torch nor ONNX Runtime (``seqgen --help`` stays instant, and a bundle runs
without torch installed).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Task:
    """One task's registry entry.

    Hooks (each ``"module:attribute"``, see :meth:`hook`):

    - ``from_checkpoint(checkpoint, recipe, path, device) -> pipeline`` on PyTorch;
    - ``from_bundle(folder, manifest, **runtime) -> pipeline`` on ONNX Runtime (``runtime``:
      device, threads, io_binding; imports no torch);
    - ``write_bundle(pipeline, model, staging, *, fp16) -> manifest entries`` (export);
    - ``trainer``: a class ``(recipe, output_dir, *, resume, data_dir)`` with ``run()``;
    - ``evaluate(pipeline, request) -> lines``: what ``seqgen evaluate`` prints;
    - ``command``: the click command named :attr:`command` (``seqgen generate``, ...).
    """

    name: str  # the recipe's ``task``, a checkpoint's and a bundle's ``kind``
    title: str  # what a user calls a model of it: "generator", "translator"
    command: str  # the command that runs such a model: "generate", "translate"
    sections: Mapping[str, type]  # recipe section -> dataclass, in order
    graph_files: Mapping[str, str]  # bundle graph name -> file
    tokenizer_files: tuple[str, ...]  # a bundle's tokenizer files
    bundled_model: str  # the asset file of the model shipped in the package
    hooks: Mapping[str, str]  # hook name -> "module:attribute"
    aliases: tuple[str, ...] = field(default=())  # older names, read in old files

    @staticmethod
    def hooks_in(package: str, *, trainer: str, **more: str) -> dict[str, str]:
        """The hooks of a task folder laid out as every task's is: ``loading.py``
        (``from_checkpoint``, ``from_bundle``), ``graphs.py`` (``write_bundle``),
        ``training.py`` (the ``trainer`` class named), ``cli.py`` (``evaluate`` and the
        command, passed as ``command="cli:NAME"``); ``more`` adds or replaces hooks, each
        ``"module:attribute"`` inside the folder."""
        hooks = {
            "from_checkpoint": "loading:from_checkpoint",
            "from_bundle": "loading:from_bundle",
            "write_bundle": "graphs:write_bundle",
            "trainer": f"training:{trainer}",
            "evaluate": "cli:evaluate",
            **more,
        }
        return {name: f"{package}.{where}" for name, where in hooks.items()}

    def hook(self, name: str) -> Any:
        """The hook ``name``, imported now."""
        module, _, attribute = self.hooks[name].partition(":")
        return getattr(importlib.import_module(module), attribute)
