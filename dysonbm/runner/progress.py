"""The one-line progress report of a run on stderr."""

from __future__ import annotations

import math
import sys
import time


class Progress:
    """A one-line progress report on stderr (rewritten in place on a terminal)."""

    def __init__(self, total_steps: int, enabled: bool = True, stream=None):
        self.total = total_steps
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.tty = getattr(self.stream, "isatty", lambda: False)()
        self.start = time.perf_counter()
        self.last_print = 0.0
        self.compile_s = 0.0
        self.cached = 0

    def exclude(self, seconds: float, cached: bool = False) -> None:
        """Time spent compiling (or loading a program from the persistent cache, ``cached``):
        reported apart, not counted in the rate."""
        self.compile_s += seconds
        self.cached += cached
        self.start += seconds

    def update(self, done_steps: int, label: str) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if not self.tty and now - self.last_print < 2.0 and done_steps < self.total:
            return
        self.last_print = now
        elapsed = now - self.start
        rate = done_steps / elapsed if elapsed > 0 else 0.0
        eta = (self.total - done_steps) / rate if rate > 0 else float("inf")
        frac = done_steps / self.total if self.total else 1.0
        bar = "#" * int(24 * frac)
        line = (f"[{bar:<24}] {frac:6.1%} {label}  {rate:.3g} replica-steps/s  eta {_duration(eta)}"
                f"  (compile {self.compile_s:.1f} s{_cached_text(self.cached)})")
        end = "\r" if self.tty and done_steps < self.total else "\n"
        print(line, end=end, file=self.stream, flush=True)

    def close(self) -> None:
        if self.enabled and self.tty:
            print(file=self.stream, flush=True)


def _cached_text(cached: int) -> str:
    return f", {cached} program{'s' * (cached != 1)} from the cache" if cached else ""


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")
