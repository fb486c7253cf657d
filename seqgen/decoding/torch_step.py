"""PyTorch adapters of the decoding contract: language models and translators.

The state stays on the model's device as torch tensors; search only sees numpy
log-probabilities ``(rows, vocab)``, or for greedy and beam search (``narrowed``) each row's
top candidates (:class:`~seqgen.decoding.contract.TopLogProbs`), and hands back numpy row
indices.
"""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from seqgen.decoding.contract import State, TopLogProbs
from seqgen.decoding.cuda_graphs import TranslatorGraphs
from seqgen.decoding.priming import group_by_length
from seqgen.decoding.source_rows import (
    EMBEDDING_GATES,
    OUTPUT_IDS,
    OUTPUT_LAYER,
    encoder_inputs,
    select_rows,
    with_sentences,
)
from seqgen.models.cells import GATE_TABLE_LIMIT, embedding_gates, gate_table_fits
from seqgen.models.language_model import LanguageModel
from seqgen.models.translator import Translator
from seqgen.text.vocabulary import BOS_ID


class _Narrowing:
    """``narrowed`` for both adapters: log-probs of every token, or of each row's best."""

    candidates: int | None = None
    MAX_GATE_TABLE = GATE_TABLE_LIMIT  # the largest gate table built (seqgen.models.cells)

    def narrowed(self, candidates: int) -> _Narrowing:
        """A view whose steps return each row's ``candidates`` best log-probs
        (``seqgen.decoding.contract.narrowed``); the original is unchanged."""
        view = copy.copy(self)
        view.candidates = candidates
        return view

    def _log_probs(
        self, logits: torch.Tensor, output_ids: torch.Tensor | None = None, vocab_size: int = 0
    ) -> np.ndarray | TopLogProbs:
        """``(rows, vocab)`` logits -> numpy log-probs, all of them or the top candidates.

        With ``output_ids`` ``(M,)`` the logits are ``(rows, M)``, of those tokens only (a
        shortlist): the log-probs are normalised over them, and all of them come back as
        ``(rows, vocab_size)`` with ``-inf`` for the tokens outside the shortlist.
        """
        logits = logits.float()
        if self.candidates is None or self.candidates >= logits.shape[-1]:
            log_probs = torch.log_softmax(logits, dim=-1)
            if output_ids is not None:
                full = log_probs.new_full((log_probs.shape[0], vocab_size), -torch.inf)
                log_probs = full.index_copy_(1, output_ids, log_probs)
            return log_probs.cpu().numpy()
        values, token_ids = _top_log_probs(logits, self.candidates)
        if output_ids is not None:
            token_ids = output_ids[token_ids]
        return TopLogProbs(*_to_host(values, token_ids))


class LanguageModelStep(_Narrowing):
    """``start`` primes the model with prompts; ``step`` predicts one token per row."""

    def __init__(self, model: LanguageModel) -> None:
        self.model = model.eval()
        self.device = next(model.parameters()).device
        self._gate_table = _GateTable(model.embedding, model.rnn)

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
        token_ids = _to_device(tokens, self.device)
        gate_table = self._gate_table.get(self.MAX_GATE_TABLE)
        logits, new_state = self.model.step(token_ids, dict(state), gate_table)
        return self._log_probs(logits), new_state

    @torch.inference_mode()
    def select(self, state: State, rows: np.ndarray) -> State:
        index = _to_device(rows, self.device)
        return {name: tensor.index_select(0, index) for name, tensor in state.items()}


class TranslatorStep(_Narrowing):
    """``start`` encodes the sources; ``step`` predicts one target token per row.

    The state (names in :mod:`seqgen.models.translator`) stays on the model's device as
    torch tensors; search sees numpy log-probabilities ``(rows, vocab)`` only. The source
    side is gathered only when rows change sentence (:mod:`seqgen.decoding.source_rows`).
    A model with a lexical shortlist scores only the batch's shortlisted tokens (the
    state's ``OUTPUT_IDS``), unless ``start`` is told ``shortlist=False``.
    The model decodes in eval mode (no dropout); a model in training mode (the training
    loop validates mid-run) is put back in it after each call.

    With ``cuda_graphs`` (the default on CUDA, see :func:`graphs_by_default`) a narrowed step
    (greedy and beam search) is replayed from CUDA graphs (:mod:`seqgen.decoding.cuda_graphs`);
    on the CPU, True runs the same bookkeeping without capturing (for tests).
    """

    def __init__(self, model: Translator, *, cuda_graphs: bool | None = None) -> None:
        self.model = model
        self.device = next(model.parameters()).device
        self._gate_table = _GateTable(model.decoder.embedding, model.decoder.rnn)
        if cuda_graphs is None:
            cuda_graphs = graphs_by_default(self.device)
        # Shared by the narrowed views (a shallow copy shares it).
        self._graphs = TranslatorGraphs(model, _top_log_probs) if cuda_graphs else None

    @torch.inference_mode()
    def start(
        self, sources: Sequence[Sequence[int]], *, shortlist: bool = True
    ) -> tuple[State, np.ndarray]:
        """Encode a batch of sources.

        Args:
            sources: ``batch`` token id lists without BOS or EOS (EOS is appended here, as
                ``ParallelBatches`` does in training; an empty source is just EOS).
            shortlist: score only the batch's shortlisted tokens, where the model has a
                shortlist (False: the whole vocabulary).

        Returns:
            the state (``(batch, ...)`` per name) and ``first_tokens`` ``(batch,)`` int64,
            all BOS.
        """
        host_ids, host_lengths = encoder_inputs(sources)
        source_ids, source_lengths = (
            torch.from_numpy(array).to(self.device) for array in (host_ids, host_lengths)
        )
        with _eval_mode(self.model):
            state = self.model.start(source_ids, source_lengths)
        first_tokens = np.full(len(sources), BOS_ID, dtype=np.int64)
        state = with_sentences(state, len(sources))
        gate_table = self._gate_table.get(self.MAX_GATE_TABLE)
        if gate_table is not None:
            state[EMBEDDING_GATES] = gate_table
        if shortlist and self.model.has_shortlist:
            output_ids = torch.from_numpy(self.model.shortlist_ids(host_ids)).to(self.device)
            state[OUTPUT_IDS] = output_ids
            state[OUTPUT_LAYER] = self.model.decoder.output_rows(output_ids)
        return state, first_tokens

    @contextlib.contextmanager
    def concurrent_batches(self) -> Iterator[int]:
        """On the CPU, one batch at a time per torch thread, each running its operators on one
        thread, for the duration of the block (``torch.set_num_threads`` is process-wide, so
        it is put back after); elsewhere 1.

        A step's products are small (64 to 320 rows): MKL runs them about as fast on one
        thread as on two, so a second core only helps with a batch of its own. The model
        stays in eval mode for the whole block: a training model switched per step (see
        :func:`_eval_mode`) would switch under the other thread.
        """
        threads = torch.get_num_threads()
        # (Graphs' buffers serve one step at a time.)
        if self.device.type != "cpu" or threads < 2 or self._graphs is not None:
            yield 1
            return
        self._gate_table.get(self.MAX_GATE_TABLE)  # built once, before the threads ask
        with _eval_mode(self.model):
            torch.set_num_threads(1)
            try:
                yield threads
            finally:
                torch.set_num_threads(threads)

    @torch.inference_mode()
    def step(self, tokens: np.ndarray, state: State) -> tuple[np.ndarray | TopLogProbs, State]:
        token_ids = _to_device(tokens, self.device)
        if self._graphable(state):
            return self._graphed_step(token_ids, state)
        with _eval_mode(self.model):
            logits, new_state = self.model.step(
                token_ids, dict(state), state.get(OUTPUT_LAYER), state.get(EMBEDDING_GATES)
            )
        vocab_size = self.model.target_vocab_size
        return self._log_probs(logits, state.get(OUTPUT_IDS), vocab_size), new_state

    def _graphable(self, state: State) -> bool:
        """Whether :meth:`step` replays a graph: with graphs, for a narrowed view that
        returns fewer candidates than it scores (else ``_log_probs`` returns them all)."""
        if self._graphs is None or self.candidates is None:
            return False
        output_ids = state.get(OUTPUT_IDS)
        width = self.model.target_vocab_size if output_ids is None else output_ids.shape[0]
        return self.candidates < width

    def _graphed_step(self, token_ids: torch.Tensor, state: State) -> tuple[TopLogProbs, State]:
        """:meth:`step` of a narrowed view, replayed from a CUDA graph."""
        assert self._graphs is not None and self.candidates is not None
        with _eval_mode(self.model):
            values, token_ids, recurrent = self._graphs.step(token_ids, state, self.candidates)
        return TopLogProbs(*_to_host(values, token_ids)), {**state, **recurrent}

    @torch.inference_mode()
    def select(self, state: State, rows: np.ndarray) -> State:
        return select_rows(
            state,
            rows,
            lambda tensor, index: tensor.index_select(0, index),
            lambda rows: _to_device(rows, self.device),
        )


def graphs_by_default(device: torch.device) -> bool:
    """Whether a translator on ``device`` replays its step from CUDA graphs unless told: on
    CUDA, except where the environment sets ``SEQGEN_CUDA_GRAPHS=0`` (the way out for a
    driver or PyTorch build whose graph capture fails, from the command line too)."""
    return device.type == "cuda" and os.environ.get("SEQGEN_CUDA_GRAPHS", "1") != "0"


def _top_log_probs(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(rows, width)`` float32 logits -> the ``k`` best log-probs and their columns."""
    if logits.device.type == "cuda":
        # One kernel, where logsumexp launches several: the host, not the GPU, sets a step's
        # pace there (H200, 5,000 rows: 113 us of host time per logsumexp).
        return torch.topk(torch.log_softmax(logits, dim=-1), k)
    # The top-k of the logits and one log-sum-exp: the log-softmax is never written.
    values, token_ids = torch.topk(logits, k, dim=-1)
    values -= torch.logsumexp(logits, dim=-1, keepdim=True)
    return values, token_ids


def _to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """``(n,)`` numpy ids -> int64 tensor on ``device``. To CUDA through pinned memory without
    blocking: a copy from pageable memory waits for every queued kernel first, and a step made
    four or more (its tokens, and ``select``'s rows once per tensor), each idling the GPU."""
    tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.int64))
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def _to_host(*tensors: torch.Tensor) -> list[np.ndarray]:
    """Tensors -> numpy arrays, from CUDA with one wait for all of them (not one each)."""
    if not tensors or tensors[0].device.type != "cuda":
        return [tensor.cpu().numpy() for tensor in tensors]
    copies = [tensor.to("cpu", non_blocking=True) for tensor in tensors]
    torch.cuda.current_stream(tensors[0].device).synchronize()
    return [copy.numpy() for copy in copies]


class _GateTable:
    """A model's gate table (:func:`seqgen.models.cells.embedding_gates` of its embedding
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
def _eval_mode(model: torch.nn.Module) -> Iterator[None]:
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
