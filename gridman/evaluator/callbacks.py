"""Callbacks: code the evaluator calls as jobs are submitted, start and finish.

A callback is any object with some of these methods (``Callback`` has them all, doing
nothing): ``on_submit(job)`` when a configuration is submitted, ``on_launch(job)`` when it is
handed to a worker, ``on_done(job)`` when it has finished (cached results included: they
never launch), and ``on_close()`` when the evaluator closes. ``job`` is a ``Job`` snapshot.

Callbacks always run in the thread that calls ``submit``, ``gather`` or ``close``, in the
order the events happened (so they need no locking); while ``gather`` waits, they run as the
events come. A callback that raises propagates out of that call, and no result is lost: the
finished jobs are still returned by the next ``gather``.

``ProgressBar`` is the one gridman ships: a rich progress bar on a terminal, plain lines on
stderr otherwise (logs, CI). rich is imported only when the bar first draws.
"""

from __future__ import annotations

import math
import sys
import time
from typing import IO, Any, Optional

from .job import Job


class Callback:
    """Base class of evaluator callbacks: every hook does nothing."""

    def on_submit(self, job: Job) -> None:
        """A configuration was submitted (status READY, or DONE/FAILED when cached)."""

    def on_launch(self, job: Job) -> None:
        """A job was handed to a worker (status RUNNING)."""

    def on_done(self, job: Job) -> None:
        """A job finished (status DONE or FAILED)."""

    def on_close(self) -> None:
        """The evaluator closed."""


class ProgressBar(Callback):
    """Shows done/total, failures, running jobs and the best objective so far.

    ``mode``: ``"rich"`` (a live bar, the default on a terminal), ``"plain"`` (one line at most
    every ``interval`` seconds and a last one at close, the default elsewhere) or ``None``
    (choose). ``maximize``: whether the best objective is the largest (DeepHyper's
    convention, the default) or the smallest.
    """

    def __init__(
        self,
        mode: Optional[str] = None,
        stream: Optional[IO[str]] = None,
        interval: float = 1.0,
        maximize: bool = True,
        description: str = "evaluations",
    ) -> None:
        if mode not in (None, "rich", "plain"):
            raise ValueError(f"ProgressBar mode must be 'rich', 'plain' or None, not {mode!r}")
        self.stream = stream if stream is not None else sys.stderr
        self.mode = mode or ("rich" if _isatty(self.stream) else "plain")
        self.interval = interval
        self.maximize = maximize
        self.description = description
        self.total = self.done = self.failed = self.running = self.cached = 0
        self.best: Optional[float] = None
        self._last = 0.0
        self._rich: Any = None
        self._task: Any = None

    # hooks
    def on_submit(self, job: Job) -> None:
        self.total += 1
        self._update()

    def on_launch(self, job: Job) -> None:
        self.running += 1
        self._update()

    def on_done(self, job: Job) -> None:
        self.done += 1
        if job.cached:
            self.cached += 1
        elif job.status.finished:
            self.running = max(0, self.running - 1)
        if job.failed:
            self.failed += 1
        value = job.objective
        if (
            isinstance(value, (int, float))
            and not isinstance(value, bool)
            and not math.isnan(value)
        ):
            if self.best is None or (value > self.best if self.maximize else value < self.best):
                self.best = float(value)
        self._update()

    def on_close(self) -> None:
        if self._rich is not None:
            self._refresh_rich()
            self._rich.stop()
            self._rich = None
        elif self.mode == "plain" and self.total:
            self._write()

    # rendering
    def text(self) -> str:
        """The status line: ``12/40 done, 1 failed, 2 running, best 0.93``."""
        parts = [f"{self.done}/{self.total} done"]
        if self.cached:
            parts.append(f"{self.cached} cached")
        parts.append(f"{self.failed} failed")
        parts.append(f"{self.running} running")
        if self.best is not None:
            parts.append(f"best {self.best:.6g}")
        return ", ".join(parts)

    def _update(self) -> None:
        if self.mode == "rich":
            if self._rich is None:
                self._start_rich()
            self._refresh_rich()
            return
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._write()

    def _write(self) -> None:
        self._last = time.monotonic()
        try:
            self.stream.write(f"gridman: {self.description}: {self.text()}\n")
            self.stream.flush()
        except (OSError, ValueError):
            pass  # a closed stream never stops the search

    def _start_rich(self) -> None:
        from rich import progress as bar
        from rich.console import Console

        console = Console(file=self.stream)
        self._rich = bar.Progress(
            bar.TextColumn("{task.description}"), bar.BarColumn(), bar.MofNCompleteColumn(),
            bar.TextColumn("{task.fields[status]}"), bar.TimeElapsedColumn(),
            console=console, transient=False,
        )  # fmt: skip
        self._task = self._rich.add_task(self.description, total=0, status="")
        self._rich.start()

    def _refresh_rich(self) -> None:
        status = self.text().split(", ", 1)[1] if ", " in self.text() else ""
        self._rich.update(self._task, total=self.total, completed=self.done, status=status)


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


__all__ = ["Callback", "ProgressBar"]
