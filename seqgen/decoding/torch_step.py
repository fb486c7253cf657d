"""What every task's PyTorch step function shares (each task's adapter is in its folder).

The state stays on the model's device as torch tensors; search only sees numpy
log-probabilities ``(rows, vocab)``, or for greedy and beam search (``narrowed``) each row's
top candidates (:class:`~seqgen.decoding.contract.TopLogProbs`), and hands back numpy row
indices. :class:`TorchStep` turns logits into either; the helpers move ids to the device and
results to the host, build gate tables and switch dropout off.
"""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Iterator

import numpy as np
import torch

from seqgen.decoding.contract import TopLogProbs
from seqgen.layers.cells import GATE_TABLE_LIMIT, embedding_gates, gate_table_fits


class TorchStep:
    """Base of the PyTorch adapters: ``narrowed``, and logits -> log-probs of every token or
    of each row's best."""

    candidates: int | None = None
    MAX_GATE_TABLE = GATE_TABLE_LIMIT  # the largest gate table built (seqgen.layers.cells)

    def narrowed(self, candidates: int) -> TorchStep:
        """A view whose steps return each row's ``candidates`` best log-probs
        (``seqgen.decoding.contract.narrowed``); the original is unchanged."""
        view = copy.copy(self)
        view.candidates = candidates
        return view

    def _log_probs(self, logits: torch.Tensor) -> np.ndarray | TopLogProbs:
        """``(rows, vocab)`` logits -> numpy log-probs, all of them or the top candidates."""
        logits = logits.float()
        if self.candidates is None or self.candidates >= logits.shape[-1]:
            return torch.log_softmax(logits, dim=-1).cpu().numpy()
        return TopLogProbs(*to_host(*top_log_probs(logits, self.candidates)))


def graphs_by_default(device: torch.device) -> bool:
    """Whether a translator on ``device`` replays its step from CUDA graphs unless told: on
    CUDA, except where the environment sets ``SEQGEN_CUDA_GRAPHS=0`` (the way out for a
    driver or PyTorch build whose graph capture fails, from the command line too)."""
    return device.type == "cuda" and os.environ.get("SEQGEN_CUDA_GRAPHS", "1") != "0"


def top_log_probs(
    logits: torch.Tensor, k: int, *, masked: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(rows, width)`` float32 logits -> the ``k`` best log-probs and their columns.

    ``masked``: many logits are -inf (a translator's per-row shortlist mask), where the CPU's
    ``exp`` takes a slow path: ``logsumexp`` ran 3x and ``exp`` 4x slower on 500 x 2,500
    logits, 85% of them -inf, while ``log_softmax`` (its own kernel) ran 1.5x slower."""
    if logits.device.type == "cuda" or masked:
        # One kernel, where logsumexp launches several: the host, not the GPU, sets a step's
        # pace there (H200, 5,000 rows: 113 us of host time per logsumexp).
        return torch.topk(torch.log_softmax(logits, dim=-1), k)
    # The top-k of the logits and one log-sum-exp: the log-softmax is never written.
    values, token_ids = torch.topk(logits, k, dim=-1)
    values -= torch.logsumexp(logits, dim=-1, keepdim=True)
    return values, token_ids


def to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """``(n,)`` numpy ids -> int64 tensor on ``device``. To CUDA through pinned memory without
    blocking: a copy from pageable memory waits for every queued kernel first, and a step made
    four or more (its tokens, and ``select``'s rows once per tensor), each idling the GPU."""
    tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.int64))
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def to_host(*tensors: torch.Tensor) -> list[np.ndarray]:
    """Tensors -> numpy arrays, from CUDA with one wait for all of them (not one each)."""
    if not tensors or tensors[0].device.type != "cuda":
        return [tensor.cpu().numpy() for tensor in tensors]
    copies = [tensor.to("cpu", non_blocking=True) for tensor in tensors]
    torch.cuda.current_stream(tensors[0].device).synchronize()
    return [copy.numpy() for copy in copies]


class GateTable:
    """A model's gate table (:func:`seqgen.layers.cells.embedding_gates` of its embedding
    and first RNN layer), built once for its weights and again when training has changed
    them since (the key holds the tensors' version counters, which in-place updates bump)."""

    def __init__(self, embedding: torch.nn.Embedding, rnn: torch.nn.RNNBase) -> None:
        self.embedding, self.rnn = embedding, rnn
        self._built: tuple[tuple[int, ...], torch.Tensor] | None = None

    def get(self, limit: int) -> torch.Tensor | None:
        """The table ``(vocab, gates)``, or None where it would hold more than ``limit`` or
        the model is not on the CPU: CUDA's fused cell kernels take the input-side bias as a
        vector only, not as the ``(rows, gates)`` a table lookup gives (and the embedding's
        product it saves is cheap on a GPU)."""
        on_cpu = self.embedding.weight.device.type == "cpu"
        if not on_cpu or not gate_table_fits(self.embedding, self.rnn, limit):
            return None
        tensors = (self.embedding.weight, self.rnn.weight_ih_l0, self.rnn.bias_ih_l0)
        key = tuple(value for t in tensors for value in (t.data_ptr(), t._version))
        if self._built is None or self._built[0] != key:
            self._built = (key, embedding_gates(self.embedding, self.rnn))
        return self._built[1]


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """Run ``model`` without dropout, then restore its mode. A model already in eval mode
    is left alone: ``eval()`` and ``train()`` walk every submodule, which at each step had
    cost a tenth of greedy decoding."""
    if not model.training:
        yield
        return
    model.eval()
    try:
        yield
    finally:
        model.train()
