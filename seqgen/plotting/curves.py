"""Learning curves of one or several runs from their ``metrics.csv`` (``seqgen plot``).

One figure, two columns (against steps, against wall-clock minutes) and one row per quantity
the runs logged: the loss (training solid, validation dashed), each validation metric (BLEU,
chrF, accuracy, macro-F1, bits per token) and the learning rate. Each run keeps one colour
and is named in the legend.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from seqgen.errors import DataError, SeqgenError

METRICS_FILE = "metrics.csv"

# The validation metrics a run may log: column -> axis label.
METRIC_LABELS = {
    "validation_bleu": "validation BLEU",
    "validation_chrf": "validation chrF",
    "validation_accuracy": "validation accuracy (%)",
    "validation_macro_f1": "validation macro-F1",
    "validation_bits_per_token": "validation bits per token",
}
SCALES = {"validation_accuracy": 100.0}  # logged as a fraction, drawn in percent


@dataclass
class RunCurves:
    """One run's logged columns: name -> (steps, minutes, values), rows where it was logged."""

    name: str
    columns: dict[str, tuple[list[float], list[float], list[float]]]

    def has(self, column: str) -> bool:
        return bool(self.columns.get(column, ([], [], []))[2])


def read_run(path: str | Path) -> RunCurves:
    """The curves in a run folder's ``metrics.csv`` (or that file named directly)."""
    path = Path(path)
    file = path / METRICS_FILE if path.is_dir() else path
    if not file.is_file():
        raise DataError(f"{path} has no {METRICS_FILE}; name a run folder that seqgen train wrote")
    name = file.parent.name if file.name == METRICS_FILE else file.stem
    try:
        with file.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except (UnicodeDecodeError, csv.Error) as error:
        raise DataError(f"{file} is not a metrics file seqgen can read ({error})") from None
    if not rows or "step" not in rows[0]:
        raise DataError(f"{file} holds no metrics rows; train a few steps first")
    columns: dict[str, tuple[list[float], list[float], list[float]]] = {}
    for row in rows:
        step = number(row.get("step"))
        minutes = number(row.get("elapsed_seconds")) / 60
        for column, text in row.items():
            value = number(text)
            if column in ("step", "epoch", "elapsed_seconds") or math.isnan(value):
                continue
            steps, times, values = columns.setdefault(column, ([], [], []))
            steps.append(step)
            times.append(minutes)
            values.append(value * SCALES.get(column, 1.0))
    return RunCurves(name, columns)


def unique_names(runs: Sequence[RunCurves], paths: Sequence[str | Path]) -> None:
    """Name runs that share a folder name by their parent folder too (``a/run``, ``b/run``)."""
    names = [run.name for run in runs]
    for run, path in zip(runs, paths, strict=True):
        if names.count(run.name) > 1:
            resolved = Path(path).resolve()
            folder = resolved if resolved.is_dir() else resolved.parent
            run.name = f"{folder.parent.name}/{folder.name}"


def number(text: object) -> float:
    """A CSV cell as a float; NaN where it is empty or not a number."""
    try:
        return float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan


def panels(runs: Sequence[RunCurves]) -> list[tuple[str, list[tuple[str, str]]]]:
    """The figure's rows: (axis label, [(column, line style), ...]) for what any run logged."""
    rows = [("loss (nats per token)", [("train_loss", "-"), ("validation_loss", "--")])]
    rows += [(label, [(column, "-o")]) for column, label in METRIC_LABELS.items()]
    rows.append(("learning rate", [("learning_rate", "-")]))
    return [
        (label, lines)
        for label, lines in rows
        if any(run.has(column) for run in runs for column, _ in lines)
    ]


def plot_runs(runs: Sequence[RunCurves], output: Path) -> tuple[int, int]:
    """Draw ``runs`` into the PNG ``output``; returns its (width, height) in pixels."""
    pyplot = matplotlib_pyplot()
    rows = panels(runs)
    figure, axes = pyplot.subplots(
        len(rows), 2, figsize=(12, 3 * len(rows)), squeeze=False, sharex="col"
    )
    colours = pyplot.rcParams["axes.prop_cycle"].by_key()["color"]
    for row, (label, lines) in enumerate(rows):
        for column_index, (x_label, x_index) in enumerate((("step", 0), ("wall time (min)", 1))):
            axis = axes[row][column_index]
            for run_index, run in enumerate(runs):
                for column, style in lines:
                    if not run.has(column):
                        continue
                    x, y = run.columns[column][x_index], run.columns[column][2]
                    kind = "validation" if column.startswith("validation") else "train"
                    name = run.name if len(lines) == 1 else f"{run.name} ({kind})"
                    colour = colours[run_index % len(colours)]
                    axis.plot(x, y, style, color=colour, label=name, markersize=3)
            axis.set_ylabel(label)
            axis.grid(alpha=0.3)
            if row == len(rows) - 1:
                axis.set_xlabel(x_label)
        axes[row][0].legend(fontsize="small")
    figure.suptitle(", ".join(run.name for run in runs))
    figure.tight_layout()
    write_png(figure, output)
    size = figure.get_size_inches() * figure.dpi
    pyplot.close(figure)
    return int(size[0]), int(size[1])


def write_png(figure: object, output: Path) -> None:
    """Save atomically: a temporary file renamed, so a failure leaves no half image."""
    from seqgen.files import atomic_write

    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(output, lambda temporary: figure.savefig(temporary, format="png"))  # type: ignore[attr-defined]
    except OSError as error:
        raise SeqgenError(
            f"cannot write {output} ({error.strerror}); choose another --output"
        ) from None


def matplotlib_pyplot():
    """matplotlib's pyplot on the Agg backend (files only, no display); SeqgenError naming
    the extra where matplotlib is missing."""
    try:
        import matplotlib
    except ModuleNotFoundError:
        raise SeqgenError("pictures need matplotlib: pip install 'seqgen[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot

    return pyplot
