"""Where a benchmark is, told on stderr while it runs, so that a run of a minute is not silent.

Each step is a line of its own, stamped with the seconds since the run began; a dot follows it
every few seconds while the step runs, and its end adds how long it took. The result tables go
to stdout, so `python benchmarks/x.py > figures.txt` still gets them alone.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["Progress"]


class Progress:
    """A benchmark's progress on stderr: `step(what)`, `dot()` as it goes, `done()`; or
    `with running(what):` for a step whose work does not come back to the caller until it ends
    (a child process, a blocking wait), which a thread dots every `every` seconds."""

    def __init__(self, every: float = 5.0) -> None:
        self._began = time.monotonic()
        self._step_began = self._began
        self._every = every

    def _write(self, text: str) -> None:
        sys.stderr.write(text)
        sys.stderr.flush()

    def step(self, what: str) -> None:
        """Begin a step: a new line saying what it is."""
        self._step_began = time.monotonic()
        self._write(f"[{self._step_began - self._began:6.1f} s] {what} ")

    def dot(self) -> None:
        self._write(".")

    def done(self) -> None:
        """End the step's line with the seconds it took."""
        self._write(f" {time.monotonic() - self._step_began:.1f} s\n")

    @contextmanager
    def running(self, what: str) -> Iterator[None]:
        """The block as one step, dotted from a thread while it runs."""
        self.step(what)
        finished = threading.Event()

        def tick() -> None:
            while not finished.wait(self._every):
                self.dot()

        ticker = threading.Thread(target=tick, name="progress", daemon=True)
        ticker.start()
        try:
            yield
        finally:
            finished.set()
            ticker.join()
            self.done()
