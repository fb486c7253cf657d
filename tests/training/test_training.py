"""The training loop: run folder, learning, exact resume, stopping, recipes, data errors."""

from __future__ import annotations

import csv
import io
import math
import os
import sys
from pathlib import Path

import pytest
import torch

from seqgen.errors import ConfigError, DataError, SeqgenError
from seqgen.recipes import load_recipe
from seqgen.tasks.generation.config import LanguageModelTrainConfig
from seqgen.tasks.generation.training import LanguageModelTrainer
from seqgen.training.checkpoint import load_checkpoint
from seqgen.training.metrics import COLUMNS
from seqgen.training.progress import Progress
from seqgen.training.run import train
from seqgen.training.schedule import learning_rate_at

RECIPES = sorted(Path(__file__).parents[2].glob("recipes/*.toml"))


def run_training(recipe: Path, output: Path, *overrides: str, resume: bool = False):
    return train(load_recipe(recipe, overrides), output, resume=resume, show_progress=False)


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path).weights


def assert_same_weights(first: Path, second: Path) -> None:
    a, b = weights(first), weights(second)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def metric_rows(run: Path) -> list[dict[str, str]]:
    with (run / "metrics.csv").open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def validation_losses(run: Path) -> list[float]:
    return [float(row["validation_loss"]) for row in metric_rows(run) if row["validation_loss"]]


# --- the run folder -------------------------------------------------------------------------------


def test_a_tiny_run_writes_best_last_and_metrics(trained_run: Path) -> None:
    assert sorted(os.listdir(trained_run)) == [
        "best.safetensors",
        "last.safetensors",
        "metrics.csv",
    ]
    header = (trained_run / "metrics.csv").read_text(encoding="utf-8").splitlines()[0]
    assert header == ",".join(COLUMNS)
    assert header.startswith("step,epoch,learning_rate,train_loss,tokens_per_second,")
    rows = metric_rows(trained_run)
    train_steps = [int(row["step"]) for row in rows if row["train_loss"]]
    validation_steps = [int(row["step"]) for row in rows if row["validation_loss"]]
    assert train_steps == [2, 4, 6]  # log_every = 2
    assert validation_steps == [3, 6]  # eval_every = 3
    for row in rows:
        if row["validation_loss"]:
            loss = float(row["validation_loss"])
            assert float(row["validation_perplexity"]) == pytest.approx(math.exp(loss), rel=1e-4)
            bits = float(row["validation_bits_per_token"])
            assert bits == pytest.approx(loss / math.log(2), rel=1e-4)


def test_checkpoints_describe_themselves(trained_run: Path) -> None:
    best = load_checkpoint(trained_run / "best.safetensors", with_training_state=True)
    last = load_checkpoint(trained_run / "last.safetensors", with_training_state=True)
    assert best.kind == last.kind == "generation"
    assert best.training is None  # best is for inference
    assert last.training is not None and last.training["step"] == 6
    assert last.info["step"] == 6
    assert best.info["step"] in (3, 6)
    assert best.info["validation"]["loss"] == pytest.approx(min(validation_losses(trained_run)))
    assert last.recipe["model"]["hidden_size"] == 32
    assert last.tokenizer["kind"] == "char"


def test_validation_loss_goes_down(tmp_path: Path, write_recipe) -> None:
    text = "abcdefgh" * 400 + "\n"
    corpus = tmp_path / "repetitive.txt"
    corpus.write_text(text, encoding="utf-8")
    run = tmp_path / "run"
    result = run_training(
        write_recipe(corpus),
        run,
        "train.max_steps=30",
        "train.eval_every=10",
        "train.log_every=10",
        "train.learning_rate=1e-2",
        "train.schedule=constant",
        "train.warmup_steps=0",
    )
    losses = validation_losses(run)
    assert len(losses) == 3
    assert losses[-1] < losses[0] - 0.5, losses
    assert result.steps == 30
    assert result.best_validation_loss == pytest.approx(min(losses), rel=1e-5)


# --- reproducibility and resume -------------------------------------------------------------------


def test_the_seed_makes_two_runs_identical(tmp_path: Path, write_recipe) -> None:
    recipe = write_recipe()
    run_training(recipe, tmp_path / "a", "train.max_steps=4", "train.eval_every=4")
    run_training(recipe, tmp_path / "b", "train.max_steps=4", "train.eval_every=4")
    run_training(recipe, tmp_path / "c", "train.max_steps=4", "train.eval_every=4", "train.seed=8")
    assert_same_weights(tmp_path / "a" / "last.safetensors", tmp_path / "b" / "last.safetensors")
    a, c = (
        weights(tmp_path / "a" / "last.safetensors"),
        weights(tmp_path / "c" / "last.safetensors"),
    )
    assert not torch.equal(a["output.weight"], c["output.weight"])


DROPOUT = ("model.dropout=0.2", "model.num_layers=2")  # so the resumed RNG matters


def test_resume_with_a_longer_max_steps_continues_bit_for_bit(tmp_path: Path, write_recipe) -> None:
    """N steps straight == N/2 steps, then ``--resume --set train.max_steps=N``.

    The schedule is constant: a cosine schedule depends on max_steps, so stretching the run
    changes its learning rates by design.
    """
    recipe = write_recipe()
    common = ("train.schedule=constant", "train.eval_every=4", *DROPOUT)
    run_training(recipe, tmp_path / "straight", *common, "train.max_steps=8")
    run_training(recipe, tmp_path / "halves", *common, "train.max_steps=4")
    assert load_checkpoint(tmp_path / "halves" / "last.safetensors").info["step"] == 4
    result = run_training(recipe, tmp_path / "halves", "train.max_steps=8", resume=True)
    assert result.steps == 8
    for name in ("last.safetensors", "best.safetensors"):
        assert_same_weights(tmp_path / "straight" / name, tmp_path / "halves" / name)
    assert validation_losses(tmp_path / "straight") == validation_losses(tmp_path / "halves")


def test_resume_after_an_interruption_is_exact(
    tmp_path: Path, write_recipe, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run killed after its step-4 checkpoint resumes to the same step-8 weights (cosine)."""
    recipe = write_recipe()
    common = ("train.max_steps=8", "train.eval_every=4", "train.log_every=1", *DROPOUT)
    run_training(recipe, tmp_path / "straight", *common)

    original_step = LanguageModelTrainer.train_step

    def interrupt_after_step_5(self):
        if self.run_state.step == 5:
            raise KeyboardInterrupt  # Ctrl-C after metrics for step 5 were logged
        return original_step(self)

    with monkeypatch.context() as patch:
        patch.setattr(LanguageModelTrainer, "train_step", interrupt_after_step_5)
        with pytest.raises(KeyboardInterrupt):
            run_training(recipe, tmp_path / "interrupted", *common)
    assert load_checkpoint(tmp_path / "interrupted" / "last.safetensors").info["step"] == 4
    assert [row["step"] for row in metric_rows(tmp_path / "interrupted")][-1] == "5"

    run_training(recipe, tmp_path / "interrupted", *common, resume=True)
    assert_same_weights(
        tmp_path / "straight" / "last.safetensors", tmp_path / "interrupted" / "last.safetensors"
    )
    # metrics.csv holds each step once: the rows logged past the checkpoint were dropped.
    straight = [(row["step"], row["validation_loss"]) for row in metric_rows(tmp_path / "straight")]
    resumed = [(r["step"], r["validation_loss"]) for r in metric_rows(tmp_path / "interrupted")]
    assert resumed == straight


def test_resume_keeps_the_stored_recipe(tmp_path: Path, write_recipe) -> None:
    recipe = write_recipe()
    run_training(recipe, tmp_path / "run", "train.max_steps=3", "train.eval_every=3")
    run_training(recipe, tmp_path / "run", "train.max_steps=4", "model.hidden_size=64", resume=True)
    last = load_checkpoint(tmp_path / "run" / "last.safetensors")
    assert last.recipe["model"]["hidden_size"] == 32
    assert last.recipe["train"]["max_steps"] == 4


def test_an_existing_run_needs_resume(tmp_path: Path, write_recipe, trained_run: Path) -> None:
    before = (trained_run / "last.safetensors").read_bytes()
    with pytest.raises(SeqgenError, match="already holds a run; pass --resume"):
        run_training(write_recipe(), trained_run)
    assert (trained_run / "last.safetensors").read_bytes() == before


def test_resume_with_nothing_to_resume(tmp_path: Path, write_recipe) -> None:
    with pytest.raises(SeqgenError, match="--resume: .* holds no last.safetensors"):
        run_training(write_recipe(), tmp_path / "empty", resume=True)


def test_a_fresh_run_drops_metrics_left_by_a_run_that_never_checkpointed(
    tmp_path: Path, write_recipe
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.csv").write_text(",".join(COLUMNS) + "\n99,1,0.1,5.0,1,,,,1\n")
    run_training(write_recipe(), run, "train.max_steps=2", "train.eval_every=2")
    assert [row["step"] for row in metric_rows(run)] == ["2", "2"]


def test_max_minutes_stops_early(tmp_path: Path, write_recipe) -> None:
    run = tmp_path / "run"
    result = run_training(write_recipe(), run, "train.max_minutes=1e-9", "train.max_steps=50")
    assert result.steps == 1
    last = load_checkpoint(run / "last.safetensors", with_training_state=True)
    assert last.info["step"] == 1 and last.training["step"] == 1
    assert (run / "best.safetensors").exists()
    assert result.last_validation is not None


# --- every recipe runs ----------------------------------------------------------------------------


def tiny_overrides(task: str, tmp_path: Path, corpus_file: Path) -> list[str]:
    """Shrink any recipe to a few seconds on tiny data, whatever its task."""
    common = ["train.max_steps=2", "train.device=cpu", "tokenizer.vocab_size=64"]
    if task == "generation":
        return [
            *common,
            f"data.corpus={corpus_file}",
            "model.embedding_size=16",
            "model.hidden_size=16",
            "model.num_layers=1",
            "train.batch_size=4",
            "train.sequence_length=16",
            "train.eval_batch_size=4",
        ]
    words = corpus_file.read_text(encoding="utf-8").split()[:400]
    lines = [" ".join(words[i : i + 5]) for i in range(0, len(words), 5)]
    if task == "classification":
        # No GloVe: 16 columns cannot hold its 50, and CI lacks seqgen[glove]'s 76 MB package.
        no_vectors = ["model.init_embeddings=", "model.vector_words=0"]
        return [*common, *_labelled_files(lines, tmp_path), "model.embedding_size=16", *no_vectors]
    for name, side in (("source", lines), ("target", [line.upper() for line in lines])):
        (tmp_path / f"pairs.{name}").write_text("\n".join(side) + "\n", encoding="utf-8")
    files = [
        f"data.{split}_{name}={tmp_path / f'pairs.{name}'}"
        for split in ("train", "validation")
        for name in ("source", "target")
    ]
    return [
        *common,
        "data.corpus=",
        *files,
        "model.embedding_size=16",
        "model.encoder_hidden_size=8",
        "model.decoder_hidden_size=16",
        "train.batch_tokens=64",
        "train.average_last=0",
        "decoding.batch_size=16",
        "decoding.beam_size=2",
    ]


def _labelled_files(lines: list[str], tmp_path: Path) -> list[str]:
    """A TSV file of the lines labelled by whether they hold "the"; its overrides."""
    labelled = tmp_path / "labelled.tsv"
    rows = [f"{line}\t{'the' in line.split()}" for line in lines]
    labelled.write_text("\n".join(rows) + "\n", encoding="utf-8")
    files = ["data.corpus=", f"data.train_file={labelled}", f"data.validation_file={labelled}"]
    return [*files, "model.hidden_size=8", "train.batch_size=8"]


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda path: path.stem)
def test_every_recipe_runs_two_steps(tmp_path: Path, recipe: Path, corpus_file: Path) -> None:
    run = tmp_path / "run"
    task = load_recipe(recipe).task
    result = run_training(recipe, run, *tiny_overrides(task, tmp_path, corpus_file))
    assert result.steps == 2
    assert (run / "best.safetensors").exists() and (run / "last.safetensors").exists()
    stored = load_checkpoint(run / "best.safetensors")
    assert stored.kind == task
    assert stored.recipe["tokenizer"]["kind"] == load_recipe(recipe).tokenizer.kind


def test_training_on_the_mirror_corpus(tmp_path: Path, write_recipe, data_dir: str) -> None:
    run = tmp_path / "run"
    recipe = load_recipe(
        write_recipe(),
        ["data.corpus=tinyshakespeare", "train.max_steps=2", "train.eval_batch_size=256"],
    )
    result = train(recipe, run, data_dir=data_dir, show_progress=False)
    assert result.steps == 2
    assert load_checkpoint(run).tokenizer["kind"] == "char"


# --- data errors ----------------------------------------------------------------------------------


def test_empty_training_file(tmp_path: Path, write_recipe) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n\n", encoding="utf-8")
    with pytest.raises(DataError, match="empty.txt is empty") as caught:
        run_training(write_recipe(empty), tmp_path / "run")
    assert "\n" not in str(caught.value)


def test_non_utf8_training_file(tmp_path: Path, write_recipe) -> None:
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("Caf\xe9 au lait, s'il vous pla\xeet.\n".encode("latin-1") * 50)
    with pytest.raises(DataError, match=r"latin1.txt is not UTF-8 .*offset 3.*iconv") as caught:
        run_training(write_recipe(latin), tmp_path / "run")
    assert "\n" not in str(caught.value)


def test_missing_training_file(tmp_path: Path, write_recipe) -> None:
    with pytest.raises(DataError, match="no such file: .*missing.txt"):
        run_training(write_recipe(tmp_path / "missing.txt"), tmp_path / "run")


def test_text_too_small_for_the_batch(tmp_path: Path, write_recipe) -> None:
    small = tmp_path / "small.txt"
    small.write_text("abcdefgh", encoding="utf-8")  # 7 training characters for 4 rows
    with pytest.raises(ConfigError, match="has 7 tokens, too few for train.batch_size = 4"):
        run_training(write_recipe(small), tmp_path / "run")


def test_validation_split_without_tokens(tmp_path: Path, write_recipe) -> None:
    text = tmp_path / "trailing-spaces.txt"
    text.write_text("the cat sat on the mat " * 40 + " " * 200, encoding="utf-8")
    with pytest.raises(DataError, match="validation split has no tokens"):
        run_training(write_recipe(text), tmp_path / "run", "tokenizer.kind=word")


# --- the learning-rate schedule -------------------------------------------------------------------


def schedule(**values: object) -> LanguageModelTrainConfig:
    settings = {"learning_rate": 1.0, "min_learning_rate": 0.1, "warmup_steps": 4}
    return LanguageModelTrainConfig(**{**settings, "max_steps": 20, **values})


def test_warmup_is_linear() -> None:
    config = schedule()
    rates = [learning_rate_at(step, config) for step in range(4)]
    assert rates == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert learning_rate_at(4, config) == pytest.approx(1.0)  # the cosine starts at the peak


def test_cosine_reaches_the_minimum_at_max_steps() -> None:
    config = schedule()
    rates = [learning_rate_at(step, config) for step in range(4, 21)]
    assert all(a > b for a, b in zip(rates, rates[1:], strict=False))
    assert learning_rate_at(12, config) == pytest.approx(0.55)  # halfway: the mean
    assert learning_rate_at(20, config) == pytest.approx(0.1)
    assert learning_rate_at(25, config) == pytest.approx(0.1)  # and stays there


def test_constant_schedule_after_warmup() -> None:
    config = schedule(schedule="constant")
    assert learning_rate_at(0, config) == pytest.approx(0.25)
    assert {learning_rate_at(step, config) for step in range(4, 30)} == {1.0}


def test_no_warmup_starts_at_the_peak() -> None:
    assert learning_rate_at(0, schedule(warmup_steps=0)) == pytest.approx(1.0)
    assert learning_rate_at(0, schedule(warmup_steps=0, schedule="constant")) == 1.0


def test_a_translator_trains_from_one_tsv_file(tmp_path: Path, corpus_file: Path) -> None:
    words = corpus_file.read_text(encoding="utf-8").split()[:200]
    lines = [" ".join(words[i : i + 5]) for i in range(0, len(words), 5)]
    tsv = tmp_path / "pairs.tsv"
    tsv.write_text("".join(f"{line}\t{line.upper()}\n" for line in lines), encoding="utf-8")
    recipe = Path(__file__).parents[2] / "recipes" / "multi30k-de-en.toml"
    overrides = [
        o
        for o in tiny_overrides("translation", tmp_path, corpus_file)
        if "_source=" not in o and "_target=" not in o
    ]
    result = run_training(
        recipe,
        tmp_path / "run",
        *overrides,
        f"data.train_source={tsv}",
        f"data.validation_source={tsv}",
    )
    assert result.steps == 2
    assert load_checkpoint(tmp_path / "run").kind == "translation"


def test_a_run_that_fails_before_writing_leaves_no_folder(tmp_path: Path, write_recipe) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("", encoding="utf-8")
    run = tmp_path / "run"
    with pytest.raises(DataError):
        run_training(write_recipe(), run, f"data.corpus={empty}")
    assert not run.exists()


@pytest.mark.parametrize("scale", [1e-3, 1e3])  # under the limit (skipped) and over it
def test_clip_gradients_equals_clip_grad_norm(scale):
    from seqgen.training.device import clip_gradients

    torch.manual_seed(0)
    ours, theirs = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    theirs.load_state_dict(ours.state_dict())
    inputs = torch.randn(5, 4)
    for model in (ours, theirs):
        (model(inputs).sum() * scale).backward()
    clip_gradients(ours.parameters(), 1.0)
    torch.nn.utils.clip_grad_norm_(theirs.parameters(), 1.0)
    for mine, expected in zip(ours.parameters(), theirs.parameters(), strict=True):
        assert torch.equal(mine.grad, expected.grad)
    norm = torch.nn.utils.get_total_norm([p.grad for p in ours.parameters()])
    assert (norm <= 1.0 + 1e-5) if scale > 1 else (norm < 1.0)


def test_total_norm_is_the_norm_of_all_gradients_together() -> None:
    from seqgen.training.device import total_norm

    generator = torch.Generator().manual_seed(0)
    grads = [torch.randn(*shape, generator=generator) for shape in ((7628, 256), (1024, 512), (3,))]
    grads.append(torch.randn(8, 6, generator=generator).t())  # not contiguous
    expected = torch.cat([g.double().reshape(-1) for g in grads]).norm()
    # float32 sums: PyTorch's get_total_norm is 2e-5 off here, the dot products 1e-6
    assert torch.allclose(total_norm(grads).double(), expected, rtol=1e-5)
    halves = [g.to(torch.bfloat16) for g in grads]  # not float32: PyTorch's own
    assert torch.equal(total_norm(halves), torch.nn.utils.get_total_norm(halves))


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_on_a_terminal_is_a_tqdm_bar_with_seqgen_s_eta(monkeypatch) -> None:
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    bar = Progress(200, seconds=3600.0)
    for step in range(1, 51):
        bar.update(step, loss=2.5, tokens_per_second=1234.0)
    bar.message("validation: loss 2.4")
    bar.close()
    shown = terminal.getvalue()
    assert "\r" in shown and "50/200" in shown and "25%" in shown  # redrawn in place
    assert "loss 2.5000 1,234 tok/s ETA 0:00:0" in shown
    assert "validation: loss 2.4\n" in shown


def test_progress_on_a_pipe_is_plain_lines(monkeypatch) -> None:
    pipe = io.StringIO()
    monkeypatch.setattr(sys, "stderr", pipe)
    bar = Progress(100, log_every=50)
    for step in range(1, 101):
        bar.update(step, loss=1.0, tokens_per_second=10.0)
    lines = pipe.getvalue().splitlines()
    assert [line.split(" loss")[0] for line in lines] == ["step 50/100", "step 100/100"]
    assert "\r" not in pipe.getvalue()
