"""Training a translator: token-count batches, label smoothing, BLEU selection (``trainer``
hook).

Validation translates the validation split through
:class:`seqgen.tasks.translation.pipeline.Translator`, the same code ``seqgen translate``
runs, and scores it with sacreBLEU; the best checkpoint and early stopping follow that BLEU.
With ``train.average_last = N`` the last N validated
checkpoints are kept and averaged at the end; the average becomes ``best`` if it scores
higher. ``last.safetensors`` holds what ``--resume`` needs to continue bit for bit.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch

from seqgen.data.parallel import ParallelBatch, ParallelBatches
from seqgen.data.streaming import (
    BatchSettings,
    PairStream,
    StreamedBatch,
    StreamPosition,
    sample_pairs,
    streamed_batches,
)
from seqgen.recipes import Recipe, recipe_to_dict
from seqgen.tasks.translation.bleu import corpus_bleu, corpus_chrf
from seqgen.tasks.translation.loss import TranslationLoss
from seqgen.tasks.translation.model import EncoderDecoder
from seqgen.tasks.translation.pipeline import Translator
from seqgen.tasks.translation.shortlist import build_shortlist
from seqgen.tasks.translation.torch_step import TranslatorStep
from seqgen.tasks.translation.training_data import (
    copied_tokenizers,
    load_pairs,
    stream_tokenizers,
    train_tokenizers,
    training_files,
)
from seqgen.text import Tokenizer, tokenizer_from_dict
from seqgen.training.accumulation import accumulated_step
from seqgen.training.averaging import average_checkpoints
from seqgen.training.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from seqgen.training.device import adamw, autocast, resolve_device, use_cpu_bf16
from seqgen.training.driver import EpochTrainer, LoopStats, drive
from seqgen.training.progress import Progress
from seqgen.training.run_folder import capture_rng, open_run, restore_rng
from seqgen.training.schedule import learning_rate_at

logger = logging.getLogger(__name__)


@dataclass
class TranslationResult:
    output_dir: Path
    steps: int
    best_bleu: float
    loop: LoopStats
    unit: ClassVar[str] = "pieces"  # what the loop's throughput counts (source + target)

    def best(self) -> str:
        """The best checkpoint's score, for the last line ``seqgen train`` prints."""
        return f"best validation BLEU {self.best_bleu:.2f}"


@dataclass
class _RunState:
    """What changes as training goes; all of it is saved in ``last.safetensors``."""

    step: int = 0
    best_bleu: float = -1.0
    validations_without_gain: int = 0
    elapsed: float = 0.0
    kept: list[str] = field(default_factory=list)  # validated checkpoints kept for averaging
    stream: list[list[int]] = field(default_factory=list)  # each rank's [epoch, batches]


class TranslationTrainer(EpochTrainer):
    """Holds the pieces of one run; :meth:`run` is the loop."""

    selection_metric = "BLEU"

    def __init__(
        self,
        recipe: Recipe,
        output_dir: Path,
        *,
        resume: bool,
        data_dir: str | None,
        tokenizers: dict[str, Tokenizer] | None = None,
    ) -> None:
        """``tokenizers`` (``source``, ``target``), when given, are used instead of training
        new ones (``seqgen bench`` reuses the bundled model's)."""
        recipe, last = open_run(recipe, output_dir, resume=resume)
        self.output_dir = output_dir
        self.device = self.distributed.device(resolve_device(recipe.train.device))
        self.cpu_bf16 = use_cpu_bf16(self.device, recipe.train.cpu_mixed_precision)
        self.recipe = recipe
        self.validation_sources, self.validation_references = load_pairs(
            recipe, "val", data_dir=data_dir
        )
        if recipe.data.streaming:
            source_ids, target_ids = self._stream_data(last, tokenizers, data_dir)
        else:
            source_ids, target_ids = self._loaded_data(last, tokenizers, data_dir)
        self.model = EncoderDecoder(
            recipe.model, self.tokenizers["source"].vocab_size, self.tokenizers["target"].vocab_size
        ).to(self.device)
        self.optimizer = adamw(
            self.model.parameters(),
            self.device,
            lr=recipe.train.learning_rate,
            weight_decay=recipe.train.weight_decay,
        )
        if self.model.has_shortlist and last is None and source_ids:
            self._build_shortlist(source_ids, target_ids)
        self.run_state = _RunState()
        self._stream_start = StreamPosition()
        if last is not None:
            self.model.load_state_dict({k: v.float() for k, v in last.weights.items()})
            self._restore(last.training)
        if recipe.data.streaming:
            self._streamed = streamed_batches(
                self.stream, self._stream_start, workers=recipe.data.stream_workers
            )
            # Where the stream stands after the last batch trained (none yet).
            start = self._stream_start
            self._stream_at = StreamedBatch(None, start, start.epoch)  # type: ignore[arg-type]
        self.loss = TranslationLoss(self.model, recipe.train)
        self._candidates = self.loss._candidates
        self.prepare_network(self.loss, output_dir)
        self._epoch, self._epoch_batches = -1, []

    def _tokenizers(
        self,
        last: Checkpoint | None,
        given: dict[str, Tokenizer] | None,
        train: Callable[[], dict[str, Tokenizer]],
    ) -> dict[str, Tokenizer]:
        """The checkpoint's tokenizers, the ones given, those of ``tokenizer.copy_from``, or
        ``train()``'s: trained once, on rank 0, and handed to the others."""
        if last is not None:
            return {k: tokenizer_from_dict(v) for k, v in last.tokenizer.items()}
        if given is not None:
            return given
        if self.recipe.tokenizer.copy_from:
            return copied_tokenizers(self.recipe.tokenizer.copy_from)
        trained = self.distributed.from_main(
            lambda: {side: tokenizer.to_dict() for side, tokenizer in train().items()}
        )
        return {side: tokenizer_from_dict(data) for side, data in trained.items()}

    def _loaded_data(
        self, last: Checkpoint | None, tokenizers: dict[str, Tokenizer] | None, data_dir: str | None
    ) -> tuple[list[list[int]], list[list[int]]]:
        """The training pairs read into memory and batched (``self.batches``); returns
        their token ids (for the shortlist)."""
        recipe = self.recipe
        sources, targets = load_pairs(recipe, "train", data_dir=data_dir)
        self.tokenizers = self._tokenizers(
            last, tokenizers, lambda: train_tokenizers(recipe, sources, targets)
        )
        source_ids = [self.tokenizers["source"].encode(s) for s in sources]
        target_ids = [self.tokenizers["target"].encode(t) for t in targets]
        self.batches = ParallelBatches(
            source_ids,
            target_ids,
            **self._batch_size(),
            max_source_length=recipe.data.max_source_length,
            max_target_length=recipe.data.max_target_length,
            seed=recipe.train.seed,
        )
        return source_ids, target_ids

    def _stream_data(
        self, last: Checkpoint | None, tokenizers: dict[str, Tokenizer] | None, data_dir: str | None
    ) -> tuple[list[list[int]], list[list[int]]]:
        """The training pairs streamed from disk (``self.stream``, data.streaming); returns
        the token ids of rank 0's tokenizer sample (for the shortlist; none elsewhere)."""
        recipe, group = self.recipe, self.distributed
        files = training_files(recipe, data_dir=data_dir)
        sample: list[tuple[str, str]] = []

        def draw() -> list[tuple[str, str]]:
            sample[:] = sample_pairs(files, recipe.data.tokenizer_sample, seed=recipe.train.seed)
            return sample

        self.tokenizers = self._tokenizers(
            last, tokenizers, lambda: stream_tokenizers(recipe, files, draw())
        )
        if group.is_main and last is None and recipe.model.shortlist and not sample:
            draw()
        self.stream = PairStream(
            files,
            encode_source=self.tokenizers["source"].encode,
            encode_target=self.tokenizers["target"].encode,
            settings=BatchSettings(
                **self._batch_size(),
                max_source_length=recipe.data.max_source_length,
                max_target_length=recipe.data.max_target_length,
            ),
            seed=recipe.train.seed,
            rank=group.rank,
            world_size=group.world_size,
            shuffle_buffer=recipe.data.shuffle_buffer,
            bucket_pairs=recipe.data.bucket_pairs,
        )
        return (
            [self.tokenizers["source"].encode(s) for s, _ in sample],
            [self.tokenizers["target"].encode(t) for _, t in sample],
        )

    def epoch_at(self, step: int) -> float:
        if self.recipe.data.streaming:
            return self._stream_at.epoch_progress  # rank 0's: a stream's length is not known
        return super().epoch_at(step)

    def gather_state(self) -> None:
        if self.recipe.data.streaming:
            self.run_state.stream = self.distributed.gather(self._stream_position())

    def _stream_position(self) -> list[int]:
        return [self._stream_at.position.epoch, self._stream_at.position.batches]

    def _batch_size(self) -> dict[str, int]:
        """``batch_tokens`` or ``batch_sentences`` of one micro-batch of this process."""
        train = self.recipe.train
        name = "batch_sentences" if train.batch_sentences else "batch_tokens"
        unit = "sentence pairs" if train.batch_sentences else "tokens"
        value = self.micro_batch(name, getattr(train, name), unit)
        return {
            "batch_tokens": train.batch_tokens,
            "batch_sentences": 0,
            name: value,
        }

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        return self.batches.batch_indices(epoch)

    def _build_shortlist(self, source_ids: list[list[int]], target_ids: list[list[int]]) -> None:
        """Fill the model's lexical shortlist from the training pairs (about a second for
        Multi30k's 29,000); validation and every checkpoint then decode with it."""
        table, frequent = build_shortlist(
            source_ids,
            target_ids,
            source_vocab_size=self.model.source_vocab_size,
            target_vocab_size=self.model.target_vocab_size,
            per_source=self.recipe.model.shortlist,
            frequent=self.recipe.model.shortlist_frequent,
        )
        self.model.set_shortlist(torch.from_numpy(table), torch.from_numpy(frequent))

    def _restore(self, training: dict) -> None:
        run = self.run_state
        run.step, run.best_bleu = training["step"], training["best_bleu"]
        run.validations_without_gain = training["validations_without_gain"]
        run.elapsed, run.kept = training["elapsed"], list(training["kept"])
        self.optimizer.load_state_dict(training["optimizer"])
        restore_rng(training["rng"])
        self._stream_start = self._resumed_position(training.get("stream") or [[0, 0]])
        # An average promoted to best when the earlier run ended scored higher than the
        # best_bleu saved in last.safetensors: compare against best.safetensors itself, so a
        # worse checkpoint never replaces it.
        best = self.output_dir / "best.safetensors"
        if best.exists():
            stored = load_checkpoint(best).info.get("validation", {}).get("bleu")
            if stored is not None:
                run.best_bleu = max(run.best_bleu, float(stored))

    def _resumed_position(self, positions: list[list[int]]) -> StreamPosition:
        """This rank's place in the stream when the run stopped (streaming only)."""
        group = self.distributed
        if len(positions) == group.world_size:
            return StreamPosition(*positions[group.rank])
        epoch = max(position[0] for position in positions)
        logger.warning(
            "the run streamed its data on %d processes and resumes on %d: each rank's "
            "stream restarts at the beginning of epoch %d",
            len(positions),
            group.world_size,
            epoch + 1,
        )
        return StreamPosition(epoch + 1, 0)

    def _checkpoint(self, *, info: dict, with_training: bool) -> Checkpoint:
        run = self.run_state
        training = None
        if with_training:
            streamed = self.recipe.data.streaming
            training = {
                "stream": (run.stream or [self._stream_position()]) if streamed else [],
                "step": run.step,
                "best_bleu": run.best_bleu,
                "elapsed": run.elapsed,
                "validations_without_gain": run.validations_without_gain,
                "kept": run.kept,
                "optimizer": self.optimizer.state_dict(),
                "rng": capture_rng(),
            }
        return Checkpoint(
            kind=self.recipe.task,
            recipe=recipe_to_dict(self.recipe),
            tokenizer={name: tokenizer.to_dict() for name, tokenizer in self.tokenizers.items()},
            weights=self.model.state_dict(),
            info=info,
            training=training,
        )

    def translator(self) -> Translator:
        """The pipeline ``seqgen translate`` would build from the current weights."""
        return Translator(
            TranslatorStep(self.model),
            self.tokenizers["source"],
            self.tokenizers["target"],
            self.recipe,
            {},
        )

    def validate(self, translator: Translator | None = None) -> tuple[float, float]:
        """BLEU and chrF of the validation split, decoded as ``seqgen translate`` does."""
        beam_size = self.recipe.train.validation_beam_size or None
        hypotheses = (translator or self.translator()).translate(
            self.validation_sources, beam_size=beam_size
        )
        self.last_hypotheses = hypotheses
        self.model.train()
        return (
            corpus_bleu(hypotheses, self.validation_references).score,
            corpus_chrf(hypotheses, self.validation_references).score,
        )

    def train_step(self) -> tuple[float, int]:
        """One optimizer step over this rank's micro-batches; returns its share of the loss
        per target token and the pieces it read."""
        run, train = self.run_state, self.recipe.train
        if self.recipe.data.streaming:
            streamed = [next(self._streamed) for _ in range(train.accumulate_steps)]
            self._stream_at = streamed[-1]
            batches = [item.batch.to(self.device) for item in streamed]
        else:
            batches = [
                self.batches.make_batch(indices).to(self.device)
                for indices in self.micro_batches(run.step)
            ]
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate_at(run.step, train)

        def loss_sum_of(batch: ParallelBatch) -> torch.Tensor:
            with autocast(self.device, enabled=train.mixed_precision, cpu_enabled=self.cpu_bf16):
                return self.network(
                    batch.source_ids, batch.source_lengths, batch.target_in, batch.target_out
                )

        loss = accumulated_step(
            batches,
            weight_of=lambda batch: batch.num_tokens,
            loss_sum_of=loss_sum_of,
            network=self.network,
            optimizer=self.optimizer,
            grad_clip=train.grad_clip,
            distributed=self.distributed,
        )
        run.step += 1
        pieces = sum(int(batch.source_lengths.sum()) + batch.num_tokens for batch in batches)
        return loss, pieces

    def _keep_for_averaging(self, checkpoint: Checkpoint) -> None:
        run, keep = self.run_state, self.recipe.train.average_last
        if keep < 2:
            return
        path = self.output_dir / f"step-{run.step:07d}.safetensors"
        save_checkpoint(path, checkpoint)
        run.kept.append(path.name)
        while len(run.kept) > keep:
            (self.output_dir / run.kept.pop(0)).unlink(missing_ok=True)

    def validate_and_save(self, progress: Progress) -> None:
        run = self.run_state
        bleu, chrf = self.validate()
        self.metrics.append(
            step=run.step, validation_bleu=bleu, validation_chrf=chrf, elapsed_seconds=run.elapsed
        )
        info = {
            "step": run.step,
            "validation": {"bleu": bleu, "chrf": chrf},
            "elapsed_seconds": run.elapsed,
        }
        improved = bleu > run.best_bleu
        run.validations_without_gain = 0 if improved else run.validations_without_gain + 1
        plain = self._checkpoint(info=info, with_training=False)
        if improved:
            run.best_bleu = bleu
            save_checkpoint(self.output_dir / "best.safetensors", plain)
        self._keep_for_averaging(plain)
        save_checkpoint(
            self.output_dir / "last.safetensors", self._checkpoint(info=info, with_training=True)
        )
        progress.message(
            f"step {run.step}: validation BLEU {bleu:.2f} chrF {chrf:.2f}"
            f"{' (best)' if improved else ''}"
        )
        self.metrics.samples("validation/translations", self.samples, run.step)

    def samples(self, count: int = 3) -> str:
        """The first validation sentences, their translations and references (TensorBoard)."""
        sources, references = self.validation_sources, self.validation_references
        rows = zip(sources[:count], self.last_hypotheses[:count], references[:count], strict=True)
        return "\n\n".join(
            f"**source** {source}  \n**translation** {hypothesis}  \n**reference** {reference}"
            for source, hypothesis, reference in rows
        )

    def _average(self, progress: Progress) -> None:
        """Average the kept checkpoints; the average replaces best if it scores higher."""
        paths = [self.output_dir / name for name in self.run_state.kept]
        if len(paths) < 2 or not self.distributed.is_main:  # rank 0 writes the run folder
            return
        averaged = average_checkpoints(paths)
        self.model.load_state_dict({k: v.float() for k, v in averaged.weights.items()})
        bleu, chrf = self.validate()
        averaged.info["validation"] = {"bleu": bleu, "chrf": chrf}
        save_checkpoint(self.output_dir / "averaged.safetensors", averaged)
        better = bleu > self.run_state.best_bleu
        if better:
            self.run_state.best_bleu = bleu
            save_checkpoint(self.output_dir / "best.safetensors", averaged)
        progress.message(
            f"average of the last {len(paths)} checkpoints: validation BLEU {bleu:.2f} "
            f"chrF {chrf:.2f}{' (best)' if better else ''}"
        )

    def run(self, *, show_progress: bool = True) -> TranslationResult:
        self.model.train()
        progress, loop = drive(self, self.recipe.train, show_progress=show_progress)
        self._average(progress)
        return TranslationResult(
            self.output_dir, self.run_state.step, self.run_state.best_bleu, loop
        )
