"""A crash loses nothing: ``seqgen train`` killed with SIGKILL, then ``--resume``.

The run is a real subprocess on the tiny fixture corpus, killed as soon as it has written a
checkpoint; the resumed run must continue from that checkpoint's step, leave metrics.csv
whole (one row per logged step, steps increasing, no half line), and remove the temporary
files a kill leaves. Also here: ``train.max_minutes`` counts the current invocation, and
the progress ETA honours it.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from seqgen.config import LoopConfig
from seqgen.training import driver, progress
from seqgen.training.checkpoint import load_checkpoint
from seqgen.training.metrics import COLUMNS, MetricsLog
from seqgen.training.progress import Progress
from seqgen.training.run_folder import remove_leftovers

ROOT = Path(__file__).parents[2]
WAIT_SECONDS = 90  # for the first checkpoint: the subprocess imports torch on a busy machine


def seqgen(*args: object) -> list[str]:
    return [sys.executable, "-m", "seqgen", *(str(arg) for arg in args)]


def environment() -> dict[str, str]:
    # One thread: the CI machine has two cores and other tests run beside this one.
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def read_metrics(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames == list(COLUMNS)
        rows = list(reader)
    assert all(None not in row and None not in row.values() for row in rows), rows
    return rows


def test_kill_9_then_resume_continues_from_the_last_checkpoint(
    tmp_path: Path, write_recipe
) -> None:
    recipe = write_recipe()
    text = (
        recipe.read_text(encoding="utf-8")
        .replace("max_steps = 6", "max_steps = 100000")
        .replace("eval_every = 3", "eval_every = 4")
    )
    recipe.write_text(text, encoding="utf-8")
    run = tmp_path / "run"
    first = subprocess.Popen(
        seqgen("train", recipe, "--output", run, "--quiet"),
        env=environment(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + WAIT_SECONDS
        while not (run / "last.safetensors").exists():
            assert first.poll() is None, first.stderr.read()  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "no checkpoint written in time"
            time.sleep(0.05)
        time.sleep(0.3)  # a few steps more, past the checkpoint
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
        first.stderr.close()  # type: ignore[union-attr]
    assert first.returncode == -signal.SIGKILL
    saved = load_checkpoint(run / "last.safetensors", with_training_state=True)
    step = saved.training["step"]  # type: ignore[index]
    assert step > 0 and step % 4 == 0
    # What a kill during a checkpoint's write leaves: a hidden temporary file.
    leftover = run / ".last.safetensors.k1ll3d.tmp"
    leftover.write_bytes(b"half a checkpoint")
    more = step + 6
    resumed = subprocess.run(
        seqgen(
            "train",
            recipe,
            "--output",
            run,
            "--quiet",
            "--resume",
            "--set",
            f"train.max_steps={more}",
        ),  # fmt: skip
        env=environment(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "Traceback" not in resumed.stderr
    assert not leftover.exists()
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp")]
    last = load_checkpoint(run / "last.safetensors", with_training_state=True)
    assert last.training["step"] == more  # type: ignore[index]
    steps = [int(row["step"]) for row in read_metrics(run / "metrics.csv")]
    assert steps == sorted(steps)
    # Each step logged once: the first run's rows up to its checkpoint, then the resumed run's.
    train_steps = [
        int(row["step"]) for row in read_metrics(run / "metrics.csv") if row["train_loss"]
    ]
    assert train_steps == list(range(2, more + 1, 2))


def test_a_cut_metrics_line_is_dropped_on_resume(tmp_path: Path) -> None:
    log = MetricsLog(tmp_path / "metrics.csv")
    for step in (2, 4, 6):
        log.append(step=step, train_loss=1.0)
    with (tmp_path / "metrics.csv").open("a", encoding="utf-8") as handle:
        handle.write("8,0.")  # the kill came mid-line
    log.keep_until(6)
    assert [row["step"] for row in read_metrics(tmp_path / "metrics.csv")] == ["2", "4", "6"]


def test_leftovers_of_the_run_files_only_are_removed(tmp_path: Path) -> None:
    names = [".last.safetensors.a1.tmp", ".best.safetensors.b2.tmp", ".metrics.csv.c3.tmp"]
    for name in [*names, ".notes.txt.d4.tmp", "last.safetensors"]:
        (tmp_path / name).write_bytes(b"x")
    removed = remove_leftovers(tmp_path)
    assert sorted(p.name for p in removed) == sorted(names)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".notes.txt.d4.tmp", "last.safetensors"]


# --- train.max_minutes counts this invocation -------------------------------------------------


class FakeTrainer:
    """A trainer whose every step takes ``step_seconds`` on the fake clock."""

    steps_per_epoch = 100

    def __init__(self, clock: list[float], *, elapsed: float, step_seconds: float) -> None:
        self.clock = clock
        self.step_seconds = step_seconds
        self.run_state = SimpleNamespace(step=0, elapsed=elapsed)
        self.metrics = SimpleNamespace(append=lambda **values: None)
        self.validations: list[int] = []

    def train_step(self) -> tuple[float, int]:
        self.clock[0] += self.step_seconds
        self.run_state.step += 1
        return 1.0, 10

    def validate_and_save(self, progress: Progress) -> None:
        self.validations.append(self.run_state.step)

    def early_stop_reason(self) -> str | None:
        return None


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [1000.0]
    fake_time = SimpleNamespace(perf_counter=lambda: now[0])
    monkeypatch.setattr(driver, "time", fake_time)
    monkeypatch.setattr(progress, "time", fake_time)
    return now


@pytest.mark.parametrize("earlier_seconds", [0.0, 3 * 3600.0])
def test_max_minutes_counts_this_invocation(clock: list[float], earlier_seconds: float) -> None:
    """A run resumed after 3 hours of training gets its whole minute again (it used to stop
    after one step), and run.elapsed keeps counting the run's total time."""
    trainer = FakeTrainer(clock, elapsed=earlier_seconds, step_seconds=10.0)
    config = LoopConfig(max_steps=1000, max_minutes=1.0, eval_every=500, log_every=50)
    driver.drive(trainer, config, show_progress=False)  # type: ignore[arg-type]
    assert trainer.run_state.step == 6  # 60 s of 10 s steps
    assert trainer.validations == [6]  # saved where it stopped
    assert trainer.run_state.elapsed == pytest.approx(earlier_seconds + 60.0)


def test_the_eta_honours_max_minutes(clock: list[float], capsys: pytest.CaptureFixture) -> None:
    bar = Progress(1000, log_every=1, seconds=60.0)
    clock[0] += 1.0
    bar.update(1, loss=1.0, tokens_per_second=1.0)
    assert capsys.readouterr().err.rstrip().endswith("ETA 0:00:59")  # not 0:16:39
    unbounded = Progress(1000, log_every=1)
    clock[0] += 1.0
    unbounded.update(1, loss=1.0, tokens_per_second=1.0)
    assert capsys.readouterr().err.rstrip().endswith("ETA 0:16:39")
