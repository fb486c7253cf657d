"""Attention maps: which source pieces each target piece of a translation attended to
(``seqgen translate --attention-plot``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from seqgen.plotting.curves import matplotlib_pyplot, write_png


def plot_attention(
    weights: np.ndarray,
    source_pieces: Sequence[str],
    target_pieces: Sequence[str],
    output: Path,
    *,
    title: str = "",
) -> tuple[int, int]:
    """Draw ``weights`` ``(target_len, source_len)`` (each row sums to 1 over the source) as a
    heatmap, source pieces along the top, target pieces down the side; returns the PNG's
    (width, height) in pixels."""
    pyplot = matplotlib_pyplot()
    rows, columns = weights.shape
    # About a third of an inch per piece, so that the labels stay legible.
    width = min(max(3.0 + 0.32 * columns, 5.0), 30.0)
    height = min(max(2.0 + 0.3 * rows, 4.0), 30.0)
    figure, axis = pyplot.subplots(figsize=(width, height))
    image = axis.imshow(weights, cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto")
    axis.set_xticks(range(columns), labels=list(source_pieces), rotation=60, ha="left")
    axis.set_yticks(range(rows), labels=list(target_pieces))
    axis.xaxis.tick_top()
    axis.set_xlabel("source")
    axis.set_ylabel("target")
    figure.colorbar(image, ax=axis, fraction=0.04, label="attention weight")
    if title:
        figure.suptitle(title, fontsize="small")
    figure.tight_layout()
    write_png(figure, output)
    size = figure.get_size_inches() * figure.dpi
    pyplot.close(figure)
    return int(size[0]), int(size[1])
