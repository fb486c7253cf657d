"""The Python API the CLI uses: load a checkpoint, then generate or evaluate.

>>> import seqgen
>>> generator = seqgen.load()  # the bundled Shakespeare model
>>> translator = seqgen.load(kind="translation")  # the bundled de-en translator
>>> print(generator.generate("ROMEO:", max_new_tokens=100, seed=1)[0])
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from seqgen.config import Recipe, recipe_from_dict
from seqgen.decoding.beam import beam_search
from seqgen.decoding.search import greedy_search, sample
from seqgen.decoding.torch_step import LanguageModelStep
from seqgen.errors import CheckpointError, SeqgenError
from seqgen.evaluation.perplexity import LanguageModelScores, evaluate_language_model
from seqgen.models.language_model import LanguageModel
from seqgen.models.translator import Translator as TranslatorModel
from seqgen.text import Tokenizer, tokenizer_from_dict
from seqgen.training.checkpoint import Checkpoint, load_checkpoint
from seqgen.training.device import resolve_device
from seqgen.translation import Translator

logger = logging.getLogger(__name__)

BUNDLED_GENERATOR = "shakespeare-char.safetensors"
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


class _TextStream:
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


class TextGenerator:
    """A trained language model with its tokenizer."""

    kind = "language_model"

    def __init__(
        self, model: LanguageModel, tokenizer: Tokenizer, recipe: Recipe, info: dict
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.recipe = recipe
        self.info = info
        self.step_function = LanguageModelStep(model)

    @property
    def device(self) -> torch.device:
        return self.step_function.device

    def encode_prompt(self, prompt: str) -> list[int]:
        """BOS followed by the prompt's tokens; warns once if some are unknown."""
        token_ids = self.tokenizer.encode(prompt)
        unknown = sum(1 for t in token_ids if t == self.tokenizer.unk_id)
        if unknown:
            logger.warning(
                "%d token(s) of the prompt are not in the model's vocabulary; read as <unk>",
                unknown,
            )
        return [self.tokenizer.bos_id, *token_ids]

    def _continuation(self, prompt_ids: list[int], new_ids: tuple[int, ...]) -> str:
        """The text the new tokens add to the prompt's, with the tokenizer's own spacing."""
        before = self.tokenizer.decode(prompt_ids)
        after = self.tokenizer.decode([*prompt_ids, *new_ids])
        return after[len(before) :] if after.startswith(before) else self.tokenizer.decode(new_ids)

    def generate(
        self,
        prompt: str = "",
        options: GenerationOptions | None = None,
        *,
        on_text: Callable[[str], None] | None = None,
        **overrides: object,
    ) -> list[str]:
        """Continue ``prompt``; returns ``num_samples`` texts, each prompt + continuation.

        ``on_text`` receives the continuation piece by piece as it is produced (one sample,
        greedy or sample strategy only). Keyword overrides set fields of
        :class:`GenerationOptions`.
        """
        options = GenerationOptions(**{**(options.__dict__ if options else {}), **overrides})
        options.validate()
        prompt_ids = self.encode_prompt(prompt)
        rows = 1 if options.strategy == "beam" else options.num_samples
        state, first_tokens = self.step_function.start([prompt_ids] * rows)
        stream = _TextStream(self.tokenizer, prompt_ids, on_text) if on_text and rows == 1 else None
        tokenizer = self.tokenizer
        common = {
            "max_new_tokens": options.max_new_tokens,
            # The model learned from one unbroken stream, where EOS never occurs: text ends at
            # max_new_tokens. Padding, a second start token or <unk> would be no text at all.
            "eos_id": None,
            "banned_token_ids": (
                tokenizer.pad_id,
                tokenizer.bos_id,
                tokenizer.unk_id,
                tokenizer.eos_id,
            ),
        }
        if options.strategy == "beam":
            hypotheses = beam_search(
                self.step_function,
                state,
                first_tokens,
                beam_size=options.beam_size,
                n_best=options.num_samples,
                **common,
            )[0]
        elif options.strategy == "greedy" or options.temperature == 0:
            hypotheses = greedy_search(
                self.step_function, state, first_tokens, on_step=stream, **common
            )
        else:
            hypotheses = sample(
                self.step_function,
                state,
                first_tokens,
                temperature=options.temperature,
                top_k=options.top_k,
                top_p=options.top_p,
                rng=np.random.default_rng(options.seed),
                on_step=stream,
                **common,
            )
        if on_text and stream is None:
            for hypothesis in hypotheses:
                on_text(self._continuation(prompt_ids, hypothesis.tokens))
        return [prompt + self._continuation(prompt_ids, h.tokens) for h in hypotheses]

    def evaluate(self, text: str) -> LanguageModelScores:
        """Loss, perplexity and bits per token/character of ``text`` under the model."""
        if not text:
            raise SeqgenError("the text to evaluate is empty")
        token_ids = torch.tensor(self.tokenizer.encode(text), dtype=torch.long)
        return evaluate_language_model(
            self.model,
            token_ids,
            characters=len(text),
            batch_size=self.recipe.train.eval_batch_size,
            sequence_length=self.recipe.train.sequence_length,
            bos_id=self.tokenizer.bos_id,
        )


BUNDLED_MODELS = {"language_model": BUNDLED_GENERATOR, "translation": "multi30k-de-en.safetensors"}
COMMANDS = {"language_model": "seqgen generate", "translation": "seqgen translate"}
KIND_NAMES = {"language_model": "language model (generator)", "translation": "translation model"}


def bundled_model_path(kind: str = "language_model") -> Path:
    """A model shipped inside the package: the Shakespeare generator or the de-en translator."""
    return Path(str(resources.files("seqgen") / "assets" / BUNDLED_MODELS[kind]))


def _load_weights(
    model: torch.nn.Module, checkpoint: Checkpoint, path: Path, device: torch.device
) -> None:
    try:
        model.load_state_dict({k: v.float() for k, v in checkpoint.weights.items()})
    except RuntimeError as error:
        first_line = str(error).splitlines()[0]
        raise CheckpointError(f"{path}: weights do not match its config ({first_line})") from None
    model.to(device)


def _build_generator(
    checkpoint: Checkpoint, recipe: Recipe, path: Path, device: torch.device
) -> TextGenerator:
    tokenizer = tokenizer_from_dict(checkpoint.tokenizer)
    model = LanguageModel(recipe.model, tokenizer.vocab_size)
    _load_weights(model, checkpoint, path, device)
    return TextGenerator(model, tokenizer, recipe, checkpoint.info)


def _build_translator(
    checkpoint: Checkpoint, recipe: Recipe, path: Path, device: torch.device
) -> Translator:
    try:
        source, target = (
            tokenizer_from_dict(checkpoint.tokenizer[k]) for k in ("source", "target")
        )
    except KeyError:
        raise CheckpointError(
            f"{path}: a translation model needs source and target tokenizers"
        ) from None
    model = TranslatorModel(recipe.model, source.vocab_size, target.vocab_size)
    _load_weights(model, checkpoint, path, device)
    return Translator(model.eval(), source, target, recipe, checkpoint.info)


BUILDERS = {"language_model": _build_generator, "translation": _build_translator}


def load(
    path: str | Path | None = None, *, kind: str | None = None, device: str = "auto"
) -> TextGenerator | Translator:
    """Load a checkpoint (file or run folder) as a :class:`TextGenerator` or :class:`Translator`.

    Without a path, the bundled model of ``kind`` (default: the generator). With ``kind``,
    a checkpoint of another kind is refused with a message naming the right command.
    """
    path = bundled_model_path(kind or "language_model") if path is None else Path(path)
    checkpoint = load_checkpoint(path)
    if checkpoint.kind not in BUILDERS:
        raise CheckpointError(
            f"{path} holds a {checkpoint.kind!r} model, which this seqgen cannot load"
        )
    if kind is not None and checkpoint.kind != kind:
        raise CheckpointError(
            f"{path} holds a {KIND_NAMES[checkpoint.kind]}, not a {KIND_NAMES[kind]}; "
            f"use {COMMANDS[checkpoint.kind]} with it"
        )
    recipe = recipe_from_dict(checkpoint.recipe)
    return BUILDERS[checkpoint.kind](checkpoint, recipe, path, resolve_device(device))
