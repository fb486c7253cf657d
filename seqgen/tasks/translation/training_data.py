"""A translator's training data: the pairs a recipe names, read into memory or streamed
from disk (``data.streaming``), and the tokenizers trained on them (or copied from another
translator, ``tokenizer.copy_from``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from seqgen.data.corpora import load_parallel, parallel_paths, read_parallel_files, read_tsv
from seqgen.data.streaming import PairFiles
from seqgen.errors import ConfigError, SeqgenError
from seqgen.recipes import Recipe
from seqgen.text import Tokenizer, train_tokenizer


def load_pairs(recipe: Recipe, split: str, *, data_dir: str | None) -> tuple[list[str], list[str]]:
    """The ``train`` or ``val`` sentence pairs a translation recipe names."""
    data = recipe.data
    if data.corpus:
        return load_parallel(data.corpus, split, data_dir=data_dir)
    source, target = (
        (data.train_source, data.train_target)
        if split == "train"
        else (data.validation_source, data.validation_target)
    )
    if not target and source.endswith(".tsv"):
        return read_tsv(source)
    return read_parallel_files(source, target)


def training_files(recipe: Recipe, *, data_dir: str | None) -> PairFiles:
    """The training pairs' files, for streaming them (data.streaming)."""
    data = recipe.data
    if data.corpus:
        return PairFiles(*parallel_paths(data.corpus, "train", data_dir=data_dir))
    if not data.train_target and data.train_source.endswith(".tsv"):
        return PairFiles(Path(data.train_source))
    return PairFiles(Path(data.train_source), Path(data.train_target))


def stream_tokenizers(
    recipe: Recipe, files: PairFiles, sample: list[tuple[str, str]]
) -> dict[str, Tokenizer]:
    """Tokenizers for a streamed corpus: sentencepiece learns from ``sample``; word,
    whitespace and char vocabularies count every sentence in one streaming pass per
    vocabulary (memory grows with the vocabulary, not the corpus)."""
    if recipe.tokenizer.kind == "sentencepiece":
        return train_tokenizers(
            recipe, [source for source, _ in sample], [target for _, target in sample]
        )

    def sentences(sides: tuple[int, ...]) -> Iterator[str]:
        pairs, _ = files.open()
        for pair in pairs:
            yield from (pair[side] for side in sides)

    if recipe.tokenizer.joint:
        joint = train_tokenizer(recipe.tokenizer, sentences((0, 1)))
        return {"source": joint, "target": joint}
    return {
        "source": train_tokenizer(recipe.tokenizer, sentences((0,))),
        "target": train_tokenizer(recipe.tokenizer, sentences((1,))),
    }


def train_tokenizers(
    recipe: Recipe, sources: list[str], targets: list[str]
) -> dict[str, Tokenizer]:
    """One joint tokenizer for both sides, or one per side (``tokenizer.joint``)."""
    if recipe.tokenizer.joint:
        joint = train_tokenizer(recipe.tokenizer, sources + targets)
        return {"source": joint, "target": joint}
    return {
        "source": train_tokenizer(recipe.tokenizer, sources),
        "target": train_tokenizer(recipe.tokenizer, targets),
    }


def copied_tokenizers(model: str) -> dict[str, Tokenizer]:
    """``tokenizer.copy_from``: the ``source`` and ``target`` tokenizers of the translator
    ``model`` (a bundled model's name, a checkpoint or a bundle). SeqgenError, naming the
    setting, where it is not a translator."""
    from seqgen.loading import load  # the package's front door, which imports every task

    try:
        translator = load(model, kind="translation", device="cpu")
    except SeqgenError as error:
        raise ConfigError(f"tokenizer.copy_from: {error}") from None
    return {"source": translator.source_tokenizer, "target": translator.target_tokenizer}
