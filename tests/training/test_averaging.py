"""Checkpoint averaging."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from seqgen.errors import CheckpointError
from seqgen.training.averaging import average_checkpoints
from seqgen.training.checkpoint import Checkpoint, save_checkpoint


def write(path: Path, value: float, *, names: tuple[str, ...] = ("a",)) -> Path:
    weights = {name: torch.full((2, 2), value) for name in names}
    weights["count"] = torch.tensor([3])
    save_checkpoint(path, Checkpoint("language_model", {}, {"kind": "char"}, weights))
    return path


def test_average_is_the_elementwise_mean(tmp_path: Path) -> None:
    paths = [write(tmp_path / f"{i}.safetensors", float(i)) for i in (1, 2, 6)]
    averaged = average_checkpoints(paths)
    torch.testing.assert_close(averaged.weights["a"], torch.full((2, 2), 3.0))
    assert averaged.weights["count"].tolist() == [3]  # integers are not averaged
    assert len(averaged.info["averaged_from"]) == 3


def test_mismatched_checkpoints_are_refused(tmp_path: Path) -> None:
    first = write(tmp_path / "a.safetensors", 1.0)
    second = write(tmp_path / "b.safetensors", 1.0, names=("b",))
    with pytest.raises(CheckpointError, match="same model"):
        average_checkpoints([first, second])
    with pytest.raises(CheckpointError, match="no checkpoints"):
        average_checkpoints([])
