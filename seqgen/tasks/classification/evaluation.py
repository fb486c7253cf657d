"""Classification scores: accuracy, per-class precision, recall and F1, macro-F1, confusion."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ClassificationScores:
    labels: tuple[str, ...]
    confusion: np.ndarray  # (classes, classes) int64: [true class, predicted class]

    @property
    def examples(self) -> int:
        return int(self.confusion.sum())

    @property
    def accuracy(self) -> float:
        return float(np.trace(self.confusion) / max(1, self.examples))

    def precision(self) -> np.ndarray:
        predicted = self.confusion.sum(axis=0)
        return np.divide(np.diag(self.confusion), predicted, out=_zeros(self), where=predicted > 0)

    def recall(self) -> np.ndarray:
        actual = self.confusion.sum(axis=1)
        return np.divide(np.diag(self.confusion), actual, out=_zeros(self), where=actual > 0)

    def f1(self) -> np.ndarray:
        precision, recall = self.precision(), self.recall()
        total = precision + recall
        return np.divide(2 * precision * recall, total, out=_zeros(self), where=total > 0)

    @property
    def macro_f1(self) -> float:
        return float(self.f1().mean())

    def report(self) -> list[str]:
        """The scores as lines of text: a summary, a per-class table, the confusion matrix."""
        width = max(12, *(len(label) for label in self.labels))
        lines = [
            f"accuracy {100 * self.accuracy:.2f}% | macro-F1 {self.macro_f1:.4f} | "
            f"{self.examples} examples",
            f"{'class':<{width}} {'precision':>9} {'recall':>9} {'F1':>9} {'support':>8}",
        ]
        support = self.confusion.sum(axis=1)
        rows = zip(self.labels, self.precision(), self.recall(), self.f1(), support, strict=True)
        for label, precision, recall, f1, count in rows:
            lines.append(f"{label:<{width}} {precision:>9.4f} {recall:>9.4f} {f1:>9.4f} {count:>8}")
        lines.append("confusion (rows: true class, columns: predicted)")
        lines.append(" " * width + "".join(f" {label[:9]:>9}" for label in self.labels))
        for label, row in zip(self.labels, self.confusion, strict=True):
            lines.append(f"{label:<{width}}" + "".join(f" {count:>9}" for count in row))
        return lines


def _zeros(scores: ClassificationScores) -> np.ndarray:
    return np.zeros(len(scores.labels), dtype=np.float64)


def score_predictions(
    labels: Sequence[str], true_ids: Sequence[int], predicted_ids: Sequence[int]
) -> ClassificationScores:
    """Scores of predictions against the true classes (indices into ``labels``)."""
    confusion = np.zeros((len(labels), len(labels)), dtype=np.int64)
    np.add.at(confusion, (np.asarray(true_ids), np.asarray(predicted_ids)), 1)
    return ClassificationScores(tuple(labels), confusion)
