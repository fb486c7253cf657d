"""The training progress display on stderr: a tqdm bar on a terminal, plain lines when piped.

tqdm draws and redraws the bar (terminal width, rate, no flicker); seqgen supplies what tqdm
cannot know: the loss, the tokens per second, and an ETA from whichever limit ends the run
first, ``train.max_steps`` or ``train.max_minutes`` (tqdm's own ETA only knows steps).
"""

from __future__ import annotations

import sys
import time

from tqdm import tqdm


def _clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 3600:d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
    """A bar on a terminal; on a pipe or file, a line every ``log_every`` steps."""

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
        self.bar: tqdm | None = None

    def eta(self, step: int) -> float:
        """Seconds left: the steps left at this invocation's pace, or the time budget left,
        whichever ends first."""
        assert self.first_step is not None
        spent = time.perf_counter() - self.start
        remaining = spent / max(1, step - self.first_step) * (self.total_steps - step)
        if self.seconds is not None:
            remaining = min(remaining, self.seconds - spent)
        return remaining

    def update(self, step: int, *, loss: float, tokens_per_second: float) -> None:
        if not self.enabled:
            return
        if self.first_step is None:
            self.first_step = step - 1
        status = f"loss {loss:.4f} {tokens_per_second:,.0f} tok/s ETA {_clock(self.eta(step))}"
        if self.interactive:
            self._bar().update(step - self._bar().n)
            self._bar().set_postfix_str(status, refresh=True)
        elif step % self.log_every == 0 or step == self.total_steps:
            sys.stderr.write(f"step {step}/{self.total_steps} {status}\n")
            sys.stderr.flush()

    def _bar(self) -> tqdm:
        if self.bar is None:
            self.bar = tqdm(
                total=self.total_steps,
                initial=self.first_step or 0,
                file=sys.stderr,
                dynamic_ncols=True,
                # seqgen's ETA (in the postfix) replaces tqdm's, which ignores max_minutes.
                bar_format="{percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} {postfix}",
            )
        return self.bar

    def message(self, text: str) -> None:
        """Print a line of its own (e.g. validation results) without breaking the bar."""
        if self.enabled:
            tqdm.write(text, file=sys.stderr)

    def announce(self, text: str) -> None:
        """A line about the run itself (its global batch), shown even without progress."""
        if self.enabled:
            self.message(text)
        else:
            sys.stderr.write(text + "\n")
            sys.stderr.flush()

    def close(self) -> None:
        """End the bar's line (training is over)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
