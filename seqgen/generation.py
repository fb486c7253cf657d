"""Continuing a prompt with a language model, whatever runs it (PyTorch or ONNX Runtime).

The options, the tokens generation bans, streaming and the dispatch to greedy search,
sampling or beam search live here, once, so that ``seqgen.pipelines.TextGenerator`` (torch)
and ``seqgen.bundle`` (ONNX Runtime) generate the same way. This module imports no torch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, Protocol

import numpy as np

from seqgen.decoding.beam import beam_search
from seqgen.decoding.contract import State, StepFunction
from seqgen.decoding.search import Hypothesis, greedy_search, sample
from seqgen.errors import SeqgenError
from seqgen.text import Tokenizer

logger = logging.getLogger(__name__)

STRATEGIES = ("greedy", "sample", "beam")


@dataclass(frozen=True)
class GenerationOptions:
    """How to continue a prompt; validated before any work is done."""

    max_new_tokens: int = 300
    strategy: str = "sample"  # greedy | sample | beam
    temperature: float = 0.8  # sample only; 0 means greedy
    top_k: int = 0  # sample only; 0 = off
    top_p: float = 1.0  # sample only; 1 = off
    beam_size: int = 5  # beam only
    num_samples: int = 1  # independent samples, or the n best beams
    seed: int | None = None

    def validate(self) -> None:
        if self.max_new_tokens < 1:
            raise SeqgenError(f"max_new_tokens = {self.max_new_tokens}; it must be at least 1")
        if self.strategy not in STRATEGIES:
            raise SeqgenError(
                f"unknown strategy {self.strategy!r}; choose one of: {', '.join(STRATEGIES)}"
            )
        if self.temperature < 0:
            raise SeqgenError(f"temperature = {self.temperature}; it must be >= 0 (0 means greedy)")
        if self.top_k < 0:
            raise SeqgenError(f"top_k = {self.top_k}; it must be >= 0 (0 turns it off)")
        if not 0 < self.top_p <= 1:
            raise SeqgenError(f"top_p = {self.top_p}; it must be in (0, 1]")
        if self.num_samples < 1 or self.beam_size < 1:
            raise SeqgenError("num_samples and beam_size must be at least 1")
        if self.strategy == "beam" and self.num_samples > self.beam_size:
            raise SeqgenError(
                f"num_samples = {self.num_samples} beams asked for, "
                f"but beam_size is {self.beam_size}; "
                "raise --beam-size"
            )

    def with_overrides(self, overrides: Mapping[str, object]) -> GenerationOptions:
        """A copy with some fields replaced, validated."""
        known = {field.name for field in fields(self)}
        for name in overrides:
            if name not in known:
                raise SeqgenError(
                    f"unknown generation option {name!r}; choose from: {', '.join(sorted(known))}"
                )
        options = GenerationOptions(**{**asdict(self), **overrides})  # type: ignore[arg-type]
        options.validate()
        return options


def default_options_dict() -> dict[str, Any]:
    """The defaults an exported bundle records (every field but the seed)."""
    defaults = asdict(GenerationOptions())
    del defaults["seed"]
    return defaults


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
    options.validate()
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
    }
    if options.strategy == "beam":
        return beam_search(
            step_function,
            state,
            first_tokens,
            beam_size=options.beam_size,
            n_best=options.num_samples,
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
