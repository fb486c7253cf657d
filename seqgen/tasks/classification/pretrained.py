"""A language model's layers as a classifier's start (``model.init_from``).

ULMFiT (Howard & Ruder, 2018) trains a language model, then a classifier whose encoder starts
from it. A seqgen generation run's embedding (``embedding.*``) and recurrent layers
(``rnn.*``) are named as the classifier's, so they load as they are, provided the cell and
sizes agree; the classifier takes the language model's tokenizer too.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from seqgen.errors import ConfigError
from seqgen.recipes import recipe_from_dict
from seqgen.task import task_named
from seqgen.tasks.classification.config import ClassifierConfig
from seqgen.text import Tokenizer, tokenizer_from_dict
from seqgen.training.checkpoint import load_checkpoint

SHARED_SIZES = ("cell", "embedding_size", "hidden_size", "num_layers")
PRETRAINED_TASK = "generation"  # the task whose checkpoints hold a language model


@dataclass(frozen=True)
class PretrainedEncoder:
    tokenizer: Tokenizer
    weights: dict[str, torch.Tensor]  # embedding.* and rnn.*, float32


def pretrained_encoder(config: ClassifierConfig) -> PretrainedEncoder | None:
    """The layers ``config.init_from`` names (None without it); ConfigError, in one line,
    for a run that is no language model or whose sizes differ from the classifier's."""
    if not config.init_from:
        return None
    checkpoint = load_checkpoint(config.init_from)
    if task_named(checkpoint.kind).name != PRETRAINED_TASK:
        raise ConfigError(
            f"model.init_from = {config.init_from!r} holds a {checkpoint.kind} model; "
            "name a generation (language model) run"
        )
    stored = recipe_from_dict(checkpoint.recipe).model
    for name in SHARED_SIZES:
        if getattr(stored, name) != getattr(config, name):
            raise ConfigError(
                f"model.init_from: its {name} is {getattr(stored, name)!r} but model.{name} is "
                f"{getattr(config, name)!r}; set model.{name} = {getattr(stored, name)!r}"
            )
    weights = {
        name: tensor.float()
        for name, tensor in checkpoint.weights.items()
        if name.startswith(("embedding.", "rnn."))
    }
    return PretrainedEncoder(tokenizer_from_dict(checkpoint.tokenizer), weights)
