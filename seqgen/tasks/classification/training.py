"""Training a classifier: length-bucketed batches, class weights, dev accuracy selects the best
checkpoint and stops early (``trainer`` hook).

Validation classifies the validation split through
:class:`seqgen.tasks.classification.pipeline.Classifier`, the same code ``seqgen classify``
runs. With ``model.init_from`` the embedding and recurrent layers start from a language
model's (ULMFiT's route: Howard & Ruder, 2018), whose tokenizer the classifier then takes;
with ``model.init_embeddings`` the embedding rows of the words GloVe knows start from their
GloVe vectors. ``train.freeze_pretrained_steps`` keeps what was pretrained frozen while the
new layers learn first.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from seqgen.recipes import Recipe, recipe_to_dict
from seqgen.tasks.classification.evaluation import ClassificationScores, score_predictions
from seqgen.tasks.classification.examples import LengthBatches, label_ids, label_set, load_examples
from seqgen.tasks.classification.model import SequenceClassifier
from seqgen.tasks.classification.pipeline import Classifier
from seqgen.tasks.classification.pretrained import pretrained_encoder
from seqgen.tasks.classification.torch_step import ClassifierTorchStep
from seqgen.tasks.classification.word_vectors import (
    WordVectors,
    add_vector_words,
    copy_word_vectors,
    load_word_vectors,
)
from seqgen.text import tokenizer_from_dict, train_tokenizer
from seqgen.text.vocabulary import SPECIAL_TOKENS
from seqgen.training.accumulation import accumulated_step
from seqgen.training.checkpoint import Checkpoint
from seqgen.training.device import adamw, autocast, resolve_device, use_cpu_bf16
from seqgen.training.driver import EpochTrainer, LoopStats, drive
from seqgen.training.progress import Progress
from seqgen.training.run_folder import (
    capture_rng,
    open_run,
    restore_rng,
    save_validated,
)
from seqgen.training.schedule import learning_rate_at


@dataclass
class ClassificationResult:
    output_dir: Path
    steps: int
    best_accuracy: float
    loop: LoopStats
    unit: ClassVar[str] = "tokens"  # what the loop's throughput counts

    def best(self) -> str:
        """The best checkpoint's score, for the last line ``seqgen train`` prints."""
        return f"best validation accuracy {100 * self.best_accuracy:.2f}%"


@dataclass
class _RunState:
    """What changes as training goes; all of it is saved in ``last.safetensors``."""

    step: int = 0
    best_accuracy: float = -1.0
    validations_without_gain: int = 0
    elapsed: float = 0.0


class ClassificationTrainer(EpochTrainer):
    """Holds the pieces of one run; :meth:`run` is the loop."""

    selection_metric = "accuracy"

    def __init__(
        self, recipe: Recipe, output_dir: Path, *, resume: bool, data_dir: str | None
    ) -> None:
        recipe, last = open_run(recipe, output_dir, resume=resume)
        self.recipe, self.output_dir = recipe, output_dir
        self.device = self.distributed.device(resolve_device(recipe.train.device))
        self.cpu_bf16 = use_cpu_bf16(self.device, recipe.train.cpu_mixed_precision)
        texts, labels = load_examples(recipe, "train", data_dir=data_dir)
        self.validation = load_examples(recipe, "val", data_dir=data_dir)
        pretrained = None if last is not None else pretrained_encoder(recipe.model)
        vectors = None  # a new run's word vectors (model.init_embeddings)
        if last is not None:
            self.tokenizer = tokenizer_from_dict(last.tokenizer["text"])
            self.labels = list(last.tokenizer["labels"])
        else:
            self.labels = label_set(labels, "the training split")
            self.tokenizer = (
                pretrained.tokenizer if pretrained else train_tokenizer(recipe.tokenizer, texts)
            )
            vectors = self._word_vectors_and_their_words()
        targets = label_ids(labels, self.labels, "the training split")
        self.validation_targets = label_ids(self.validation[1], self.labels, "the validation split")
        limit = recipe.data.max_length
        sequences = [
            self.tokenizer.encode(text)[:limit] or [self.tokenizer.unk_id] for text in texts
        ]
        batch_size = self.micro_batch("batch_size", recipe.train.batch_size, "texts")
        self.batches = LengthBatches(
            sequences, targets, batch_size=batch_size, seed=recipe.train.seed
        )
        self.class_weights = _class_weights(
            targets, len(self.labels), recipe.train.class_weights, self.device
        )
        self.model = SequenceClassifier(recipe.model, self.tokenizer.vocab_size, len(self.labels))
        if pretrained is not None:
            self.model.load_state_dict(pretrained.weights, strict=False)
        # How many words start from their vectors, for the run's log.
        self.vectors_note = "" if vectors is None else self._copy_word_vectors(vectors)
        self.model.to(self.device)
        train = recipe.train
        self.optimizer = adamw(
            self.model.parameters(),
            self.device,
            lr=train.learning_rate,
            weight_decay=train.weight_decay,
        )
        self.run_state = _RunState()
        if last is not None:
            self.model.load_state_dict({k: v.float() for k, v in last.weights.items()})
            self._restore(last.training)
        # Pretrained layers frozen for the first steps take no gradient then: DDP must
        # look for parameters a step leaves unused.
        frozen_first = bool(self._has_pretrained() and train.freeze_pretrained_steps)
        self.prepare_network(self.model, output_dir, find_unused=frozen_first)
        self._epoch, self._epoch_batches = -1, []
        self._thawed: int | None = None  # how many pretrained layers train, once set

    def _word_vectors_and_their_words(self) -> WordVectors | None:
        """``model.init_embeddings``'s vectors (None without it); with ``model.vector_words``
        the tokenizer takes that many of their words beyond the training text's."""
        model = self.recipe.model
        if not model.init_embeddings:
            return None
        vectors = load_word_vectors(model.init_embeddings)
        self.trained_words = self.tokenizer.vocab_size - len(SPECIAL_TOKENS)
        if model.vector_words:  # a word tokenizer: check_recipe
            self.tokenizer = add_vector_words(self.tokenizer, vectors.words, model.vector_words)
        return vectors

    def _copy_word_vectors(self, vectors: WordVectors) -> str:
        """Start the embedding rows of the vocabulary's words from their vectors; returns a
        line saying how many words had one."""
        tokens = self.tokenizer.vocabulary.to_list()  # a word tokenizer: check_recipe
        weight = self.model.embedding.weight
        found = copy_word_vectors(weight, tokens, vectors)
        # Words model.vector_words added never occur in training, so their rows never learn:
        # columns past the vectors' hold zeros, not random values the network never saw.
        with torch.no_grad():
            weight[len(SPECIAL_TOKENS) + self.trained_words :, vectors.vectors.shape[1] :] = 0.0
        words = len(tokens) - len(SPECIAL_TOKENS)
        added = words - self.trained_words
        return (
            f"model.init_embeddings = {self.recipe.model.init_embeddings!r}: {found:,} of the "
            f"vocabulary's {words:,} words ({100 * found / max(words, 1):.1f}%) start from "
            f"their vectors" + (f", {added:,} of them added by model.vector_words" if added else "")
        )

    def _has_pretrained(self) -> bool:
        """Whether some layers start pretrained (``train.freeze_pretrained_steps`` applies)."""
        return bool(self.recipe.model.init_from or self.recipe.model.init_embeddings)

    def epoch_batches(self, epoch: int) -> list[np.ndarray]:
        return self.batches.epoch(epoch)

    def _restore(self, training: dict) -> None:
        run = self.run_state
        run.step, run.best_accuracy = training["step"], training["best_accuracy"]
        run.validations_without_gain = training["validations_without_gain"]
        run.elapsed = training["elapsed"]
        self.optimizer.load_state_dict(training["optimizer"])
        restore_rng(training["rng"])

    def _checkpoint(self, *, info: dict, with_training: bool) -> Checkpoint:
        run = self.run_state
        training = None
        if with_training:
            training = {
                "step": run.step,
                "best_accuracy": run.best_accuracy,
                "validations_without_gain": run.validations_without_gain,
                "elapsed": run.elapsed,
                "optimizer": self.optimizer.state_dict(),
                "rng": capture_rng(),
            }
        return Checkpoint(
            kind=self.recipe.task,
            recipe=recipe_to_dict(self.recipe),
            # The labels are the classifier's output vocabulary, kept beside its input one.
            tokenizer={"text": self.tokenizer.to_dict(), "labels": self.labels},
            weights=self.model.state_dict(),
            info=info,
            training=training,
        )

    def classifier(self) -> Classifier:
        """The pipeline ``seqgen classify`` would build from the current weights."""
        return Classifier(
            ClassifierTorchStep(self.model),
            self.tokenizer,
            self.labels,
            self.recipe.decoding,
            max_length=self.recipe.data.max_length,
            recipe=self.recipe,
        )

    def validate(self) -> ClassificationScores:
        """Scores of the validation split, classified as ``seqgen classify`` does."""
        probabilities = self.classifier().probabilities(self.validation[0])
        self.model.train()
        return score_predictions(self.labels, self.validation_targets, probabilities.argmax(1))

    def train_step(self) -> tuple[float, int]:
        """One optimizer step over this rank's micro-batches; returns its share of the mean
        loss per text (class-weighted with ``train.class_weights``) and the tokens it read."""
        run, train = self.run_state, self.recipe.train
        batches = [self.batches.make_batch(rows) for rows in self.micro_batches(run.step)]
        self._thaw_pretrained(self._thawed_at(run.step))
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate_at(run.step, train)

        def loss_sum_of(batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
            token_ids, lengths, targets = batch
            with autocast(self.device, enabled=train.mixed_precision, cpu_enabled=self.cpu_bf16):
                logits = self.network(token_ids.to(self.device), lengths)
            return torch.nn.functional.cross_entropy(
                logits.float(), targets.to(self.device), weight=self.class_weights, reduction="sum"
            )

        loss = accumulated_step(
            batches,
            weight_of=self._weight_of,
            loss_sum_of=loss_sum_of,
            network=self.network,
            optimizer=self.optimizer,
            grad_clip=train.grad_clip,
            distributed=self.distributed,
        )
        run.step += 1
        return loss, sum(int(lengths.sum()) for _, lengths, _ in batches)

    def _weight_of(self, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> float:
        """What a batch's summed loss is divided by: its texts, or their class weights (as
        cross_entropy's weighted mean divides by them)."""
        targets = batch[2]
        if self.class_weights is None:
            return float(targets.numel())
        return float(self.class_weights.cpu()[targets].sum())

    def _pretrained_layers(self) -> list[list[torch.nn.Parameter]]:
        """The layers ``model.init_from`` gave, top first: each recurrent layer (its
        parameters ``*_l<layer>``, both directions), then the embedding; with
        ``model.init_embeddings`` the embedding alone."""
        if not self.recipe.model.init_from:
            return [list(self.model.embedding.parameters())]
        rnn = self.model.rnn
        layers = [
            [
                p
                for name, p in rnn.named_parameters()
                if name.split("_l")[-1].split("_")[0] == str(i)
            ]
            for i in reversed(range(rnn.num_layers))
        ]
        return [*layers, list(self.model.embedding.parameters())]

    def _thawed_at(self, step: int) -> int:
        """How many pretrained layers (top first) train at ``step``: none during the first
        ``freeze_pretrained_steps``, then all, or with ``unfreeze = "gradual"`` one more
        every ``freeze_pretrained_steps`` (ULMFiT)."""
        model, train = self.recipe.model, self.recipe.train
        layers = (model.num_layers if model.init_from else 0) + 1  # as _pretrained_layers
        if not train.freeze_pretrained_steps:
            return layers
        if train.unfreeze == "gradual":
            return min(layers, step // train.freeze_pretrained_steps)
        return layers if step >= train.freeze_pretrained_steps else 0

    def _thaw_pretrained(self, thawed: int) -> None:
        """Let the top ``thawed`` pretrained layers train and freeze the others, where that
        changes (a few times a run)."""
        if not self._has_pretrained() or thawed == self._thawed:
            return
        self._thawed = thawed
        for position, layer in enumerate(self._pretrained_layers()):
            for parameter in layer:
                parameter.requires_grad_(position < thawed)

    def validate_and_save(self, progress: Progress) -> None:
        run = self.run_state
        scores = self.validate()
        self.metrics.append(
            step=run.step,
            validation_accuracy=scores.accuracy,
            validation_macro_f1=scores.macro_f1,
            elapsed_seconds=run.elapsed,
        )
        info = {
            "step": run.step,
            "validation": {"accuracy": scores.accuracy, "macro_f1": scores.macro_f1},
            "elapsed_seconds": run.elapsed,
        }
        improved = scores.accuracy > run.best_accuracy
        run.validations_without_gain = 0 if improved else run.validations_without_gain + 1
        if improved:
            run.best_accuracy = scores.accuracy
        save_validated(
            self.output_dir,
            lambda training: self._checkpoint(info=info, with_training=training),
            improved=improved,
        )
        progress.message(
            f"step {run.step}: validation accuracy {100 * scores.accuracy:.2f}% "
            f"macro-F1 {scores.macro_f1:.4f}{' (best)' if improved else ''}"
        )
        self.metrics.samples("validation/samples", self.samples, run.step)

    def samples(self, count: int = 5) -> str:
        """The first validation texts with their true and predicted labels (for TensorBoard)."""
        texts, labels = self.validation[0][:count], self.validation[1][:count]
        found = self.classifier().classify(texts)
        self.model.train()
        return "\n\n".join(
            f"{text}  \n**true** {label}, **predicted** {top[0][0]} ({top[0][1]:.3f})"
            for text, label, top in zip(texts, labels, found, strict=True)
        )

    def run(self, *, show_progress: bool = True) -> ClassificationResult:
        if self.vectors_note and show_progress and self.distributed.is_main:
            sys.stderr.write(self.vectors_note + "\n")
        self.model.train()
        _, loop = drive(self, self.recipe.train, show_progress=show_progress)
        run = self.run_state
        return ClassificationResult(self.output_dir, run.step, run.best_accuracy, loop)


def _class_weights(
    targets: list[int], classes: int, setting: str, device: torch.device
) -> torch.Tensor | None:
    """``balanced``: each class weighs ``examples / (classes * its examples)``; else None."""
    if setting != "balanced":
        return None
    counts = np.bincount(np.asarray(targets), minlength=classes).astype(np.float64)
    weights = len(targets) / (classes * np.maximum(counts, 1))
    return torch.tensor(weights, dtype=torch.float32, device=device)
