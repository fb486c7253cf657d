"""The PyTorch step function of a classifier: one call reads whole texts."""

from __future__ import annotations

import numpy as np
import torch

from seqgen.decoding.torch_step import eval_mode, to_device
from seqgen.tasks.classification.model import SequenceClassifier


class ClassifierTorchStep:
    """``probabilities(token_ids)`` of :class:`SequenceClassifier` in eval mode (a model in
    training mode, validated mid-run, is put back after each call)."""

    def __init__(self, model: SequenceClassifier) -> None:
        self.model = model
        self.device = next(model.parameters()).device

    @torch.inference_mode()
    def probabilities(self, token_ids: np.ndarray) -> np.ndarray:
        """``(rows, time)`` int64 ids of whole texts -> ``(rows, classes)`` float32."""
        ids = to_device(token_ids.reshape(-1), self.device).view(token_ids.shape)
        with eval_mode(self.model):
            logits = self.model(ids)
        return torch.softmax(logits.float(), dim=-1).cpu().numpy()
