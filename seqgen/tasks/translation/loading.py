"""A translator from a checkpoint (PyTorch) or from a bundle (ONNX Runtime, no torch).

The task registry's ``from_checkpoint`` and ``from_bundle`` hooks; ``seqgen.load`` calls them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from seqgen.bundles.reader import (
    MANIFEST_FILE,
    bundle_file,
    graph_files,
    open_step_function,
    read_json,
    tokenizer_file,
)
from seqgen.errors import CheckpointError, ConfigError
from seqgen.recipes import Recipe, recipe_from_dict
from seqgen.tasks.translation import TOKENIZER_FILES
from seqgen.tasks.translation.pipeline import Translator
from seqgen.text import Tokenizer, tokenizer_from_dict


def from_checkpoint(checkpoint: Any, recipe: Recipe, path: Path, device: Any) -> Translator:
    """The translator of a loaded checkpoint, on PyTorch on ``device`` (a torch.device)."""
    from seqgen.tasks.translation.model import EncoderDecoder
    from seqgen.tasks.translation.torch_step import TranslatorStep
    from seqgen.training.checkpoint import build_model

    try:
        source, target = (
            tokenizer_from_dict(checkpoint.tokenizer[k]) for k in ("source", "target")
        )
    except KeyError:
        raise CheckpointError(
            f"{path}: a translation model needs source and target tokenizers"
        ) from None
    model = build_model(
        lambda: EncoderDecoder(recipe.model, source.vocab_size, target.vocab_size),
        checkpoint,
        path,
        device,
    )
    return Translator(TranslatorStep(model.eval()), source, target, recipe, checkpoint.info)


def from_bundle(folder: Path, manifest: dict[str, Any], **runtime: Any) -> Translator:
    """The translator of a bundle's graphs on ONNX Runtime with ``runtime`` (device, threads,
    io_binding; see ``seqgen.bundles.reader.load_bundle``)."""
    from seqgen.tasks.translation.onnx_step import OnnxTranslatorStep

    tokenizers = _read_tokenizers(folder, manifest)
    files = graph_files(manifest)
    step_function = open_step_function(OnnxTranslatorStep, folder, manifest, files, **runtime)
    if step_function.takes_output_ids:
        step_function.use_shortlist(*_read_shortlist(folder, manifest))
    try:
        recipe = recipe_from_dict(manifest["recipe"])
    except (KeyError, TypeError, ConfigError) as error:
        raise CheckpointError(
            f"{folder / MANIFEST_FILE} has a damaged recipe ({error}); re-export the bundle"
        ) from None
    info = manifest.get("training_info", {})
    return Translator(step_function, tokenizers["source"], tokenizers["target"], recipe, info)


def _read_tokenizers(folder: Path, manifest: dict[str, Any]) -> dict[str, Tokenizer]:
    """Each side's tokenizer from the file the manifest names (read_manifest checked the
    names: plain files inside the bundle). A joint vocabulary's one file, named by both
    sides, is parsed once and serves both; older bundles' two copies are read as before."""
    by_file: dict[str, Tokenizer] = {}
    tokenizers = {}
    for side, default in TOKENIZER_FILES.items():
        name = tokenizer_file(manifest, default, side)
        if name not in by_file:
            by_file[name] = tokenizer_from_dict(read_json(folder / name))
        tokenizers[side] = by_file[name]
    return tokenizers


def _read_shortlist(folder: Path, manifest: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, int]:
    """The lexical shortlist of a translator bundle: its table ``(source vocab, K)``, its
    frequent tokens ``(N,)`` (int64) and the target vocabulary's size."""
    try:
        entry, model = manifest["shortlist"], manifest["model"]
        # A bundle never reads outside its folder (read_manifest checked it too).
        stored = read_json(bundle_file(folder, entry["file"], "shortlist.file"))
        table = np.asarray(stored["table"], dtype=np.int64)
        frequent = np.asarray(stored["frequent"], dtype=np.int64)
        vocab_size = int(model["target_vocab_size"])
        shapes_agree = table.shape == (int(model["source_vocab_size"]), entry["per_source"])
    except (KeyError, TypeError, ValueError):
        shapes_agree = False
    if not shapes_agree or frequent.ndim != 1 or not 0 <= table.min() <= table.max() < vocab_size:
        raise CheckpointError(
            f"{folder / MANIFEST_FILE}: the step graph takes a shortlist, but the bundle's "
            "shortlist is missing or damaged; re-export the bundle"
        )
    return table, frequent, vocab_size
