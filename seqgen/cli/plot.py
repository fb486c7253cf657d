"""``seqgen plot``: learning curves of one or several runs (``seqgen.plotting``)."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.argument("runs", nargs=-1, required=True, type=click.Path())
@click.option(
    "--output",
    type=click.Path(dir_okay=False),
    default=None,
    help="PNG file to write [default: RUN/curves.png for one run, curves.png for several].",
)
def plot(runs: tuple[str, ...], output: str | None) -> None:
    """Plot the loss, validation metric and learning rate of RUNS (run folders or their
    metrics.csv) against steps and wall time, several runs overlaid."""
    from seqgen.plotting.curves import plot_runs, read_run, unique_names

    curves = [read_run(run) for run in runs]
    unique_names(curves, runs)
    if output is None:
        folder = Path(runs[0])
        output = str(folder / "curves.png") if len(runs) == 1 and folder.is_dir() else "curves.png"
    width, height = plot_runs(curves, Path(output))
    click.echo(f"{', '.join(c.name for c in curves)} -> {output} ({width}x{height} px)")
