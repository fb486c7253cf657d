"""Opening ONNX Runtime sessions on CUDA or the CPU, quietly, and moving arrays to them.

Shared by the language-model and translator adapters; no torch.
"""

from __future__ import annotations

from pathlib import Path

import onnxruntime

from seqgen.errors import CheckpointError, SeqgenError

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
DEVICES = ("auto", "cpu", "cuda")
# Set once CUDA failed to start for a file the CPU then opened: later sessions skip the try,
# which costs a second or more (ONNX Runtime loads the CUDA libraries each time).
_cuda_unusable = False


def create_session(
    path: str | Path, *, device: str = "auto", threads: int | None = None
) -> onnxruntime.InferenceSession:
    """An ONNX Runtime session on ``device``: ``auto``, ``cpu`` or ``cuda``.

    ``auto`` takes CUDA only where ONNX Runtime lists it *and* a session actually starts on
    it (a CUDA build without a usable driver or cuDNN lists it but fails), else the CPU,
    without printing the provider errors of the failed try. ``cuda`` raises SeqgenError when
    CUDA is not usable. ``threads`` caps the CPU threads of one operator (None: ONNX
    Runtime's default, one per core). CheckpointError when the file is not a readable
    ONNX graph.
    """
    if device not in DEVICES:
        raise SeqgenError(f"unknown device {device!r}; choose one of: {', '.join(DEVICES)}")
    global _cuda_unusable
    tried_cuda = False
    if device != "cpu" and not _cuda_unusable and CUDA in onnxruntime.get_available_providers():
        tried_cuda = True
        # Severity 4 (fatal only) for the try: where the CUDA libraries are missing, ONNX
        # Runtime logs an error for each session, which the CPU fallback replaces.
        onnxruntime.set_default_logger_severity(4)
        try:
            session = _try_cuda(path, threads)
        finally:
            onnxruntime.set_default_logger_severity(3)
        if session is not None:
            return session
    if device == "cuda":
        raise SeqgenError(
            "CUDA is not usable by ONNX Runtime here (install onnxruntime-gpu with a CUDA "
            "driver and cuDNN); use --device cpu"
        )
    session = _open(path, [CPU], threads)
    _cuda_unusable = _cuda_unusable or tried_cuda
    return session


def _try_cuda(path: str | Path, threads: int | None) -> onnxruntime.InferenceSession | None:
    """A session on CUDA, or None where CUDA fails to start."""
    try:
        session = _open(path, [CUDA, CPU], threads)
    except SeqgenError:
        return None  # CUDA failed to start, or a bad file, which the CPU try then names
    # ONNX Runtime may quietly drop a provider that fails to initialise.
    return session if session.get_providers()[0] == CUDA else None


def _open(
    path: str | Path, providers: list[str], threads: int | None
) -> onnxruntime.InferenceSession:
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    if threads is not None:
        options.intra_op_num_threads = threads
    if providers[0] == CPU:
        # The layout optimisations of ORT_ENABLE_ALL are for convolutions, and ONNX Runtime
        # 1.31 crashes (segfault) applying them to a float16 LSTM on the CPU.
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    try:
        return onnxruntime.InferenceSession(str(path), options, providers=providers)
    except Exception as error:  # ONNX Runtime raises its own types for bad files and devices
        detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(
            f"ONNX Runtime cannot load {path} ({detail}); re-export the bundle"
        ) from None


def device_of(session: onnxruntime.InferenceSession) -> str:
    """``"cuda"`` when the session runs on CUDA, else ``"cpu"``."""
    return "cuda" if session.get_providers()[0] == CUDA else "cpu"
