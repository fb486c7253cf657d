"""Backend-neutral helpers for starting a decode (no torch: the ONNX path uses them too)."""

from __future__ import annotations

from collections.abc import Sequence


def group_by_length(lengths: Sequence[int]) -> list[tuple[int, list[int]]]:
    """Group row indices by length, so each group runs unpadded.

    >>> group_by_length([3, 1, 3])
    [(1, [1]), (3, [0, 2])]
    """
    groups: dict[int, list[int]] = {}
    for row, length in enumerate(lengths):
        groups.setdefault(length, []).append(row)
    return sorted(groups.items())
