"""The Python API the CLI uses: load a checkpoint, then generate or evaluate.

>>> import seqgen
>>> generator = seqgen.load()  # the bundled Shakespeare model
>>> translator = seqgen.load(kind="translation")  # the bundled de-en translator
>>> print(generator.generate("ROMEO:", max_new_tokens=100, seed=1)[0])
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources
from pathlib import Path

import torch

from seqgen.config import Recipe, recipe_from_dict
from seqgen.decoding.torch_step import LanguageModelStep, TranslatorStep
from seqgen.errors import CheckpointError, SeqgenError
from seqgen.evaluation.perplexity import LanguageModelScores, evaluate_language_model
from seqgen.generation import GenerationOptions, encode_prompt, generate_text
from seqgen.loading import COMMANDS, KIND_NAMES
from seqgen.loading import load as load  # re-exported: seqgen.pipelines.load is public
from seqgen.models.language_model import LanguageModel
from seqgen.models.translator import Translator as TranslatorModel
from seqgen.text import Tokenizer, tokenizer_from_dict
from seqgen.training.checkpoint import Checkpoint, load_checkpoint
from seqgen.training.device import resolve_device
from seqgen.translation import Translator


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
        return encode_prompt(self.tokenizer, prompt)

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
        options = (options or GenerationOptions()).with_overrides(overrides)
        return generate_text(self.step_function, self.tokenizer, prompt, options, on_text=on_text)

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


BUNDLED_MODELS = {
    "language_model": "shakespeare-char.safetensors",
    "translation": "multi30k-de-en.safetensors",
}


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
    return Translator(TranslatorStep(model.eval()), source, target, recipe, checkpoint.info)


BUILDERS = {"language_model": _build_generator, "translation": _build_translator}


def load_checkpoint_pipeline(
    path: str | Path, *, kind: str | None = None, device: str = "auto"
) -> TextGenerator | Translator:
    """A checkpoint (file or run folder) on PyTorch. With ``kind``, a checkpoint of another
    kind is refused with a message naming the right command."""
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
    return BUILDERS[checkpoint.kind](checkpoint, recipe, Path(path), resolve_device(device))
