"""The attentional RNN decoder (Luong et al., 2015; Bahdanau et al., 2015).

One step: embed the previous target token, run the RNN stack, attend over the encoder
memory, form the attentional vector ``h~ = tanh(W_c [context; h])`` (Luong eq. 5) and map
it to vocabulary logits. The attention kind decides where the attention sits:

- Luong (dot, general): the current top hidden state ``h_t`` is the query, after the RNN.
- Bahdanau: the *previous* top hidden state is the query, before the RNN, and the context
  joins the RNN input (Bahdanau et al., 2015, eq. 4-6).

Teacher forcing (:meth:`Decoder.forward`) has two paths:

- fused, for Luong attention without input feeding: the RNN reads the whole target sequence
  in ONE call and attention, ``W_c`` and the output layer run batched over time;
- stepwise, otherwise: input feeding (Luong 3.3) feeds the previous ``h~`` into the next
  step's input, and Bahdanau's query is the previous state, so each target position waits
  for the last; a Python loop runs the RNN cells once per position (``_rnn_step``), and the
  output layer then runs once over all positions.

Both compute exactly what :meth:`Decoder.step` computes one token at a time.

The state is a dict of batch-major tensors (see :mod:`seqgen.tasks.translation.model`):
``hidden`` / ``cell`` ``(rows, decoder_layers, decoder_hidden)``, ``feed`` ``(rows,
decoder_hidden)`` with input feeding, and the source side once per sentence: ``memory``,
``keys`` and ``source_mask`` ``(sentences, source_len)`` bool (True = real token), the rows
grouped by sentence (``rows = sentences x beam``, sentence-major; training and greedy
search: one row per sentence). Nothing is cached on the module.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from seqgen.layers.buckets import bucketed_linear
from seqgen.layers.cells import (
    RNN_CLASSES,
    EmbeddedGates,
    RnnState,
    batch_major,
    embedding_gates,
    gate_table_fits,
    layer_major,
    step_cells,
)
from seqgen.layers.dropout import Dropout, keep_mask
from seqgen.tasks.translation import feeding_loop
from seqgen.tasks.translation.attention import make_attention
from seqgen.tasks.translation.config import EncoderDecoderConfig

DecoderState = dict[str, torch.Tensor]


@dataclass(frozen=True)
class OutputRows:
    """The output layer's rows of ``M`` target tokens (a batch's shortlist), gathered once:
    ``weight`` ``(M, output_size)``, ``bias`` ``(M,)`` or None.

    With ``group_rows`` ``(G, R)`` int64 (a grouped step graph, bundle format 6) the ``M``
    tokens are ``G`` groups' shortlists of ``M / G`` each, one after the other, and each
    group scores only its own, for the rows ``group_rows`` names
    (:func:`seqgen.tasks.translation.shortlist.group_layout`)."""

    weight: torch.Tensor
    bias: torch.Tensor | None
    group_rows: torch.Tensor | None = None


class Decoder(nn.Module):
    """Predicts target tokens from the previous ones and the encoder memory.

    Args:
        config: the translator's config.
        embedding: the target embedding ``(target_vocab, embedding_size)``.
        memory_size: width of the encoder memory.
        target_vocab_size: size of the output layer.
    """

    def __init__(
        self,
        config: EncoderDecoderConfig,
        embedding: nn.Embedding,
        *,
        memory_size: int,
        target_vocab_size: int,
    ) -> None:
        super().__init__()
        self.config = config
        hidden_size = config.decoder_hidden_size
        self.is_bahdanau = config.attention == "bahdanau"
        self.embedding = embedding
        self.dropout = Dropout(config.dropout)
        self.attention = make_attention(
            config.attention, query_size=hidden_size, memory_size=memory_size
        )
        input_size = config.embedding_size
        input_size += memory_size if self.is_bahdanau else 0
        input_size += hidden_size if config.input_feeding else 0
        self.rnn = RNN_CLASSES[config.cell](
            input_size,
            hidden_size,
            num_layers=config.decoder_layers,
            dropout=config.dropout if config.decoder_layers > 1 else 0.0,
            batch_first=True,
        )
        # Luong et al. (2015), eq. 5: h~ = tanh(W_c [c_t; h_t]), W_c without a bias.
        self.combine = nn.Linear(memory_size + hidden_size, hidden_size, bias=False)
        # Press & Wolf (2017): a tied output layer reuses the target embedding matrix; a
        # projection takes decoder_hidden to embedding_size first when the sizes differ.
        tied = config.tie_target_embeddings
        output_size = config.embedding_size if tied else hidden_size
        self.output_projection: nn.Module = (
            nn.Linear(hidden_size, output_size, bias=False)
            if output_size != hidden_size
            else nn.Identity()
        )
        self.output = nn.Linear(output_size, target_vocab_size)
        if tied:
            self.output.weight = embedding.weight

    @property
    def rnn_state_names(self) -> tuple[str, ...]:
        return ("hidden", "cell") if self.config.cell == "lstm" else ("hidden",)

    @property
    def is_fused(self) -> bool:
        """True when teacher forcing runs the whole target through the RNN in one call."""
        return not self.is_bahdanau and not self.config.input_feeding

    def forward(
        self, target_in: torch.Tensor, state: DecoderState, keep: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Teacher forcing: logits for every target position, or only the kept ones.

        Args:
            target_in: ``(rows, target_len)`` int64, BOS + the target (padding after).
            state: the initial state from ``Translator.start`` (never mutated).
            keep: optional ``(rows, target_len)`` bool; True where logits are wanted.

        Returns:
            logits ``(rows, target_len, vocab)``, or ``(kept, vocab)`` in row-major order
            when ``keep`` is given. The output layer is most of a training step's work, so
            training keeps only real (non-pad) positions.
        """
        return self.scores(self.features(target_in, state, keep))

    def features(
        self, target_in: torch.Tensor, state: DecoderState, keep: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Teacher forcing up to the output layer (arguments as :meth:`forward`): what
        :meth:`scores` reads, ``(rows, target_len, output_size)`` or ``(kept, output_size)``.
        Training scores it against every token, or a batch's candidates only
        (``train.shortlist_loss``)."""
        embedded = self.dropout(self.embedding(target_in))
        if self.is_fused:
            attentional = self._forward_fused(embedded, state)
        else:
            attentional = self._forward_stepwise(embedded, state)
        if keep is not None:
            # The kept positions by index_select, not a boolean index: its backward adds
            # into zeros in one pass where the boolean index's sorts (the peer model's
            # ~1,000 kept positions: 0.3 against 1.5 ms).
            flat = attentional.reshape(-1, attentional.shape[-1])
            attentional = flat.index_select(0, keep.reshape(-1).nonzero().squeeze(1))
        return self.output_projection(attentional)

    def step(
        self,
        tokens: torch.Tensor,
        state: DecoderState,
        output: OutputRows | None = None,
        embedding_gates: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, DecoderState]:
        """One target position for every row.

        Args:
            tokens: ``(rows,)`` int64, the previous target token of each row.
            state: the state after the previous step (never mutated).
            output: optional :meth:`output_rows` of ``M`` target tokens (a shortlist), the
                only ones scored; None scores the whole vocabulary.
            embedding_gates: optional :meth:`embedding_gates` of these weights (eval mode
                only): each row's share of the first layer's input product is gathered
                from it instead of computed.

        Returns:
            logits ``(rows, vocab)`` (``(rows, M)`` with ``output``, column j scoring its
            j-th token) and the new state (same names and shapes).
        """
        embedded: torch.Tensor | EmbeddedGates
        if embedding_gates is not None and not self.training:
            rest = self.rnn.weight_ih_l0[:, self.config.embedding_size :]
            # A float16 graph's table is float32 (embedding_gates): rows cast, not the table.
            # index_select, not table[tokens]: an exported step gets ONNX's Gather, not a
            # GatherND, for the same rows.
            rows = embedding_gates.index_select(0, tokens)
            embedded = EmbeddedGates(rows.to(rest.dtype), rest)
        else:
            embedded = self.dropout(self.embedding(tokens))
        feed = state.get("feed")
        attentional, rnn_state = self._step(embedded, self._layer_major(state), feed, state)
        new_state = dict(state)
        new_state.update(self._batch_major(rnn_state))
        if self.config.input_feeding:
            new_state["feed"] = attentional
        return self._logits(attentional, output), new_state

    @property
    def uses_gate_table(self) -> bool:
        """Whether decoding builds :meth:`embedding_gates` (within ``GATE_TABLE_LIMIT``)."""
        return gate_table_fits(self.embedding, self.rnn)

    def embedding_gates(self, multiply_in: torch.dtype | None = None) -> torch.Tensor:
        """Every target token's share of the first RNN layer's input product, with its
        input-side bias: ``(target_vocab, gates)`` (:func:`seqgen.layers.cells.embedding_gates`,
        ``multiply_in`` as there). No dropout, so for decoding only: a step gathers its tokens'
        rows instead of multiplying, half of the first layer's work without input feeding."""
        return embedding_gates(self.embedding, self.rnn, multiply_in)

    def _forward_fused(self, embedded: torch.Tensor, state: DecoderState) -> torch.Tensor:
        """Luong attention without input feeding: one RNN call, attention batched over time.

        Returns the attentional vectors ``(rows, target_len, decoder_hidden)``.
        """
        outputs, _ = self.rnn(embedded, self._layer_major(state))  # (rows, target_len, hidden)
        context, _ = self.attention(outputs, state["keys"], state["memory"], state["source_mask"])
        return self._attentional(context, outputs)

    def _forward_stepwise(self, embedded: torch.Tensor, state: DecoderState) -> torch.Tensor:
        """Input feeding or Bahdanau: each position needs the previous one's result.

        Returns the attentional vectors ``(rows, target_len, decoder_hidden)``.
        """
        rnn_state, feed = self._layer_major(state), state.get("feed")
        # The embedding's share of the first layer's input product needs no recurrence: one
        # product over every position instead of a smaller one per position. (A fusable
        # decoder, run stepwise only to check one path against the other, has no other
        # inputs to join, so it keeps the plain path.) unbind, not one index per position:
        # its backward stacks the positions' gradients once, where each index's backward
        # would write a whole zero-filled sequence.
        if self.is_fused:
            tokens: list[torch.Tensor | EmbeddedGates] = list(embedded.unbind(1))
        else:
            size, weight = self.config.embedding_size, self.rnn.weight_ih_l0
            if self._fuses_feeding(embedded):
                # Both biases in this one product: the loop adds none at each position.
                bias = self.rnn.bias_ih_l0 + self.rnn.bias_hh_l0
                gates = bucketed_linear(embedded, weight[:, :size], bias)
                return self._feeding_loop(gates, rnn_state, feed, state)
            gates = bucketed_linear(embedded, weight[:, :size], self.rnn.bias_ih_l0)
            tokens = [EmbeddedGates(position, weight[:, size:]) for position in gates.unbind(1)]
        attentionals = []
        for token in tokens:
            feed, rnn_state = self._step(token, rnn_state, feed, state)
            attentionals.append(feed)
        # The output layer needs no recurrence: one large product instead of one per position.
        return torch.stack(attentionals, dim=1)

    def _fuses_feeding(self, embedded: torch.Tensor) -> bool:
        """Whether teacher forcing runs :func:`~seqgen.tasks.translation.feeding_loop.
        input_feeding_loop` (input feeding, Luong attention, one LSTM layer, the CPU)."""
        return feeding_loop.fuses(
            cell=self.config.cell,
            layers=self.config.decoder_layers,
            attention=self.attention,
            input_feeding=self.config.input_feeding,
            device=embedded.device,
        )

    def _feeding_loop(
        self, gates: torch.Tensor, rnn_state: RnnState, feed: torch.Tensor, state: DecoderState
    ) -> torch.Tensor:
        """Teacher forcing with input feeding as one autograd function, from the embedding's
        share of the gates with both biases ``(rows, target_len, 4 * hidden)``: the
        attentional vectors ``(rows, target_len, decoder_hidden)``, as the stepwise loop
        computes them."""
        hidden, cell = rnn_state
        size, width = self.config.embedding_size, self.config.decoder_hidden_size
        keep = None
        if self.training and self.dropout.p > 0:  # the dropout's mask for every position at once
            keep = keep_mask((*gates.shape[:2], width), self.dropout.p)
        weights = (self.rnn.weight_ih_l0[:, size:], self.rnn.weight_hh_l0, self.combine.weight)
        source = (state["keys"], state["memory"], state["source_mask"])
        return feeding_loop.input_feeding_loop(
            gates, hidden[0], cell[0], feed, *source, weights, keep
        )

    def _step(
        self,
        embedded: torch.Tensor | EmbeddedGates,
        rnn_state: RnnState,
        feed: torch.Tensor | None,
        state: DecoderState,
    ) -> tuple[torch.Tensor, RnnState]:
        """One position from an embedded token ``(rows, embedding_size)``, or from its share
        of the first layer's gates (:class:`EmbeddedGates`: teacher forcing, and decoding with
        :meth:`embedding_gates`).

        ``feed`` is the previous attentional vector (None without input feeding); ``state``
        only lends its per-sentence ``memory``, ``keys`` and ``source_mask`` (see
        :meth:`_attend`).

        Returns the attentional vector ``(rows, decoder_hidden)`` (the next step's ``feed``)
        and the layer-major RNN state.
        """
        first = embedded if isinstance(embedded, EmbeddedGates) else None
        inputs = [] if first is not None else [embedded]
        if self.is_bahdanau:
            # Bahdanau et al. (2015), eq. 6: the context for step i comes from s_{i-1}.
            previous_top = (rnn_state[0] if isinstance(rnn_state, tuple) else rnn_state)[-1]
            context = self._attend(previous_top, state)
            inputs.append(context)
        if self.config.input_feeding:
            # Luong et al. (2015), 3.3: the previous h~ joins the input, so the model knows
            # what it attended to before.
            inputs.append(feed)
        # With the embedding's share done ahead and no other inputs (Luong without input
        # feeding), the first layer's input is empty: (rows, 0), as its weight's columns.
        joined = torch.cat(inputs, dim=-1) if inputs or first is None else first.gates[:, :0]
        top, rnn_state = self._rnn_step(joined, rnn_state, first)
        if not self.is_bahdanau:
            # Luong et al. (2015), 3.1: attend from the current top hidden state h_t.
            context = self._attend(top, state)
        return self._attentional(context, top), rnn_state

    def _attend(self, query: torch.Tensor, state: DecoderState) -> torch.Tensor:
        """The context ``(rows, memory_size)`` of one query ``(rows, decoder_hidden)`` per
        row, over the state's per-sentence source side (``memory`` ``(sentences, source_len,
        memory_size)``): rows are grouped by sentence, ``rows / sentences`` consecutive rows
        per sentence (a beam), so each sentence's rows attend together as the queries of one
        batched product, which reads its memory and keys once instead of once per row.
        (Training has one row per sentence: a group of one, as before.)"""
        keys = state["keys"]
        queries = query.reshape(keys.shape[0], -1, query.shape[-1])  # (sentences, beam, hidden)
        context, _ = self.attention(queries, keys, state["memory"], state["source_mask"])
        return context.reshape(query.shape[0], -1)

    def _rnn_step(
        self, inputs: torch.Tensor, rnn_state: RnnState, first: EmbeddedGates | None = None
    ) -> tuple[torch.Tensor, RnnState]:
        """The RNN stack on one position: ``(rows, input_size)`` -> the top hidden state
        ``(rows, decoder_hidden)`` and the new layer-major state. With ``first``, ``inputs``
        holds only the first layer's inputs after the embedding.

        PyTorch runs the cell functions on the stack's own weights
        (:func:`seqgen.layers.cells.step_cells`). The ONNX export keeps the ``nn.LSTM`` call, one
        LSTM/GRU node, except with ``first`` (the step graph of a model with a gate table):
        the cell functions become a Gemm on the other inputs plus the gathered gates, which
        ONNX Runtime runs faster than the node's product over the embedding too (64 rows,
        no input feeding: 768 -> 390 us).
        """
        if torch.onnx.is_in_onnx_export() and first is None:
            outputs, rnn_state = self.rnn(inputs.unsqueeze(1), rnn_state)
            return outputs[:, 0], rnn_state
        if torch.onnx.is_in_onnx_export() and inputs.shape[-1] == 0 and self.rnn.num_layers == 1:
            if isinstance(self.rnn, nn.LSTM):
                return _lstm_on_gates(self.rnn, first, rnn_state)
        return step_cells(self.rnn, inputs, rnn_state, first)

    def _attentional(self, context: torch.Tensor, top: torch.Tensor) -> torch.Tensor:
        """``h~ = tanh(W_c [context; h])`` (Luong eq. 5), ``(rows, [time,] decoder_hidden)``.

        Returned after dropout: what the output layer reads and input feeding passes on, as
        in OpenNMT-py (identical to ``h~`` in eval mode).
        """
        return self.dropout(torch.tanh(self.combine(torch.cat([context, top], dim=-1))))

    def output_rows(self, output_ids: torch.Tensor) -> OutputRows:
        """The output layer's rows of the tokens ``output_ids`` ``(M,)``: gathered once per
        batch, not at every step (the gather costs as much as the product at 100 rows)."""
        # index_select, not indexing: its backward adds the rows' gradients into zeros in
        # one pass; indexing's sorts the ids first (the peer model's training step: 1.0
        # against 4.4 ms for the weight and bias of ~3,000 candidates).
        weight, bias = self.output.weight, self.output.bias
        rows = None if bias is None else bias.index_select(0, output_ids)
        return OutputRows(weight.index_select(0, output_ids), rows)

    def scores(self, features: torch.Tensor, output: OutputRows | None = None) -> torch.Tensor:
        """The output layer: :meth:`features` ``(..., output_size) -> (..., vocab)``, or
        ``(..., M)`` for the ``M`` tokens of ``output`` (a shortlist in decoding, a batch's
        candidates with ``train.shortlist_loss``), or ``(G, R, M / G)`` for grouped ones,
        without their bias (:func:`grouped_scores`)."""
        if output is None:
            return bucketed_linear(features, self.output.weight, self.output.bias)
        if output.group_rows is not None:
            return grouped_scores(features, output)
        # Only those tokens: M x output_size instead of vocab x output_size per row.
        return bucketed_linear(features, output.weight, output.bias)

    def _logits(self, attentional: torch.Tensor, output: OutputRows | None = None) -> torch.Tensor:
        """``(rows, [time,] decoder_hidden) -> (rows, [time,] vocab)``, or ``(..., M)`` for
        the ``M`` tokens of ``output``."""
        return self.scores(self.output_projection(attentional), output)

    def _layer_major(self, state: DecoderState) -> RnnState:
        """Batch-major ``(rows, layers, hidden)`` -> PyTorch's ``(layers, rows, hidden)``."""
        tensors = [layer_major(state[name]) for name in self.rnn_state_names]
        return (tensors[0], tensors[1]) if len(tensors) == 2 else tensors[0]

    def _batch_major(self, rnn_state: RnnState) -> DecoderState:
        tensors = rnn_state if isinstance(rnn_state, tuple) else (rnn_state,)
        return {
            name: batch_major(tensor)
            for name, tensor in zip(self.rnn_state_names, tensors, strict=True)
        }


def grouped_scores(features: torch.Tensor, output: OutputRows) -> torch.Tensor:
    """The output layer's product per group of rows: ``features`` ``(rows, output_size)``,
    the rows of each of ``output``'s ``G`` groups (``group_rows`` ``(G, R)``) times that
    group's ``U = M / G`` rows of ``weight`` -> ``(G, R, U)``, without the bias:
    :func:`~seqgen.tasks.translation.model.grouped_sentence_logits` adds it to the columns
    it picks. A group of 8 sentences scores the ~570 tokens of their shortlists, not the
    ~2,000 of a batch of 64 (docs/benchmarks.md)."""
    assert output.group_rows is not None
    groups, width = output.group_rows.shape[0], features.shape[-1]
    grouped = features.index_select(0, output.group_rows.reshape(-1)).reshape(groups, -1, width)
    weight = output.weight.reshape(groups, -1, width)  # (G, U, output_size)
    return torch.matmul(grouped, weight.transpose(1, 2))


def _lstm_on_gates(
    rnn: nn.LSTM, first: EmbeddedGates | None, rnn_state: RnnState
) -> tuple[torch.Tensor, RnnState]:
    """A one-layer LSTM's step, for the step graph, when the gate table holds its whole input
    product (no input feeding, Luong attention): ``first.gates`` ``(rows, 4 * hidden)`` plus
    the recurrent product, then the cell, as ``torch.lstm_cell`` computes them. The exporter
    wrote ``lstm_cell``'s input product as a Gemm over zero input columns that only copied
    ``first.gates`` (``0 + gates``, exactly ``gates``); without it the graph computes the
    same bits and skips a ``(rows, 4 * hidden)`` copy per step.

    ``rnn_state``: ``hidden`` and ``cell`` ``(1, rows, hidden)``; returns the new hidden
    state ``(rows, hidden)`` and both, layer-major."""
    assert first is not None and isinstance(rnn_state, tuple)
    hidden, cell = rnn_state[0][0], rnn_state[1][0]
    gates = nn.functional.linear(hidden, rnn.weight_hh_l0, rnn.bias_hh_l0) + first.gates
    input_gate, forget_gate, cell_gate, output_gate = gates.chunk(4, dim=1)
    new_cell = torch.sigmoid(forget_gate) * cell + torch.sigmoid(input_gate) * torch.tanh(cell_gate)
    new_hidden = torch.sigmoid(output_gate) * torch.tanh(new_cell)
    return new_hidden, (new_hidden.unsqueeze(0), new_cell.unsqueeze(0))
