"""Data-parallel training on PyTorch's own engine: ``torch.distributed``, launched by torchrun.

``torchrun --nproc_per_node=N -m seqgen train RECIPE`` starts N processes and gives each one
``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE`` and a rendezvous (``MASTER_ADDR``/``MASTER_PORT``).
:func:`start` reads them and joins the process group: NCCL when the processes train on
CUDA (one GPU each, ``cuda:LOCAL_RANK``), gloo on CPUs. Without those variables it returns
a :class:`Distributed` of one process, and every helper here is a no-op, so one code path
serves plain and distributed training.

Rules every trainer follows (fairseq's and pytorch/examples' DDP tutorials follow them too):
rank 0 alone writes checkpoints, metrics and progress; every rank takes part in every
collective in the same order (a rank that skips one stalls the others until the process
group's timeout, ``train.distributed_timeout_minutes``); decisions that end or shape the
run (early stopping, the time budget) are made once and broadcast.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from seqgen.errors import ConfigError, SeqgenError

logger = logging.getLogger(__name__)
T = TypeVar("T")

# What torchrun sets in each process it starts.
_LAUNCH_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


class DistributedError(SeqgenError):
    """The process group cannot be joined, or another training process stopped."""


@dataclass
class Distributed:
    """This process's place in the run: ``rank`` of ``world_size`` processes."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str = ""  # "nccl" | "gloo"; "" when training in one process

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Whether this process writes the run folder and shows progress (rank 0)."""
        return self.rank == 0

    def device(self, requested: torch.device) -> torch.device:
        """The device this rank trains on: its own GPU (``cuda:LOCAL_RANK``) under torchrun."""
        if self.enabled and requested.type == "cuda":
            return torch.device("cuda", self.local_rank)
        return requested

    def sum(self, values: list[float]) -> list[float]:
        """Each value summed over every rank (one all-reduce of a float64 vector)."""
        if not self.enabled:
            return list(values)
        tensor = torch.tensor(values, dtype=torch.float64, device=self._collective_device())
        with named_failures(self):
            dist.all_reduce(tensor)
        return tensor.tolist()

    def broadcast(self, value: T) -> T:
        """Rank 0's ``value`` (any picklable object) on every rank."""
        if not self.enabled:
            return value
        box = [value if self.is_main else None]
        with named_failures(self):
            dist.broadcast_object_list(box, src=0, device=self._collective_device())
        return box[0]  # type: ignore[return-value]

    def gather(self, value: T) -> list[T]:
        """Every rank's ``value``, in rank order, on every rank."""
        if not self.enabled:
            return [value]
        found: list[Any] = [None] * self.world_size
        with named_failures(self):
            dist.all_gather_object(found, value)
        return found

    def from_main(self, make: Callable[[], T]) -> T:
        """``make()`` run on rank 0 only, its result (or its error) on every rank: rank 0
        does what must happen once (prepare the run folder, train the tokenizer) and the
        others never see a different outcome or wait for one that never comes."""
        if not self.enabled:
            return make()
        result: Any = None
        failure = None
        if self.is_main:
            try:
                result = make()
            except BaseException as error:
                failure = (
                    str(error)
                    if isinstance(error, SeqgenError)
                    else f"rank 0 failed ({type(error).__name__}); see its error"
                )
                self.broadcast((None, failure))
                raise
        result, failure = self.broadcast((result, failure))
        if failure is not None:
            raise SeqgenError(failure or "rank 0 failed; see its error")
        return result

    def _collective_device(self) -> torch.device:
        if self.backend == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")


_current = Distributed()


def current() -> Distributed:
    """The process group this process has joined (one process when none)."""
    return _current


def launched_by_torchrun() -> bool:
    return all(name in os.environ for name in _LAUNCH_VARIABLES)


def start(device_name: str, *, timeout_minutes: float) -> Distributed:
    """Join the process group torchrun describes (a one-process Distributed if none).

    ``device_name`` is ``train.device``: processes training on CUDA use NCCL, others gloo.
    Failing to join (a rendezvous out of reach) is one :class:`DistributedError` line.
    """
    global _current
    if _current.enabled or not launched_by_torchrun():
        return _current
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ["LOCAL_RANK"])
    if world_size == 1:
        return _current
    cuda = device_name.startswith("cuda") or (device_name == "auto" and torch.cuda.is_available())
    backend = "nccl" if cuda else "gloo"
    if cuda:
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(
                f"rank {rank} is process {local_rank + 1} on its machine, which has "
                f"{torch.cuda.device_count()} GPUs; start at most one process per GPU "
                "(torchrun --nproc_per_node)"
            )
        torch.cuda.set_device(local_rank)
    address = f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}"
    try:
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=timeout_minutes))
    except (RuntimeError, ValueError) as error:  # DistNetworkError, DistStoreError, timeouts
        raise DistributedError(
            f"rank {rank} of {world_size} could not join the process group at {address} "
            f"({_first_line(error)}); check that every node reaches that address and port, "
            "and that all processes were started"
        ) from None
    _current = Distributed(rank, world_size, local_rank, backend)
    return _current


def stop(*, finished: bool = False) -> None:
    """Leave the process group (the end of ``seqgen train``), so the next run may join one.

    ``finished``: every rank got to the end, so they meet first. A rank that tore gloo down
    while rank 0 was still writing the last checkpoint was aborted ("terminate called
    without an active exception", once in a CI run); after a failure there is no meeting,
    which would wait for the dead rank."""
    global _current
    if _current.enabled and dist.is_initialized():
        if finished:
            dist.barrier()
        dist.destroy_process_group()
    _current = Distributed()


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:200]


# Words in the RuntimeErrors that gloo and NCCL raise when a peer is gone or late.
_PEER_FAILURES = ("gloo", "nccl", "connection closed", "connection reset", "timed out", "c10d")


@contextlib.contextmanager
def named_failures(distributed: Distributed) -> Iterator[None]:
    """A collective that fails because another rank died or stalled past the timeout
    becomes one DistributedError line naming this rank, not a C++ traceback. (gloo notices
    a dead peer at once, by its closed connection; a stalled one after the timeout.)"""
    try:
        yield
    except (RuntimeError, dist.DistError) as error:
        text = str(error).lower()
        peer = isinstance(error, dist.DistError) or any(word in text for word in _PEER_FAILURES)
        if not distributed.enabled or not peer:
            raise
        # The group is broken for good: leave it now. Left to the interpreter's exit, gloo's
        # threads were sometimes destroyed still running, and the process aborted (SIGABRT,
        # "terminate called without an active exception") after printing its one line.
        stop()
        raise DistributedError(
            f"rank {distributed.rank} of {distributed.world_size}: another training process "
            f"stopped or stalled ({_first_line(error)}); training stopped; the run folder "
            "keeps its last whole checkpoint, continue it with --resume"
        ) from None


@contextlib.contextmanager
def stopped_by_launcher(distributed: Distributed) -> Iterator[None]:
    """When one rank fails, torchrun stops the others with SIGTERM: each then ends with
    one DistributedError line (through the CLI) instead of dying silently, and a checkpoint
    it was writing is dropped whole (files.atomic_write removes its temporary file)."""
    if not distributed.enabled:
        yield
        return

    def stop(signal_number: int, frame: object) -> None:
        raise DistributedError(
            f"rank {distributed.rank} of {distributed.world_size}: stopped by the launcher "
            "(torchrun stops every rank when one fails; its report names the first failure); "
            "the run folder keeps its last whole checkpoint, continue it with --resume"
        )

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def wrap(
    module: torch.nn.Module, distributed: Distributed, *, find_unused: bool = False
) -> torch.nn.Module:
    """``module`` inside DistributedDataParallel (gradients averaged over ranks during the
    backward pass), or ``module`` itself in one process. DDP copies rank 0's parameters
    and buffers to every rank here, so all start from the same weights."""
    if not distributed.enabled:
        return module
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [distributed.local_rank] if distributed.backend == "nccl" else None
    with named_failures(distributed):
        return DistributedDataParallel(
            module,
            device_ids=device_ids,
            forward_sync_buffers=False,  # buffers (the shortlist table) are not trained
            find_unused_parameters=find_unused,
            gradient_as_bucket_view=True,
        )


def no_sync(network: torch.nn.Module) -> contextlib.AbstractContextManager:
    """DDP's ``no_sync()``: accumulate gradients locally, skipping the all-reduce (for all
    micro-batches of a step but the last); a no-op for a plain module."""
    method = getattr(network, "no_sync", None)
    return method() if method is not None else contextlib.nullcontext()


def micro_batch_size(
    name: str, value: int, *, scope: str, distributed: Distributed, accumulate_steps: int
) -> int:
    """The batch one micro-batch of one process holds, from a recipe's ``value``.

    ``train.batch_scope = "process"``: ``value`` is each micro-batch's (the global batch
    grows with processes and ``train.accumulate_steps``); ``"global"``: ``value`` is the
    whole step's, split over processes x accumulate_steps, which must divide it.
    """
    if scope == "process":
        return value
    parts = distributed.world_size * accumulate_steps
    if value % parts:
        raise ConfigError(
            f"train.{name} = {value} is the global batch (train.batch_scope = 'global') but "
            f"{distributed.world_size} processes x train.accumulate_steps = {accumulate_steps} "
            f"do not divide it; use a multiple of {parts} or train.batch_scope = 'process'"
        )
    return value // parts
