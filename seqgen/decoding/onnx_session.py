"""Opening ONNX Runtime sessions on CUDA or the CPU, quietly, and running them with the
state kept in device memory (I/O binding).

Shared by the language-model and translator adapters; no torch.
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import itertools
import sys
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime

from seqgen.decoding.contract import TOP_CANDIDATES, TopLogProbs
from seqgen.decoding.float_environment import creating_sessions, running_sessions
from seqgen.errors import CheckpointError, SeqgenError

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
DEVICES = ("auto", "cpu", "cuda")
# A step graph's first outputs: the log-probs and each row's best ones (their ids too).
STEP_OUTPUTS = ("log_probs", "top_log_probs", "top_ids")
# The step graph's input (bundle format 5) saying how many of each row's best log-probs to
# return: int64 (1,), capped by the graph at min(TOP_CANDIDATES, vocab).
TOP_K_INPUT = "top_k"
NEW_PREFIX = "new_"  # state outputs of a step (or prime) graph
SELECTED_PREFIX = "selected_"  # outputs of a select graph
# Set once CUDA failed to start for a file the CPU then opened: later sessions skip the try,
# which costs a second or more (ONNX Runtime loads the CUDA libraries each time).
_cuda_unusable = False
# Set only inside profiling_sessions: where the sessions opened meanwhile write their trace.
_profile_prefix: str | None = None
_profiled = itertools.count()  # a file prefix per session: ONNX Runtime names by the second


@contextlib.contextmanager
def profiling_sessions(prefix: str | Path) -> Iterator[None]:
    """Sessions opened inside the block record ONNX Runtime's profile (for benchmarks, such
    as ``seqgen.benchmark.profile_decode``; it slows every run). Each session writes one JSON
    trace, named from ``prefix`` (a path and the start of a file name) and its graph's file,
    when its ``end_profiling()`` is called, which returns the trace's path."""
    global _profile_prefix
    previous, _profile_prefix = _profile_prefix, str(prefix)
    try:
        yield
    finally:
        _profile_prefix = previous


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
    if device != "cpu" and not _cuda_unusable and _cuda_listed_and_driver_loads():
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


def _cuda_listed_and_driver_loads() -> bool:
    """Whether ONNX Runtime lists CUDA and the CUDA driver library loads. onnxruntime-gpu
    lists CUDA on every machine; without a driver, trying a session costs 50 ms of a
    one-line translation's start to find out, where loading the driver takes 0.3 ms."""
    global _cuda_unusable
    if CUDA not in onnxruntime.get_available_providers():
        return False
    driver = "nvcuda.dll" if sys.platform == "win32" else "libcuda.so.1"
    try:
        ctypes.CDLL(driver)
    except OSError:
        _cuda_unusable = True
        return False
    return True


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
    # Denormals as zero: a log-softmax over a row with masked (-inf) or far lower entries
    # sums exp() results that ONNX Runtime's kernel clamps to denormals, and the CPU's slow
    # path for them made a translator's shortlist-masked LogSoftmax 7x slower (1.5 -> 11 ms
    # for 500 rows x 2,500 tokens). Values under 1e-38 change nothing decoding can see.
    options.add_session_config_entry("session.set_denormal_as_zero", "1")
    if threads is not None:
        options.intra_op_num_threads = threads
    if _profile_prefix is not None:
        options.enable_profiling = True
        options.profile_file_prefix = f"{_profile_prefix}-{Path(path).stem}-{next(_profiled)}"
    if providers[0] == CPU:
        # The layout optimisations of ORT_ENABLE_ALL are for convolutions, and ONNX Runtime
        # 1.31 crashes (segfault) applying them to a float16 LSTM on the CPU.
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    try:
        with creating_sessions():  # keeps the FTZ/DAZ it sets, gives this thread its own
            return onnxruntime.InferenceSession(str(path), options, providers=providers)
    except Exception as error:  # ONNX Runtime raises its own types for bad files and devices
        detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(
            f"ONNX Runtime cannot load {path} ({detail}); re-export the bundle"
        ) from None


def device_of(session: onnxruntime.InferenceSession) -> str:
    """``"cuda"`` when the session runs on CUDA, else ``"cpu"``."""
    return "cuda" if session.get_providers()[0] == CUDA else "cpu"


def run_session(
    session: onnxruntime.InferenceSession,
    inputs: Mapping[str, Any],
    *,
    host_outputs: Sequence[str],
    device_outputs: Sequence[str] = (),
    device: str | None = None,
) -> dict[str, Any]:
    """Run ``session``: ``host_outputs`` come back as numpy arrays, ``device_outputs`` too
    when ``device`` is None, else as ``OrtValue``s left in ``device``'s memory (I/O binding).

    With ``device``, numpy inputs are copied in and ``OrtValue`` inputs (outputs of earlier
    runs) are used where they are, so a recurrent state never leaves the device.
    """
    if device is None:
        names = [*host_outputs, *device_outputs]
        with running_sessions():
            outputs = session.run(names, dict(inputs))
        return dict(zip(names, outputs, strict=True))
    binding = session.io_binding()
    for name, value in inputs.items():
        if isinstance(value, np.ndarray):
            binding.bind_cpu_input(name, value)
        else:
            binding.bind_ortvalue_input(name, value)
    for name in host_outputs:
        binding.bind_output(name)  # host memory
    for name in device_outputs:
        binding.bind_output(name, device)
    with running_sessions():
        session.run_with_iobinding(binding)
    values = dict(zip([*host_outputs, *device_outputs], binding.get_outputs(), strict=True))
    return {name: values[name].numpy() if name in host_outputs else values[name] for name in values}


def take_rows(array: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``array[rows]``, ``rows`` ``(n,)`` int64 on axis 0, as ``ndarray.take``: the same copy,
    without fancy indexing's general machinery (a (320, 256) float32 state: 7 against 12 µs,
    a few times a decoding step)."""
    return array.take(rows, axis=0)


def to_device(array: np.ndarray, device: str) -> onnxruntime.OrtValue:
    """A host array copied into ``device``'s memory (``"cpu"`` or ``"cuda"``)."""
    return onnxruntime.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array), device, 0)


def run_select(
    session: onnxruntime.InferenceSession,
    state: Mapping[str, Any],
    names: Sequence[str],
    rows: np.ndarray,
    device: str,
) -> dict[str, Any]:
    """Gather ``rows`` of the state entries ``names`` on the device with a select graph."""
    outputs = run_session(
        session,
        {"rows": np.ascontiguousarray(rows, dtype=np.int64), **{n: state[n] for n in names}},
        host_outputs=(),
        device_outputs=[SELECTED_PREFIX + name for name in names],
        device=device,
    )
    return {name: outputs[SELECTED_PREFIX + name] for name in names}


def open_graphs(
    folder: str | Path,
    files: Mapping[str, str],
    *,
    device: str = "auto",
    threads: int | None = None,
    io_binding: bool | None = None,
) -> dict[str, onnxruntime.InferenceSession | None]:
    """Sessions for a bundle's graphs ``files`` (name -> file name, ``select`` among them).

    The first graph opens on ``device`` (see :func:`create_session`) and the others where it
    could, so the state never changes device. ``select`` is opened only where I/O binding
    will use it (``io_binding`` True, or None on CUDA), else it is None.
    """
    on_the_cpu = device == "cpu" or (device == "auto" and not _cuda_listed_and_driver_loads())
    if on_the_cpu and threads == 1:
        return _open_on_the_cpu(folder, files, io_binding=io_binding)
    sessions: dict[str, onnxruntime.InferenceSession | None] = {}
    where = device
    for name, file in files.items():  # "select" is last, where the device is known
        if name == "select" and not (io_binding if io_binding is not None else where == "cuda"):
            sessions[name] = None
            continue
        session = create_session(Path(folder) / file, device=where, threads=threads)
        sessions[name], where = session, device_of(session)
    return sessions


def _open_on_the_cpu(
    folder: str | Path, files: Mapping[str, str], *, io_binding: bool | None
) -> dict[str, onnxruntime.InferenceSession | None]:
    """:func:`open_graphs` where every graph opens on the CPU with one thread per operator:
    all at once, a thread each (ONNX Runtime optimises a graph without holding the GIL),
    which took a translator's encoder and step graphs from 0.110 to 0.091 s of a one-line
    translation's start. Not with thread pools: their threads spin, and sessions that
    create them side by side took longer than one after the other."""
    wanted = {name: file for name, file in files.items() if name != "select" or io_binding}
    with ThreadPoolExecutor(max_workers=max(len(wanted), 1)) as pool:
        opened = {
            name: pool.submit(create_session, Path(folder) / file, device="cpu", threads=1)
            for name, file in wanted.items()
        }
        return {name: opened[name].result() if name in opened else None for name in files}


class DeviceState:
    """What the ONNX Runtime adapters share: their graphs' sessions (``GRAPHS``, each held as
    ``<name>_session``), where the state lives between steps, and how many log-probs per row
    the search reads (``narrowed``). A subclass sets ``step_session`` and ``device`` and then
    calls ``_keep_state_on_device``."""

    GRAPHS: tuple[str, ...] = ()
    step_session: onnxruntime.InferenceSession
    device: str
    io_binding: bool
    candidates: int | None

    @classmethod
    def from_files(
        cls,
        folder: str | Path,
        files: Mapping[str, str],
        *,
        device: str = "auto",
        threads: int | None = None,
        io_binding: bool | None = None,
    ) -> Any:
        """Open the graphs ``files`` (name -> file, the names of ``GRAPHS``) of ``folder``."""
        sessions = open_graphs(folder, files, device=device, threads=threads, io_binding=io_binding)
        return cls(*(sessions[name] for name in cls.GRAPHS), io_binding=io_binding)

    @property
    def sessions(self) -> dict[str, onnxruntime.InferenceSession | None]:
        return {name: getattr(self, f"{name}_session") for name in self.GRAPHS}

    def _keep_state_on_device(
        self, select: onnxruntime.InferenceSession | None, io_binding: bool | None
    ) -> None:
        # Keep the state in the session's memory: by default only on CUDA, where it pays.
        self.io_binding = self.device == "cuda" if io_binding is None else io_binding
        if self.io_binding and select is None:
            raise CheckpointError("the bundle has no select graph; re-export the bundle")
        self.candidates = None
        # Read once, not at every step: (rows, vocab) and (rows, K) of the step graph.
        shapes = {node.name: node.shape for node in self.step_session.get_outputs()}
        self._vocab_size = shapes[STEP_OUTPUTS[0]][1]
        self._top_count = shapes[STEP_OUTPUTS[2]][1]
        inputs = {node.name for node in self.step_session.get_inputs()}
        self._takes_top_k = TOP_K_INPUT in inputs
        if not isinstance(self._top_count, int):  # format 5: min(top_k, 16, vocab)
            vocab = self._vocab_size  # a name for a shortlisted step, of >= 16 columns
            self._top_count = (
                min(TOP_CANDIDATES, vocab) if isinstance(vocab, int) else TOP_CANDIDATES
            )

    @property
    def bound_device(self) -> str | None:
        """Where the state lives between steps with I/O binding; None: numpy on the host."""
        return self.device if self.io_binding else None

    def narrowed(self, candidates: int) -> Any:
        """This step function, for a search that reads ``candidates`` log-probs per row
        (``seqgen.decoding.contract.narrowed``); a shallow copy, the original unchanged."""
        view = copy.copy(self)
        view.candidates = candidates
        return view

    def top_k_input(self, count: int) -> dict[str, np.ndarray]:
        """The step's ``top_k`` feed asking for ``count`` candidates per row (a graph
        without the input, of format 4 or older, returns its fixed ``K``)."""
        if not self._takes_top_k:
            return {}
        return {TOP_K_INPUT: np.array([count], dtype=np.int64)}

    def _run_step(
        self, inputs: Mapping[str, Any], state_outputs: Sequence[str]
    ) -> tuple[np.ndarray | TopLogProbs, dict[str, Any]]:
        """Run the step graph (outputs ``STEP_OUTPUTS``, then ``state_outputs``).

        Returns the log-probs and the state outputs by name. The log-probs are ``(rows,
        vocab)`` float32, or, when search reads only ``candidates`` per row and the graph's
        top candidates hold that many, the graph's top candidates (:class:`TopLogProbs`): only
        those come to the host. With I/O binding the state stays on the device.
        """
        log_probs_name, values_name, ids_name = STEP_OUTPUTS
        use_top = self.candidates is not None and self.candidates <= self._top_count
        host = [values_name, ids_name] if use_top else [log_probs_name]
        inputs = {**inputs, **self.top_k_input(self.candidates if use_top else 1)}
        device = self.bound_device
        if device is None:
            outputs = run_session(self.step_session, inputs, host_outputs=[*host, *state_outputs])
        else:
            outputs = run_session(
                self.step_session,
                inputs,
                host_outputs=host,
                device_outputs=[*(n for n in STEP_OUTPUTS if n not in host), *state_outputs],
                device=device,
            )
        state = {name: outputs[name] for name in state_outputs}
        if not use_top:
            return outputs[log_probs_name], state
        return TopLogProbs(outputs[values_name], outputs[ids_name]), state
