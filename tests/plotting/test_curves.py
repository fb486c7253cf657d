"""``seqgen plot``: learning curves from metrics.csv files, and its one-line errors."""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from seqgen.cli import main
from seqgen.plotting.curves import panels, read_run
from seqgen.training.metrics import MetricsLog


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def write_run(folder: Path, metric: str, steps: int = 6) -> Path:
    folder.mkdir(parents=True)
    log = MetricsLog(folder / "metrics.csv")
    for step in range(1, steps + 1):
        row = {"step": step, "learning_rate": 1e-3 / step, "train_loss": 3.0 / step}
        if step % 2 == 0:
            row |= {"validation_loss": 3.2 / step, metric: 0.1 * step}
        log.append(**row, elapsed_seconds=10.0 * step)
    return folder


def test_curves_of_two_runs_overlaid(tmp_path):
    translation = write_run(tmp_path / "a" / "run", "validation_bleu")
    classification = write_run(tmp_path / "b" / "run", "validation_accuracy")
    output = tmp_path / "curves.png"
    result = CliRunner().invoke(
        main, ["plot", str(translation), str(classification), "--output", str(output)]
    )
    assert result.exit_code == 0, result.output
    assert "a/run, b/run" in result.output
    width, height = png_size(output)
    rows = [label for label, _ in panels([read_run(translation), read_run(classification)])]
    assert rows == [
        "loss (nats per token)",
        "validation BLEU",
        "validation accuracy (%)",
        "learning rate",
    ]
    assert (width, height) == (1200, 300 * len(rows))


def test_read_run_keeps_each_column_where_it_was_logged(tmp_path):
    curves = read_run(write_run(tmp_path / "run", "validation_accuracy"))
    steps, minutes, values = curves.columns["validation_accuracy"]
    assert steps == [2, 4, 6] and minutes == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert values == pytest.approx([20.0, 40.0, 60.0])  # percent
    assert len(curves.columns["train_loss"][0]) == 6


def test_one_run_writes_into_its_folder(tmp_path):
    run = write_run(tmp_path / "run", "validation_bits_per_token")
    result = CliRunner().invoke(main, ["plot", str(run)])
    assert result.exit_code == 0 and png_size(run / "curves.png")[0] == 1200


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "has no metrics.csv"),
        ("", "holds no metrics rows"),
        (b"\xff\xfe", "is not a metrics file"),
    ],
)
def test_a_folder_without_metrics_is_one_line(tmp_path, content, message):
    if content is not None:
        path = tmp_path / "metrics.csv"
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    done = subprocess.run(
        [sys.executable, "-m", "seqgen", "plot", str(tmp_path)], capture_output=True, text=True
    )
    assert done.returncode == 1 and message in done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


def test_an_unwritable_output_is_one_line_and_leaves_nothing(tmp_path):
    run = write_run(tmp_path / "run", "validation_bleu")
    (tmp_path / "file").write_text("")
    result = CliRunner().invoke(
        main, ["plot", str(run), "--output", str(tmp_path / "file" / "x.png")]
    )
    assert result.exit_code == 1 and "choose another --output" in result.output


def test_without_matplotlib_it_names_the_extra(tmp_path):
    run = write_run(tmp_path / "run", "validation_bleu")
    hide = "import sys; sys.modules['matplotlib'] = None; from seqgen.cli import run; run()"
    done = subprocess.run(
        [sys.executable, "-c", hide, "plot", str(run)], capture_output=True, text=True
    )
    assert done.returncode == 1 and "pip install 'seqgen[plot]'" in done.stderr
    assert done.stderr.count("\n") == 1 and not (run / "curves.png").exists()
