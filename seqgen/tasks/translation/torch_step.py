"""The PyTorch adapter of the decoding contract for translators."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from seqgen.decoding.contract import ColumnLogProbs, State, TopLogProbs
from seqgen.decoding.torch_step import (
    GateTable,
    TorchStep,
    eval_mode,
    graphs_by_default,
    to_device,
    to_host,
    top_log_probs,
)
from seqgen.tasks.translation.cuda_graphs import TranslatorGraphs
from seqgen.tasks.translation.model import EncoderDecoder, sentence_logits, sentence_token_ids
from seqgen.tasks.translation.shortlist import batch_shortlist
from seqgen.tasks.translation.source_rows import (
    EMBEDDING_GATES,
    OUTPUT_COLUMNS,
    OUTPUT_IDS,
    OUTPUT_LAYER,
    OUTPUT_MASK,
    SHORTLIST_NAMES,
    encoder_inputs,
    row_token_ids,
    select_rows,
    with_sentences,
)
from seqgen.text.vocabulary import BOS_ID


class TranslatorStep(TorchStep):
    """``start`` encodes the sources; ``step`` predicts one target token per row.

    The state (names in :mod:`seqgen.tasks.translation.model`) stays on the model's device as
    torch tensors; search sees numpy log-probabilities ``(rows, vocab)`` only. The source
    side is kept once per sentence and gathered only when the sentences change
    (:mod:`seqgen.tasks.translation.source_rows`).
    A model with a lexical shortlist computes the output layer for the batch's shortlisted
    tokens only (the state's ``OUTPUT_IDS``, the union over its sentences) and keeps each row
    to its own sentence's (``OUTPUT_COLUMNS`` and ``OUTPUT_MASK`` ``(sentences, S)``,
    :func:`~seqgen.tasks.translation.model.sentence_logits`), so a translation does not
    depend on its batch; ``start`` told ``shortlist=False`` scores every token.
    The model decodes in eval mode (no dropout); a model in training mode (the training
    loop validates mid-run) is put back in it after each call.

    With ``cuda_graphs`` (the default on CUDA, see :func:`graphs_by_default`) a narrowed step
    (greedy and beam search) is replayed from CUDA graphs (:mod:`seqgen.decoding.cuda_graphs`);
    on the CPU, True runs the same bookkeeping without capturing (for tests).
    """

    def __init__(self, model: EncoderDecoder, *, cuda_graphs: bool | None = None) -> None:
        self.model = model
        self.device = next(model.parameters()).device
        self._gate_table = GateTable(model.decoder.embedding, model.decoder.rnn)
        if cuda_graphs is None:
            cuda_graphs = graphs_by_default(self.device)
        # Shared by the narrowed views (a shallow copy shares it).
        self._graphs = TranslatorGraphs(model, top_log_probs) if cuda_graphs else None

    @property
    def uniform_rows(self) -> bool:
        """Whether search should step a batch at the same rows per sentence throughout (beam
        search's first step at every beam's row, not two per sentence): True with CUDA
        graphs, where each other shape is a graph of its own to capture and keep."""
        return self._graphs is not None

    @torch.inference_mode()
    def start(
        self, sources: Sequence[Sequence[int]], *, shortlist: bool = True, beam_size: int = 1
    ) -> tuple[State, np.ndarray]:
        """Encode a batch of sources.

        Args:
            sources: ``batch`` token id lists without BOS or EOS (EOS is appended here, as
                ``ParallelBatches`` does in training; an empty source is just EOS).
            shortlist: keep each sentence to its own shortlisted tokens, where the model has
                a shortlist (False: the whole vocabulary).
            beam_size: the search's (an ONNX step groups sentences by it; this one scores
                the batch's union either way).

        Returns:
            the state (``(batch, ...)`` per name) and ``first_tokens`` ``(batch,)`` int64,
            all BOS.
        """
        host_ids, host_lengths = encoder_inputs(sources)
        source_ids, source_lengths = (
            torch.from_numpy(array).to(self.device) for array in (host_ids, host_lengths)
        )
        with eval_mode(self.model):
            state = self.model.start(source_ids, source_lengths)
        first_tokens = np.full(len(sources), BOS_ID, dtype=np.int64)
        if shortlist and self.model.has_shortlist:
            table = self.model.shortlist_table.cpu().numpy()
            frequent = self.model.shortlist_frequent.cpu().numpy()
            shortlist = batch_shortlist(table, frequent, host_ids, host_lengths)
            for name, array in zip((OUTPUT_IDS, *SHORTLIST_NAMES), shortlist, strict=True):
                state[name] = torch.from_numpy(array).to(self.device)
            state[OUTPUT_LAYER] = self.model.decoder.output_rows(state[OUTPUT_IDS])
        state = with_sentences(state, len(sources))
        gate_table = self._gate_table.get(self.MAX_GATE_TABLE)
        if gate_table is not None:
            state[EMBEDDING_GATES] = gate_table
        return state, first_tokens

    @contextlib.contextmanager
    def concurrent_batches(self) -> Iterator[int]:
        """On the CPU, one batch at a time per torch thread, each running its operators on one
        thread, for the duration of the block (``torch.set_num_threads`` is process-wide, so
        it is put back after); elsewhere 1.

        A step's products are small (64 to 320 rows): MKL runs them about as fast on one
        thread as on two, so a second core only helps with a batch of its own. The model
        stays in eval mode for the whole block: a training model switched per step (see
        :func:`eval_mode`) would switch under the other thread.
        """
        threads = torch.get_num_threads()
        # (Graphs' buffers serve one step at a time.)
        if self.device.type != "cpu" or threads < 2 or self._graphs is not None:
            yield 1
            return
        self._gate_table.get(self.MAX_GATE_TABLE)  # built once, before the threads ask
        with eval_mode(self.model):
            torch.set_num_threads(1)
            try:
                yield threads
            finally:
                torch.set_num_threads(threads)

    @torch.inference_mode()
    def step(self, tokens: np.ndarray, state: State) -> tuple[np.ndarray | TopLogProbs, State]:
        token_ids = to_device(tokens, self.device)
        if self._graphable(state):
            return self._graphed_step(token_ids, state)
        logits, new_state = self._logits(token_ids, state)
        if state.get(OUTPUT_MASK) is None:
            return self._log_probs(logits), new_state
        if self.candidates is None or self.candidates >= logits.shape[-1]:
            return self._column_log_probs(logits, state).dense(), new_state
        values, columns = top_log_probs(logits, self.candidates, masked=True)
        token_ids = sentence_token_ids(state[OUTPUT_IDS], state[OUTPUT_COLUMNS], columns)
        return TopLogProbs(*to_host(values, token_ids)), new_state

    @torch.inference_mode()
    def compact_step(
        self, tokens: np.ndarray, state: State
    ) -> tuple[np.ndarray | ColumnLogProbs | TopLogProbs, State]:
        """:meth:`step`, but with a shortlist the ``(rows, S)`` log-probs over each row's
        sentence's shortlist (:class:`ColumnLogProbs`), not scattered into ``(rows,
        vocab)``: an ensemble whose members share the shortlist averages those columns only."""
        if state.get(OUTPUT_MASK) is None or self.candidates is not None:
            return self.step(tokens, state)
        logits, new_state = self._logits(to_device(tokens, self.device), state)
        return self._column_log_probs(logits, state), new_state

    def _column_log_probs(self, logits: torch.Tensor, state: State) -> ColumnLogProbs:
        """A shortlisted step's ``(rows, S)`` logits -> their log-probs, with each row's
        token ids, on the host."""
        values = torch.log_softmax(logits, dim=-1).cpu().numpy()
        return ColumnLogProbs(values, row_token_ids(state, to_host), self.model.target_vocab_size)

    def _logits(self, token_ids: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """``token_ids`` ``(rows,)`` -> float32 logits ``(rows, vocab)``, or with a shortlist
        ``(rows, S)`` over each row's sentence's (:func:`sentence_logits`), and the new
        state."""
        with eval_mode(self.model):
            logits, new_state = self.model.step(
                token_ids, dict(state), state.get(OUTPUT_LAYER), state.get(EMBEDDING_GATES)
            )
        logits, mask = logits.float(), state.get(OUTPUT_MASK)
        if mask is not None:  # each row to its own sentence's shortlist, before the softmax
            logits = sentence_logits(logits, state[OUTPUT_COLUMNS], mask)
        return logits, new_state

    def _graphable(self, state: State) -> bool:
        """Whether :meth:`step` replays a graph: with graphs, for a narrowed view that
        returns fewer candidates than it scores (else :meth:`step` returns them all): each
        row scores its sentence's ``S`` shortlist columns, or the whole vocabulary."""
        if self._graphs is None or self.candidates is None:
            return False
        columns = state.get(OUTPUT_COLUMNS)
        width = self.model.target_vocab_size if columns is None else columns.shape[1]
        return self.candidates < width

    def _graphed_step(self, token_ids: torch.Tensor, state: State) -> tuple[TopLogProbs, State]:
        """:meth:`step` of a narrowed view, replayed from a CUDA graph."""
        assert self._graphs is not None and self.candidates is not None
        with eval_mode(self.model):
            values, token_ids, recurrent = self._graphs.step(token_ids, state, self.candidates)
        return TopLogProbs(*to_host(values, token_ids)), {**state, **recurrent}

    @torch.inference_mode()
    def select(self, state: State, rows: np.ndarray) -> State:
        return select_rows(
            state,
            rows,
            lambda tensor, index: tensor.index_select(0, index),
            lambda rows: to_device(rows, self.device),
        )
