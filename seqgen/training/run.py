"""``seqgen train``: one entry point for every task.

The recipe's task names its trainer (the registry's ``trainer`` hook); the trainer holds the
task's pieces (data, model, loss, validation) and runs the one loop of ``driver.py``.
"""

from __future__ import annotations

import contextlib
import gc
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from seqgen.errors import SeqgenError
from seqgen.recipes import Recipe
from seqgen.task import task_named
from seqgen.training import distributed


def train(
    recipe: Recipe,
    output_dir: str | Path,
    *,
    resume: bool = False,
    data_dir: str | None = None,
    show_progress: bool = True,
) -> Any:
    """Train the model a recipe describes; returns the task's result (``steps``, ``loop``,
    ``unit`` and ``best()``).

    Launched by torchrun, this process first joins the process group (``distributed``):
    each rank trains on its share of every step's batches and rank 0 writes the run folder.
    """
    output_dir = Path(output_dir)
    existed = output_dir.exists()
    group = distributed.start(
        recipe.train.device, timeout_minutes=recipe.train.distributed_timeout_minutes
    )
    try:
        trainer_type = task_named(recipe.task).hook("trainer")
        with (
            distributed.named_failures(group),
            distributed.stopped_by_launcher(group),
            _memory_errors_named(),
        ):
            trainer = trainer_type(recipe, output_dir, resume=resume, data_dir=data_dir)
            result = trainer.run(show_progress=show_progress)
        # DDP's reducer holds the process group and gloo's last work (with its tensors): let
        # it go now, while the group and the interpreter are alive, not at interpreter exit,
        # where freeing those tensors from gloo's threads can abort the process ("terminate
        # called without an active exception", a resumed two-process run under load).
        del trainer
        gc.collect()
        distributed.stop(finished=True)
        return result
    except BaseException:
        # A run that failed before writing anything leaves no empty folder behind.
        if group.is_main and not existed and output_dir.is_dir() and not any(output_dir.iterdir()):
            output_dir.rmdir()
        raise
    finally:
        distributed.stop()


# How PyTorch reports an allocation that cannot be made: CPU, CUDA, and sizes past int64.
_MEMORY_ERRORS = ("can't allocate memory", "out of memory", "size calculation overflowed")


@contextlib.contextmanager
def _memory_errors_named() -> Iterator[None]:
    """Turn PyTorch's failure to allocate (``--set model.hidden_size=1000000000`` asked
    for 256 GB) into one SeqgenError line naming the settings that size the run."""
    try:
        yield
    except RuntimeError as error:  # torch.OutOfMemoryError is one
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        if not any(words in message for words in _MEMORY_ERRORS):
            raise
        asked = re.search(r"allocate (\d+) bytes", message)
        what = f"{int(asked[1]) / 2**30:,.1f} GiB asked at once" if asked else message[:160]
        raise SeqgenError(
            f"training ran out of memory ({what}); make the model "
            "(model.*_size, model.*layers) or the batches (train.batch_size) smaller"
        ) from None
