"""The loop every trainer shares: step, log, validate on schedule, stop on steps or time."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

from seqgen.config import LoopConfig
from seqgen.training.metrics import MetricsLog
from seqgen.training.progress import Progress
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
    """What every task's trainer shares: epochs of ``self.batches``, and early stopping once
    ``train.patience`` validations in a row bring no better :attr:`selection_metric` (None:
    the task selects no checkpoint that way, so it never stops early)."""

    selection_metric: str | None = None  # what its validation selects on: "BLEU", "accuracy"

    @property
    def steps_per_epoch(self) -> int:
        return len(self.batches)  # type: ignore[attr-defined]

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
    budget = config.max_minutes * 60 if config.max_minutes > 0 else None
    progress = Progress(
        config.max_steps, enabled=show_progress, log_every=config.log_every, seconds=budget
    )
    stats = LoopStats()
    invoked = time.perf_counter()
    started = invoked - run.elapsed  # the run's start, earlier invocations included
    window_start, window_tokens = time.perf_counter(), 0
    while run.step < config.max_steps:
        step_start = time.perf_counter()
        loss, tokens = trainer.train_step()
        stats.seconds += time.perf_counter() - step_start
        stats.steps += 1
        stats.tokens += tokens
        run.elapsed = time.perf_counter() - started
        window_tokens += tokens
        speed = window_tokens / (time.perf_counter() - window_start)
        progress.update(run.step, loss=loss, tokens_per_second=speed)
        if run.step % config.log_every == 0:
            trainer.metrics.append(
                step=run.step,
                epoch=run.step / trainer.steps_per_epoch,
                train_loss=loss,
                learning_rate=learning_rate_at(run.step - 1, config),
                tokens_per_second=speed,
                elapsed_seconds=run.elapsed,
            )
            window_start, window_tokens = time.perf_counter(), 0
        out_of_time = budget is not None and time.perf_counter() - invoked >= budget
        if run.step % config.eval_every == 0 or run.step == config.max_steps or out_of_time:
            trainer.validate_and_save(progress)
            # Validation time is not training throughput.
            window_start, window_tokens = time.perf_counter(), 0
        reason = "train.max_minutes reached" if out_of_time else trainer.early_stop_reason()
        if reason:
            progress.message(f"stopping at step {run.step}: {reason}")
            break
    progress.close()
    return progress, stats
