"""Timing helpers for ``seqgen bench``: medians of repeated runs, rows counted per step, memory."""

from __future__ import annotations

import resource
import statistics
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from seqgen.tasks.translation.source_rows import OUTPUT_GROUPING, OUTPUT_IDS


def median_rate(run: Callable[[], float], *, repeats: int, warmup: int = 1) -> tuple[float, float]:
    """``run()`` does some work and returns how much; after ``warmup`` untimed calls, the
    median over ``repeats`` calls of work per second, and the median seconds per call."""
    for _ in range(warmup):
        run()
    rates, times = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        work = run()
        seconds = time.perf_counter() - started
        rates.append(work / seconds)
        times.append(seconds)
    return statistics.median(rates), statistics.median(times)


class CountingStep:
    """A step function that counts the rows it steps (for FLOPs) and otherwise delegates.

    Search narrows step functions (``contract.narrowed``); the narrowed view is wrapped too,
    so every step is counted.
    """

    def __init__(
        self,
        inner: Any,
        counts: dict[str, int] | None = None,
        *,
        vocab_size: int = 0,
        lock: threading.Lock | None = None,
    ) -> None:
        self.inner = inner
        self.vocab_size = vocab_size
        self.lock = lock or threading.Lock()  # batches may be searched from several threads
        # scored: rows x the tokens each row scores (the vocabulary, a batch's shortlist, or
        # a grouped step's group union: U of the G groups' G * U ids, bundle format 6)
        self.counts = counts if counts is not None else {"rows": 0, "steps": 0, "scored": 0}

    def step(self, tokens: np.ndarray, state: Any) -> tuple[np.ndarray, Any]:
        rows = int(tokens.shape[0])
        shortlist = state.get(OUTPUT_IDS) if isinstance(state, Mapping) else None
        grouping = state.get(OUTPUT_GROUPING) if isinstance(state, Mapping) else None
        with self.lock:
            self.counts["rows"] += rows
            self.counts["steps"] += 1
            if shortlist is None:
                scored = self.vocab_size
            else:
                scored = len(shortlist) if grouping is None else grouping[1]
            self.counts["scored"] += rows * scored
        return self.inner.step(tokens, state)

    def narrowed(self, candidates: int) -> CountingStep:
        narrow = getattr(self.inner, "narrowed", None)
        inner = narrow(candidates) if narrow else self.inner
        return CountingStep(inner, self.counts, vocab_size=self.vocab_size, lock=self.lock)

    def __getattr__(self, name: str) -> Any:  # start, select, device, model, ...
        return getattr(self.inner, name)


def peak_memory_bytes() -> int:
    """This process's peak resident memory so far."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # Linux reports KiB
