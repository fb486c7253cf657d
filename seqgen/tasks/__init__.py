"""The task registry: every task seqgen knows, by name.

Adding a task is one folder (``seqgen/tasks/<name>/``, whose ``__init__.py`` defines its
:class:`~seqgen.task.Task`) and one entry in :data:`TASKS`. Reading the registry imports
each task's config dataclasses only, never torch.
"""

from __future__ import annotations

from seqgen.errors import ConfigError
from seqgen.task import Task
from seqgen.tasks import generation, translation

TASKS: dict[str, Task] = {task.name: task for task in (generation.TASK, translation.TASK)}
_ALIASES = {alias: task for task in TASKS.values() for alias in task.aliases}


def task_named(name: object) -> Task:
    """The task called ``name`` (or by an older name of it); ConfigError for any other."""
    if isinstance(name, str):
        found = TASKS.get(name) or _ALIASES.get(name)
        if found is not None:
            return found
    raise ConfigError(f"task = {name!r} is not valid; choose one of: {', '.join(TASKS)}")


def is_task(name: object) -> bool:
    """Whether ``name`` names a task (or an older name of one)."""
    return isinstance(name, str) and (name in TASKS or name in _ALIASES)


__all__ = ["TASKS", "Task", "is_task", "task_named"]
