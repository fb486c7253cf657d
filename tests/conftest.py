"""Shared fixtures: a tiny text corpus, a tiny recipe and a tiny trained run.

Everything here is small enough for a 2-core machine: models of hidden size 32, batches of
4 rows of 16 tokens, a few steps on a few KB of text written into a temporary folder. Tests
that need the public corpora get the mirror folder from ``SEQGEN_DATA_DIR`` (fixture
``data_dir``) and skip when it is unset.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from pathlib import Path

import pytest

WORDS = (
    "the king and queen of the north ride out at dawn to meet the army by the river "
    "while the fool sings of love and war and the old moon hangs over the castle"
).split()


def make_corpus_text(characters: int = 4000, *, seed: int = 0) -> str:
    """Lines of pseudo-random words from a small vocabulary: learnable, deterministic."""
    generator = random.Random(seed)
    lines: list[str] = []
    length = 0
    while length < characters:
        line = " ".join(generator.choice(WORDS) for _ in range(generator.randint(4, 10)))
        line = line.capitalize() + "."
        lines.append(line)
        length += len(line) + 1
    return "\n".join(lines) + "\n"


TINY_RECIPE = """\
task = "generation"

[data]
corpus = '{corpus}'
validation_fraction = 0.1

[tokenizer]
kind = "char"

[model]
cell = "lstm"
embedding_size = 16
hidden_size = 32
num_layers = 1
dropout = 0.0

[train]
batch_size = 4
sequence_length = 16
max_steps = 6
eval_every = 3
eval_batch_size = 4
log_every = 2
warmup_steps = 2
seed = 7
device = "cpu"
"""


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread() -> None:
    """The test machine has 2 cores and other work: keep torch to one thread."""
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def corpus_text() -> str:
    return make_corpus_text()


@pytest.fixture(scope="session")
def corpus_file(tmp_path_factory: pytest.TempPathFactory, corpus_text: str) -> Path:
    """A ~4 KB UTF-8 text file, read-only by convention."""
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text(corpus_text, encoding="utf-8")
    return path


@pytest.fixture
def write_recipe(tmp_path: Path, corpus_file: Path) -> Callable[..., Path]:
    """``write_recipe(corpus=None)``: a tiny recipe file in ``tmp_path`` (char LSTM, 6 steps)."""

    def write(corpus: Path | str | None = None, name: str = "tiny.toml") -> Path:
        path = tmp_path / name
        path.write_text(TINY_RECIPE.format(corpus=corpus or corpus_file), encoding="utf-8")
        return path

    return write


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory, corpus_file: Path) -> Path:
    """A run folder (best, last, metrics.csv) of the tiny recipe; tests must not change it."""
    from seqgen.recipes import load_recipe
    from seqgen.training.run import train

    folder = tmp_path_factory.mktemp("trained")
    recipe_path = folder / "tiny.toml"
    recipe_path.write_text(TINY_RECIPE.format(corpus=corpus_file), encoding="utf-8")
    run = folder / "run"
    train(load_recipe(recipe_path), run, show_progress=False)
    return run


@pytest.fixture(scope="session")
def data_dir() -> str:
    """The corpus mirror folder, or skip the test."""
    value = os.environ.get("SEQGEN_DATA_DIR")
    if not value:
        pytest.skip("SEQGEN_DATA_DIR is not set")
    return value
