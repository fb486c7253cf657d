"""Language-model evaluation: loss in nats per token, perplexity, bits per token and character."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch.nn import functional

from seqgen.data.batching import StreamBatches
from seqgen.errors import DataError
from seqgen.tasks.generation.model import LanguageModel


@dataclass(frozen=True)
class LanguageModelScores:
    loss: float  # mean negative log-likelihood, nats per token
    tokens: int
    characters: int

    @property
    def perplexity(self) -> float:
        return math.exp(min(self.loss, 700.0))

    @property
    def bits_per_token(self) -> float:
        return self.loss / math.log(2)

    @property
    def bits_per_character(self) -> float:
        return self.loss * self.tokens / max(1, self.characters) / math.log(2)

    def as_dict(self) -> dict[str, float]:
        return {
            "loss": self.loss,
            "perplexity": self.perplexity,
            "bits_per_token": self.bits_per_token,
            "bits_per_character": self.bits_per_character,
            "tokens": self.tokens,
        }


@torch.inference_mode()
def evaluate_language_model(
    model: LanguageModel,
    token_ids: torch.Tensor,
    *,
    characters: int,
    batch_size: int,
    sequence_length: int,
    bos_id: int,
) -> LanguageModelScores:
    """Score a token stream the way training reads it: rows with carried state.

    Args:
        token_ids: ``(length,)`` int64, the text to score.
        characters: the text's length in characters, for bits per character.
    """
    if token_ids.numel() == 0:
        raise DataError("the text to score has no tokens (only whitespace?); give it some text")
    batch_size = max(1, min(batch_size, token_ids.numel()))
    batches = StreamBatches(
        token_ids, batch_size=batch_size, sequence_length=sequence_length, bos_id=bos_id
    )
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    state = None
    total = 0.0
    for inputs, targets in batches:
        logits, state = model(inputs.to(device), state)
        total += functional.cross_entropy(
            logits.float().flatten(0, 1), targets.to(device).flatten(), reduction="sum"
        ).item()
    model.train(was_training)
    # The stream is cut to a multiple of the rows; scale characters by the share scored.
    scored = batches.num_tokens
    return LanguageModelScores(
        loss=total / scored,
        tokens=scored,
        characters=round(characters * scored / token_ids.numel()),
    )


def score_text(model: LanguageModel, tokenizer: Any, text: str, train: Any) -> LanguageModelScores:
    """:func:`evaluate_language_model` of ``text`` in the windows ``train`` (the recipe's
    ``[train]`` section) trained with: ``eval_batch_size`` rows of ``sequence_length``."""
    token_ids = torch.tensor(tokenizer.encode(text), dtype=torch.long)
    return evaluate_language_model(
        model,
        token_ids,
        characters=len(text),
        batch_size=train.eval_batch_size,
        sequence_length=train.sequence_length,
        bos_id=tokenizer.bos_id,
    )
