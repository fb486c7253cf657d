"""Metrics appended to ``metrics.csv`` in the run folder, one row per log or validation, and
with ``train.tensorboard = true`` the same scalars (and a few sample outputs per validation)
as TensorBoard event files in ``RUN/tensorboard/``."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

from seqgen.errors import ConfigError
from seqgen.files import atomic_write

COLUMNS = (
    "step",
    "epoch",
    "learning_rate",
    "train_loss",
    "tokens_per_second",
    "validation_loss",
    "validation_perplexity",
    "validation_bits_per_token",
    "validation_bleu",
    "validation_chrf",
    "elapsed_seconds",
    "validation_accuracy",
    "validation_macro_f1",
)


def _whole(row: dict[str | None, str | None]) -> bool:
    """Whether a row read back is whole: a process killed while appending (kill -9) may
    leave its last line cut short, which is then dropped instead of kept half."""
    step = row.get("step")
    no_field_missing = all(value is not None for value in row.values())
    return None not in row and no_field_missing and step is not None and step.isdigit()


# metrics.csv column -> TensorBoard tag: the training scalars, then the validation ones.
TAGS = {
    "epoch": "train/epoch",
    "learning_rate": "train/learning_rate",
    "train_loss": "train/loss",
    "tokens_per_second": "train/tokens_per_second",
    "elapsed_seconds": "train/elapsed_seconds",
    **{name: "validation/" + name.removeprefix("validation_") for name in COLUMNS[5:10]},
    "validation_accuracy": "validation/accuracy",
    "validation_macro_f1": "validation/macro_f1",
}


class MetricsLog:
    """Appends rows to a CSV file, writing the header when the file is new; with
    ``tensorboard``, also writes each value as a TensorBoard scalar at its step."""

    def __init__(self, path: Path, *, tensorboard: bool = False) -> None:
        self.path = path
        self.board = tensorboard_writer(path.parent / "tensorboard") if tensorboard else None

    def keep_until(self, step: int) -> None:
        """Drop the rows after ``step``: what an interrupted run logged past its checkpoint."""
        if not self.path.exists():
            return
        with self.path.open(newline="", encoding="utf-8", errors="replace") as handle:
            rows = [
                row for row in csv.DictReader(handle) if _whole(row) and int(row["step"]) <= step
            ]

        def write(temporary: str) -> None:
            with open(temporary, "w", newline="", encoding="utf-8") as handle:
                writer = csv.DictWriter(handle, fieldnames=COLUMNS)
                writer.writeheader()
                writer.writerows(rows)

        atomic_write(self.path, write)

    def append(self, **values: float | int) -> None:
        unknown = set(values) - set(COLUMNS)
        if unknown:
            raise KeyError(f"unknown metric columns: {sorted(unknown)}")
        new = not self.path.exists()
        with self.path.open("a", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=COLUMNS)
            if new:
                writer.writeheader()
            writer.writerow(
                {k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in values.items()}
            )
        if self.board is not None:
            for name, value in values.items():
                if name in TAGS:
                    self.board.add_scalar(TAGS[name], value, global_step=int(values["step"]))
            self.board.flush()

    def samples(self, tag: str, make: Callable[[], str], step: int) -> None:
        """Sample outputs (translations, a continuation) for TensorBoard's text tab; ``make``
        is called only when TensorBoard is on, since decoding samples costs time."""
        if self.board is not None:
            self.board.add_text(tag, make(), global_step=step)
            self.board.flush()


def tensorboard_writer(folder: Path):
    """PyTorch's TensorBoard writer on ``folder``; ConfigError naming the extra where the
    tensorboard package is missing (checked before training starts)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ModuleNotFoundError:
        raise ConfigError(
            "train.tensorboard = true needs the tensorboard package: "
            "pip install 'seqgen[tensorboard]' (or set train.tensorboard = false)"
        ) from None
    return SummaryWriter(log_dir=str(folder))


class NoMetrics(MetricsLog):
    """The metrics of a rank other than 0 under torchrun: rank 0 alone writes the run folder."""

    def __init__(self) -> None:
        self.path = Path(".")
        self.board = None

    def keep_until(self, step: int) -> None:
        return None

    def append(self, **values: float | int) -> None:
        return None


def open_metrics(path: Path, *, tensorboard: bool, writer: bool) -> MetricsLog:
    """``path``'s MetricsLog where this process writes the run folder (``writer``), else a
    log that writes nothing."""
    return MetricsLog(path, tensorboard=tensorboard) if writer else NoMetrics()
