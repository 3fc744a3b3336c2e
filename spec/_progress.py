"""Progress for logs: plain lines, at most one every few seconds, when the output is not a terminal.

A terminal redraws a progress bar in place with carriage returns; a file does not. Redirected to a file
(``cegppo-train > run.log 2>&1``, a CI log), every redraw stays: the default trainer run wrote 71 KB of
tqdm updates. The command lines (``cegppo-train``, ``cegppo-conformance``) keep their terminal display
on a terminal and write through `ProgressLog` otherwise: whole lines, each at least `interval` seconds
after the one before, and the last one always, so that a log ends with where the work stopped.
No framework is imported here; the trainer chooses between tqdm and `LogBar`.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from typing import TextIO

__all__ = ["DEFAULT_INTERVAL", "LogBar", "ProgressLog", "is_terminal"]

DEFAULT_INTERVAL = 10.0
"""Seconds between two progress lines in a log (a 3-minute run writes about 20)."""


def is_terminal(stream: object) -> bool:
    """Whether `stream` is an interactive terminal (False for files, pipes, and streams without ``isatty``)."""
    isatty = getattr(stream, "isatty", None)
    if not callable(isatty):
        return False
    try:
        return bool(isatty())
    except ValueError:  # a closed file
        return False


class ProgressLog:
    """Writes progress lines to a stream, at most one every `interval` seconds (`write`'s `force` aside).

    Args:
        stream: where the lines go; None (default) is ``sys.stderr`` as it is at each write, so a
            redirection made after construction (pytest's capture, contextlib.redirect_stderr) holds.
        interval: the least number of seconds between two lines (> 0, finite).
        clock: the time source in seconds (``time.monotonic``; tests pass their own).
    """

    def __init__(self, stream: TextIO | None = None, *, interval: float = DEFAULT_INTERVAL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if isinstance(interval, bool) or not isinstance(interval, (int, float)):
            raise TypeError(f"interval must be a number of seconds, got {type(interval).__name__}")
        if not (math.isfinite(interval) and interval > 0):
            raise ValueError(f"interval must be finite and > 0 seconds, got {interval!r}")
        if not callable(clock):
            raise TypeError(f"clock must be callable, got {type(clock).__name__}")
        self.stream = stream
        self.interval = float(interval)
        self.clock = clock
        self.last: float | None = None  # when the last line was written (None: no line yet)

    def write(self, text: str, *, force: bool = False) -> bool:
        """Write `text` as one line if the interval has passed since the last line (or none was written, or
        `force`); return whether it was written. `text` holds no line break or carriage return."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        if "\n" in text or "\r" in text:
            raise ValueError(f"text must be one line without line breaks or carriage returns, got {text!r}")
        now = self.clock()
        if not force and self.last is not None and now - self.last < self.interval:
            return False
        stream = sys.stderr if self.stream is None else self.stream
        stream.write(text + "\n")
        stream.flush()  # a log read while the run goes on (tail -f, CI) sees each line as it is written
        self.last = now
        return True


def _duration(seconds: float) -> str:
    """12 s, 3 min 05 s, 1 h 02 min."""
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


class LogBar:
    """The part of tqdm's interface the trainer uses (`update`, `set_postfix`, `close`), as `ProgressLog` lines.

    Each line reads ``DESC: N/TOTAL (P%), ELAPSED elapsed, ~LEFT left, key=value ...``. `update` writes
    one when the log's interval allows it; reaching `total` and `close` write the last state if it is
    not written yet. Set the postfix before `update` (``set_postfix(..., refresh=False)`` for tqdm
    too) so that the line written carries this step's figures.

    Args:
        total: the number of steps (>= 0).
        desc: the label each line starts with.
        initial: steps already done (a resumed run), 0 <= initial <= total.
        log: where the lines go (default: a `ProgressLog` to stderr with the default interval).
    """

    def __init__(self, total: int, desc: str, *, initial: int = 0, log: ProgressLog | None = None) -> None:
        for name, value in (("total", total), ("initial", initial)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an int, got {type(value).__name__}")
        if total < 0:
            raise ValueError(f"total must be >= 0, got {total}")
        if not 0 <= initial <= total:
            raise ValueError(f"initial must be in [0, total={total}], got {initial}")
        if not isinstance(desc, str):
            raise TypeError(f"desc must be a str, got {type(desc).__name__}")
        if log is not None and not isinstance(log, ProgressLog):
            raise TypeError(f"log must be a ProgressLog or None, got {type(log).__name__}")
        self.total = total
        self.desc = desc
        self.initial = self.n = initial
        self.log = ProgressLog() if log is None else log
        self.start = self.log.clock()
        self.postfix: dict[str, str] = {}
        self.written = True  # nothing to report until the first update
        self.closed = False

    def line(self) -> str:
        """The line for the current state."""
        elapsed = max(0.0, self.log.clock() - self.start)
        pct = 100 * self.n // self.total if self.total else 100
        parts = [f"{self.desc}: {self.n}/{self.total} ({pct}%)", f"{_duration(elapsed)} elapsed"]
        done = self.n - self.initial
        if 0 < done and self.n < self.total:
            parts.append(f"~{_duration(elapsed / done * (self.total - self.n))} left")
        if self.postfix:
            parts.append(" ".join(f"{k}={v}" for k, v in self.postfix.items()))
        return ", ".join(parts)

    def update(self, n: int = 1) -> None:
        """`n` more steps done; writes a line if the interval has passed (always at `total`)."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be an int >= 0, got {n!r}")
        self.n += n
        self.written = self.log.write(self.line(), force=self.n >= self.total)

    def set_postfix(self, refresh: bool = True, **values: object) -> None:
        """The figures shown after the count (replacing the previous ones); written with the next line.
        `refresh` is accepted for tqdm's signature: a log line is never redrawn."""
        self.postfix = {k: str(v) for k, v in values.items()}

    def close(self) -> None:
        """Write the last state if its line is not written yet (a run stopped early ends its log with it)."""
        if not self.closed and not self.written:
            self.log.write(self.line(), force=True)
        self.closed = True
