"""A classifier's graph, tokenizer and manifest entries in a bundle (``write_bundle`` hook).

One graph, ``classify``: ``token_ids`` ``(rows, time)`` int64 -> ``probabilities`` ``(rows,
classes)`` float32, the softmax of :class:`SequenceClassifier`'s logits over texts of equal
length (the pipeline groups them so); rows and time are dynamic.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from seqgen.bundles.export import (
    EXAMPLE_ROWS,
    EXAMPLE_TIME,
    PARITY_TOLERANCE,
    GraphSpec,
    export_graph,
    special_ids,
)
from seqgen.errors import SeqgenError
from seqgen.recipes import recipe_to_dict
from seqgen.tasks.classification import GRAPH_FILES, TOKENIZER_FILE
from seqgen.tasks.classification.model import SequenceClassifier
from seqgen.tasks.classification.onnx_step import ClassifierOnnxStep
from seqgen.tasks.classification.pipeline import Classifier


class ClassifyGraph(nn.Module):
    """``token_ids`` ``(rows, time)`` -> ``probabilities`` ``(rows, classes)`` float32."""

    def __init__(self, model: SequenceClassifier) -> None:
        super().__init__()
        self.model = model

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(token_ids).float(), dim=-1)


def write_bundle(
    classifier: Classifier,
    model: SequenceClassifier,
    staging: Path,
    *,
    fp16: bool,
    int8: bool = False,
) -> dict[str, Any]:
    """Write the graph and tokenizer into ``staging``; returns the manifest's entries."""
    spec = GraphSpec(
        ClassifyGraph(model),
        {"token_ids": torch.ones(EXAMPLE_ROWS, EXAMPLE_TIME, dtype=torch.long)},
        ["probabilities"],
        {"token_ids": {0: "rows", 1: "time"}},
        {"probabilities": ["rows"]},
    )
    graphs = {"classify": export_graph(spec, staging / GRAPH_FILES["classify"])}
    if not fp16:
        check_parity(classifier.step_function.model, staging)
    tokenizer = classifier.tokenizer
    (staging / TOKENIZER_FILE).write_text(json.dumps(tokenizer.to_dict()), encoding="utf-8")
    config = model.config
    return {
        "model": {
            "cell": config.cell,
            "num_layers": config.num_layers,
            "hidden_size": config.hidden_size,
            "bidirectional": config.bidirectional,
            "pooling": config.pooling,
            "vocab_size": model.vocab_size,
            "classes": model.num_classes,
        },
        "graphs": {
            name: {"file": GRAPH_FILES[name], **described} for name, described in graphs.items()
        },
        "tokenizer": {"file": TOKENIZER_FILE, "kind": tokenizer.kind},
        "special_ids": special_ids(tokenizer),
        "labels": classifier.labels,
        # Texts are cut to max_length tokens and grouped by length: no padding enters.
        "classification": {"max_length": classifier.max_length, "texts_of_equal_length": True},
        "recipe": recipe_to_dict(classifier.recipe),
        "training_info": classifier.info,
    }


def check_parity(model: SequenceClassifier, folder: Path) -> None:
    """Run the graph on other shapes than the example's and compare with PyTorch;
    SeqgenError where they differ by more than ``PARITY_TOLERANCE``."""
    onnx_step = ClassifierOnnxStep.from_files(folder, GRAPH_FILES, device="cpu", threads=1)
    generator = torch.Generator().manual_seed(0)
    worst = 0.0
    for rows, time in ((1, 1), (EXAMPLE_ROWS + 2, EXAMPLE_TIME + 3)):
        token_ids = torch.randint(1, model.vocab_size, (rows, time), generator=generator)
        with torch.inference_mode():
            expected = torch.softmax(model.eval()(token_ids).float(), dim=-1).numpy()
        got = onnx_step.probabilities(token_ids.numpy())
        worst = max(worst, float(np.abs(got - expected).max()))
    if worst > PARITY_TOLERANCE:
        raise SeqgenError(
            f"the exported graph disagrees with PyTorch (max difference {worst:.2g} > "
            f"{PARITY_TOLERANCE}); this torch version's ONNX exporter is not supported"
        )
