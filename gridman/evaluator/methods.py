"""The evaluator's methods (serial, thread, process, mpi, slurm): the one list of them.

Each :class:`Method` says what it is, which options of its own it takes, and how it starts its
backend (and, for mpi, how the ranks split before that); the Evaluator looks a method up here
and never asks which one it is. Besides ``gridman.backends``, this is the one place that
names a way of running. The modules of the heavier methods are imported only when used.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..errors import UsageError
from .backends import Backend, Report, SerialBackend, ThreadBackend
from .worker import RunFunction

#: Options every method takes.
COMMON_OPTIONS = frozenset(
    {"num_workers", "callbacks", "run_function_kwargs", "log_dir", "dir", "cache",
     "retry_failed", "max_jobs"}
)  # fmt: skip


#: (method options, num_workers, run function, its kwargs) -> (options, num_workers).
Layout = Callable[
    [Mapping[str, Any], Optional[int], RunFunction, Mapping[str, Any]],
    tuple[Mapping[str, Any], Optional[int]],
]


@dataclass(frozen=True)
class Setup:
    """What a method's backend is started with."""

    run_function: RunFunction
    kwargs: Mapping[str, Any]
    num_workers: int
    report: Report
    dir: Optional[Path] = None  # the evaluator's XP root (persistence), if any
    options: Mapping[str, Any] = field(default_factory=dict)  # the method's own options


@dataclass(frozen=True)
class Method:
    """One way of running the evaluations."""

    name: str
    description: str
    start: Callable[[Setup], Backend]
    options: frozenset[str] = frozenset()  # its own options, besides COMMON_OPTIONS
    single_worker: bool = False  # one job at a time, whatever num_workers says
    #: Before anything else, on every process of the method's job: returns the communicator
    #: and the worker count, or never returns on a process that serves (MPI ranks 1..N-1).
    layout: Optional[Layout] = None


def _serial(setup: Setup) -> Backend:
    return SerialBackend(setup.run_function, setup.kwargs, setup.report)


def _thread(setup: Setup) -> Backend:
    return ThreadBackend(setup.run_function, setup.kwargs, setup.num_workers, setup.report)


def _process(setup: Setup) -> Backend:
    from .procpool import ProcessBackend

    opts = setup.options
    backend = ProcessBackend(setup.run_function, setup.kwargs, setup.num_workers, setup.report,
                             opts.get("start_method"), opts.get("prefetch"))  # fmt: skip
    if backend.start_method != "fork":
        _check_picklable(setup.run_function, setup.kwargs, backend.start_method)
    return backend


def _slurm(setup: Setup) -> Backend:
    from .slurm import SlurmBackend

    folder = setup.dir / ".slurm" if setup.dir else Path.cwd() / ".gridman-evaluator"
    return SlurmBackend(setup.run_function, setup.kwargs, setup.num_workers, setup.report,
                        folder, dict(setup.options.get("slurm") or {}))  # fmt: skip


def _mpi_layout(
    options: Mapping[str, Any], num_workers: Optional[int], fn: RunFunction,
    kwargs: Mapping[str, Any],
) -> tuple[Mapping[str, Any], Optional[int]]:  # fmt: skip
    from .mpi import check_layout, mpi_comm, serve_rank

    comm = mpi_comm(options.get("comm"))
    num_workers = check_layout(comm, num_workers)
    if comm.Get_rank() != 0:
        serve_rank(comm, fn, kwargs)  # exits
    return {**options, "comm": comm}, num_workers


def _mpi(setup: Setup) -> Backend:
    from .mpi import MPIBackend, release

    comm = setup.options.get("comm")
    try:
        return MPIBackend(setup.run_function, setup.kwargs, setup.num_workers, setup.report,
                          comm, setup.options.get("progress_thread"))  # fmt: skip
    except BaseException:
        release(comm)  # rank 0 failed to start: the workers must not wait forever
        raise


#: Every method, by name.
METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("serial", "in this process, one job at a time (debugging)", _serial,
               single_worker=True),
        Method("thread", "a pool of num_workers threads", _thread),
        Method("process", "a pool of num_workers processes (the run function must be "
               "importable)", _process, frozenset({"start_method", "prefetch"})),
        Method("mpi", "the ranks of mpiexec -n N python script.py (rank 0 searches, the others "
               "evaluate)", _mpi, frozenset({"comm", "progress_thread"}), layout=_mpi_layout),
        Method("slurm", "Slurm jobs, each batch of submitted configurations one job array",
               _slurm, frozenset({"slurm"})),
    )
}  # fmt: skip


def method(name: str) -> Method:
    """The method called ``name``; an unknown name is a UsageError listing the valid ones."""
    found = METHODS.get(name) if isinstance(name, str) else None
    if found is None:
        raise UsageError(
            f"unknown evaluator method {name!r}",
            "valid methods: " + ", ".join(f"{k} ({v.description})" for k, v in METHODS.items()),
        )
    return found


def _check_picklable(fn: RunFunction, kwargs: Mapping[str, Any], start_method: str) -> None:
    import pickle

    try:
        pickle.dumps((fn, kwargs))
    except Exception as exc:
        raise UsageError(
            f"the run function cannot be sent to {start_method} worker processes ({exc})",
            "define it at module level in an importable module (not a lambda or a nested "
            "function), or use start_method='fork' or the thread method",
        ) from None
