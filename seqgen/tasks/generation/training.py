"""Training a language model: truncated BPTT with carried hidden state (``trainer`` hook).

A :class:`LanguageModelTrainer` reads the corpus, trains (or, with ``resume``,
reloads) the tokenizer, and optimises the model, validating every ``eval_every`` steps.
The run folder receives ``best.safetensors`` (lowest validation loss), ``last.safetensors``
(with everything ``--resume`` needs to continue bit for bit) and ``metrics.csv``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch

from seqgen.data.batching import StreamBatches
from seqgen.data.corpora import load_text
from seqgen.data.splits import text_splits
from seqgen.errors import ConfigError, DataError
from seqgen.recipes import Recipe, recipe_to_dict
from seqgen.tasks.generation.evaluation import LanguageModelScores, evaluate_language_model
from seqgen.tasks.generation.model import LanguageModel
from seqgen.text import Tokenizer, tokenizer_from_dict, train_tokenizer
from seqgen.training.accumulation import accumulated_step
from seqgen.training.checkpoint import Checkpoint
from seqgen.training.device import adamw, autocast, resolve_device, use_cpu_bf16
from seqgen.training.driver import EpochTrainer, LoopStats, drive
from seqgen.training.loss import cross_entropy_sum
from seqgen.training.progress import Progress
from seqgen.training.run_folder import (
    capture_rng,
    open_run,
    restore_rng,
    save_validated,
)
from seqgen.training.schedule import learning_rate_at

logger = logging.getLogger(__name__)


@dataclass
class TrainingResult:
    output_dir: Path
    steps: int
    best_validation_loss: float | None  # nats per token, of best.safetensors
    last_validation: LanguageModelScores | None
    loop: LoopStats
    unit: ClassVar[str] = "tokens"  # what the loop's throughput counts

    def best(self) -> str:
        """The best checkpoint's score, for the last line ``seqgen train`` prints."""
        loss = self.best_validation_loss
        return f"best validation loss {loss:.4f}" if loss is not None else "not validated"


@dataclass
class _RunState:
    """What changes as training goes; all of it is saved in ``last.safetensors``."""

    step: int = 0
    # The hidden state each of this process's micro-batches carries to its next window.
    carried: list[dict[str, torch.Tensor] | None] = field(default_factory=lambda: [None])
    best_loss: float = float("inf")
    elapsed: float = 0.0
    # Every rank's carried states, batch-major in the stream's row order (gather_state).
    all_carried: dict[str, torch.Tensor] | None = None


def _encode(tokenizer: Tokenizer, text: str) -> torch.Tensor:
    return torch.tensor(tokenizer.encode(text), dtype=torch.long)


def _joined(states: list[dict[str, torch.Tensor] | None]) -> dict[str, torch.Tensor]:
    """Micro-batches' carried states as one batch-major state of all their rows ({} when
    a pass over the stream has just begun)."""
    if any(state is None for state in states):
        return {}
    return {name: torch.cat([s[name].cpu() for s in states]) for name in states[0]}  # type: ignore[index]


def _training_state(run: _RunState, optimizer: torch.optim.Optimizer) -> dict:
    state = {
        "step": run.step,
        "best_loss": run.best_loss,
        "elapsed": run.elapsed,
        "optimizer": optimizer.state_dict(),
        "rng": capture_rng(),
        "carried": run.all_carried if run.all_carried is not None else _joined(run.carried),
    }
    return state


def _restore_training_state(
    training: dict,
    run: _RunState,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    row_slices: list[slice],
) -> None:
    """Restore what ``last.safetensors`` holds; this process's micro-batches take their
    ``row_slices`` of the carried state (saved for every row of the global batch)."""
    run.step = training["step"]
    run.best_loss = training["best_loss"]
    run.elapsed = training["elapsed"]
    optimizer.load_state_dict(training["optimizer"])
    restore_rng(training["rng"])
    carried = training["carried"]
    run.carried = [
        {k: v[rows].to(device) for k, v in carried.items()} or None for rows in row_slices
    ]


class LanguageModelTrainer(EpochTrainer):
    """Holds the pieces of one run; :meth:`run` is the loop."""

    def __init__(
        self, recipe: Recipe, output_dir: Path, *, resume: bool, data_dir: str | None
    ) -> None:
        recipe, last = open_run(recipe, output_dir, resume=resume)
        self.output_dir = output_dir
        self.device = self.distributed.device(resolve_device(recipe.train.device))
        self.cpu_bf16 = use_cpu_bf16(self.device, recipe.train.cpu_mixed_precision)
        if Path(recipe.data.corpus).is_file():
            # Stored absolute, so `evaluate --split val` works from any folder later.
            recipe.data.corpus = str(Path(recipe.data.corpus).resolve())
        self.recipe = recipe
        self.splits = text_splits(load_text(recipe.data.corpus, data_dir=data_dir), recipe.data)
        if last is not None:
            self.tokenizer = tokenizer_from_dict(last.tokenizer)
        else:
            self.tokenizer = train_tokenizer(recipe.tokenizer, self.splits["train"])
        self.train_ids = _encode(self.tokenizer, self.splits["train"])
        self.validation_ids = _encode(self.tokenizer, self.splits["val"])
        train = recipe.train
        if self.validation_ids.numel() == 0:
            raise DataError(
                "the validation split has no tokens; "
                "raise data.validation_fraction or use more text"
            )
        rows = self._rows_per_micro_batch()
        global_rows = rows * len(self.row_slices) * self.distributed.world_size
        if self.train_ids.numel() < global_rows * 2:
            parts = global_rows // train.batch_size
            times = f" x {parts} (processes x train.accumulate_steps)" if parts > 1 else ""
            raise ConfigError(
                f"the training text has {self.train_ids.numel()} tokens, too few for "
                f"train.batch_size = {train.batch_size} rows{times}; "
                "use a smaller batch_size or more text"
            )
        # One stream of rows for the whole global batch: each process's micro-batches take
        # their own rows of it, so a row's windows always meet the same carried state.
        self.batches = StreamBatches(
            self.train_ids,
            batch_size=global_rows,
            sequence_length=train.sequence_length,
            bos_id=self.tokenizer.bos_id,
        )
        self.model = LanguageModel(recipe.model, self.tokenizer.vocab_size).to(self.device)
        self.optimizer = adamw(
            self.model.parameters(),
            self.device,
            lr=train.learning_rate,
            weight_decay=train.weight_decay,
        )
        self.run_state = _RunState(carried=[None] * len(self.row_slices))
        if last is not None:
            self.model.load_state_dict({k: v.float() for k, v in last.weights.items()})
            _restore_training_state(
                last.training, self.run_state, self.optimizer, self.device, self.row_slices
            )
        self.prepare_network(self.model, output_dir)
        self.last_scores: LanguageModelScores | None = None

    def _rows_per_micro_batch(self) -> int:
        """Rows of one micro-batch; sets ``row_slices``, this process's rows of the stream."""
        train = self.recipe.train
        rows = self.micro_batch("batch_size", train.batch_size, "rows")
        first = self.distributed.rank * train.accumulate_steps
        self.row_slices = [
            slice((first + micro) * rows, (first + micro + 1) * rows)
            for micro in range(train.accumulate_steps)
        ]
        return rows

    @property
    def steps_per_epoch(self) -> int:
        return len(self.batches)  # every step trains one window of every row

    def gather_state(self) -> None:
        """Every rank's carried states, joined in the stream's row order, for the checkpoint."""
        joined = self.distributed.gather(_joined(self.run_state.carried))
        if not all(joined):
            self.run_state.all_carried = {}
            return
        self.run_state.all_carried = {
            name: torch.cat([state[name] for state in joined]) for name in joined[0]
        }

    def _checkpoint(self, *, info: dict, with_training: bool) -> Checkpoint:
        return Checkpoint(
            kind=self.recipe.task,
            recipe=recipe_to_dict(self.recipe),
            tokenizer=self.tokenizer.to_dict(),
            weights=self.model.state_dict(),
            info=info,
            training=_training_state(self.run_state, self.optimizer) if with_training else None,
        )

    def validate(self) -> LanguageModelScores:
        return evaluate_language_model(
            self.model,
            self.validation_ids,
            characters=len(self.splits["val"]),
            batch_size=self.recipe.train.eval_batch_size,
            sequence_length=self.recipe.train.sequence_length,
            bos_id=self.tokenizer.bos_id,
        )

    def train_step(self) -> tuple[float, int]:
        """One optimizer step on the next window of this process's rows; returns its share
        of the loss per token and the tokens it read."""
        run, train = self.run_state, self.recipe.train
        index = run.step % len(self.batches)
        if index == 0:
            # A new pass over the stream starts from zeros (and BOS).
            run.carried = [None] * len(self.row_slices)
        inputs, targets = self.batches.window(index)
        micro_batches = list(enumerate(self.row_slices))
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate_at(run.step, train)

        def loss_sum_of(micro: tuple[int, slice]) -> torch.Tensor:
            position, rows = micro
            with autocast(self.device, enabled=train.mixed_precision, cpu_enabled=self.cpu_bf16):
                logits, carried = self.network(inputs[rows].to(self.device), run.carried[position])
                loss_sum = cross_entropy_sum(
                    logits.flatten(0, 1), targets[rows].flatten().to(self.device)
                )
            # Truncated BPTT: keep the state's values, cut its history.
            run.carried[position] = {k: v.detach().float() for k, v in carried.items()}
            return loss_sum

        loss = accumulated_step(
            micro_batches,
            weight_of=lambda micro: targets[micro[1]].numel(),
            loss_sum_of=loss_sum_of,
            network=self.network,
            optimizer=self.optimizer,
            grad_clip=train.grad_clip,
            distributed=self.distributed,
        )
        run.all_carried = None
        run.step += 1
        return loss, sum(targets[rows].numel() for rows in self.row_slices)

    def validate_and_save(self, progress: Progress) -> None:
        run = self.run_state
        scores = self.last_scores = self.validate()
        self.metrics.append(
            step=run.step,
            validation_loss=scores.loss,
            validation_perplexity=scores.perplexity,
            validation_bits_per_token=scores.bits_per_token,
            elapsed_seconds=run.elapsed,
        )
        info = {"step": run.step, "validation": scores.as_dict(), "elapsed_seconds": run.elapsed}
        improved = scores.loss < run.best_loss
        if improved:
            run.best_loss = scores.loss
        save_validated(
            self.output_dir,
            lambda training: self._checkpoint(info=info, with_training=training),
            improved=improved,
        )
        progress.message(
            f"step {run.step}: validation loss {scores.loss:.4f} ppl {scores.perplexity:.2f} "
            f"bits/token {scores.bits_per_token:.4f}{' (best)' if improved else ''}"
        )
        self.metrics.samples("validation/sample", self.sample, run.step)
        self.model.train()

    def sample(self) -> str:
        """The model's greedy continuation of nothing, 200 tokens (for TensorBoard; greedy
        draws no random numbers, so a resumed run stays bit for bit the same)."""
        from seqgen.tasks.generation.pipeline import Generator
        from seqgen.tasks.generation.torch_step import LanguageModelStep

        generator = Generator(LanguageModelStep(self.model), self.tokenizer, self.recipe.decoding)
        return generator.generate("", strategy="greedy", max_new_tokens=200)[0]

    def run(self, *, show_progress: bool = True) -> TrainingResult:
        self.model.train()
        _, loop = drive(self, self.recipe.train, show_progress=show_progress)
        run = self.run_state
        return TrainingResult(
            output_dir=self.output_dir,
            steps=run.step,
            best_validation_loss=run.best_loss if run.best_loss < float("inf") else None,
            last_validation=self.last_scores,
            loop=loop,
        )
