"""The translation pipeline: sentences in, translations out, through the one search module.

Sentences are sorted by length and decoded in batches, so little work goes to padding; the
encoder masks padding exactly, so a sentence's translation does not depend on its batch.
Validation during training calls this same code, so its BLEU is what ``seqgen translate``
gets. The pipeline knows the model only through its step function: PyTorch
(``seqgen.tasks.translation.torch_step.TranslatorStep``) or ONNX Runtime
(``seqgen.tasks.translation.onnx_step.OnnxTranslatorStep``); it imports no torch.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np

from seqgen.decoding.beam import beam_search
from seqgen.decoding.contract import State, StepFunction
from seqgen.decoding.options import resolve_options
from seqgen.decoding.search import Hypothesis, greedy_search
from seqgen.errors import SeqgenError
from seqgen.recipes import Recipe
from seqgen.tasks.translation.config import TranslationDecodingConfig
from seqgen.text import Tokenizer
from seqgen.text.tokenizer import decode_all, encode_all

logger = logging.getLogger(__name__)

# Sentences per batch on CUDA when the call names none: a GPU step costs about the same for 500
# rows as for 5,000 (launches and host work set its pace), so fewer, larger batches mean
# fewer steps. On an H200, beam 5 over test_2016_flickr took 0.32 s in one batch (53 steps)
# and 1.3 s in batches of 100, cold (PyTorch, before CUDA graphs; README "Speed on a GPU").
CUDA_BATCH_SIZE = 1000


class TranslatorStepFunction(StepFunction, Protocol):
    """A step function that can also encode sources (both adapters are one)."""

    device: Any

    def start(
        self, sources: Sequence[Sequence[int]], *, shortlist: bool = True, beam_size: int = 1
    ) -> tuple[State, np.ndarray]: ...

    def concurrent_batches(self) -> AbstractContextManager[int]:
        """A block during which that many batches may be searched at once, each from its
        own thread (1: one after the other)."""
        ...


@dataclass(frozen=True)
class ScoredTranslation:
    text: str
    score: float  # length-normalised log-probability (beam) or the plain sum (greedy)
    token_ids: tuple[int, ...] = ()  # the target pieces found (no BOS, no EOS)


@dataclass
class TranslationOptions(TranslationDecodingConfig):
    """The options of one call: the model's decoding defaults (the section this extends),
    how many translations to return, and whether to score only the shortlist."""

    n_best: int = 1
    shortlist: bool = True  # score only shortlisted tokens, where the model has a shortlist
    max_length: int | None = None  # at most this many target pieces, on top of the ratio
    min_length: int | None = None  # at least this many pieces before EOS, on top of the ratio

    def validate(self) -> None:
        super().validate()
        if self.max_length is not None and self.max_length < 1:
            raise SeqgenError(f"max_length = {self.max_length}; it must be at least 1")
        if self.min_length is not None and self.min_length < 0:
            raise SeqgenError(f"min_length = {self.min_length}; it must be at least 0")
        if not 1 <= self.n_best <= self.beam_size:
            raise SeqgenError(
                f"n_best = {self.n_best}; it must be between 1 and the beam size ({self.beam_size})"
            )


class Translator:
    """A translation model's step function with its source and target tokenizers.

    ``recipe`` supplies the decoding defaults, the source length limit and (for
    ``seqgen evaluate``) the corpus; ``info`` is what training recorded.
    """

    task = "translation"

    def __init__(
        self,
        step_function: TranslatorStepFunction,
        source_tokenizer: Tokenizer,
        target_tokenizer: Tokenizer,
        recipe: Recipe,
        info: dict,
    ) -> None:
        self.step_function = step_function
        self.source_tokenizer = source_tokenizer
        self.target_tokenizer = target_tokenizer
        self.recipe = recipe
        self.info = info

    @property
    def device(self) -> Any:
        """Where the model runs: a ``torch.device``, or ``"cpu"``/``"cuda"`` for a bundle."""
        return self.step_function.device

    @property
    def default_batch_size(self) -> int:
        """Sentences per batch when a call names none: the recipe's ``decoding.batch_size``,
        or on CUDA at least :data:`CUDA_BATCH_SIZE`."""
        batch_size = self.recipe.decoding.batch_size
        if str(self.device).startswith("cuda"):  # a torch.device, or a bundle's "cuda"
            return max(batch_size, CUDA_BATCH_SIZE)
        return batch_size

    @property
    def max_source_length(self) -> int:
        """Longer sources are cut to this many pieces (the longest seen in training)."""
        return self.recipe.data.max_source_length

    def options(self, **given: object) -> TranslationOptions:
        """The options of a call: ``given`` (None = not given) over the model's defaults
        (its recipe's ``[decoding]``, with :attr:`default_batch_size`)."""
        stored = {**asdict(self.recipe.decoding), "batch_size": self.default_batch_size}
        return resolve_options(TranslationOptions, stored, given)

    def translate(self, sentences: Sequence[str], **options: object) -> list[str]:
        """Translate each sentence; empty sentences translate to empty strings.

        Keyword options are the fields of :class:`TranslationOptions`.
        """
        return [best[0].text for best in self.translate_n_best(sentences, **options)]

    def translate_n_best(
        self, sentences: Sequence[str], **options: object
    ) -> list[list[ScoredTranslation]]:
        """The ``n_best`` translations of each sentence, best first."""
        settings = self.options(**options)
        sources = self.encode_sources(sentences)
        results: list[list[ScoredTranslation]] = [[ScoredTranslation("", 0.0)] for _ in sources]
        # Longest first: a batch's padding is then small, and its first batch shows the peak.
        order = sorted((i for i, s in enumerate(sources) if s), key=lambda i: -len(sources[i]))
        batch_size = settings.batch_size
        batches = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]

        def search(rows: list[int]) -> list[list[Hypothesis]]:
            return self.search([sources[r] for r in rows], settings)

        with self.step_function.concurrent_batches() as workers:
            if workers > 1 and len(batches) > 1:
                # Batches are independent, and one batch's small per-step products keep one
                # core busy at best: on the CPU each core decodes its own batches.
                with ThreadPoolExecutor(min(workers, len(batches))) as pool:
                    found = list(pool.map(search, batches))
            else:
                found = [search(rows) for rows in batches]
        found_rows = [
            (row, hypotheses)
            for rows, hypotheses_of_rows in zip(batches, found, strict=True)
            for row, hypotheses in zip(rows, hypotheses_of_rows, strict=True)
        ]
        texts = iter(
            decode_all(self.target_tokenizer, [h.tokens for _, hs in found_rows for h in hs])
        )
        for row, hypotheses in found_rows:
            results[row] = [
                ScoredTranslation(next(texts), h.normalized_score, tuple(h.tokens))
                for h in hypotheses
            ]
        return results

    def attention(self, sentence: str, translation: ScoredTranslation | None = None, **options):
        """The :class:`~seqgen.tasks.translation.attention_maps.AttentionMap` of
        ``translation`` (one of :meth:`translate_n_best`'s results for ``sentence``), or of
        the best translation with the call's ``options``."""
        from seqgen.tasks.translation import attention_maps

        if translation is None:
            translation = self.translate_n_best([sentence], **options)[0][0]
        source_ids = self.encode_sources([sentence])[0]
        if not source_ids:
            raise SeqgenError("an empty sentence has no attention to draw")
        target_ids = list(translation.token_ids)
        model = getattr(self.step_function, "model", None)
        if model is not None:
            weights = attention_maps.torch_attention(model, source_ids, target_ids)
        else:
            weights = attention_maps.onnx_attention(self.step_function, source_ids, target_ids)
        return attention_maps.AttentionMap(
            weights,
            attention_maps.piece_labels(self.source_tokenizer, source_ids),
            attention_maps.piece_labels(self.target_tokenizer, target_ids),
        )

    def encode_sources(self, sentences: Sequence[str]) -> list[list[int]]:
        """Source token ids (no EOS) per sentence, cut to the model's limit; ``[]`` for an
        empty line."""
        # A blank line becomes "", which every tokenizer encodes to [].
        sources = encode_all(self.source_tokenizer, [s if s.strip() else "" for s in sentences])
        limit = self.max_source_length
        too_long = sum(1 for s in sources if len(s) > limit)
        if too_long:
            logger.warning(
                "%d sentence(s) longer than the model's limit of %d pieces were cut to it",
                too_long,
                limit,
            )
        return [s[:limit] for s in sources]

    def search(
        self, sources: list[list[int]], settings: TranslationOptions
    ) -> list[list[Hypothesis]]:
        """Search one batch of non-empty sources (token ids, see ``encode_sources``) with the
        call's ``settings`` (:meth:`options`); per source, its hypotheses best first."""
        lengths = np.array([len(s) + 1 for s in sources])  # the encoder also reads EOS
        max_new = np.ceil(settings.max_length_ratio * lengths + settings.max_length_offset)
        if settings.max_length:
            max_new = np.minimum(max_new, settings.max_length)
        min_new = np.floor(settings.min_length_ratio * lengths)
        if settings.min_length:
            min_new = np.maximum(min_new, settings.min_length)
        state, first_tokens = self.step_function.start(
            sources, shortlist=settings.shortlist, beam_size=settings.beam_size
        )
        tokenizer = self.target_tokenizer
        common = {
            "max_new_tokens": max_new.astype(np.int64),
            "min_new_tokens": np.minimum(min_new, max_new).astype(np.int64),
            "eos_id": tokenizer.eos_id,
            "no_repeat_ngram_size": settings.no_repeat_ngram_size,
            "banned_token_ids": (tokenizer.pad_id, tokenizer.bos_id, tokenizer.unk_id),
        }
        beam_size = settings.beam_size
        if beam_size == 1:
            return [[h] for h in greedy_search(self.step_function, state, first_tokens, **common)]
        return beam_search(
            self.step_function,
            state,
            first_tokens,
            beam_size=beam_size,
            n_best=settings.n_best,
            length_penalty=settings.length_penalty,
            **common,
        )
