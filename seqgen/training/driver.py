"""The loop every trainer shares: step, log, validate on schedule, stop on steps or time.

Under torchrun every rank runs this loop in step: rank 0 alone shows progress, logs metrics,
validates and writes checkpoints, while the others wait for its decision to stop or go on
(validation runs once, on rank 0, not once per process). The logged loss and throughput are
the global batch's: each step sums every rank's share of them in one all-reduce, which also
carries each rank's "out of time" flag, so all ranks stop at the same step.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

from seqgen.config import LoopConfig
from seqgen.training import distributed
from seqgen.training.accumulation import micro_batch_positions
from seqgen.training.accumulation import steps_per_epoch as count_steps
from seqgen.training.metrics import MetricsLog, open_metrics
from seqgen.training.progress import Progress
from seqgen.training.run_folder import seed_rank
from seqgen.training.schedule import learning_rate_at


class RunState(Protocol):
    step: int
    elapsed: float


@dataclass
class LoopStats:
    """What this invocation's training steps did, validation and checkpoints excluded."""

    steps: int = 0
    seconds: float = 0.0
    tokens: int = 0  # tokens read (translators: source + target pieces)

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0

    def summary(self, unit: str) -> str:
        return (
            # Milliseconds: the peer harness reads this line, and a tiny run takes under 0.05 s.
            f"training loop: {self.steps} steps in {self.seconds:.3f} s (validation excluded), "
            f"{self.tokens_per_second:,.0f} {unit}/s"
        )


class Trainer(Protocol):
    """What :func:`drive` needs from a task's trainer."""

    run_state: RunState
    metrics: MetricsLog
    steps_per_epoch: int

    def train_step(self) -> tuple[float, int]:
        """One optimizer step: the training loss and the tokens it read."""
        ...

    def validate_and_save(self, progress: Progress) -> None:
        """Validate, write checkpoints, leave the model in training mode."""
        ...

    def early_stop_reason(self) -> str | None:
        """Why training should stop now (checked after each step), or None."""
        ...


class EpochTrainer:
    """What every task's trainer shares: epochs of ``self.batches``, each step's micro-batches
    (this rank's share of the global batch), and early stopping once ``train.patience``
    validations in a row bring no better :attr:`selection_metric` (None: the task selects no
    checkpoint that way, so it never stops early)."""

    selection_metric: str | None = None  # what its validation selects on: "BLEU", "accuracy"
    # The recipe's batch size as this process's micro-batch holds it: (key, value, unit).
    batch_setting: tuple[str, int, str] = ("batch_size", 0, "rows")

    @property
    def distributed(self) -> distributed.Distributed:
        return distributed.current()

    @property
    def steps_per_epoch(self) -> int:
        return count_steps(
            len(self.batches),  # type: ignore[attr-defined]
            distributed=self.distributed,
            accumulate_steps=self.recipe.train.accumulate_steps,  # type: ignore[attr-defined]
            what="batches",
        )

    def epoch_at(self, step: int) -> float:
        """Passes over the training data after ``step`` steps (metrics.csv's epoch)."""
        return step / self.steps_per_epoch

    def epoch_batches(self, epoch: int) -> list:
        """The batches of ``epoch``, in training order (the same list on every rank)."""
        raise NotImplementedError

    def micro_batches(self, step: int) -> list:
        """This rank's micro-batches of ``step`` (see accumulation.micro_batch_positions)."""
        positions = micro_batch_positions(
            step,
            batches_per_epoch=self.steps_per_epoch * self._per_step(),
            distributed=self.distributed,
            accumulate_steps=self.recipe.train.accumulate_steps,  # type: ignore[attr-defined]
        )
        found = []
        for epoch, index in positions:
            if epoch != getattr(self, "_epoch", None):
                self._epoch, self._epoch_batches = epoch, self.epoch_batches(epoch)
            found.append(self._epoch_batches[index])
        return found

    def _per_step(self) -> int:
        return self.distributed.world_size * self.recipe.train.accumulate_steps  # type: ignore[attr-defined]

    def batch_description(self) -> str:
        """The global batch in words, for the run's log."""
        name, value, unit = self.batch_setting
        world = self.distributed.world_size
        accumulate = self.recipe.train.accumulate_steps  # type: ignore[attr-defined]
        scope = self.recipe.train.batch_scope  # type: ignore[attr-defined]
        return (
            f"global batch: {world} processes x {accumulate} micro-batches x train.{name} "
            f"{value:,} = {world * accumulate * value:,} {unit} per step "
            f"(train.batch_scope = {scope!r}; {self.distributed.backend or 'one process'})"
        )

    def micro_batch(self, name: str, value: int, unit: str) -> int:
        """The recipe's ``train.<name> = value`` as one micro-batch of this process holds it
        (``train.batch_scope``); remembered for the run's log."""
        train = self.recipe.train  # type: ignore[attr-defined]
        size = distributed.micro_batch_size(
            name,
            value,
            scope=train.batch_scope,
            distributed=self.distributed,
            accumulate_steps=train.accumulate_steps,
        )
        self.batch_setting = (name, size, unit)
        return size

    def prepare_network(
        self, module: torch.nn.Module, output_dir: Path, *, find_unused: bool = False
    ) -> None:
        """What every trainer ends its setup with: each rank's own dropout draws, DDP around
        ``module`` (``self.network``, what a step runs), and ``self.metrics`` (rank 0 writes
        metrics.csv; rows past the step resumed from are dropped)."""
        train = self.recipe.train  # type: ignore[attr-defined]
        seed_rank(train.seed, self.run_state.step)  # type: ignore[attr-defined]
        self.network = distributed.wrap(module, self.distributed, find_unused=find_unused)
        self.metrics = open_metrics(
            output_dir / "metrics.csv",
            tensorboard=train.tensorboard,
            writer=self.distributed.is_main,
        )
        self.metrics.keep_until(self.run_state.step)  # type: ignore[attr-defined]

    def gather_state(self) -> None:
        """Collect what the checkpoint needs from every rank (a collective; all ranks call
        it before rank 0 validates and saves)."""

    def early_stop_reason(self) -> str | None:
        """Why training should stop now (checked after each step), or None."""
        if self.selection_metric is None:
            return None
        patience = self.recipe.train.patience  # type: ignore[attr-defined]
        without_gain = self.run_state.validations_without_gain  # type: ignore[attr-defined]
        if patience and without_gain >= patience:
            return (
                f"no better validation {self.selection_metric} in {patience} validations "
                "(train.patience)"
            )
        return None


def drive(
    trainer: Trainer, config: LoopConfig, *, show_progress: bool
) -> tuple[Progress, LoopStats]:
    """Train until ``max_steps`` or ``max_minutes``; validate every ``eval_every`` steps.

    ``max_minutes`` counts this invocation's wall-clock time (validation included): a run
    resumed with ``--resume`` gets the whole budget again, while ``run.elapsed`` (the
    ``elapsed_seconds`` of metrics.csv) keeps counting the run's total time.
    """
    run = trainer.run_state
    group = distributed.current()
    budget = config.max_minutes * 60 if config.max_minutes > 0 else None
    progress = Progress(
        config.max_steps,
        enabled=show_progress and group.is_main,
        log_every=config.log_every,
        seconds=budget,
    )
    if group.is_main and (group.enabled or config.accumulate_steps > 1):
        progress.announce(trainer.batch_description())
    stats = LoopStats()
    invoked = time.perf_counter()
    started = invoked - run.elapsed  # the run's start, earlier invocations included
    window_start, window_tokens = time.perf_counter(), 0
    while run.step < config.max_steps:
        step_start = time.perf_counter()
        loss, tokens = trainer.train_step()
        out_of_time = budget is not None and time.perf_counter() - invoked >= budget
        if group.enabled:  # the global batch's loss and tokens; any rank out of time stops all
            loss, tokens, late = group.sum([loss, tokens, float(out_of_time)])
            tokens, out_of_time = int(tokens), late > 0
        stats.seconds += time.perf_counter() - step_start
        stats.steps += 1
        stats.tokens += tokens
        run.elapsed = time.perf_counter() - started
        window_tokens += tokens
        speed = window_tokens / (time.perf_counter() - window_start)
        progress.update(run.step, loss=loss, tokens_per_second=speed)
        if run.step % config.log_every == 0 and group.is_main:
            trainer.metrics.append(
                step=run.step,
                epoch=trainer.epoch_at(run.step),
                train_loss=loss,
                learning_rate=learning_rate_at(run.step - 1, config),
                tokens_per_second=speed,
                elapsed_seconds=run.elapsed,
            )
            window_start, window_tokens = time.perf_counter(), 0
        validating = run.step % config.eval_every == 0 or run.step == config.max_steps
        if validating or out_of_time:
            validate_once(trainer, progress, group)
            # Validation time is not training throughput.
            window_start, window_tokens = time.perf_counter(), 0
        reason = "train.max_minutes reached" if out_of_time else trainer.early_stop_reason()
        if group.enabled and not out_of_time:
            # Only rank 0 validated, so only it knows; between validations nothing changes.
            reason = group.broadcast(reason) if validating else None
        if reason:
            progress.message(f"stopping at step {run.step}: {reason}")
            break
    progress.close()
    return progress, stats


def validate_once(trainer: Trainer, progress: Progress, group: distributed.Distributed) -> None:
    """Validate and checkpoint on rank 0 only; every rank first hands it what the
    checkpoint holds of theirs (``gather_state``)."""
    gather = getattr(trainer, "gather_state", None)
    if group.enabled and gather is not None:
        gather()
    if group.is_main:
        trainer.validate_and_save(progress)
