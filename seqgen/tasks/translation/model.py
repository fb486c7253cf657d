"""The attentional encoder-decoder translator: Encoder + Bridge + Decoder.

Training calls ``forward`` (teacher forcing). Decoding calls ``start`` once (the encoder,
the bridge and the attention keys) and then ``step`` per target token; both are pure
functions of tensors, which the PyTorch step adapter and the ONNX export both call.

The decoder state is a dict of batch-major tensors whose names are also the ONNX graph's
input and output names. The recurrent part has one entry per row (with beam search rows =
sentences x beam), the source side one per sentence; the rows are grouped by sentence,
sentence-major (``rows / sentences`` consecutive rows per sentence, see
``Decoder._attend``):

==============  ====================================================  ====================
name            shape                                                 present
==============  ====================================================  ====================
``hidden``      ``(rows, decoder_layers, decoder_hidden)`` float      always
``cell``        ``(rows, decoder_layers, decoder_hidden)`` float      ``cell = "lstm"``
``feed``        ``(rows, decoder_hidden)`` float, the previous h~     ``input_feeding``
``memory``      ``(sentences, source_len, 2 * encoder_hidden)`` float always
``keys``        ``(sentences, source_len, key_size)`` float           always
``source_mask`` ``(sentences, source_len)`` bool, True = real token   always
==============  ====================================================  ====================

``memory``, ``keys`` and ``source_mask`` never change during decoding; ``step`` passes
them through, and the adapters gather them only when the sentences change
(:mod:`seqgen.tasks.translation.source_rows`), never when beams reorder within a sentence.

With ``model.shortlist`` the model also holds a lexical shortlist (buffers
``shortlist_table`` ``(source_vocab, K)`` and ``shortlist_frequent`` ``(N,)``, filled from
the training pairs by :meth:`EncoderDecoder.set_shortlist`); the tokens a batch may produce come
from :func:`seqgen.tasks.translation.shortlist.shortlist_ids`, and ``step`` given their output rows
(``Decoder.output_rows``) scores only those.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from seqgen.errors import ConfigError
from seqgen.tasks.translation.config import EncoderDecoderConfig
from seqgen.tasks.translation.decoder import Decoder, DecoderState, OutputRows
from seqgen.tasks.translation.encoder import Bridge, Encoder, length_mask
from seqgen.tasks.translation.shortlist import shortlist_ids
from seqgen.text.vocabulary import EOS_ID, PAD_ID

TranslatorState = DecoderState


def initialise_uniform(module: nn.Module, init_range: float) -> None:
    """Every parameter from ``U(-init_range, init_range)`` (OpenNMT-py's ``param_init``),
    then the embeddings' padding rows back to zero, as ``nn.Embedding(padding_idx=...)``
    keeps them."""
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.uniform_(-init_range, init_range)
        for embedding in module.modules():
            if isinstance(embedding, nn.Embedding) and embedding.padding_idx is not None:
                embedding.weight[embedding.padding_idx].zero_()


def sentence_logits(
    logits: torch.Tensor, columns: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Each row's logits of its own sentence's shortlist: ``logits`` ``(rows, M)`` over the
    batch's union, ``columns`` ``(sentences, S)`` int64 and ``mask`` ``(sentences, S)`` (0,
    or -inf for padding; :func:`seqgen.tasks.translation.shortlist.shortlist_columns`) ->
    ``(rows, S)``, the rows grouped ``rows / sentences`` to a sentence. The log-softmax and
    top-k after it then read ``S`` columns, not ``M`` (about a tenth in a batch of 100)."""
    sentences, width = columns.shape
    grouped = logits.reshape(sentences, -1, logits.shape[-1])
    index = columns.unsqueeze(1).expand(-1, grouped.shape[1], -1)
    picked = torch.gather(grouped, 2, index) + mask.unsqueeze(1).to(logits.dtype)
    return picked.reshape(logits.shape[0], width)


def grouped_sentence_logits(
    scores: torch.Tensor,
    columns: torch.Tensor,
    mask: torch.Tensor,
    row_offsets: torch.Tensor,
    bias: torch.Tensor | None,
) -> torch.Tensor:
    """:func:`sentence_logits` of a grouped step: ``scores`` ``(G, R, U)`` of the groups'
    rows without the bias (``Decoder.scores`` with ``OutputRows.group_rows``), ``columns``
    ``(sentences, S)`` indices into the groups' ``G * U`` tokens (a sentence's within its
    group's ``U``), ``mask`` as there, ``row_offsets`` ``(rows,)`` where each row's scores
    start in the flat scores, less its group's first column (row r's score of column c is
    at ``row_offsets[r] + c``: :func:`seqgen.tasks.translation.shortlist.group_layout`),
    ``bias`` ``(G * U,)`` the output layer's bias of those tokens or None -> ``(rows, S)``.

    One gather of the ``rows x S`` scores read, from the flat ``(G * R * U)`` scores; the bias
    is added to those alone. A score is ``product + bias`` whatever the group, so a
    sentence's bits do not depend on its group or its batch."""
    sentences, size = columns.shape
    index = columns.unsqueeze(1) + row_offsets.reshape(sentences, -1, 1)  # (sentences, k, S)
    picked = torch.gather(scores.reshape(1, -1), 1, index.reshape(1, -1))
    added = mask
    if bias is not None:  # gather, not index_select: ONNX's GatherElements copies faster
        flat = columns.reshape(1, -1)
        added = mask + torch.gather(bias.unsqueeze(0), 1, flat).reshape(sentences, size)
    picked = picked.reshape(sentences, -1, size) + added.unsqueeze(1).to(scores.dtype)
    return picked.reshape(row_offsets.shape[0], size)


def sentence_token_ids(
    output_ids: torch.Tensor, columns: torch.Tensor, row_columns: torch.Tensor
) -> torch.Tensor:
    """Token ids of ``row_columns`` ``(rows, k)``, columns of each row's :func:`sentence_logits`
    (its sentence's ``columns`` ``(sentences, S)`` of ``output_ids`` ``(M,)``) -> ``(rows,
    k)`` int64."""
    by_sentence = row_columns.reshape(columns.shape[0], -1)  # rows grouped by sentence
    # (rows, -1), not row_columns.shape: an exported step keeps k dynamic (its top_k input)
    return output_ids[torch.gather(columns, 1, by_sentence)].reshape(row_columns.shape[0], -1)


class EncoderDecoder(nn.Module):
    """Source token ids -> target logits, with attention (Luong et al., 2015).

    Args:
        config: sizes, cell, attention kind, input feeding, dropout and weight sharing.
        source_vocab_size: rows of the source embedding.
        target_vocab_size: rows of the target embedding and of the output layer.
    """

    def __init__(
        self, config: EncoderDecoderConfig, source_vocab_size: int, target_vocab_size: int
    ) -> None:
        super().__init__()
        config.validate()
        if config.share_embeddings and source_vocab_size != target_vocab_size:
            raise ConfigError(
                "model.share_embeddings needs one joint vocabulary, but the source has "
                f"{source_vocab_size} tokens and the target {target_vocab_size}"
            )
        self.config = config
        self.source_vocab_size = source_vocab_size
        self.target_vocab_size = target_vocab_size
        target_embedding = nn.Embedding(
            target_vocab_size, config.embedding_size, padding_idx=PAD_ID
        )
        source_embedding = (
            target_embedding
            if config.share_embeddings
            else nn.Embedding(source_vocab_size, config.embedding_size, padding_idx=PAD_ID)
        )
        self.encoder = Encoder(config, source_embedding)
        self.bridge = Bridge(
            memory_size=self.encoder.memory_size,
            decoder_hidden_size=config.decoder_hidden_size,
            decoder_layers=config.decoder_layers,
            cell=config.cell,
            kind=config.bridge,
        )
        self.decoder = Decoder(
            config,
            target_embedding,
            memory_size=self.encoder.memory_size,
            target_vocab_size=target_vocab_size,
        )
        if config.init_range:
            initialise_uniform(self, config.init_range)
        if config.shortlist:
            # Placeholders of the right shape, so a checkpoint's buffers load into them;
            # training fills them from its pairs (set_shortlist).
            table = torch.full((source_vocab_size, config.shortlist), EOS_ID, dtype=torch.long)
            self.register_buffer("shortlist_table", table)
            # Distinct ids: even an unfilled shortlist holds the step graph's top candidates.
            frequent = torch.arange(config.shortlist_frequent) % target_vocab_size
            self.register_buffer("shortlist_frequent", frequent)

    @property
    def has_shortlist(self) -> bool:
        return bool(self.config.shortlist)

    def set_shortlist(self, table: torch.Tensor, frequent: torch.Tensor) -> None:
        """Fill the shortlist buffers (``(source_vocab, K)`` and ``(N,)`` int64)."""
        self.shortlist_table.copy_(table)
        self.shortlist_frequent.copy_(frequent)

    def shortlist_ids(self, source_ids: np.ndarray) -> np.ndarray:
        """The sorted ``(M,)`` target ids the sources ``(rows, source_len)`` may produce
        (:func:`seqgen.tasks.translation.shortlist.shortlist_ids` of this model's table)."""
        table, frequent = self.shortlist_table.cpu().numpy(), self.shortlist_frequent.cpu().numpy()
        return shortlist_ids(table, frequent, source_ids)

    @property
    def state_names(self) -> tuple[str, ...]:
        """The decoder state's names, in a fixed order (also the ONNX input names)."""
        names = list(self.decoder.rnn_state_names)
        if self.config.input_feeding:
            names.append("feed")
        return (*names, "memory", "keys", "source_mask")

    def forward(
        self,
        source_ids: torch.Tensor,
        source_lengths: torch.Tensor,
        target_in: torch.Tensor,
        keep: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Teacher-forced logits for training.

        Args:
            source_ids: ``(rows, source_len)`` int64, padded with 0 after each source.
            source_lengths: ``(rows,)`` int64, each >= 1.
            target_in: ``(rows, target_len)`` int64, BOS + target, padded with 0.
            keep: optional ``(rows, target_len)`` bool, the positions to score.

        Returns:
            logits ``(rows, target_len, vocab)``, whose positions past a target's end are
            meaningless and must be ignored by the loss (their target is PAD); or with
            ``keep``, ``(kept, vocab)`` for the kept positions in row-major order.
        """
        return self.decoder(target_in, self.start(source_ids, source_lengths), keep)

    def features(
        self,
        source_ids: torch.Tensor,
        source_lengths: torch.Tensor,
        target_in: torch.Tensor,
        keep: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """:meth:`forward` up to the output layer (``self.decoder.output``): ``(rows,
        target_len, output_size)``, or ``(kept, output_size)`` with ``keep``."""
        return self.decoder.features(target_in, self.start(source_ids, source_lengths), keep)

    def start(self, source_ids: torch.Tensor, source_lengths: torch.Tensor) -> TranslatorState:
        """Encode the sources and build the first decoder state (names in the module doc).

        Args:
            source_ids: ``(rows, source_len)`` int64, padded with 0 after each source.
            source_lengths: ``(rows,)`` int64, each >= 1.
        """
        memory, final = self.encoder(source_ids, source_lengths)
        state = self.bridge(final)
        if self.config.input_feeding:
            # No attentional vector exists before the first step (Luong et al., 2015, 3.3).
            state["feed"] = torch.zeros_like(state["hidden"][:, 0])
        state["memory"] = memory
        state["keys"] = self.decoder.attention.precompute(memory)
        state["source_mask"] = length_mask(source_lengths, source_ids.shape[1])
        return state

    def step(
        self,
        tokens: torch.Tensor,
        state: TranslatorState,
        output: OutputRows | None = None,
        embedding_gates: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, TranslatorState]:
        """One target token per row.

        Args:
            tokens: ``(rows,)`` int64, each row's previous target token (BOS first).
            state: the state from :meth:`start` or the previous step; never mutated.
            output: optional ``Decoder.output_rows`` of ``M`` tokens: score only these.
            embedding_gates: optional ``Decoder.embedding_gates()`` (eval mode only).

        Returns:
            logits ``(rows, vocab)``, or ``(rows, M)`` with ``output``, and the new state.
        """
        return self.decoder.step(tokens, state, output, embedding_gates)
