"""``seqgen train``: one entry point for every task.

The recipe's task names its trainer (the registry's ``trainer`` hook); the trainer holds the
task's pieces (data, model, loss, validation) and runs the one loop of ``driver.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from seqgen.recipes import Recipe
from seqgen.task import task_named


def train(
    recipe: Recipe,
    output_dir: str | Path,
    *,
    resume: bool = False,
    data_dir: str | None = None,
    show_progress: bool = True,
) -> Any:
    """Train the model a recipe describes; returns the task's result (``steps``, ``loop``,
    ``unit`` and ``best()``)."""
    output_dir = Path(output_dir)
    existed = output_dir.exists()
    try:
        trainer_type = task_named(recipe.task).hook("trainer")
        trainer = trainer_type(recipe, output_dir, resume=resume, data_dir=data_dir)
        return trainer.run(show_progress=show_progress)
    except BaseException:
        # A run that failed before writing anything leaves no empty folder behind.
        if not existed and output_dir.is_dir() and not any(output_dir.iterdir()):
            output_dir.rmdir()
        raise
