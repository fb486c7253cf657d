"""Attention over the encoder memory: Luong dot and general, Bahdanau additive.

Every kind splits its work in two, so that decoding does the source-side part once:

- ``precompute(memory) -> keys`` runs once per sentence (e.g. ``W_a h_s`` for general);
- ``forward(query, keys, memory, mask) -> (context, weights)`` runs per target step, or once
  for several queries per sentence with batched matrix products: a whole ``(sentences,
  target_len, hidden)`` target sequence in training, or the ``(sentences, beam, hidden)`` rows
  of each sentence's beam in decoding (the source side is kept once per sentence, so its
  memory and keys are read once for all its rows).

Shapes: ``memory`` ``(sentences, source_len, memory_size)``, ``keys`` ``(sentences,
source_len, key_size)``, ``mask`` ``(sentences, source_len)`` bool with True = a real source
token. Masked positions get exactly zero weight. Nothing is cached on the modules.
"""

from __future__ import annotations

import torch
from torch import nn

from seqgen.layers.buckets import bucketed_linear

ATTENTION_KINDS = ("bahdanau", "dot", "general")


class Attention(nn.Module):
    """The shared part: masking, softmax and the weighted sum of the memory."""

    key_size: int

    def precompute(self, memory: torch.Tensor) -> torch.Tensor:
        """``(sentences, source_len, memory_size) -> keys (sentences, source_len, key_size)``."""
        raise NotImplementedError

    def score(self, query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """``query (sentences, queries, query_size)``, keys -> scores ``(sentences, queries,
        source_len)``."""
        raise NotImplementedError

    def forward(
        self, query: torch.Tensor, keys: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Attend from one query per sentence, or from several queries per sentence.

        Args:
            query: ``(sentences, query_size)`` or ``(sentences, queries, query_size)`` (a
                target sequence, or a sentence's beam rows).
            keys: ``(sentences, source_len, key_size)`` from :meth:`precompute`.
            memory: ``(sentences, source_len, memory_size)``.
            mask: ``(sentences, source_len)`` bool, True = real token; each needs one.

        Returns:
            context ``(sentences, [queries,] memory_size)`` and weights ``(sentences,
            [queries,] source_len)``.
        """
        single = query.dim() == 2
        queries = query.unsqueeze(1) if single else query
        scores = self.score(queries, keys)
        # -inf before the softmax gives padding exactly zero weight (exp(-inf) = 0).
        scores = scores.masked_fill(~mask.unsqueeze(1), float("-inf"))
        weights = torch.softmax(scores, dim=-1)
        context = torch.bmm(weights.to(memory.dtype), memory)
        if single:
            return context.squeeze(1), weights.squeeze(1)
        return context, weights


class DotAttention(Attention):
    """Luong et al. (2015), eq. 8 "dot": ``score(h_t, h_s) = h_t . h_s``; keys = memory."""

    def __init__(self, *, query_size: int, memory_size: int) -> None:
        super().__init__()
        if query_size != memory_size:
            raise ValueError(f"dot attention needs query_size == memory_size, got {query_size}")
        self.key_size = memory_size

    def precompute(self, memory: torch.Tensor) -> torch.Tensor:
        return memory

    def score(self, query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        return torch.bmm(query, keys.transpose(1, 2))


class GeneralAttention(Attention):
    """Luong et al. (2015), eq. 8 "general": ``score(h_t, h_s) = h_t . W_a h_s``.

    ``W_a h_s`` does not depend on the target step, so it is the precomputed keys.
    """

    def __init__(self, *, query_size: int, memory_size: int) -> None:
        super().__init__()
        self.key_size = query_size
        self.memory_projection = nn.Linear(memory_size, query_size, bias=False)

    def precompute(self, memory: torch.Tensor) -> torch.Tensor:
        return bucketed_linear(memory, self.memory_projection.weight, None)

    def score(self, query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        return torch.bmm(query, keys.transpose(1, 2))


class BahdanauAttention(Attention):
    """Bahdanau et al. (2015), appendix A.1.2: ``e = v_a . tanh(W_a s + U_a h_j)``.

    ``U_a h_j`` is the precomputed keys; the query is the previous decoder state.
    """

    def __init__(self, *, query_size: int, memory_size: int, attention_size: int) -> None:
        super().__init__()
        self.key_size = attention_size
        self.memory_projection = nn.Linear(memory_size, attention_size, bias=False)  # U_a
        self.query_projection = nn.Linear(query_size, attention_size)  # W_a (and the bias)
        self.energy = nn.Linear(attention_size, 1, bias=False)  # v_a

    def precompute(self, memory: torch.Tensor) -> torch.Tensor:
        return bucketed_linear(memory, self.memory_projection.weight, None)

    def score(self, query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        # (sentences, queries, 1, attention) + (sentences, 1, source_len, attention): every
        # pair at once.
        projected = self.query_projection(query).unsqueeze(2)
        return self.energy(torch.tanh(projected + keys.unsqueeze(1))).squeeze(-1)


def make_attention(kind: str, *, query_size: int, memory_size: int) -> Attention:
    """The attention module named ``kind`` (one of :data:`ATTENTION_KINDS`)."""
    if kind == "dot":
        return DotAttention(query_size=query_size, memory_size=memory_size)
    if kind == "general":
        return GeneralAttention(query_size=query_size, memory_size=memory_size)
    if kind == "bahdanau":
        return BahdanauAttention(
            query_size=query_size, memory_size=memory_size, attention_size=query_size
        )
    raise ValueError(f"unknown attention {kind!r}; choose one of: {', '.join(ATTENTION_KINDS)}")
