"""A classification recipe's labelled examples, and training batches of equal-length texts."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from seqgen.data.labelled import LabelledTexts, load_labelled, read_labelled_file
from seqgen.data.parallel import pad_batch
from seqgen.errors import DataError


def load_examples(recipe: object, split: str, *, data_dir: str | Path | None) -> LabelledTexts:
    """The texts and labels of ``split`` (train, val, test) that a recipe's ``[data]`` names."""
    data = recipe.data  # type: ignore[attr-defined]
    if data.corpus:
        return load_labelled(data.corpus, split, data_dir=data_dir)
    file = {"train": data.train_file, "val": data.validation_file, "test": data.test_file}[split]
    if not file:
        raise DataError(
            f"this model's recipe names no {split} file (data.test_file); "
            "evaluate with --file FILE instead"
        )
    return read_labelled_file(
        file,
        text_column=data.text_column,
        label_column=data.label_column,
        delimiter=data.delimiter or None,
        header=data.header,
    )


def label_set(labels: Sequence[str], where: str) -> list[str]:
    """The classes of a training split, sorted; DataError for fewer than two."""
    classes = sorted(set(labels))
    if len(classes) < 2:
        found = f"only the class {classes[0]!r}" if classes else "no class"
        raise DataError(f"{where} has {found}; a classifier needs examples of two or more")
    return classes


def label_ids(labels: Sequence[str], classes: Sequence[str], where: str) -> list[int]:
    """Each label's index in ``classes``; DataError naming a label the model does not know."""
    index = {label: i for i, label in enumerate(classes)}
    unknown = sorted(set(labels) - set(index))
    if unknown:
        raise DataError(
            f"{where} has label(s) {', '.join(map(repr, unknown[:5]))} that the model does not "
            f"know; its labels are {', '.join(map(repr, classes))}"
        )
    return [index[label] for label in labels]


class LengthBatches:
    """Training batches of texts of about equal length, cut every ``batch_size`` texts.

    Each epoch breaks ties between equal lengths and orders the batches with a permutation
    seeded by ``seed`` and the epoch, so a resumed run sees the batches an unbroken one would.
    """

    def __init__(
        self,
        sequences: Sequence[Sequence[int]],
        targets: Sequence[int],
        *,
        batch_size: int,
        seed: int,
    ) -> None:
        self.sequences, self.targets = list(sequences), np.asarray(targets, dtype=np.int64)
        self.lengths = np.array([len(s) for s in self.sequences], dtype=np.int64)
        self.batch_size, self.seed = batch_size, seed

    def __len__(self) -> int:
        return -(-len(self.sequences) // self.batch_size)

    def epoch(self, epoch: int) -> list[np.ndarray]:
        """The rows of every batch of ``epoch``, in the order they train."""
        rng = np.random.default_rng([self.seed, epoch])
        tie_break = rng.permutation(len(self.sequences))
        by_length = tie_break[np.argsort(self.lengths[tie_break], kind="stable")]
        batches = [
            by_length[start : start + self.batch_size]
            for start in range(0, len(by_length), self.batch_size)
        ]
        return [batches[i] for i in rng.permutation(len(batches))]

    def make_batch(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``token_ids`` ``(rows, time)`` padded with 0, ``lengths`` ``(rows,)`` and the class
        ids ``(rows,)``, all int64."""
        token_ids, lengths = pad_batch([self.sequences[r] for r in rows])
        return token_ids, lengths, torch.from_numpy(self.targets[rows])
