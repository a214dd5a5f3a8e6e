"""What the commands print, and how they fail: tables, durations, URLs fit to show, a block
refreshed in place on a terminal, and the error that ends a command with one line.

Plain text on purpose: the command line runs on a fresh install, with nothing but `wrapt`.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from typing import TextIO

__all__ = ["CommandError", "LiveBlock", "seconds", "table"]

_GAP = "  "


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """`rows` under `headers`, in columns as wide as their widest line. A cell may hold several
    lines: its row is then as tall as its tallest cell."""
    cells = [[cell.splitlines() or [""] for cell in row] for row in [headers, *rows]]
    widths = [max(len(line) for row in cells for line in row[at]) for at in range(len(headers))]
    lines: list[str] = []
    for number, row in enumerate(cells):
        for height in range(max(len(cell) for cell in row)):
            parts = [
                (cell[height] if height < len(cell) else "").ljust(width)
                for cell, width in zip(row, widths, strict=True)
            ]
            lines.append(_GAP.join(parts).rstrip())
        if number == 0:
            lines.append(_GAP.join("-" * width for width in widths))
    return "\n".join(lines)


def seconds(value: float | None) -> str:
    """A duration as a person reads it: "-" for none, "0.25s", "12s", "1m30s"."""
    if value is None:
        return "-"
    if value < 10:
        return f"{value:.3g}s"
    if value < 60:
        return f"{value:.0f}s"
    minutes, rest = divmod(round(value), 60)
    return f"{minutes}m{rest}s" if rest else f"{minutes}m"


class CommandError(Exception):
    """A command cannot do what was asked: `main` prints the message as one line and exits
    with `code`."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


class LiveBlock:
    """A block of lines that each `show` redraws in place on a terminal (`live`); elsewhere (a
    pipe, a file, TERM=dumb) each `show` prints its text below the last."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.live = stream.isatty() and os.environ.get("TERM") != "dumb"
        self._height = 0

    def show(self, text: str) -> None:
        lines = text.splitlines()
        if self.live:
            width = shutil.get_terminal_size().columns - 1  # a wrapped line would move the block
            lines = [line[:width] for line in lines]
            if self._height:
                self.stream.write(f"\x1b[{self._height}F\x1b[J")  # up to its start, clear below
            self._height = len(lines)
        self.stream.write("\n".join(lines) + "\n")
        self.stream.flush()
