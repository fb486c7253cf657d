"""Attention maps: how much each target piece of a translation attended to each source piece.

The weights are those the decoder computes while producing the translation, recomputed by
one teacher-forced pass over the returned hypothesis (its tokens fed back as the decoder's
input): the decoder is deterministic, so feeding it the tokens search chose gives the
attention of each step of that search, without search keeping a history of weights for
every beam. On PyTorch a forward hook on the decoder's attention module catches the weights
(the model keeps none); on ONNX Runtime the step graph outputs them (``attention``), and the
pass runs the encoder and step graphs with the tokens forced.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from seqgen.errors import SeqgenError
from seqgen.text import Tokenizer
from seqgen.text.vocabulary import BOS_ID, EOS_ID

EOS_LABEL = "</s>"


@dataclass(frozen=True)
class AttentionMap:
    """``weights`` ``(target_len + 1, source_len + 1)``: row t is the attention while
    producing target piece t (the last row: EOS), over the source pieces and the EOS the
    encoder read; each row sums to 1."""

    weights: np.ndarray
    source_pieces: list[str]
    target_pieces: list[str]


def piece_labels(tokenizer: Tokenizer, token_ids: Sequence[int]) -> list[str]:
    """Each id's text as an axis label, then EOS."""
    labels = [tokenizer.decode([token]) or f"<{token}>" for token in token_ids]
    return [*labels, EOS_LABEL]


def torch_attention(model: Any, source_ids: Sequence[int], target_ids: Sequence[int]) -> np.ndarray:
    """``(len(target_ids) + 1, len(source_ids) + 1)`` float32 teacher-forced attention of a
    PyTorch :class:`~seqgen.tasks.translation.model.EncoderDecoder`."""
    import torch

    from seqgen.decoding.torch_step import eval_mode

    caught: list[torch.Tensor] = []
    # The attention module returns (context, weights): weights (rows, [time,] source_len).
    hook = model.decoder.attention.register_forward_hook(
        lambda module, inputs, output: caught.append(output[1].detach().float())
    )
    device = next(model.parameters()).device
    try:
        with torch.inference_mode(), eval_mode(model):
            source = torch.tensor([[*source_ids, EOS_ID]], device=device)
            lengths = torch.tensor([len(source_ids) + 1], device=device)
            target_in = torch.tensor([[BOS_ID, *target_ids]], device=device)
            model.features(source, lengths, target_in)
    finally:
        hook.remove()
    steps = [weights.reshape(-1, weights.shape[-1]) for weights in caught]
    return torch.cat(steps).cpu().numpy()


def onnx_attention(step_function: Any, source_ids: Sequence[int], target_ids: Sequence[int]):
    """The same from a translator bundle whose step graph outputs ``attention``."""
    if "attention" not in step_function.step_output_names:
        raise SeqgenError(
            "this bundle's step graph has no attention output (exported by an older seqgen); "
            "re-export it with seqgen export, or use the checkpoint"
        )
    state, tokens = step_function.start([list(source_ids)], shortlist=False)
    rows = []
    for token in [*target_ids, EOS_ID]:
        weights, state = step_function.attention_step(tokens, state)
        rows.append(weights[0])
        tokens = np.array([token], dtype=np.int64)
    return np.stack(rows).astype(np.float32)
