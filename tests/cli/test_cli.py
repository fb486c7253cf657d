"""The ``seqgen`` command line through click's CliRunner: help, a tiny round trip, bad input.

Errors must reach the user as one line ``seqgen: error: ...`` on stderr with a non-zero exit
code and no traceback. ``SeqgenGroup.main`` ends with ``sys.exit``, which CliRunner turns
into ``result.exit_code``.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from seqgen.cli import main

GENERATE = ("--max-new-tokens", "20", "--device", "cpu")


def invoke(*args: str | Path) -> Result:
    return CliRunner().invoke(main, [str(arg) for arg in args])


def assert_ok(result: Result) -> None:
    assert result.exit_code == 0, (result.output, result.exception)
    assert "Traceback" not in result.output


def assert_one_line_error(result: Result, *words: str, exit_code: int | None = None) -> str:
    """The run failed with one ``seqgen: error:`` line naming the problem; returns it."""
    assert result.exit_code != 0, result.output
    if exit_code is not None:
        assert result.exit_code == exit_code
    assert "Traceback" not in result.output
    # A SystemExit from sys.exit is how the CLI ends; anything else escaped it.
    assert isinstance(result.exception, SystemExit), result.exception
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith("seqgen: error: "), line
    for word in words:
        assert word in line, (word, line)
    assert result.stdout == ""
    return line


def no_temporary_files(folder: Path) -> bool:
    return not any(name.endswith(".tmp") for _, _, names in os.walk(folder) for name in names)


def generate(run: Path, *args: str) -> Result:
    return invoke("generate", "--model", run, *GENERATE, *args)


# --- help -----------------------------------------------------------------------------------------


def test_group_help() -> None:
    result = invoke("--help")
    assert_ok(result)
    for command in ("train", "generate", "evaluate"):
        assert command in result.stdout


def test_bare_seqgen_shows_the_help_not_an_error() -> None:
    result = invoke()
    assert "Usage:" in result.output
    assert "error" not in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("command", sorted(main.commands))
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_command_help(command: str, flag: str) -> None:
    result = invoke(command, flag)
    assert_ok(result)
    assert "Usage:" in result.stdout and command in result.stdout


def test_version() -> None:
    result = invoke("--version")
    assert_ok(result)
    assert "seqgen, version" in result.stdout


def test_unknown_command() -> None:
    assert_one_line_error(invoke("trian"), "No such command 'trian'", exit_code=2)


def test_bad_option_type_is_a_usage_error() -> None:
    result = invoke("generate", "--max-new-tokens", "many")
    assert_one_line_error(result, "--max-new-tokens", "'many'", exit_code=2)


# --- train ----------------------------------------------------------------------------------------


def test_train_then_generate_and_evaluate(tmp_path: Path, write_recipe, corpus_file: Path) -> None:
    run = tmp_path / "run"
    result = invoke(
        "train", write_recipe(), "--output", run, "--quiet", "--set", "train.max_steps=2"
    )
    assert_ok(result)
    assert "trained 2 steps; best validation loss" in result.stdout
    assert str(run / "best.safetensors") in result.stdout
    assert sorted(os.listdir(run)) == ["best.safetensors", "last.safetensors", "metrics.csv"]
    result = generate(run, "--prompt", "The king", "--seed", "1")
    assert_ok(result)
    assert result.stdout.startswith("The king")
    result = invoke("evaluate", "--model", run, "--file", corpus_file, "--device", "cpu")
    assert_ok(result)
    assert "nats/token" in result.stdout


def test_train_shows_progress_unless_quiet(tmp_path: Path, write_recipe) -> None:
    result = invoke("train", write_recipe(), "--output", tmp_path / "run")
    assert_ok(result)
    assert "step 6: validation loss" in result.stderr
    assert "6/6 loss" in result.stderr


def test_train_resume_from_the_cli(tmp_path: Path, write_recipe) -> None:
    run = tmp_path / "run"
    recipe = write_recipe()
    assert_ok(invoke("train", recipe, "--output", run, "--quiet", "--set", "train.max_steps=3"))
    result = invoke(
        "train", recipe, "--output", run, "--quiet", "--resume", "--set", "train.max_steps=6"
    )
    assert_ok(result)
    assert "trained 6 steps" in result.stdout


def test_train_default_output_folder(tmp_path: Path, write_recipe, monkeypatch) -> None:
    recipe = write_recipe(name="tiny-run.toml")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["train", str(recipe), "--quiet"])
    assert_ok(result)
    assert (tmp_path / "runs/tiny-run/best.safetensors").exists()


# --- generate -------------------------------------------------------------------------------------


def test_same_seed_same_sample(trained_run: Path) -> None:
    first = generate(trained_run, "--prompt", "The", "--seed", "1")
    second = generate(trained_run, "--prompt", "The", "--seed", "1")
    other = generate(trained_run, "--prompt", "The", "--seed", "2")
    for result in (first, second, other):
        assert_ok(result)
        assert result.stdout.startswith("The")
        assert len(result.stdout.rstrip("\n")) >= len("The")
    assert first.stdout == second.stdout
    assert first.stdout != other.stdout


def test_greedy_is_deterministic(trained_run: Path) -> None:
    first = generate(trained_run, "--prompt", "The", "--strategy", "greedy")
    second = generate(trained_run, "--prompt", "The", "--strategy", "greedy", "--seed", "5")
    assert_ok(first)
    assert first.stdout == second.stdout
    assert first.stdout.startswith("The")


def test_temperature_zero_is_greedy(trained_run: Path) -> None:
    greedy = generate(trained_run, "--prompt", "The", "--strategy", "greedy")
    cold = generate(trained_run, "--prompt", "The", "--temperature", "0", "--seed", "3")
    assert_ok(cold)
    assert cold.stdout == greedy.stdout


@pytest.mark.parametrize("strategy", ["greedy", "sample"])
def test_stream_prints_what_generate_returns(trained_run: Path, strategy: str) -> None:
    args = ("--prompt", "The king", "--strategy", strategy, "--seed", "4")
    plain = generate(trained_run, *args)
    streamed = generate(trained_run, *args, "--stream")
    assert_ok(plain)
    assert_ok(streamed)
    assert streamed.stdout == plain.stdout


def test_beam_with_two_results(trained_run: Path) -> None:
    result = generate(trained_run, "--prompt", "The", "--strategy", "beam", "--num-samples", "2")
    assert_ok(result)
    assert result.stdout.count("--- sample ") == 2
    texts = result.stdout.split("--- sample ")[1:]
    assert all(text.split("\n", 1)[1].startswith("The") for text in texts)


def test_several_samples(trained_run: Path) -> None:
    result = generate(trained_run, "--prompt", "A", "--num-samples", "3", "--seed", "1")
    assert_ok(result)
    assert [line for line in result.stdout.splitlines() if line.startswith("--- sample")] == [
        "--- sample 1",
        "--- sample 2",
        "--- sample 3",
    ]


def test_empty_prompt(trained_run: Path) -> None:
    result = generate(trained_run, "--prompt", "", "--seed", "1")
    assert_ok(result)
    assert result.stdout.endswith("\n")  # up to 20 characters from BOS alone, then a newline
    assert len(result.stdout) <= 21
    default = generate(trained_run, "--seed", "1")  # no --prompt at all
    assert default.stdout == result.stdout


def test_unseen_characters_warn_once_and_still_generate(
    trained_run: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        result = generate(trained_run, "--prompt", "Zwölf ✓ XQ", "--seed", "1")
    assert_ok(result)
    assert result.stdout.startswith("Zwölf ✓ XQ")
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "not in the model's vocabulary" in warnings[0].getMessage()


def test_a_known_prompt_gives_no_warning(
    trained_run: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        assert_ok(generate(trained_run, "--prompt", "the king", "--seed", "1"))
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_generate_from_the_last_checkpoint_file(trained_run: Path) -> None:
    result = generate(trained_run / "last.safetensors", "--prompt", "The", "--seed", "1")
    assert_ok(result)


# --- evaluate -------------------------------------------------------------------------------------


def test_evaluate_a_file(trained_run: Path, corpus_file: Path) -> None:
    result = invoke("evaluate", "--model", trained_run, "--file", corpus_file, "--device", "cpu")
    assert_ok(result)
    line = result.stdout.strip()
    assert line.startswith(f"{corpus_file}: loss ")
    for word in ("nats/token", "perplexity", "bits/token", "bits/char", "tokens"):
        assert word in line


def test_evaluate_the_validation_split_by_default(trained_run: Path) -> None:
    result = invoke("evaluate", "--model", trained_run, "--device", "cpu")
    assert_ok(result)
    assert ":val: loss " in result.stdout
    explicit = invoke("evaluate", "--model", trained_run, "--split", "val", "--device", "cpu")
    assert explicit.stdout == result.stdout


# --- bad input: one line, non-zero exit, no traceback ---------------------------------------------
# The battery of one-line errors is tests/cli/test_bad_input.py; here, the cases that also
# check what is left on disk, or need a subprocess.


def test_non_utf8_training_file(tmp_path: Path, write_recipe) -> None:
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("Na\xefve caf\xe9 text.\n".encode("latin-1") * 100)
    run = tmp_path / "run"
    result = invoke("train", write_recipe(latin), "--output", run, "--quiet")
    assert_one_line_error(result, "latin1.txt is not UTF-8", "iconv")
    assert no_temporary_files(tmp_path)
    assert not (run / "last.safetensors").exists()


def test_empty_training_file(tmp_path: Path, write_recipe) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    result = invoke("train", write_recipe(empty), "--output", tmp_path / "run", "--quiet")
    assert_one_line_error(result, "empty.txt is empty")
    assert no_temporary_files(tmp_path)


def test_an_interrupted_run_leaves_no_half_written_files(
    tmp_path: Path, write_recipe, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C while a checkpoint is being written: exit 130, no temporary or partial file."""
    from seqgen.training import checkpoint

    real_save_file = checkpoint.save_file
    calls = []

    def interrupted_save_file(tensors, filename, metadata=None):
        calls.append(filename)
        if len(calls) == 3:  # best and last at step 3, then the first write at step 6
            real_save_file(tensors, filename, metadata=metadata)
            Path(filename).write_bytes(Path(filename).read_bytes()[:100])
            raise KeyboardInterrupt
        real_save_file(tensors, filename, metadata=metadata)

    monkeypatch.setattr(checkpoint, "save_file", interrupted_save_file)
    run = tmp_path / "run"
    result = invoke("train", write_recipe(), "--output", run, "--quiet")
    assert result.exit_code == 130
    assert "seqgen: interrupted" in result.stderr
    assert "Traceback" not in result.output
    assert no_temporary_files(run)
    assert sorted(os.listdir(run)) == ["best.safetensors", "last.safetensors", "metrics.csv"]
    monkeypatch.undo()
    # What is there is whole: both step-3 checkpoints load, and --resume finishes the run.
    assert_ok(generate(run, "--prompt", "The", "--seed", "1"))
    assert_ok(invoke("train", write_recipe(), "--output", run, "--quiet", "--resume"))


def test_a_copied_run_folder_still_loads(tmp_path: Path, trained_run: Path) -> None:
    """Checkpoints are self-contained: no recipe file or training data needed."""
    copy = tmp_path / "elsewhere"
    shutil.copytree(trained_run, copy)
    (copy / "metrics.csv").unlink()
    assert_ok(generate(copy, "--prompt", "The", "--seed", "1"))


def test_export_without_its_extra_names_the_extra(tmp_path: Path) -> None:
    import subprocess
    import sys

    import seqgen

    script = (
        "import sys; sys.modules['onnx'] = None\n"  # as if the export extra were not installed
        "from seqgen.cli import main\n"
        f"main(['export', '--model', 'spam', '--output', {str(tmp_path / 'b')!r}])\n"
    )
    root = Path(seqgen.__file__).parent.parent
    environment = {**os.environ, "PYTHONPATH": str(root)}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=environment
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip() == (
        "seqgen: error: exporting needs onnx: pip install 'seqgen[export]'"
    )
    assert not (tmp_path / "b").exists()
