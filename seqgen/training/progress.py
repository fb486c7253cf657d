"""A one-line progress display (loss, tokens/s, ETA) on stderr; plain lines when piped."""

from __future__ import annotations

import sys
import time


def _clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 3600:d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
    """Redraws one line on a terminal; prints a line every ``log_every`` steps otherwise."""

    def __init__(
        self,
        total_steps: int,
        *,
        enabled: bool = True,
        log_every: int = 50,
        seconds: float | None = None,
    ) -> None:
        """``seconds``: the time budget (train.max_minutes) that stops training before
        ``total_steps`` if it runs out first; the ETA is the sooner of the two."""
        self.total_steps = total_steps
        self.seconds = seconds
        self.enabled = enabled
        self.log_every = log_every
        self.interactive = sys.stderr.isatty()
        self.start = time.perf_counter()
        self.first_step: int | None = None

    def update(self, step: int, *, loss: float, tokens_per_second: float) -> None:
        if not self.enabled:
            return
        if self.first_step is None:
            self.first_step = step - 1
        done = step - self.first_step
        spent = time.perf_counter() - self.start
        remaining = spent / max(1, done) * (self.total_steps - step)
        if self.seconds is not None:
            remaining = min(remaining, self.seconds - spent)
        width = 24
        filled = int(width * step / max(1, self.total_steps))
        bar = "#" * filled + "-" * (width - filled)
        line = (
            f"[{bar}] {step}/{self.total_steps} loss {loss:.4f} "
            f"{tokens_per_second:,.0f} tok/s ETA {_clock(remaining)}"
        )
        if self.interactive:
            sys.stderr.write("\r" + line)
            sys.stderr.flush()
        elif step % self.log_every == 0 or step == self.total_steps:
            sys.stderr.write(line + "\n")

    def message(self, text: str) -> None:
        """Print a line of its own (e.g. validation results) without breaking the bar."""
        if self.enabled:
            sys.stderr.write(("\n" if self.interactive else "") + text + "\n")
            sys.stderr.flush()
