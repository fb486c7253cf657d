"""The generation pipeline: a prompt in, continuations out, on PyTorch or ONNX Runtime.

:class:`Generator` is the one object a user holds, whatever runs the model: it knows the model
only through its step function (``seqgen.tasks.generation.torch_step.LanguageModelStep`` or
``seqgen.tasks.generation.onnx_step.OnnxLanguageModelStep``). The options of a call, the
tokens generation bans, streaming and the dispatch to greedy search, sampling or beam search
live here, once. This module imports no torch.

>>> import seqgen
>>> generator = seqgen.load()  # the bundled Shakespeare model
>>> print(generator.generate("ROMEO:", max_new_tokens=100, seed=1)[0])
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np

from seqgen.decoding.beam import beam_search
from seqgen.decoding.contract import State, StepFunction
from seqgen.decoding.options import resolve_options
from seqgen.decoding.search import Hypothesis, greedy_search, sample
from seqgen.errors import SeqgenError
from seqgen.tasks.generation.config import GenerationDecodingConfig
from seqgen.text import Tokenizer

logger = logging.getLogger(__name__)


@dataclass
class GenerationOptions(GenerationDecodingConfig):
    """The options of one call: the model's decoding defaults (the section this extends),
    and the seed that makes sampling repeatable."""

    seed: int | None = None


def banned_token_ids(tokenizer: Tokenizer) -> tuple[int, ...]:
    """Ids a language model never generates.

    The model learned from one unbroken stream, where EOS never occurs: text ends at
    max_new_tokens. Padding, a second start token or <unk> would be no text at all.
    """
    return (tokenizer.pad_id, tokenizer.bos_id, tokenizer.unk_id, tokenizer.eos_id)


class PromptedStepFunction(StepFunction, Protocol):
    """A language model's step function: the decoding contract plus priming with prompts."""

    def start(self, prompts: Sequence[Sequence[int]]) -> tuple[State, np.ndarray]:
        """Prime ``batch`` prompts; returns the state and ``first_tokens`` ``(batch,)``."""
        ...


class TextStream:
    """Turns a growing list of token ids into newly printable text (for ``--stream``)."""

    def __init__(self, tokenizer: Tokenizer, prompt_ids: list[int], on_text: Callable[[str], None]):
        self.tokenizer = tokenizer
        self.token_ids = list(prompt_ids)
        self.printed = tokenizer.decode(self.token_ids)
        self.on_text = on_text

    def __call__(self, rows: np.ndarray, tokens: np.ndarray) -> None:
        self.token_ids.append(int(tokens[0]))
        text = self.tokenizer.decode(self.token_ids)
        if text.startswith(self.printed) and len(text) > len(self.printed):
            self.on_text(text[len(self.printed) :])
            self.printed = text


def encode_prompt(tokenizer: Tokenizer, prompt: str) -> list[int]:
    """BOS followed by the prompt's tokens; warns if some are unknown."""
    token_ids = tokenizer.encode(prompt)
    unknown = sum(1 for t in token_ids if t == tokenizer.unk_id)
    if unknown:
        logger.warning(
            "%d token(s) of the prompt are not in the model's vocabulary; read as <unk>",
            unknown,
        )
    return [tokenizer.bos_id, *token_ids]


def continuation(tokenizer: Tokenizer, prompt_ids: list[int], new_ids: Sequence[int]) -> str:
    """The text the new tokens add to the prompt's, with the tokenizer's own spacing."""
    before = tokenizer.decode(prompt_ids)
    after = tokenizer.decode([*prompt_ids, *new_ids])
    return after[len(before) :] if after.startswith(before) else tokenizer.decode(new_ids)


def generate_text(
    step_function: PromptedStepFunction,
    tokenizer: Tokenizer,
    prompt: str,
    options: GenerationOptions,
    *,
    on_text: Callable[[str], None] | None = None,
) -> list[str]:
    """Continue ``prompt``; returns ``num_samples`` texts, each prompt + continuation.

    ``on_text`` receives the continuation piece by piece as it is produced (one sample,
    greedy or sample strategy only), else each whole continuation at the end.
    """
    prompt_ids = encode_prompt(tokenizer, prompt)
    # Beam search only knows its best continuations at the end; so do several samples.
    streams = on_text is not None and options.strategy != "beam" and options.num_samples == 1
    stream = TextStream(tokenizer, prompt_ids, on_text) if streams else None
    hypotheses = search_continuations(step_function, tokenizer, prompt_ids, options, stream)
    texts = [continuation(tokenizer, prompt_ids, h.tokens) for h in hypotheses]
    if on_text and stream is None:
        for text in texts:
            on_text(text)
    return [prompt + text for text in texts]


def search_continuations(
    step_function: PromptedStepFunction,
    tokenizer: Tokenizer,
    prompt_ids: Sequence[int],
    options: GenerationOptions,
    on_step: Callable[[np.ndarray, np.ndarray], None] | None = None,
) -> list[Hypothesis]:
    """Prime the model with ``prompt_ids`` (BOS first) and run the search ``options`` names.

    Returns ``num_samples`` hypotheses: independent samples (one row each), or the n best
    beams of one row.
    """
    rows = 1 if options.strategy == "beam" else options.num_samples
    state, first_tokens = step_function.start([prompt_ids] * rows)
    common: dict[str, Any] = {
        "max_new_tokens": options.max_new_tokens,
        "eos_id": None,  # see banned_token_ids: generated text never ends at EOS
        "banned_token_ids": banned_token_ids(tokenizer),
        "no_repeat_ngram_size": options.no_repeat_ngram_size,
    }
    if options.strategy == "beam":
        return beam_search(
            step_function,
            state,
            first_tokens,
            beam_size=options.beam_size,
            n_best=options.num_samples,
            length_penalty=options.length_penalty,
            **common,
        )[0]
    if options.strategy == "greedy" or options.temperature == 0:
        return greedy_search(step_function, state, first_tokens, on_step=on_step, **common)
    return sample(
        step_function,
        state,
        first_tokens,
        temperature=options.temperature,
        top_k=options.top_k,
        top_p=options.top_p,
        rng=np.random.default_rng(options.seed),
        on_step=on_step,
        **common,
    )


class Generator:
    """A language model's step function with its tokenizer and decoding defaults.

    ``defaults`` are the model's stored decoding defaults (a checkpoint's ``[decoding]``
    section, a bundle's ``generation.defaults``); each call's options override them
    (:func:`seqgen.decoding.options.resolve_options`). ``recipe`` (checkpoints only) supplies
    the corpus and the windows :meth:`evaluate` reads; ``info`` is what training recorded.
    """

    task = "generation"

    def __init__(
        self,
        step_function: PromptedStepFunction,
        tokenizer: Tokenizer,
        defaults: Mapping[str, Any] | GenerationDecodingConfig,
        *,
        recipe: Any = None,
        info: Mapping[str, Any] | None = None,
    ) -> None:
        self.step_function = step_function
        self.tokenizer = tokenizer
        if isinstance(defaults, GenerationDecodingConfig):
            defaults = asdict(defaults)
        self.defaults = dict(defaults)
        self.recipe = recipe
        self.info = dict(info or {})

    @property
    def device(self) -> Any:
        """Where the model runs: a ``torch.device``, or ``"cpu"``/``"cuda"`` for a bundle."""
        return self.step_function.device

    @property
    def model(self) -> Any:
        """The PyTorch network (a checkpoint's pipeline only)."""
        model = getattr(self.step_function, "model", None)
        if model is None:
            raise SeqgenError("this generator runs an ONNX bundle; it has no PyTorch model")
        return model

    def options(self, **given: object) -> GenerationOptions:
        """The options of a call: ``given`` (None = not given) over the model's defaults."""
        return resolve_options(GenerationOptions, self.defaults, given)

    def encode_prompt(self, prompt: str) -> list[int]:
        """BOS followed by the prompt's tokens; warns once if some are unknown."""
        return encode_prompt(self.tokenizer, prompt)

    def generate(
        self,
        prompt: str = "",
        *,
        on_text: Callable[[str], None] | None = None,
        **options: object,
    ) -> list[str]:
        """Continue ``prompt``; returns ``num_samples`` texts, each prompt + continuation.

        Keyword options are the fields of :class:`GenerationOptions`. ``on_text`` receives
        the continuation piece by piece as it is produced (one sample, greedy or sample
        strategy only), else each whole continuation at the end.
        """
        settings = self.options(**options)
        return generate_text(self.step_function, self.tokenizer, prompt, settings, on_text=on_text)

    def evaluate(self, text: str) -> Any:
        """Loss, perplexity and bits per token/character of ``text`` under the model
        (``seqgen.tasks.generation.evaluation.LanguageModelScores``; PyTorch only)."""
        if self.recipe is None or getattr(self.step_function, "model", None) is None:
            raise SeqgenError(
                "scoring a generator needs PyTorch: evaluate the checkpoint it was exported from"
            )
        if not text:
            raise SeqgenError("the text to evaluate is empty")
        from seqgen.tasks.generation.evaluation import score_text  # torch

        return score_text(self.model, self.tokenizer, text, self.recipe.train)
