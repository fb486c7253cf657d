"""The classification pipeline: texts in, labels with probabilities out, on PyTorch or ONNX
Runtime.

:class:`Classifier` knows the model only through its step function, which reads whole texts
at once: ``probabilities(token_ids)`` takes ``(rows, time)`` int64 ids of texts all ``time``
tokens long and returns ``(rows, classes)`` float32 probabilities
(``seqgen.tasks.classification.torch_step`` or ``onnx_step``). Texts are grouped by their
length in tokens, so no padding ever enters the model: a text's probabilities do not depend
on the other texts of a call, and the two backends compute the same graph. This module
imports no torch.

>>> classifier = seqgen.load("sentiment")
>>> classifier.classify(["a gorgeous , witty , seductive movie ."])
[[('positive', 0.97...)]]
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np

from seqgen.decoding.options import resolve_options
from seqgen.decoding.priming import group_by_length
from seqgen.errors import SeqgenError
from seqgen.tasks.classification.config import ClassificationDecodingConfig
from seqgen.text import Tokenizer

logger = logging.getLogger(__name__)


@dataclass
class ClassificationOptions(ClassificationDecodingConfig):
    """The options of one call: the model's stored defaults (the section this extends)."""


class ClassifyFunction(Protocol):
    device: Any

    def probabilities(self, token_ids: np.ndarray) -> np.ndarray:
        """``(rows, time)`` int64 ids, every row a whole text -> ``(rows, classes)``."""
        ...


class Classifier:
    """A classifier's step function, tokenizer, labels and stored defaults.

    ``labels`` name the classes in the model's order; ``max_length`` cuts longer texts (in
    tokens); ``recipe`` (checkpoints) supplies the corpus for ``seqgen evaluate``.
    """

    task = "classification"

    def __init__(
        self,
        step_function: ClassifyFunction,
        tokenizer: Tokenizer,
        labels: Sequence[str],
        defaults: Mapping[str, Any] | ClassificationDecodingConfig,
        *,
        max_length: int,
        recipe: Any = None,
        info: Mapping[str, Any] | None = None,
    ) -> None:
        self.step_function = step_function
        self.tokenizer = tokenizer
        self.labels = list(labels)
        if isinstance(defaults, ClassificationDecodingConfig):
            defaults = asdict(defaults)
        self.defaults = dict(defaults)
        self.max_length = max_length
        self.recipe = recipe
        self.info = dict(info or {})

    @property
    def device(self) -> Any:
        return self.step_function.device

    def options(self, **given: object) -> ClassificationOptions:
        """The options of a call: ``given`` (None = not given) over the model's defaults."""
        return resolve_options(ClassificationOptions, self.defaults, given)

    def classify(self, texts: Sequence[str], **options: object) -> list[list[tuple[str, float]]]:
        """Each text's ``top_k`` (label, probability) pairs, most probable first."""
        settings = self.options(**options)
        probabilities = self.probabilities(texts, batch_size=settings.batch_size)
        top = np.argsort(-probabilities, axis=1, kind="stable")[:, : settings.top_k]
        return [
            [(self.labels[c], float(row[c])) for c in columns]
            for row, columns in zip(probabilities, top, strict=True)
        ]

    def probabilities(self, texts: Sequence[str], *, batch_size: int | None = None) -> np.ndarray:
        """``(texts, classes)`` float32: every class's probability for each text."""
        batch_size = batch_size or self.options().batch_size
        encoded = self.encode(texts)
        result = np.zeros((len(encoded), len(self.labels)), dtype=np.float32)
        for _, rows in group_by_length([len(ids) for ids in encoded]):
            for start in range(0, len(rows), batch_size):
                chunk = rows[start : start + batch_size]
                token_ids = np.array([encoded[row] for row in chunk], dtype=np.int64)
                result[chunk] = self.step_function.probabilities(token_ids)
        return result

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids per text, cut to ``max_length``; SeqgenError for a text with none."""
        encoded = [self.tokenizer.encode(text) for text in texts]
        for number, ids in enumerate(encoded, start=1):
            if not ids:
                raise SeqgenError(f"text {number} is empty; a classifier needs some text")
        too_long = sum(len(ids) > self.max_length for ids in encoded)
        if too_long:
            logger.warning(
                "%d text(s) longer than the model's limit of %d tokens were cut to it",
                too_long,
                self.max_length,
            )
        return [ids[: self.max_length] for ids in encoded]
