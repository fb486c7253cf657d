"""``train.tensorboard = true``: metrics.csv's scalars and sample outputs as TensorBoard events."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

from seqgen.recipes import load_recipe  # noqa: E402
from seqgen.training.metrics import MetricsLog  # noqa: E402
from seqgen.training.run import train  # noqa: E402


def events(folder: Path) -> EventAccumulator:
    accumulator = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    accumulator.Reload()
    return accumulator


def test_a_run_writes_the_scalars_of_metrics_csv_and_a_sample(write_recipe, tmp_path):
    recipe = load_recipe(write_recipe(), ["train.tensorboard=true"])
    run = tmp_path / "run"
    train(recipe, run, show_progress=False)
    board = events(run / "tensorboard")
    with (run / "metrics.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    logged = [(int(r["step"]), float(r["train_loss"])) for r in rows if r["train_loss"]]
    validated = [
        (int(r["step"]), float(r["validation_loss"])) for r in rows if r["validation_loss"]
    ]
    assert [
        (e.step, pytest.approx(e.value, rel=1e-5)) for e in board.Scalars("train/loss")
    ] == logged
    assert [
        (e.step, pytest.approx(e.value, rel=1e-5)) for e in board.Scalars("validation/loss")
    ] == validated
    assert {"train/learning_rate", "validation/perplexity"} <= set(board.Tags()["scalars"])
    samples = board.Tensors("validation/sample/text_summary")
    assert [sample.step for sample in samples] == [step for step, _ in validated]
    assert len(samples[-1].tensor_proto.string_val[0].decode()) > 10


def test_without_the_flag_no_events_are_written(trained_run):
    assert not (trained_run / "tensorboard").exists()


def test_metrics_log_maps_every_column_to_a_tag(tmp_path):
    log = MetricsLog(tmp_path / "metrics.csv", tensorboard=True)
    log.append(step=3, validation_bleu=12.5, validation_accuracy=0.75, epoch=0.5)
    log.samples("validation/translations", lambda: "**source** a", 3)
    board = events(tmp_path / "tensorboard")
    assert board.Scalars("validation/bleu")[0].value == 12.5
    assert board.Scalars("validation/accuracy")[0].step == 3
    assert "validation/translations/text_summary" in board.Tags()["tensors"]


def test_without_tensorboard_installed_it_names_the_extra(write_recipe, tmp_path):
    hide = (
        "import sys; sys.modules['torch.utils.tensorboard'] = None; "
        "from seqgen.cli import run; run()"
    )
    command = [
        sys.executable,
        "-c",
        hide,
        "train",
        str(write_recipe()),
        "--quiet",
        "--set",
        "train.tensorboard=true",
        "--output",
        str(tmp_path / "run"),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "pip install 'seqgen[tensorboard]'" in done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
