"""A classifier from a checkpoint (PyTorch) or from a bundle (ONNX Runtime, no torch).

The task registry's ``from_checkpoint`` and ``from_bundle`` hooks; ``seqgen.load`` calls them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from seqgen.bundles.reader import (
    MANIFEST_FILE,
    graph_files,
    open_step_function,
    read_json,
    tokenizer_file,
)
from seqgen.errors import CheckpointError, ConfigError
from seqgen.recipes import Recipe, recipe_from_dict
from seqgen.tasks.classification import TOKENIZER_FILE
from seqgen.tasks.classification.pipeline import Classifier
from seqgen.text import tokenizer_from_dict


def from_checkpoint(checkpoint: Any, recipe: Recipe, path: Path, device: Any) -> Classifier:
    """The classifier of a loaded checkpoint, on PyTorch on ``device`` (a torch.device)."""
    from seqgen.tasks.classification.model import SequenceClassifier
    from seqgen.tasks.classification.torch_step import ClassifierTorchStep
    from seqgen.training.checkpoint import build_model

    try:
        tokenizer = tokenizer_from_dict(checkpoint.tokenizer["text"])
        labels = [str(label) for label in checkpoint.tokenizer["labels"]]
    except (KeyError, TypeError):
        raise CheckpointError(f"{path}: a classifier needs a tokenizer and labels") from None
    model = build_model(
        lambda: SequenceClassifier(recipe.model, tokenizer.vocab_size, len(labels)),
        checkpoint,
        path,
        device,
    )
    return Classifier(
        ClassifierTorchStep(model.eval()),
        tokenizer,
        labels,
        recipe.decoding,
        max_length=recipe.data.max_length,
        recipe=recipe,
        info=checkpoint.info,
    )


def from_bundle(folder: Path, manifest: dict[str, Any], **runtime: Any) -> Classifier:
    """The classifier of a bundle's graph on ONNX Runtime with ``runtime`` (device, threads;
    see ``seqgen.bundles.reader.load_bundle``)."""
    from seqgen.tasks.classification.onnx_step import ClassifierOnnxStep

    tokenizer = tokenizer_from_dict(read_json(folder / tokenizer_file(manifest, TOKENIZER_FILE)))
    files = graph_files(manifest)  # checked by read_manifest: plain names inside the bundle
    step_function = open_step_function(ClassifierOnnxStep, folder, manifest, files, **runtime)
    try:
        recipe = recipe_from_dict(manifest["recipe"])
        labels = [str(label) for label in manifest["labels"]]
    except (KeyError, TypeError, ConfigError) as error:
        raise CheckpointError(
            f"{folder / MANIFEST_FILE} has a damaged recipe or labels ({error}); re-export it"
        ) from None
    return Classifier(
        step_function,
        tokenizer,
        labels,
        recipe.decoding,
        max_length=recipe.data.max_length,
        recipe=recipe,
        info=manifest.get("training_info", {}),
    )
