"""Shared helpers of the benchmarks: timing child processes, summaries and machine facts.

``time_command`` measures one run of a command: its wall time, its CPU time (user + system) and
its peak resident set size, the ``ru_maxrss`` that ``os.wait4`` returns for it. Linux counts in
``ru_maxrss`` the memory of the process that spawned the command too (a vfork'ed child execs
from its parent's memory), so the command is not spawned from the benchmark itself, whose
memory would show: a minimal ``python -S`` launcher (about 8 MiB, less than any Python command)
spawns it with ``os.posix_spawnp``, waits for it with ``os.wait4`` and reports the wall time
from just before the spawn to just after the reap, and the ``rusage``. For a command that spawns
children and waits for them (``gridman run`` and its worker), the CPU time is their sum and
``ru_maxrss`` the largest of them. On a shared machine, CPU time is the figure other processes
disturb least.
"""

from __future__ import annotations

import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional


@dataclass(frozen=True)
class Sample:
    """One run of a command: wall seconds, CPU seconds (user + system) and peak RSS in MiB."""

    wall: float
    cpu: float
    peak_mib: float


@dataclass(frozen=True)
class Summary:
    """The runs of one command after the warm-up: median and min wall, median CPU, peak RSS."""

    median: float
    min: float
    cpu: float
    peak_mib: float
    runs: int

    def to_json(self) -> dict[str, Any]:
        return {
            "median_s": round(self.median, 4),
            "min_s": round(self.min, 4),
            "cpu_s": round(self.cpu, 4),
            "peak_mib": round(self.peak_mib, 1),
            "runs": self.runs,
        }


class CommandFailed(RuntimeError):
    """A timed command exited with a non-zero status."""


# Runs ``argv[1:]`` (stdout to /dev/null); prints "wall_s cpu_s maxrss_kib exit_code" (CPU time:
# user + system of the command and of the children it waited for).
_LAUNCHER = """\
import os, sys, time
start = time.perf_counter()
pid = os.posix_spawnp(
    sys.argv[1], sys.argv[1:], os.environ,
    file_actions=[(os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0)],
)
_, status, usage = os.wait4(pid, 0)
wall = time.perf_counter() - start
cpu = usage.ru_utime + usage.ru_stime
print(wall, cpu, usage.ru_maxrss, os.waitstatus_to_exitcode(status))
"""


def time_command(
    argv: Sequence[str], cwd: Optional[Path] = None, env: Optional[Mapping[str, str]] = None
) -> Sample:
    """Run ``argv`` once (output discarded) and measure it; raises CommandFailed on failure."""
    done = subprocess.run(
        [sys.executable, "-S", "-c", _LAUNCHER, *argv],
        cwd=cwd,
        env=dict(env) if env is not None else None,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
    )
    fields = done.stdout.split()
    if done.returncode != 0 or len(fields) != 4 or fields[3] != "0":
        code = fields[3] if len(fields) == 4 else f"a launcher failure ({done.returncode})"
        tail = done.stderr.strip()[-2000:]
        raise CommandFailed(f"{' '.join(argv)} exited with {code}:\n{tail}")
    wall, cpu, maxrss_kib, _ = fields
    return Sample(wall=float(wall), cpu=float(cpu), peak_mib=int(maxrss_kib) / 1024)  # KiB


def bench_command(
    argv: Sequence[str],
    runs: int,
    cwd: Optional[Path] = None,
    env: Optional[Mapping[str, str]] = None,
    warmup: int = 1,
) -> Summary:
    """``warmup`` untimed runs, then ``runs`` timed ones, summarised."""
    for _ in range(warmup):
        time_command(argv, cwd, env)
    samples = [time_command(argv, cwd, env) for _ in range(runs)]
    return summarize(samples)


def summarize(samples: Sequence[Sample]) -> Summary:
    walls = [s.wall for s in samples]
    return Summary(
        median=statistics.median(walls),
        min=min(walls),
        cpu=statistics.median(s.cpu for s in samples),
        peak_mib=max(s.peak_mib for s in samples),
        runs=len(samples),
    )


def machine_info() -> dict[str, Any]:
    """What the figures depend on: CPUs, Python, OS, and when they were taken."""
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "executable": sys.executable,
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_line(info: Mapping[str, Any]) -> str:
    return (
        f"{info['nproc']} CPUs ({info['cpu']}), Python {info['python']}, "
        f"{info['platform']}, {info['date']}"
    )


def ratio_text(ours: float, theirs: float) -> str:
    """``16x faster`` / ``1.3x slower`` (ours against theirs)."""
    if ours <= 0 or theirs <= 0:
        return "n/a"
    if ours <= theirs:
        return f"{theirs / ours:.1f}x faster"
    return f"{ours / theirs:.1f}x slower"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A Markdown table whose columns are padded to their widest cell (numbers right-aligned)."""
    widths = [max(len(str(c)) for c in column) for column in zip(headers, *rows)]

    def line(cells: Sequence[str]) -> str:
        padded = [
            str(c).rjust(w) if _numeric(str(c)) else str(c).ljust(w) for c, w in zip(cells, widths)
        ]
        return "| " + " | ".join(padded) + " |"

    return [line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)]


def _numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


class ForeignLoad:
    """How busy other processes kept the CPUs while the block ran (Linux; else ``None``).

    The busy time of all CPUs (``/proc/stat``) minus the CPU time of this process and of its
    children, as a share of the CPUs' capacity over the block: 0.0 on an otherwise idle machine,
    and a warning that wall times are inflated when it is large.
    """

    share: Optional[float] = None

    def __enter__(self) -> ForeignLoad:
        self._start = (_busy_cpu_seconds(), _own_cpu_seconds(), time.perf_counter())
        return self

    def __exit__(self, *exc: object) -> None:
        busy0, own0, t0 = self._start
        busy1, own1, t1 = _busy_cpu_seconds(), _own_cpu_seconds(), time.perf_counter()
        if busy0 is None or busy1 is None or t1 <= t0:
            return
        capacity = (t1 - t0) * len(os.sched_getaffinity(0))
        self.share = max(0.0, (busy1 - busy0) - (own1 - own0)) / capacity


def _busy_cpu_seconds() -> Optional[float]:
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except (OSError, IndexError):
        return None
    ticks = [int(f) for f in fields[:8]]
    idle = ticks[3] + ticks[4]  # idle + iowait
    return (sum(ticks) - idle) / os.sysconf("SC_CLK_TCK")


def _own_cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def load_line(share: Optional[float]) -> str:
    if share is None:
        return "other processes' CPU load: unknown"
    note = "" if share < 0.1 else " (wall times inflated: CPU times are the steadier figure)"
    return f"other processes kept the CPUs {share:.0%} busy during the timings{note}"
