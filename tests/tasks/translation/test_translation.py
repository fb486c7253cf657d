"""The translation line: train -> translate -> evaluate on a tiny made-up parallel corpus.

One tiny translator is trained per session (``translator_run``, through ``seqgen train``)
and shared; tests must not change its folder. The corpus is a toy German-to-English word
mapping written into a temporary folder: enough for the model to emit different text for
different sources, so batch-size invariance compares real translations.
"""

from __future__ import annotations

import csv
import logging
import os
import random
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner, Result

import seqgen
from seqgen.cli import main
from seqgen.errors import CheckpointError, ConfigError, SeqgenError
from seqgen.loading import load as load_pipeline
from seqgen.recipes import load_recipe
from seqgen.tasks.translation.bleu import corpus_bleu, corpus_chrf
from seqgen.tasks.translation.pipeline import ScoredTranslation, Translator
from seqgen.tasks.translation.shortlists import add_shortlist
from seqgen.tasks.translation.training import TranslationTrainer
from seqgen.text import tokenizer_from_dict
from seqgen.training import device
from seqgen.training.checkpoint import load_checkpoint, save_checkpoint
from seqgen.training.run import train

LEXICON = {
    "der": "the",
    "hund": "dog",
    "katze": "cat",
    "mann": "man",
    "frau": "woman",
    "kind": "child",
    "läuft": "runs",
    "schläft": "sleeps",
    "spielt": "plays",
    "isst": "eats",
    "im": "in the",
    "park": "park",
    "garten": "garden",
    "haus": "house",
    "rot": "red",
    "blau": "blue",
    "klein": "small",
    "groß": "big",
    "heute": "today",
    "morgen": "tomorrow",
}


def make_pairs(count: int, *, seed: int) -> list[tuple[str, str]]:
    """``count`` (German, English) toy sentence pairs, word for word; deterministic."""
    rng = random.Random(seed)
    pairs = []
    for _ in range(count):
        words = ["der", rng.choice(["rot", "blau", "klein", "groß"])]
        words += [rng.choice(["hund", "katze", "mann", "frau", "kind"])]
        words += [rng.choice(["läuft", "schläft", "spielt", "isst"])]
        if rng.random() < 0.6:
            words += ["im", rng.choice(["park", "garten", "haus"])]
        if rng.random() < 0.4:
            words.append(rng.choice(["heute", "morgen"]))
        source = " ".join(words).capitalize() + "."
        target = " ".join(LEXICON[word] for word in words).capitalize() + "."
        pairs.append((source, target))
    return pairs


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return path


RECIPE = """\
task = "translation"

[data]
corpus = ""
train_source = '{folder}/train.de'
train_target = '{folder}/train.en'
validation_source = '{folder}/val.de'
validation_target = '{folder}/val.en'
max_source_length = 24
max_target_length = 24

[tokenizer]
kind = "sentencepiece"
vocab_size = 120
joint = true

[model]
cell = "lstm"
embedding_size = 16
encoder_hidden_size = 16
decoder_hidden_size = 32
dropout = 0.1

[train]
batch_tokens = 200
max_steps = 80
eval_every = 20
log_every = 5
learning_rate = 2e-2
schedule = "constant"
warmup_steps = 0
average_last = 2
seed = 3
device = "cpu"

[decoding]
beam_size = 2
max_length_ratio = 1.5
max_length_offset = 4
"""


@pytest.fixture(scope="session")
def parallel_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """train.de/en (80 pairs), val.de/en (12 pairs) and the tiny recipe ``tiny-de-en.toml``."""
    folder = tmp_path_factory.mktemp("parallel")
    for split, count, seed in (("train", 80, 0), ("val", 12, 1)):
        pairs = make_pairs(count, seed=seed)
        write_lines(folder / f"{split}.de", [source for source, _ in pairs])
        write_lines(folder / f"{split}.en", [target for _, target in pairs])
    (folder / "tiny-de-en.toml").write_text(RECIPE.format(folder=folder), encoding="utf-8")
    return folder


@pytest.fixture(scope="session")
def recipe_file(parallel_folder: Path) -> Path:
    return parallel_folder / "tiny-de-en.toml"


@pytest.fixture(scope="session")
def trained_translation(
    tmp_path_factory: pytest.TempPathFactory, recipe_file: Path
) -> tuple[Path, Result]:
    """``seqgen train`` of the tiny recipe: 80 steps, validated every 20, the last 2 averaged."""
    run = tmp_path_factory.mktemp("translator") / "run"
    return run, invoke("train", recipe_file, "--output", run, "--quiet")


@pytest.fixture(scope="session")
def translator_run(trained_translation: tuple[Path, Result]) -> Path:
    """The run folder of the session's one translator; tests must not change it."""
    run, result = trained_translation
    assert_ok(result)
    return run


@pytest.fixture(scope="session")
def translator(translator_run: Path) -> Translator:
    loaded = seqgen.load(translator_run, device="cpu")
    assert isinstance(loaded, Translator)
    return loaded


@pytest.fixture(scope="session")
def validation_sources(parallel_folder: Path) -> list[str]:
    return (parallel_folder / "val.de").read_text(encoding="utf-8").splitlines()


def invoke(*args: str | Path, input: str | bytes | None = None) -> Result:
    return CliRunner().invoke(main, [str(arg) for arg in args], input=input)


# The CLI's error convention, as tests/test_cli.py checks it.


def assert_ok(result: Result) -> None:
    assert result.exit_code == 0, (result.output, result.exception)
    assert "Traceback" not in result.output


def assert_one_line_error(result: Result, *words: str) -> str:
    """The run failed with one ``seqgen: error:`` line naming the problem; returns it."""
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit), result.exception
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("seqgen: error: "), lines[0]
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert result.stdout == ""
    return lines[0]


def no_temporary_files(folder: Path) -> bool:
    return not any(name.endswith(".tmp") for _, _, names in os.walk(folder) for name in names)


def translate(run: Path, *args: str | Path, input: str | bytes | None = None) -> Result:
    return invoke("translate", "--model", run, "--device", "cpu", *args, input=input)


def metric_rows(run: Path) -> list[dict[str, str]]:
    with (run / "metrics.csv").open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def validation_bleus(run: Path) -> dict[int, float]:
    rows = metric_rows(run)
    return {
        int(row["step"]): float(row["validation_bleu"]) for row in rows if row["validation_bleu"]
    }


def run_training(recipe: Path, output: Path, *overrides: str, resume: bool = False):
    return train(load_recipe(recipe, overrides), output, resume=resume, show_progress=False)


def assert_same_weights(first: Path, second: Path) -> None:
    a, b = load_checkpoint(first).weights, load_checkpoint(second).weights
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


# --- training -------------------------------------------------------------------------------------


def test_train_reports_bleu_and_writes_the_run_folder(
    trained_translation: tuple[Path, Result], translator_run: Path
) -> None:
    stdout = trained_translation[1].stdout
    loop_line, summary = stdout.strip().splitlines()
    assert re.fullmatch(
        r"training loop: 80 steps in [\d.]+ s \(validation excluded\), [\d,]+ pieces/s", loop_line
    )
    assert summary.startswith("trained 80 steps; best validation BLEU ")
    assert stdout.rstrip().endswith(str(translator_run / "best.safetensors"))
    assert sorted(os.listdir(translator_run)) == [
        "averaged.safetensors",
        "best.safetensors",
        "last.safetensors",
        "metrics.csv",
        "step-0000060.safetensors",  # average_last = 2: older step files were removed
        "step-0000080.safetensors",
    ]
    assert no_temporary_files(translator_run)


def test_validation_bleu_is_logged_and_selects_best(translator_run: Path) -> None:
    bleus = validation_bleus(translator_run)
    assert list(bleus) == [20, 40, 60, 80]  # eval_every = 20
    assert all(0 <= bleu <= 100 for bleu in bleus.values())
    assert max(bleus.values()) > 10  # the toy word-for-word mapping is learnt in 80 steps
    chrfs = [
        float(row["validation_chrf"])
        for row in metric_rows(translator_run)
        if row["validation_chrf"]
    ]
    assert len(chrfs) == 4 and all(chrf > 0 for chrf in chrfs)

    best = load_checkpoint(translator_run / "best.safetensors", with_training_state=True)
    averaged = load_checkpoint(translator_run / "averaged.safetensors")
    last = load_checkpoint(translator_run / "last.safetensors", with_training_state=True)
    assert best.kind == averaged.kind == last.kind == "translation"
    assert best.training is None and last.training["step"] == 80
    assert set(last.tokenizer) == {"source", "target"}
    # best is the best validated checkpoint, or the average when that scored higher.
    best_bleu = best.info["validation"]["bleu"]
    assert best_bleu == pytest.approx(
        max(max(bleus.values()), averaged.info["validation"]["bleu"]), abs=1e-4
    )
    assert last.training["best_bleu"] == pytest.approx(max(bleus.values()), abs=1e-4)


def test_validation_bleu_is_what_translate_gets(
    translator_run: Path, parallel_folder: Path, validation_sources: list[str]
) -> None:
    """The last checkpoint's logged BLEU equals BLEU of ``seqgen translate`` with its weights."""
    last = seqgen.load(translator_run / "last.safetensors", device="cpu")
    references = (parallel_folder / "val.en").read_text(encoding="utf-8").splitlines()
    bleu = corpus_bleu(last.translate(validation_sources), references).score
    assert bleu == pytest.approx(validation_bleus(translator_run)[80], abs=1e-4)


DROPOUT_ON = ("model.dropout=0.2",)  # so the resumed RNG state matters


def test_copied_tokenizers_let_a_model_of_other_text_join_an_ensemble(
    tmp_path: Path, recipe_file: Path, translator_run: Path, parallel_folder: Path
) -> None:
    """``tokenizer.copy_from``: a translator trained on other text (here the validation
    pairs, with another vocabulary size) keeps the named model's tokenizers, so the two
    decode as one ensemble; trained without it, its vocabulary differs and is refused."""
    other = ("data.train_source=" + str(parallel_folder / "val.de"),)
    other += ("data.train_target=" + str(parallel_folder / "val.en"), "tokenizer.vocab_size=60")
    other += ("train.max_steps=4", "train.eval_every=4")
    run_training(recipe_file, tmp_path / "own", *other)
    run_training(recipe_file, tmp_path / "copied", *other, f"tokenizer.copy_from={translator_run}")
    sides = load_checkpoint(translator_run / "best.safetensors").tokenizer
    assert load_checkpoint(tmp_path / "copied" / "best.safetensors").tokenizer == sides
    assert load_checkpoint(tmp_path / "own" / "best.safetensors").tokenizer != sides
    joined = invoke(
        "translate",
        "--model",
        translator_run,
        "--model",
        tmp_path / "copied",
        "--device",
        "cpu",
        input="Der hund läuft.\n",
    )
    assert_ok(joined)
    assert len(joined.stdout.splitlines()) == 1
    refused = invoke(
        "translate",
        "--model",
        translator_run,
        "--model",
        tmp_path / "own",
        "--device",
        "cpu",
        input="Der hund läuft.\n",
    )
    assert_one_line_error(refused, "different target vocabularies", "tokenizer.copy_from")


@pytest.mark.parametrize("copy_from", ["missing-model", "GENERATOR"])
def test_copying_tokenizers_from_what_is_not_a_translator_is_one_line(
    tmp_path: Path, recipe_file: Path, copy_from: str
) -> None:
    if copy_from == "GENERATOR":
        copy_from = "shakespeare-char"  # a bundled generator
    result = invoke(
        "train",
        recipe_file,
        "--output",
        tmp_path / "run",
        "--quiet",
        "--set",
        f"tokenizer.copy_from={copy_from}",
    )
    assert_one_line_error(result, "tokenizer.copy_from", copy_from)
    assert not (tmp_path / "run" / "best.safetensors").exists()


def test_resume_continues_bit_for_bit(tmp_path: Path, recipe_file: Path) -> None:
    """8 steps straight == 4 steps, then ``--resume`` to 8 (constant schedule)."""
    common = ("train.eval_every=4", *DROPOUT_ON)
    run_training(recipe_file, tmp_path / "straight", *common, "train.max_steps=8")
    run_training(recipe_file, tmp_path / "halves", *common, "train.max_steps=4")
    assert load_checkpoint(tmp_path / "halves" / "last.safetensors").info["step"] == 4
    result = run_training(recipe_file, tmp_path / "halves", "train.max_steps=8", resume=True)
    assert result.steps == 8
    for name in ("last", "best", "averaged", "step-0000004", "step-0000008"):
        path = f"{name}.safetensors"
        assert_same_weights(tmp_path / "straight" / path, tmp_path / "halves" / path)
    assert validation_bleus(tmp_path / "straight") == validation_bleus(tmp_path / "halves")


def test_resume_through_the_cli(tmp_path: Path, recipe_file: Path) -> None:
    run = tmp_path / "run"
    args = ("train", recipe_file, "--output", run, "--quiet", "--set")
    assert_ok(invoke(*args, "train.max_steps=3", "--set", "train.eval_every=3"))
    result = invoke(*args, "train.max_steps=5", "--resume")
    assert_ok(result)
    # The loop figure counts this invocation's steps; the summary counts the run's.
    assert result.stdout.startswith("training loop: 2 steps in ")
    assert "\ntrained 5 steps; best validation BLEU" in result.stdout


def test_resume_never_replaces_a_better_best(tmp_path: Path, recipe_file: Path) -> None:
    """An average promoted to best at the end of a run is not overwritten after --resume.

    last.safetensors records the best BLEU of the validated checkpoints only; the resumed
    run must compare against the BLEU best.safetensors holds.
    """
    run = tmp_path / "run"
    run_training(recipe_file, run, "train.max_steps=2", "train.eval_every=2")
    best = load_checkpoint(run / "best.safetensors")
    best.info["validation"]["bleu"] = 99.0  # as if an average had scored 99 ...
    save_checkpoint(run / "best.safetensors", best)
    last = load_checkpoint(run / "last.safetensors", with_training_state=True)
    last.training["best_bleu"] = -1.0  # ... above every validated checkpoint
    save_checkpoint(run / "last.safetensors", last)
    before = (run / "best.safetensors").read_bytes()
    run_training(recipe_file, run, "train.max_steps=4", "train.eval_every=2", resume=True)
    assert (run / "best.safetensors").read_bytes() == before


def test_patience_stops_when_bleu_stops_improving(tmp_path: Path, recipe_file: Path) -> None:
    """A near-zero learning rate leaves BLEU unchanged: equal is no gain, so stop at 2 x 2."""
    run = tmp_path / "run"
    result = run_training(
        recipe_file,
        run,
        "train.max_steps=30",
        "train.eval_every=2",
        "train.patience=1",
        "train.learning_rate=1e-12",
        "train.average_last=0",
    )
    assert result.steps == 4
    bleus = validation_bleus(run)
    assert list(bleus) == [2, 4] and bleus[2] == bleus[4]
    assert load_checkpoint(run / "best.safetensors").info["step"] == 2
    assert sorted(os.listdir(run)) == ["best.safetensors", "last.safetensors", "metrics.csv"]


def test_sentence_batches_of_pieces_in_bf16(tmp_path: Path, recipe_file: Path) -> None:
    """The peer benchmark's settings: piece files, batches of N sentences, bf16 on the CPU."""
    if not device.cpu_has_bf16():
        # oneDNN's LSTM refuses bf16 without the instructions ("could not create a primitive
        # descriptor"); test_cpu_bf16_auto_follows_the_cpu covers the choice on such CPUs.
        pytest.skip("this CPU has no native bf16 matrix products")
    folder = recipe_file.parent
    for name in ("train.de", "train.en", "val.de", "val.en"):  # one piece per word
        lines = (folder / name).read_text(encoding="utf-8").splitlines()
        pieces = [" ".join("\u2581" + word for word in line.split()) for line in lines]
        write_lines(tmp_path / name, pieces)
    sets = [f"data.{side}={tmp_path}/{name}" for side, name in (
        ("train_source", "train.de"), ("train_target", "train.en"),
        ("validation_source", "val.de"), ("validation_target", "val.en"),
    )]  # fmt: skip
    sets += ["tokenizer.kind=whitespace", "tokenizer.vocab_size=0"]
    sets += ["train.batch_sentences=16", "train.cpu_mixed_precision=true", "train.max_steps=10"]
    run = tmp_path / "run"
    result = run_training(recipe_file, run, *sets, "train.eval_every=10")
    assert result.steps == 10 and result.loop.steps == 10 and result.loop.tokens > 0
    weights = load_checkpoint(run / "last.safetensors").weights
    assert all(tensor.dtype == torch.float32 for tensor in weights.values())  # bf16 compute only
    first = metric_rows(run)[0]
    assert float(first["epoch"]) == pytest.approx(5 / 5)  # 80 pairs / 16 = 5 batches an epoch
    out = translate(run, "--input", tmp_path / "val.de", "--timing", "--beam-size", "1")
    assert_ok(out)
    assert len(out.stdout.splitlines()) == 12
    assert all(piece.startswith("\u2581") for piece in out.stdout.split())
    assert re.fullmatch(
        r"model loaded in [\d.]+ s; decode: [\d.]+ s for 12 lines \([\d.]+ sentences/s\)\n",
        out.stderr,
    )


def test_training_builds_a_shortlist_from_its_pairs_and_decoding_uses_it(
    tmp_path: Path, recipe_file: Path, validation_sources: list[str], translator_run: Path
) -> None:
    run = tmp_path / "run"
    sets = ["model.shortlist=4", "model.shortlist_frequent=40", "train.max_steps=20"]
    run_training(recipe_file, run, *sets, "train.eval_every=20")
    checkpoint = load_checkpoint(run / "best.safetensors")
    weights = checkpoint.weights
    table, frequent = weights["shortlist_table"], weights["shortlist_frequent"]
    assert table.shape == (120, 4) and frequent.shape == (40,)
    german = tokenizer_from_dict(checkpoint.tokenizer["source"])
    english = tokenizer_from_dict(checkpoint.tokenizer["target"])
    # The toy corpus is word for word: "park" (one piece) always comes with "park".
    (park,) = german.encode("park")
    assert english.decode(table[park, :1].tolist()) == "park"
    # Every target starts with "The" and ends with "."
    assert {english.decode([token]) for token in frequent[:2].tolist()} == {"The", "."}
    # A checkpoint trained without a shortlist gets the same table afterwards.
    without = translator_run / "best.safetensors"
    added = add_shortlist(without, tmp_path / "added.safetensors", per_source=4, frequent=40)
    added_weights = load_checkpoint(added).weights
    assert torch.equal(added_weights["shortlist_table"], table)
    assert torch.equal(added_weights["shortlist_frequent"], frequent)
    assert load_checkpoint(added).recipe["model"]["shortlist"] == 4
    with_list = translate(run, "--input", recipe_file.parent / "val.de")
    without = translate(run, "--input", recipe_file.parent / "val.de", "--no-shortlist")
    assert_ok(with_list)
    assert_ok(without)
    assert len(with_list.stdout.splitlines()) == len(validation_sources)


def test_a_shortlist_loss_scores_the_batch_candidates_only(
    tmp_path: Path, recipe_file: Path
) -> None:
    sets = ["model.shortlist=4", "model.shortlist_frequent=40", "train.shortlist_loss=true"]
    recipe = load_recipe(recipe_file, [*sets, "train.max_steps=6", "train.eval_every=6"])
    trainer = TranslationTrainer(recipe, tmp_path / "run", resume=False, data_dir=None)
    batch = trainer.batches.make_batch(trainer.batches.batch_indices(0)[0])
    targets = batch.target_out[batch.target_out != 0]
    output_rows, rows = trainer._candidates(batch.source_ids, targets)
    weight, bias = output_rows.weight, output_rows.bias
    output = trainer.model.decoder.output
    candidates = np.union1d(trainer.model.shortlist_ids(batch.source_ids.numpy()), targets.numpy())
    assert weight.shape == (len(candidates), output.weight.shape[1])
    assert len(candidates) < output.weight.shape[0]  # fewer rows than the vocabulary
    assert torch.equal(weight, output.weight[torch.from_numpy(candidates)])
    assert torch.equal(bias, output.bias[torch.from_numpy(candidates)])
    assert torch.equal(torch.from_numpy(candidates)[rows], targets)  # rows of the same tokens
    result = trainer.run(show_progress=False)
    assert result.steps == 6
    assert_ok(translate(tmp_path / "run", "--input", recipe_file.parent / "val.de"))


def test_a_shortlist_loss_needs_a_shortlist(recipe_file: Path) -> None:
    with pytest.raises(ConfigError, match="train.shortlist_loss needs .*model.shortlist"):
        load_recipe(recipe_file, ["train.shortlist_loss=true", "model.shortlist=0"])


def test_cpu_bf16_is_refused_where_the_cpu_lacks_it(
    tmp_path: Path, recipe_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(device, "cpu_has_bf16", lambda: False)
    result = invoke(
        "train", recipe_file, "--output", tmp_path / "run", "--set",
        "train.cpu_mixed_precision=true",
    )  # fmt: skip
    assert_one_line_error(result, "train.cpu_mixed_precision", "bf16", '"auto" or false')
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("has_bf16", "setting", "expected"),
    [(True, "auto", True), (False, "auto", False), (True, True, True), (True, False, False),
     (False, False, False)],
)  # fmt: skip
def test_cpu_bf16_auto_follows_the_cpu(
    monkeypatch: pytest.MonkeyPatch, has_bf16: bool, setting: bool | str, expected: bool
) -> None:
    monkeypatch.setattr(device, "cpu_has_bf16", lambda: has_bf16)
    assert device.use_cpu_bf16(torch.device("cpu"), setting) is expected
    assert device.use_cpu_bf16(torch.device("cuda"), setting) is False  # CUDA: mixed_precision


def test_a_recipe_with_cpu_bf16_auto_trains_in_float32_without_bf16(
    tmp_path: Path, recipe_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(device, "cpu_has_bf16", lambda: False)
    entered = []
    real_autocast = torch.autocast
    monkeypatch.setattr(
        torch, "autocast", lambda *a, **k: entered.append(k) or real_autocast(*a, **k)
    )
    run = tmp_path / "run"
    result = run_training(recipe_file, run, "train.cpu_mixed_precision=auto", "train.max_steps=2")
    assert result.steps == 2
    assert entered == []  # no bf16 autocast was entered
    assert (
        load_checkpoint(run / "last.safetensors").recipe["train"]["cpu_mixed_precision"] == "auto"
    )


def test_unknown_language_pair_lists_the_valid_ones(tmp_path: Path, recipe_file: Path) -> None:
    result = invoke(
        "train", recipe_file, "--output", tmp_path / "run", "--set", "data.corpus=multi30k:de-xx"
    )
    assert_one_line_error(result, "unknown language pair 'de-xx'", "de-en", "en-de", "fr-en")


def test_training_files_of_different_lengths(tmp_path: Path, recipe_file: Path) -> None:
    short = write_lines(tmp_path / "short.en", ["The dog runs.", "The cat eats."])
    result = invoke(
        "train", recipe_file, "--output", tmp_path / "run", "--set", f"data.train_target={short}"
    )
    assert_one_line_error(result, "differ in length", "80 lines", "2 lines", "short.en")


# --- translate: the Python API --------------------------------------------------------------------


def test_translate_and_n_best(translator: Translator, validation_sources: list[str]) -> None:
    sentences = validation_sources[:4]
    translations = translator.translate(sentences)
    assert len(translations) == 4 and all(isinstance(text, str) for text in translations)
    assert any(translations), "the tiny model should translate to some text"
    n_best = translator.translate_n_best(sentences, beam_size=2, n_best=2)
    assert [len(hypotheses) for hypotheses in n_best] == [2, 2, 2, 2]
    for hypotheses, best in zip(n_best, translator.translate(sentences, beam_size=2), strict=True):
        assert all(isinstance(h, ScoredTranslation) for h in hypotheses)
        assert hypotheses[0].text == best
        assert hypotheses[0].score >= hypotheses[1].score


def test_loading_a_translator_as_a_language_model_is_refused(translator_run: Path) -> None:
    with pytest.raises(
        CheckpointError, match="holds a translator, not a generator; use seqgen translate"
    ):
        load_pipeline(translator_run, kind="generation")
    assert load_pipeline(translator_run, kind="translation", device="cpu").task == "translation"


def test_the_top_level_load_checks_the_kind(translator_run: Path) -> None:
    with pytest.raises(CheckpointError, match="holds a translator.*use seqgen translate"):
        seqgen.load(translator_run, kind="language_model")  # the older name of "generation"


@pytest.mark.parametrize("beam_size", [1, 2], ids=["greedy", "beam"])
def test_a_translation_does_not_depend_on_its_batch(
    translator: Translator, validation_sources: list[str], beam_size: int
) -> None:
    sentences = [*validation_sources, "Der hund.", "Der rot katze schläft im garten heute morgen."]
    alone = [translator.translate_n_best([s], beam_size=beam_size)[0][0] for s in sentences]
    assert len({hypothesis.text for hypothesis in alone}) > 1
    for batch_size in (1, 3, 64):
        batched = translator.translate_n_best(sentences, beam_size=beam_size, batch_size=batch_size)
        assert [h[0].text for h in batched] == [h.text for h in alone], batch_size
        for together, single in zip(batched, alone, strict=True):
            assert together[0].score == pytest.approx(single.score, abs=1e-4)


class _OnCuda:
    """A step function that says it runs on CUDA and records each batch's size."""

    device = "cuda"

    def __init__(self, inner: object) -> None:
        self.inner, self.batches = inner, []

    def start(self, sources, **options):  # noqa: ANN001, ANN201
        self.batches.append(len(sources))
        return self.inner.start(sources, **options)

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


def test_on_cuda_the_default_batch_is_at_least_a_thousand_sentences(
    translator: Translator, validation_sources: list[str]
) -> None:
    sentences = validation_sources * (1000 // len(validation_sources) + 2)  # > 1,000
    on_cuda = _OnCuda(translator.step_function)
    cuda = Translator(
        on_cuda,
        translator.source_tokenizer,
        translator.target_tokenizer,
        translator.recipe,
        translator.info,
    )
    assert translator.default_batch_size == translator.recipe.decoding.batch_size < 1000
    assert cuda.default_batch_size == 1000
    assert cuda.translate(sentences, beam_size=1) == translator.translate(sentences, beam_size=1)
    assert on_cuda.batches == [1000, len(sentences) - 1000]
    cuda.translate(sentences[:50], beam_size=1, batch_size=20)  # a named size still rules
    assert on_cuda.batches[-3:] == [20, 20, 10]


def test_decoding_ignores_a_model_left_in_training_mode(
    translator: Translator, validation_sources: list[str]
) -> None:
    """Dropout is off while decoding and the model's mode is restored afterwards."""
    expected = translator.translate(validation_sources)
    model = translator.step_function.model
    model.train()
    try:
        assert translator.translate(validation_sources) == expected
        assert model.training
    finally:
        model.eval()


def test_empty_lines_translate_to_empty_lines(
    translator: Translator, validation_sources: list[str]
) -> None:
    first, second = validation_sources[:2]
    result = translator.translate(["", first, "   ", second, ""])
    assert result[0] == result[2] == result[4] == ""
    assert [result[1], result[3]] == translator.translate([first, second])
    assert translator.translate([]) == []
    assert translator.translate(["", "  "]) == ["", ""]


def test_a_too_long_line_is_cut_with_a_warning(
    translator: Translator, caplog: pytest.LogCaptureFixture
) -> None:
    long_line = " ".join(["Der rot hund läuft im park heute."] * 40)
    assert len(translator.source_tokenizer.encode(long_line)) > translator.max_source_length == 24
    with caplog.at_level(logging.WARNING, logger="seqgen.tasks.translation.pipeline"):
        result = translator.translate(["Der hund.", long_line])
    assert len(result) == 2
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "1 sentence(s) longer" in warnings[0] and "24" in warnings[0]
    # Cut means: translated exactly as its first 24 pieces would be.
    cut = translator.source_tokenizer.decode(translator.source_tokenizer.encode(long_line)[:24])
    assert translator.translate([cut]) == [result[1]]


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"beam_size": 0}, ("beam_size = 0",)),
        ({"batch_size": 0}, ("batch_size = 0",)),
        ({"max_length": 0}, ("max_length = 0",)),
        ({"n_best": 0}, ("n_best = 0",)),
        ({"n_best": 3, "beam_size": 2}, ("n_best = 3", "beam size (2)")),
        ({"n_best": 3}, ("n_best = 3", "beam size (2)")),  # the model's own beam is 2
        ({"n_best": 2, "beam_size": 1}, ("n_best = 2", "beam size (1)")),
    ],
)
def test_bad_translation_options(translator: Translator, options: dict, words) -> None:
    with pytest.raises(SeqgenError) as caught:
        translator.translate_n_best(["Der hund."], **options)
    for word in words:
        assert word in str(caught.value)


# --- translate: the CLI ---------------------------------------------------------------------------


def test_translate_a_file(tmp_path: Path, translator_run: Path, translator: Translator) -> None:
    lines = ["Der blau kind läuft im garten.", "", "Der klein hund isst heute.", "  "]
    source = write_lines(tmp_path / "in.de", lines)
    output = tmp_path / "out" / "out.en"
    result = translate(translator_run, "--input", source, "--output", output)
    assert_ok(result)
    assert result.stdout == ""
    written = output.read_text(encoding="utf-8")
    assert written.endswith("\n")
    assert written.splitlines() == translator.translate(lines)
    assert len(written.splitlines()) == len(lines)
    assert written.splitlines()[1] == written.splitlines()[3] == ""
    assert no_temporary_files(tmp_path)


def test_translate_stdin_to_stdout(translator_run: Path, translator: Translator) -> None:
    lines = ["Der rot mann schläft.", "", "Der groß katze spielt im park."]
    result = translate(translator_run, input="\r\n".join(lines) + "\r\n")
    assert_ok(result)
    assert result.stdout.splitlines() == translator.translate(lines)
    assert len(result.stdout.splitlines()) == 3
    no_final_newline = translate(translator_run, input="\n".join(lines))
    assert no_final_newline.stdout == result.stdout
    assert translate(translator_run, input="").stdout == ""


def test_a_byte_order_mark_does_not_change_the_first_line(
    tmp_path: Path, translator_run: Path
) -> None:
    text = "Der rot mann schläft.\nDer hund isst.\n"
    plain = translate(translator_run, input=text)
    source = tmp_path / "bom.de"
    source.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    with_bom = translate(translator_run, "--input", source)
    assert_ok(with_bom)
    assert with_bom.stdout == plain.stdout


def test_translate_options_change_the_search(translator_run: Path, translator: Translator) -> None:
    lines = ["Der rot mann schläft.", "Der groß katze spielt im park."]
    text = "\n".join(lines) + "\n"
    greedy = translate(translator_run, "--beam-size", "1", "--batch-size", "1", input=text)
    assert_ok(greedy)
    assert greedy.stdout.splitlines() == translator.translate(lines, beam_size=1)
    short = translate(translator_run, "--max-length", "2", input=text)
    assert_ok(short)
    assert short.stdout.splitlines() == translator.translate(lines, max_length=2)
    assert all(len(line.split()) <= 2 for line in short.stdout.splitlines())


N_BEST_LINE = re.compile(r"^(\d+) \|\|\| (.*) \|\|\| (-?\d+\.\d{4})$")


def test_n_best_format(translator_run: Path) -> None:
    lines = ["Der rot mann schläft.", "Der groß katze spielt im park.", "Der hund isst."]
    result = translate(translator_run, "--n-best", "2", "--beam-size", "2", input="\n".join(lines))
    assert_ok(result)
    parsed = [N_BEST_LINE.match(line) for line in result.stdout.splitlines()]
    assert all(parsed), result.stdout
    assert [int(match.group(1)) for match in parsed] == [0, 0, 1, 1, 2, 2]
    scores = [float(match.group(3)) for match in parsed]
    for index in range(3):
        assert scores[2 * index] >= scores[2 * index + 1]
    best = translate(translator_run, "--beam-size", "2", input="\n".join(lines))
    assert [match.group(2) for match in parsed[::2]] == best.stdout.splitlines()


def test_a_too_long_line_through_the_cli(
    translator_run: Path, caplog: pytest.LogCaptureFixture
) -> None:
    long_line = " ".join(["Der rot hund läuft im park heute."] * 40)
    with caplog.at_level(logging.WARNING):
        result = translate(translator_run, input=f"Der hund.\n{long_line}\n\n")
    assert_ok(result)
    assert len(result.stdout.splitlines()) == 3
    assert any("longer than the model's limit of 24" in r.getMessage() for r in caplog.records)


# --- evaluate -------------------------------------------------------------------------------------


BLEU_SIGNATURE = "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:"


def test_evaluate_source_and_reference(
    translator_run: Path, parallel_folder: Path, translator: Translator
) -> None:
    source, reference = parallel_folder / "val.de", parallel_folder / "val.en"
    result = invoke(
        "evaluate", "--model", translator_run, "--source", source, "--reference", reference
    )
    assert_ok(result)
    header, bleu_line, chrf_line = result.stdout.splitlines()
    assert header.startswith(f"{source}: 12 sentences, beam 2, ")
    assert bleu_line.startswith("BLEU = ") and BLEU_SIGNATURE in bleu_line
    assert chrf_line.startswith("chrF2 = ") and "nrefs:1|case:mixed|eff:yes|nc:6" in chrf_line
    sources = source.read_text(encoding="utf-8").splitlines()
    references = reference.read_text(encoding="utf-8").splitlines()
    hypotheses = translator.translate(sources)
    assert bleu_line == str(corpus_bleu(hypotheses, references))
    assert chrf_line == str(corpus_chrf(hypotheses, references))
    greedy = invoke(
        "evaluate", "--model", translator_run, "--source", source, "--reference", reference,
        "--beam-size", "1",
    )  # fmt: skip
    assert_ok(greedy)
    assert ", beam 1, " in greedy.stdout


@pytest.mark.parametrize("split", [("--split", "val"), ("--split", "test"), ()])
def test_evaluate_a_split_of_a_file_trained_model(translator_run: Path, split) -> None:
    result = invoke("evaluate", "--model", translator_run, *split)
    assert_one_line_error(result, "trained on files", "--source", "--reference")


def test_evaluate_files_of_different_lengths(tmp_path: Path, translator_run: Path) -> None:
    source = write_lines(tmp_path / "three.de", ["Der hund.", "Der katze.", "Der mann."])
    reference = write_lines(tmp_path / "two.en", ["The dog.", "The cat."])
    result = invoke(
        "evaluate", "--model", translator_run, "--source", source, "--reference", reference
    )
    assert_one_line_error(result, "differ in length", "3 lines", "2 lines", "three.de", "two.en")


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("--source", "{val}.de"), ("give both --source and --reference",)),
        (("--reference", "{val}.en"), ("give both --source and --reference",)),
        (("--file", "{val}.en"), ("--file scores a generator or a classifier", "--source and")),
        (("--split", "val", "--source", "{val}.de"), ("not both",)),
        (("--source", "{val}.de", "--reference", "{val}.en", "--beam-size", "0"), ("beam_size",)),
        (("--source", "{val}.de", "--reference", "nowhere.en"), ("no such file", "nowhere.en")),
    ],
)
def test_bad_evaluate_arguments(translator_run: Path, parallel_folder: Path, args, words) -> None:
    filled = [arg.format(val=parallel_folder / "val") for arg in args]
    assert_one_line_error(invoke("evaluate", "--model", translator_run, *filled), *words)


# --- bad input: one line, non-zero exit, no traceback ---------------------------------------------


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("--beam-size", "0"), ("beam_size = 0", "at least 1")),
        (("--batch-size", "0"), ("batch_size = 0",)),
        (("--max-length", "-1"), ("max_length = -1",)),
        (("--n-best", "0"), ("n_best = 0",)),
        (("--n-best", "3", "--beam-size", "2"), ("n_best = 3", "beam size (2)")),
        (("--n-best", "3"), ("n_best = 3", "beam size (2)")),  # the model's own beam is 2
        (("--beam-size", "two"), ("--beam-size", "'two'")),
    ],
)
def test_bad_translate_options(translator_run: Path, args, words) -> None:
    assert_one_line_error(translate(translator_run, *args, input="Der hund.\n"), *words)


def test_bad_translate_options_fail_before_loading_a_model(tmp_path: Path) -> None:
    result = translate(tmp_path / "nothing", "--beam-size", "0", input="Der hund.\n")
    assert_one_line_error(result, "beam_size = 0")


def test_a_generator_given_to_translate(trained_run: Path) -> None:
    result = translate(trained_run, input="Der hund.\n")
    assert_one_line_error(result, "holds a generator", "use seqgen generate")


def test_a_translator_given_to_generate(translator_run: Path) -> None:
    result = invoke("generate", "--model", translator_run, "--max-new-tokens", "5")
    assert_one_line_error(result, "holds a translator", "use seqgen translate")


def test_non_utf8_input(tmp_path: Path, translator_run: Path) -> None:
    latin = tmp_path / "latin1.de"
    latin.write_bytes("Der hund läuft.\n".encode("latin-1"))
    output = tmp_path / "out.en"
    result = translate(translator_run, "--input", latin, "--output", output)
    assert_one_line_error(result, "latin1.de is not UTF-8", "iconv")
    assert not output.exists() and no_temporary_files(tmp_path)
    piped = translate(translator_run, input="Der hund läuft.\n".encode("latin-1"))
    assert_one_line_error(piped, "standard input is not UTF-8")


def test_missing_input_file(tmp_path: Path, translator_run: Path) -> None:
    missing = tmp_path / "missing.de"
    assert_one_line_error(
        translate(translator_run, "--input", missing), "no such file", "missing.de"
    )


def test_an_unwritable_output(tmp_path: Path, translator_run: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder\n", encoding="utf-8")
    result = translate(translator_run, "--output", blocker / "out.en", input="Der hund.\n")
    assert_one_line_error(result, "cannot write", "out.en")


def test_missing_translator(tmp_path: Path) -> None:
    assert_one_line_error(
        translate(tmp_path / "missing.safetensors", input="Der hund.\n"), "no such checkpoint"
    )


# --- per-call decoding options, over the model's stored defaults ---------------------------------


def test_the_stored_decoding_defaults_are_the_calls_unless_given(translator: Translator) -> None:
    stored = translator.recipe.decoding
    options = translator.options()
    assert (options.beam_size, options.length_penalty) == (stored.beam_size, stored.length_penalty)
    given = translator.options(beam_size=3, length_penalty=0.0, no_repeat_ngram_size=None)
    assert (given.beam_size, given.length_penalty) == (3, 0.0)
    assert given.no_repeat_ngram_size == stored.no_repeat_ngram_size


def _hypotheses(translator: Translator, sentences: list[str], **options: object) -> list:
    sources = [s for s in translator.encode_sources(sentences) if s]
    return translator.search(sources, translator.options(**options))


def test_min_length_no_repeat_and_length_penalty_are_per_call(
    translator: Translator, validation_sources: list[str]
) -> None:
    sentences = validation_sources[:6]
    longer = _hypotheses(translator, sentences, beam_size=2, min_length=9)
    assert all(len(h.tokens) >= 9 for best in longer for h in best)
    unique = _hypotheses(translator, sentences, beam_size=1, no_repeat_ngram_size=1)
    assert all(len(set(h.tokens)) == len(h.tokens) for best in unique for h in best)
    raw = _hypotheses(translator, sentences, beam_size=2, length_penalty=0.0)
    assert all(h.normalized_score == h.score for best in raw for h in best)
    capped = _hypotheses(translator, sentences, beam_size=2, max_length=3)
    assert all(len(h.tokens) <= 3 for best in capped for h in best)


def test_translate_takes_the_new_options_as_flags(translator_run: Path) -> None:
    flags = ("--beam-size", "2", "--length-penalty", "0.6", "--no-repeat-ngram-size", "3")
    result = translate(translator_run, *flags, "--min-length", "2", input="Der hund.\n")
    assert_ok(result)
    assert len(result.stdout.splitlines()) == 1
    bad = translate(translator_run, "--length-penalty", "-1", input="Der hund.\n")
    assert_one_line_error(bad, "length_penalty = -1.0")
    assert_one_line_error(translate(translator_run, "--min-length", "-1"), "min_length = -1")


def test_tensorboard_shows_validation_translations(recipe_file: Path, tmp_path: Path) -> None:
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    flags = ["--set", "train.tensorboard=true", "--set", "train.max_steps=20", "--quiet"]
    assert_ok(invoke("train", recipe_file, "--output", run, *flags))
    board = EventAccumulator(str(run / "tensorboard"))
    board.Reload()
    assert [event.step for event in board.Scalars("validation/bleu")] == [20]
    sample = board.Tensors("validation/translations/text_summary")[0].tensor_proto.string_val[0]
    assert sample.decode().count("**reference**") == 3
