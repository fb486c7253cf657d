"""The dynamic batcher on a scripted decode: who is decoded with whom, and what comes back."""

from __future__ import annotations

import asyncio
import threading

import pytest

from seqgen.errors import SeqgenError
from seqgen.serving.batching import Batcher
from seqgen.serving.endpoint import RequestError


class Recorder:
    """A decode that upper-cases texts, records each batch, and fails on "bad"."""

    def __init__(self, delay: float = 0.0) -> None:
        self.batches: list[list[str]] = []
        self.delay = delay
        self.release = threading.Event()
        self.release.set()

    def __call__(self, texts, options, stream):
        self.release.wait(5)
        self.batches.append(list(texts))
        if "bad" in texts:
            raise SeqgenError("a bad text")
        return [f"{text.upper()}/{options}" for text in texts]


def run(coroutine):
    return asyncio.run(coroutine)


async def started(decode, **settings) -> Batcher:
    batcher = Batcher(decode, **settings)
    batcher.start()
    return batcher


def test_requests_waiting_together_are_decoded_together_and_answered_apart():
    async def scenario():
        decode = Recorder()
        batcher = await started(decode, window=0.05)
        answers = await asyncio.gather(
            *(batcher.submit([f"s{i}", f"t{i}"], "o", "o") for i in range(5))
        )
        await batcher.stop()
        return decode.batches, answers

    batches, answers = run(scenario())
    assert batches == [["s0", "t0", "s1", "t1", "s2", "t2", "s3", "t3", "s4", "t4"]]
    assert answers[3] == ["S3/o", "T3/o"]


def test_other_options_wait_for_their_own_batch_and_max_batch_splits():
    async def scenario():
        decode = Recorder()
        batcher = await started(decode, window=0.05, max_batch=3)
        jobs = [
            batcher.submit([text], key, key)
            for text, key in [("a", 1), ("b", 2), ("c", 1), ("d", 1), ("e", 1)]
        ]
        answers = await asyncio.gather(*jobs)
        await batcher.stop()
        return decode.batches, answers

    batches, answers = run(scenario())
    assert batches == [["a", "c", "d"], ["b"], ["e"]]
    assert answers == [["A/1"], ["B/2"], ["C/1"], ["D/1"], ["E/1"]]


def test_a_bad_request_fails_alone():
    async def scenario():
        batcher = await started(Recorder(), window=0.05)
        answers = await asyncio.gather(
            batcher.submit(["fine"], "o", "o"),
            batcher.submit(["bad"], "o", "o"),
            batcher.submit(["also"], "o", "o"),
            return_exceptions=True,
        )
        await batcher.stop()
        return answers

    fine, bad, also = run(scenario())
    assert fine == ["FINE/o"] and also == ["ALSO/o"]
    assert isinstance(bad, SeqgenError)


def test_a_full_queue_answers_busy_and_a_cancelled_request_is_never_decoded():
    async def scenario():
        decode = Recorder()
        decode.release.clear()  # the first decode blocks; the others wait in the queue
        batcher = await started(decode, window=0, max_queued=3)
        first = asyncio.ensure_future(batcher.submit(["first"], "o", "o"))
        await asyncio.sleep(0.05)
        gone = asyncio.ensure_future(batcher.submit(["gone"], "o", "o"))
        kept = asyncio.ensure_future(batcher.submit(["kept", "too"], "o", "o"))
        await asyncio.sleep(0.01)
        with pytest.raises(RequestError) as busy:
            await batcher.submit(["over"], "o", "o")
        gone.cancel()
        decode.release.set()
        answers = await asyncio.gather(first, kept)
        await batcher.stop()
        return busy.value, answers, decode.batches

    busy, answers, batches = run(scenario())
    assert busy.status == 503 and "busy" in str(busy)
    assert answers == [["FIRST/o"], ["KEPT/o", "TOO/o"]]
    assert batches == [["first"], ["kept", "too"]]
