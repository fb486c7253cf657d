"""Classification throughput: a test set classified by PyTorch and by ONNX Runtime."""

from __future__ import annotations

from pathlib import Path

import torch

from seqgen.benchmark import flops
from seqgen.benchmark.measure import median_rate
from seqgen.benchmark.suites import Result, both_backends


def classification_throughput(
    checkpoint_path: Path,
    device: torch.device,
    *,
    sentences: int | None,
    repeats: int,
    data_dir: str | None,
) -> list[Result]:
    """The model's test split (SST-2's 1,821 sentences for the bundled sentiment model)
    classified by both backends, in the model's default batches; sentences/s."""
    from seqgen.checkpoints import load_checkpoint_pipeline
    from seqgen.tasks.classification.examples import load_examples

    reference = load_checkpoint_pipeline(checkpoint_path, kind="classification", device=str(device))
    texts, _ = load_examples(reference.recipe, "test", data_dir=data_dir)
    texts = texts[:sentences] if sentences else texts
    backends = both_backends(reference, checkpoint_path, device)
    tokens = sum(len(ids) for ids in reference.encode(texts))
    per_token = flops.classifier_token(reference.recipe.model)
    results = []
    for backend, classifier in backends.items():

        def run(classifier: object = classifier) -> int:
            return len(classifier.probabilities(texts))  # type: ignore[attr-defined]

        rate, seconds = median_rate(run, repeats=repeats)
        details = {"sentences": len(texts), "tokens": tokens, "seconds": seconds}
        results.append(
            Result(
                f"classification, {backend}",
                rate,
                "sentences/s",
                tokens * per_token / seconds,
                details,
            )
        )
    return results
