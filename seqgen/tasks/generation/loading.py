"""A generator from a checkpoint (PyTorch) or from a bundle (ONNX Runtime, no torch).

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
from seqgen.decoding.options import resolve_options
from seqgen.errors import CheckpointError, SeqgenError
from seqgen.recipes import Recipe
from seqgen.tasks.generation import TOKENIZER_FILE
from seqgen.tasks.generation.pipeline import GenerationOptions, Generator
from seqgen.text import tokenizer_from_dict


def from_checkpoint(checkpoint: Any, recipe: Recipe, path: Path, device: Any) -> Generator:
    """The generator of a loaded checkpoint, on PyTorch on ``device`` (a torch.device)."""
    from seqgen.tasks.generation.model import LanguageModel
    from seqgen.tasks.generation.torch_step import LanguageModelStep
    from seqgen.training.checkpoint import build_model

    tokenizer = tokenizer_from_dict(checkpoint.tokenizer)
    model = build_model(
        lambda: LanguageModel(recipe.model, tokenizer.vocab_size), checkpoint, path, device
    )
    return Generator(
        LanguageModelStep(model),
        tokenizer,
        recipe.decoding,
        recipe=recipe,
        info=checkpoint.info,
    )


def from_bundle(folder: Path, manifest: dict[str, Any], **runtime: Any) -> Generator:
    """The generator of a bundle's graphs on ONNX Runtime with ``runtime`` (device, threads,
    io_binding; see ``seqgen.bundles.reader.load_bundle``)."""
    from seqgen.tasks.generation.onnx_step import OnnxLanguageModelStep

    tokenizer = tokenizer_from_dict(read_json(folder / tokenizer_file(manifest, TOKENIZER_FILE)))
    files = graph_files(manifest)  # checked by read_manifest: plain names inside the bundle
    step_function = open_step_function(OnnxLanguageModelStep, folder, manifest, files, **runtime)
    info = manifest.get("training_info", {})
    return Generator(step_function, tokenizer, _stored_defaults(folder, manifest), info=info)


def _stored_defaults(folder: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest's generation defaults, checked; fields this seqgen does not know are
    ignored (a newer seqgen may store more)."""
    generation = manifest.get("generation", {})
    listed = generation.get("defaults", {}) if isinstance(generation, dict) else None
    try:
        if not isinstance(listed, dict):
            raise SeqgenError(f"not a table: {listed!r}")
        resolve_options(GenerationOptions, listed, {})
    except SeqgenError as error:
        raise CheckpointError(
            f"{folder / MANIFEST_FILE} has bad generation defaults ({error}); re-export it"
        ) from None
    return listed
