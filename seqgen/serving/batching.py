"""Dynamic batching: the requests of one model that wait together are decoded together.

One :class:`Batcher` per model runs one decode at a time on its own thread (the pipelines
spread a batch over the CPU's cores themselves, and PyTorch's thread settings are
process-wide, so two decodes of one model would fight over them). Requests that arrive
while a decode runs wait in a bounded queue; when the decode ends, the waiting requests with
the same options as the oldest one, up to ``max_batch`` texts, become the next decode. A
request that finds the model idle waits ``window`` seconds for company first. This is the
scheme of Marian's server and TorchServe's batching (``batch_size``, ``max_batch_delay``),
without a fixed batch size: under load, batches grow by themselves.

Each answer goes back to its own request; with batch-independent decoding it is the same
whatever else was in the batch. A batch that fails on one request's input is decoded again
request by request, so a bad request fails alone.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from seqgen.errors import SeqgenError
from seqgen.serving.endpoint import RequestError, Stream

logger = logging.getLogger(__name__)

# decode(texts, options, stream) -> one result per text; runs on the batcher's thread.
Decode = Callable[[list[str], Any, Stream], list[Any]]


class Cancelled(Exception):
    """Raised inside a streamed decode whose request has gone (its client left or timed out)."""


@dataclass
class Waiting:
    """One request in the queue."""

    texts: list[str]
    options: Any
    key: Hashable  # requests with equal keys may share a decode
    future: asyncio.Future
    stream: Stream = None
    arrived: float = field(default_factory=time.monotonic)


class Batcher:
    """Gathers one model's requests into decodes (see the module's docstring)."""

    def __init__(
        self,
        decode: Decode,
        *,
        window: float = 0.005,
        max_batch: int = 256,
        max_queued: int = 4096,
        batches: bool = True,
        name: str = "model",
    ) -> None:
        self.decode = decode
        self.window = window
        self.max_batch = max_batch
        self.max_queued = max_queued
        self.batches = batches
        self.queued = 0  # texts waiting
        self.waiting: deque[Waiting] = deque()
        self.executor = ThreadPoolExecutor(1, thread_name_prefix=f"seqgen-{name}")
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        """Start serving the queue (inside the server's event loop)."""
        self._wakeup = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._serve())

    async def stop(self) -> None:
        """Stop after the decode in progress (the server has answered its requests by now)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self.executor.shutdown(wait=True)

    async def submit(self, texts: list[str], options: Any, key: Hashable, stream: Stream = None):
        """Queue ``texts`` and wait for their results; RequestError (503) when the queue is
        full. Cancelling the caller (a timeout) takes the request out of the queue."""
        if self.queued + len(texts) > self.max_queued:
            raise RequestError(
                f"the server is busy ({self.queued} texts waiting); retry in a moment", status=503
            )
        future = asyncio.get_running_loop().create_future()
        self.waiting.append(Waiting(texts, options, key, future, stream))
        self.queued += len(texts)
        assert self._wakeup is not None, "Batcher.start() first"
        self._wakeup.set()
        return await future

    async def _serve(self) -> None:
        assert self._wakeup is not None
        while True:
            if not self.waiting:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            delay = self.waiting[0].arrived + self.window - time.monotonic()
            if delay > 0 and self.queued < self.max_batch:
                await asyncio.sleep(delay)
            batch = self._take()
            if batch:
                await self._run(batch)

    def _take(self) -> list[Waiting]:
        """The next decode's requests: the oldest live one, and those after it with its key
        (streamed requests go alone), up to ``max_batch`` texts."""
        batch: list[Waiting] = []
        size = 0
        for waiting in list(self.waiting):
            if waiting.future.done():  # cancelled while it waited
                self.waiting.remove(waiting)
                self.queued -= len(waiting.texts)
                continue
            if batch and not self._joins(batch[0], waiting, size):
                continue
            self.waiting.remove(waiting)
            self.queued -= len(waiting.texts)
            batch.append(waiting)
            size += len(waiting.texts)
            if waiting.stream is not None or not self.batches:
                break
        return batch

    def _joins(self, first: Waiting, waiting: Waiting, size: int) -> bool:
        alone = first.stream is not None or waiting.stream is not None or not self.batches
        return (
            not alone and waiting.key == first.key and size + len(waiting.texts) <= self.max_batch
        )

    async def _run(self, batch: list[Waiting]) -> None:
        """Decode ``batch`` on the thread; on an input error, each request again alone."""
        try:
            results = await self._decode(batch)
        except (SeqgenError, Cancelled) as error:
            if len(batch) > 1:
                for waiting in batch:
                    await self._run([waiting])
                return
            settle(batch[0].future, error=error)
            return
        except Exception as error:  # a bug: the request gets a 500, the server goes on
            logger.exception("decoding failed")
            for waiting in batch:
                settle(waiting.future, error=error)
            return
        start = 0
        for waiting in batch:
            settle(waiting.future, result=results[start : start + len(waiting.texts)])
            start += len(waiting.texts)

    async def _decode(self, batch: list[Waiting]) -> list[Any]:
        texts = [text for waiting in batch for text in waiting.texts]
        stream, listened = batch[0].stream, None
        if stream is not None or not self.batches:
            # One request alone (a stream, a generator's): its decode stops at the next piece
            # once nobody waits for it (the client left, or its time ran out).
            future = batch[0].future

            def listened(index: int, piece: str) -> None:
                if future.done():
                    raise Cancelled
                if stream is not None:
                    stream(index, piece)

        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self.executor, self.decode, texts, batch[0].options, listened
        )


def settle(future: asyncio.Future, *, result: Any = None, error: BaseException | None = None):
    """Give ``future`` its result or error unless its request has gone."""
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
