"""``POST /classify`` (``seqgen serve``): texts in, labels with probabilities out.

Body: ``{"text": "..." or ["...", ...], "model": NAME, "top_k": 1}``. Answer:
``{"labels": [...], "classifications": [[{"label", "probability"}, ...], ...]}``: each text's
most probable label, and its ``top_k`` labels, most probable first.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from seqgen.serving.endpoint import Endpoint, Stream
from seqgen.tasks.classification.pipeline import ClassificationOptions, Classifier


def classify(
    classifier: Classifier, texts: list[str], options: ClassificationOptions, stream: Stream
) -> list[list[tuple[str, float]]]:
    """Each text's ``top_k`` (label, probability) pairs (texts are grouped by length, so a
    text's answer does not depend on the others)."""
    return classifier.classify(texts, **asdict(options))


def answer(
    results: list[list[tuple[str, float]]], options: ClassificationOptions
) -> dict[str, Any]:
    return {
        "labels": [top[0][0] for top in results],
        "classifications": [
            [{"label": label, "probability": round(p, 6)} for label, p in top] for top in results
        ],
    }


ENDPOINT = Endpoint(
    path="/classify",
    input_field="text",
    options_type=ClassificationOptions,
    run=classify,
    answer=answer,
)
