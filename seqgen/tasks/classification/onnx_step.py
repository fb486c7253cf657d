"""The ONNX Runtime step function of a classifier: one graph reads whole texts (no torch).

``classify.onnx``: ``token_ids`` ``(rows, time)`` int64 -> ``probabilities`` ``(rows,
classes)`` float32, both axes of the input dynamic.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnxruntime

from seqgen.decoding.float_environment import running_sessions
from seqgen.decoding.onnx_session import create_session, device_of


class ClassifierOnnxStep:
    """``probabilities(token_ids)`` of a classifier bundle's graph."""

    def __init__(self, session: onnxruntime.InferenceSession) -> None:
        self.session = session
        self.device = device_of(session)

    @classmethod
    def from_files(
        cls,
        folder: str | Path,
        files: Mapping[str, str],
        *,
        device: str = "auto",
        threads: int | None = None,
        io_binding: bool | None = None,  # one call per batch: nothing to keep on the device
    ) -> ClassifierOnnxStep:
        return cls(create_session(Path(folder) / files["classify"], device=device, threads=threads))

    @property
    def sessions(self) -> dict[str, onnxruntime.InferenceSession]:
        return {"classify": self.session}

    def probabilities(self, token_ids: np.ndarray) -> np.ndarray:
        """``(rows, time)`` int64 ids of whole texts -> ``(rows, classes)`` float32."""
        with running_sessions():
            (probabilities,) = self.session.run(["probabilities"], {"token_ids": token_ids})
        return probabilities
