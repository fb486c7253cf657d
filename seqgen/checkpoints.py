"""A checkpoint opened as its task's pipeline on PyTorch, and the models the package ships.

The checkpoint's ``kind`` names its task (``seqgen.tasks``), whose ``from_checkpoint`` hook
builds the pipeline from the stored recipe, tokenizers and weights.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from seqgen.errors import CheckpointError, ConfigError, SeqgenError
from seqgen.recipes import DEFAULT_TASK, recipe_from_dict
from seqgen.task import Task, is_task, registered_tasks, task_named


def load_checkpoint_pipeline(path: str | Path, *, kind: str | None = None, device: str = "auto"):
    """A checkpoint (file or run folder) on PyTorch. With ``kind``, a checkpoint of another
    task is refused with a message naming the right command."""
    from seqgen.training.checkpoint import load_checkpoint
    from seqgen.training.device import resolve_device

    expected = task_of_kind(kind)
    checkpoint = load_checkpoint(path)
    if not is_task(checkpoint.kind):
        raise CheckpointError(
            f"{path} holds a {checkpoint.kind!r} model, which this seqgen cannot load"
        )
    task = task_named(checkpoint.kind)
    check_task(path, task, expected)
    try:
        recipe = recipe_from_dict(checkpoint.recipe)
    except ConfigError as error:
        raise CheckpointError(
            f"{path} has a damaged recipe ({error}); retrain or re-export it"
        ) from None
    return task.hook("from_checkpoint")(checkpoint, recipe, Path(path), resolve_device(device))


# The models shipped inside the package: a folder each (``seqgen.bundles.packing``), both an
# ONNX bundle, which inference runs without torch, and the checkpoint its graphs read their
# weights from, which training, export and ``--backend torch`` use.
ASSETS = Path(str(resources.files("seqgen") / "assets"))
PACKAGED_CHECKPOINT = "model.safetensors"


def bundled_model_path(kind: str = DEFAULT_TASK) -> Path:
    """The checkpoint of the model shipped inside the package for task ``kind`` (its
    default one)."""
    return next(iter(_packaged(task_named(kind)).values())) / PACKAGED_CHECKPOINT


def bundled_models() -> dict[str, Path]:
    """Every model shipped inside the package (its folder), by the name ``--model`` takes."""
    return {
        name: folder
        for task in registered_tasks().values()
        for name, folder in _packaged(task).items()
    }


def default_bundled_model(kind: str = DEFAULT_TASK) -> str:
    """The name of task ``kind``'s default bundled model (its first)."""
    return next(iter(task_named(kind).bundled_models))


def model_path(path: str | Path) -> Path:
    """``path``, or the checkpoint of the bundled model it names where no such file or
    folder exists."""
    named = packaged_bundle(path)
    return named / PACKAGED_CHECKPOINT if named is not None else Path(path)


def packaged_bundle(path: str | Path) -> Path | None:
    """The folder of the bundled model ``path`` names (where no such file or folder
    exists), else None."""
    named = bundled_models().get(str(path))
    return named if named is not None and not Path(path).exists() else None


def _packaged(task: Task) -> dict[str, Path]:
    return {name: ASSETS / folder for name, folder in task.bundled_models.items()}


def check_task(path: Any, found: Task, expected: Task | None) -> None:
    """CheckpointError where the model at ``path`` is not of the ``expected`` task."""
    if expected is not None and found is not expected:
        raise CheckpointError(
            f"{path} holds a {found.title}, not a {expected.title}; "
            f"use seqgen {found.command} with it"
        )


def task_of_kind(kind: str | None) -> Task | None:
    """The task ``kind`` names (None for None); SeqgenError for an unknown name."""
    if kind is None:
        return None
    if not is_task(kind):
        raise SeqgenError(f"unknown kind {kind!r}; choose one of: {', '.join(registered_tasks())}")
    return task_named(kind)
