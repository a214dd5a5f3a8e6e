"""`demo [--quick]`: the scenario of `rate_limit_shield.demo`, shown as it runs, then summed up.

On a terminal the view is redrawn in place: the stage and a progress bar, each model's state,
and the last lines of what happened. Elsewhere (a pipe, a file, a CI log) each line of what
happened is printed once, as it happens. Both end with the summary table.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Iterator
from typing import Any

from .. import demo as scenario
from ._output import LiveBlock, seconds, table

__all__ = ["add_command"]

_BAR = 30
_TAIL = 8  # lines of what happened that the live view shows
_COUNTS = ("calls", "answers", "retries", "429s", "refused", "fallbacks", "requests")
_LIVE_COUNTS = ("calls", "answers", "retries", "429s", "fallbacks")  # the state too: 79 columns


def add_command(commands: Any) -> None:
    command = commands.add_parser(
        "demo",
        help="watch the shield work against a fake LLM provider (no API key, no network)",
        description="Watch the shield at work: a fake OpenAI-style provider runs in this "
        "process, and one shielded function calls a fake gpt and a fake claude through it. "
        "Scripted faults show retries with backoff, a 429's pause, a breaker opening, a "
        "fallback, a half-open probe closing the breaker, and a burst paced at the limit.",
    )
    command.add_argument(
        "--quick", action="store_true", help="the same scenario, faster: a few seconds"
    )
    command.set_defaults(run=_demo)


class _View:
    """Shows each `Progress`: redrawn in place on a terminal, else new log lines only."""

    def __init__(self) -> None:
        self.block = LiveBlock(sys.stdout)
        self.printed = 0

    def update(self, progress: scenario.Progress) -> None:
        if self.block.live:
            self.block.show(_frame(progress))
            return
        for line in progress.log[self.printed :]:
            print(line, flush=True)
        self.printed = len(progress.log)


def _demo(arguments: argparse.Namespace) -> int:
    view = _View()
    timing = scenario.QUICK if arguments.quick else scenario.FULL
    with _library_logs_held_back():
        last = scenario.run(view.update, timing=timing)
    print()
    print(summary(last))
    return 0


@contextlib.contextmanager
def _library_logs_held_back() -> Iterator[None]:
    """The view tells what the shield does. Unless logging is configured, the library's own
    warnings would go to stderr through logging's last resort, across the view: not meanwhile."""
    if logging.getLogger().handlers:
        yield
        return
    logger = logging.getLogger("rate_limit_shield")
    handler = logging.NullHandler()
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


def _frame(progress: scenario.Progress) -> str:
    fraction = (progress.stage - 1 + progress.done / max(progress.total, 1)) / progress.stages
    fraction = min(max(fraction, 0.0), 1.0)
    filled = round(fraction * _BAR)
    bar = f"[{'#' * filled}{'-' * (_BAR - filled)}] {fraction:4.0%}"
    lines = [
        f"rate-limit-shield demo: stage {progress.stage}/{progress.stages}, "
        f"{seconds(progress.elapsed)}",
        f"  {progress.title}",
        f"  {bar}  {progress.doing}",
        "",
        _models(progress, live=True),
        "",
        *progress.log[-_TAIL:],
    ]
    return "\n".join(lines)


def _models(progress: scenario.Progress, *, live: bool) -> str:
    """Each model's counts; live, its bucket and pause too (in 79 columns, with the counts
    that matter most)."""
    columns = _LIVE_COUNTS if live else _COUNTS
    headers = ("model", *columns, "breaker", *(("left", "paused") if live else ()))
    rows = []
    for model in progress.models:
        counts = {
            "calls": model.calls,
            "answers": model.answered,
            "retries": model.retries,
            "429s": model.throttled,
            "refused": model.refused,
            "fallbacks": model.fell_back,
            "requests": model.requests,
        }
        row = [model.model, *(str(counts[column]) for column in columns)]
        row.append(model.breaker.replace("_", "-"))
        if live:
            row += [f"{model.left:.1f}", seconds(model.paused_for) if model.paused_for else "-"]
        rows.append(row)
    return table(headers, rows)


def summary(progress: scenario.Progress) -> str:
    """What the whole run did, per model, and what the provider answered."""
    answers = ", ".join(
        f"{count} x {status}" for status, count in sorted(progress.statuses.items())
    )
    return "\n".join(
        [
            f"Summary: {progress.stages} stages in {seconds(progress.elapsed)}",
            _models(progress, live=False),
            "",
            f"The provider answered {answers} (by HTTP status).",
        ]
    )
