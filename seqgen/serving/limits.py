"""What one request may ask of the server, and how it batches (``seqgen serve``'s flags)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """What one request may ask of the server."""

    max_body_bytes: int = 1_000_000
    max_texts: int = 256  # texts in one request
    timeout: float = 60.0  # seconds from arrival to the last byte of the answer
    window: float = 0.005  # seconds an idle model waits to gather a batch
    max_batch: int = 256  # texts decoded together
    max_queued: int = 4096  # texts waiting per model; more are answered 503
