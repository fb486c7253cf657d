"""The PyTorch adapter of the decoding contract for language models."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from seqgen.decoding.contract import State, TopLogProbs
from seqgen.decoding.priming import group_by_length
from seqgen.decoding.torch_step import GateTable, TorchStep, to_device
from seqgen.tasks.generation.model import LanguageModel


class LanguageModelStep(TorchStep):
    """``start`` primes the model with prompts; ``step`` predicts one token per row."""

    def __init__(self, model: LanguageModel) -> None:
        self.model = model.eval()
        self.device = next(model.parameters()).device
        self._gate_table = GateTable(model.embedding, model.rnn)

    @torch.inference_mode()
    def start(self, prompts: Sequence[Sequence[int]]) -> tuple[State, np.ndarray]:
        """Consume every prompt but its last token, which becomes the first step's input.

        Args:
            prompts: ``batch`` non-empty token id lists (callers start them with BOS).

        Returns:
            the state ``(batch, num_layers, hidden_size)`` per name, and ``first_tokens``
            ``(batch,)`` int64.
        """
        state = self.model.initial_state(len(prompts), device=self.device)
        # Rows of equal prompt length run together, so no padding ever enters the state.
        for length, rows in group_by_length([len(p) - 1 for p in prompts]):
            if length == 0:
                continue
            token_ids = torch.tensor([prompts[r][:-1] for r in rows], device=self.device)
            index = torch.as_tensor(rows, device=self.device)
            group_state = {k: v.index_select(0, index) for k, v in state.items()}
            _, group_state = self.model(token_ids, group_state)
            for name, tensor in group_state.items():
                state[name].index_copy_(0, index, tensor)
        first_tokens = np.array([p[-1] for p in prompts], dtype=np.int64)
        return state, first_tokens

    @torch.inference_mode()
    def step(self, tokens: np.ndarray, state: State) -> tuple[np.ndarray | TopLogProbs, State]:
        token_ids = to_device(tokens, self.device)
        gate_table = self._gate_table.get(self.MAX_GATE_TABLE)
        logits, new_state = self.model.step(token_ids, dict(state), gate_table)
        return self._log_probs(logits), new_state

    @torch.inference_mode()
    def select(self, state: State, rows: np.ndarray) -> State:
        index = to_device(rows, self.device)
        return {name: tensor.index_select(0, index) for name, tensor in state.items()}
