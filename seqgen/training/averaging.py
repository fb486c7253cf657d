"""Checkpoint averaging: the element-wise mean of the weights of several checkpoints.

Averaging the last few checkpoints of a run smooths the noise of the final updates and
usually adds a little BLEU (Vaswani et al., 2017; Junczys-Dowmunt et al., 2016).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from seqgen.errors import CheckpointError
from seqgen.training.checkpoint import Checkpoint, load_checkpoint


def average_checkpoints(paths: Sequence[str | Path]) -> Checkpoint:
    """Average the floating-point weights of ``paths``; metadata comes from the last one."""
    if not paths:
        raise CheckpointError("no checkpoints to average")
    checkpoints = [load_checkpoint(path) for path in paths]
    last = checkpoints[-1]
    for path, checkpoint in zip(paths, checkpoints, strict=True):
        if checkpoint.kind != last.kind or checkpoint.weights.keys() != last.weights.keys():
            raise CheckpointError(
                f"{path} does not hold the same model as {paths[-1]}; cannot average"
            )
    averaged = {}
    for name, tensor in last.weights.items():
        if tensor.is_floating_point():
            stacked = torch.stack([c.weights[name].float() for c in checkpoints])
            averaged[name] = stacked.mean(dim=0).to(tensor.dtype)
        else:
            averaged[name] = tensor
    info = {**last.info, "averaged_from": [str(p) for p in paths]}
    return Checkpoint(last.kind, last.recipe, last.tokenizer, averaged, info)
