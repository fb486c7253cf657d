"""A lexical shortlist (:mod:`seqgen.tasks.translation.shortlist`) for a translator trained
without one.

Training builds the shortlist itself when the recipe sets ``model.shortlist``; this gives
one to an existing checkpoint, built from the same training pairs, so the result is what
training with that setting would have stored (only the decoding changes; the weights are
the checkpoint's).
"""

from __future__ import annotations

from pathlib import Path

import torch

from seqgen.errors import CheckpointError
from seqgen.recipes import recipe_from_dict, recipe_to_dict
from seqgen.tasks.translation import TASK
from seqgen.tasks.translation.shortlist import build_shortlist
from seqgen.tasks.translation.training import load_pairs
from seqgen.text import tokenizer_from_dict
from seqgen.training.checkpoint import load_checkpoint, save_checkpoint


def add_shortlist(
    checkpoint_path: str | Path,
    output_path: str | Path,
    *,
    per_source: int = 10,
    frequent: int = 200,
    data_dir: str | None = None,
) -> Path:
    """Write ``checkpoint_path`` with a shortlist of its recipe's training pairs to
    ``output_path`` (may be the same file; written atomically). Returns ``output_path``."""
    checkpoint = load_checkpoint(checkpoint_path)
    if checkpoint.kind != TASK.name:
        raise CheckpointError(f"{checkpoint_path} is not a translation model; nothing to add")
    recipe_dict = recipe_to_dict(recipe_from_dict(checkpoint.recipe))
    recipe_dict["model"].update(shortlist=per_source, shortlist_frequent=frequent)
    recipe = recipe_from_dict(recipe_dict)
    recipe.validate()
    tokenizers = {
        side: tokenizer_from_dict(checkpoint.tokenizer[side]) for side in ("source", "target")
    }
    sources, targets = load_pairs(recipe, "train", data_dir=data_dir)
    table, most_frequent = build_shortlist(
        [tokenizers["source"].encode(s) for s in sources],
        [tokenizers["target"].encode(t) for t in targets],
        source_vocab_size=tokenizers["source"].vocab_size,
        target_vocab_size=tokenizers["target"].vocab_size,
        per_source=per_source,
        frequent=frequent,
    )
    checkpoint.recipe = recipe_to_dict(recipe)
    checkpoint.weights["shortlist_table"] = torch.from_numpy(table)
    checkpoint.weights["shortlist_frequent"] = torch.from_numpy(most_frequent)
    save_checkpoint(output_path, checkpoint)
    return Path(output_path)
