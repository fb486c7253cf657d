"""What every training run shares: its folder, resuming its recipe, and its RNG state."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path

import torch

from seqgen.errors import CheckpointError, SeqgenError
from seqgen.recipes import Recipe, recipe_from_dict, recipe_to_dict
from seqgen.training import distributed
from seqgen.training.checkpoint import Checkpoint, load_checkpoint, save_checkpoint

logger = logging.getLogger(__name__)


def prepare_output_dir(output_dir: Path, *, resume: bool) -> None:
    """Refuse to overwrite a run, or to resume one that is not there; create the folder."""
    last = output_dir / "last.safetensors"
    if resume and not last.exists():
        raise SeqgenError(f"--resume: {output_dir} holds no last.safetensors to continue from")
    if not resume and last.exists():
        raise SeqgenError(
            f"{output_dir} already holds a run; "
            "pass --resume to continue it or choose another --output"
        )
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:  # no permission, a file in the way, a read-only disk, ...
        raise SeqgenError(
            f"cannot create the run folder {output_dir} ({error.strerror or error}); "
            "choose another --output"
        ) from None


def resumed_recipe(stored: Recipe, requested: Recipe) -> Recipe:
    """Resume with the stored recipe; only the length of training may change."""
    stored.train.max_steps = requested.train.max_steps
    stored.train.max_minutes = requested.train.max_minutes
    old, new = _flat(recipe_to_dict(stored)), _flat(recipe_to_dict(requested))
    ignored = sorted(key for key in new if key in old and new[key] != old[key])
    if ignored:
        logger.warning(
            "--resume continues with the run's own recipe; ignoring changed %s "
            "(only train.max_steps and train.max_minutes may change)",
            ", ".join(ignored),
        )
    return stored


def _flat(values: dict, prefix: str = "") -> dict[str, object]:
    """``{"train": {"seed": 1}}`` -> ``{"train.seed": 1}``."""
    flat: dict[str, object] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def capture_rng() -> dict[str, object]:
    """The RNG state that dropout and shuffling draw from, for an exact ``--resume``."""
    state: dict[str, object] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def seed_rank(seed: int, step: int) -> None:
    """Give each rank but 0 its own dropout draws (the same seed on every rank would drop
    the same units of every process's batch); rank 0 keeps the stream it has (or restored),
    so one process trains as it always did."""
    group = distributed.current()
    if group.enabled and not group.is_main:
        torch.manual_seed(seed + 1_000_003 * group.rank + step)


def restore_rng(state: dict) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def open_run(recipe: Recipe, output_dir: Path, *, resume: bool) -> tuple[Recipe, Checkpoint | None]:
    """Prepare the run folder; on resume, the stored recipe and the last checkpoint.

    Seeds torch's RNG from the recipe (a resumed run then restores the saved RNG state).
    Under torchrun rank 0 alone prepares the folder; every rank gets its verdict.
    """

    def prepare() -> None:
        prepare_output_dir(output_dir, resume=resume)
        remove_leftovers(output_dir)

    distributed.current().from_main(prepare)
    last = None
    if resume:
        last = load_checkpoint(output_dir / "last.safetensors", with_training_state=True)
        check_training_state(output_dir / "last.safetensors", last.training)
        recipe = resumed_recipe(recipe_from_dict(last.recipe), recipe)
    torch.manual_seed(recipe.train.seed)
    return recipe, last


def check_training_state(path: Path, training: object) -> None:
    """CheckpointError, in one line, unless ``training`` has what every task's trainer
    restores (a damaged or hand-made last.safetensors was a KeyError traceback)."""
    problem = None
    if not isinstance(training, dict):
        problem = "no training state" if training is None else "a training state that is no table"
    else:
        step, elapsed, rng = training.get("step"), training.get("elapsed"), training.get("rng")
        if not isinstance(step, int) or isinstance(step, bool) or step < 0:
            problem = f"a bad step {step!r}"
        elif not isinstance(elapsed, (int, float)) or not math.isfinite(elapsed):
            problem = f"a bad elapsed time {elapsed!r}"
        elif not isinstance(training.get("optimizer"), dict):
            problem = "no optimizer state"
        elif not isinstance(rng, dict) or not isinstance(rng.get("cpu"), torch.Tensor):
            problem = "no random number generator state"
    if problem:
        raise CheckpointError(
            f"--resume: {path} holds {problem}, so the run cannot continue; "
            "start it anew in another --output (its best.safetensors is still usable)"
        )


def save_validated(
    output_dir: Path, checkpoint_of: Callable[[bool], Checkpoint], *, improved: bool
) -> None:
    """After a validation: ``best.safetensors`` where it improved, and always
    ``last.safetensors`` with the training state (``checkpoint_of(with_training)``)."""
    if improved:
        save_checkpoint(output_dir / "best.safetensors", checkpoint_of(False))
    save_checkpoint(output_dir / "last.safetensors", checkpoint_of(True))
    remove_leftovers(output_dir)


# The files a run writes through files.atomic_write, whose temporary name is
# ``.<name>.<random>.tmp``: a process killed while writing one (kill -9, a power cut)
# leaves that hidden file behind.
RUN_FILES = ("best.safetensors", "last.safetensors", "metrics.csv")


def remove_leftovers(output_dir: Path) -> list[Path]:
    """Remove the temporary files a killed run left in its folder; returns them.

    Safe because a run folder has one writer: a new run refuses a folder holding a run,
    and this run's own temporary files are renamed into place before it calls this."""
    removed = []
    for name in RUN_FILES:
        for leftover in output_dir.glob(f".{name}.*.tmp"):
            leftover.unlink(missing_ok=True)
            removed.append(leftover)
    if removed:
        logger.info("removed %d temporary files a killed run left in %s", len(removed), output_dir)
    return removed
