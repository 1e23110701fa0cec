"""The Evaluator: submit configurations to a run function, gather the results as they finish.

    ev = Evaluator.create(run, method="process", method_kwargs={"num_workers": 4})
    ev.submit([{"x": 0.5}, {"x": 1.5}])
    done = ev.gather("BATCH", size=1)      # or "ALL"

This module is the public face: arguments and the submit/gather/close loops; the methods
(and how each starts its backend, the MPI split of ranks included) are methods.py's. The queue,
the jobs and the callback events live in scheduler.py; the return conventions in outcome.py;
persistence in store.py: with ``log_dir`` (or ``dir``) every configuration is an XP, a
configuration already evaluated there is answered from disk without running, and one already
in flight in this evaluator waits for that run instead of starting another.
"""

from __future__ import annotations

import atexit
import time
import weakref
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Union

from ..errors import UsageError
from .job import Job, Task
from .methods import COMMON_OPTIONS, Setup
from .methods import METHODS as _METHODS
from .methods import method as find_method
from .scheduler import Plan, Scheduler
from .worker import RunFunction

if TYPE_CHECKING:
    from .csvdump import SavedKeys

#: The methods, with what they are (methods.py holds them).
METHODS = {name: m.description for name, m in _METHODS.items()}
_open: weakref.WeakSet[Evaluator] = weakref.WeakSet()


def check_method(method: str) -> None:
    """Raise a UsageError for an unknown method."""
    find_method(method)


class Evaluator:
    """Runs a function on configurations, asynchronously, over one of ``METHODS``.

    Prefer ``Evaluator.create(run_function, method, method_kwargs)``; the keyword arguments
    are the same: ``num_workers`` (default 1; with ``mpi`` every rank but 0), ``callbacks``,
    ``run_function_kwargs`` (passed to every call), ``log_dir``/``dir`` (persistence: an XP
    per configuration), ``cache`` (reuse stored results, default True), ``retry_failed``
    (rerun stored failures), ``max_jobs``; for ``process``: ``start_method`` and ``prefetch``;
    for ``mpi``: ``comm`` and ``progress_thread``; for ``slurm``: ``slurm``, the resources of
    each job (``launcher.slurm_`` keys: ``partition``, ``time``, ``gpus``, ``setup`` ...); its
    submitit files go to ``<log_dir>/.slurm`` (``./.gridman-evaluator`` without a log_dir).
    """

    def __init__(
        self,
        run_function: RunFunction,
        method: str = "serial",
        *,
        num_workers: Optional[int] = None,
        callbacks: Optional[Sequence[Any]] = None,
        run_function_kwargs: Optional[Mapping[str, Any]] = None,
        log_dir: Union[str, Path, None] = None,
        dir: Union[str, Path, None] = None,
        cache: bool = True,
        retry_failed: bool = False,
        max_jobs: Optional[int] = None,
        start_method: Optional[str] = None,
        prefetch: Optional[int] = None,
        comm: Any = None,
        progress_thread: Optional[bool] = None,
        slurm: Optional[Mapping[str, Any]] = None,
    ) -> None:
        spec = find_method(method)
        if not callable(run_function):
            raise UsageError(f"the run function must be callable, not {run_function!r}")
        if num_workers is not None and (not isinstance(num_workers, int) or num_workers < 1):
            raise UsageError(f"num_workers must be a positive integer, not {num_workers!r}")
        if max_jobs is not None and (not isinstance(max_jobs, int) or max_jobs < 0):
            raise UsageError(f"max_jobs must be a non-negative integer, not {max_jobs!r}")
        self.run_function = run_function
        self.method = method
        self.run_function_kwargs = dict(run_function_kwargs or {})
        root = dir if dir is not None else log_dir
        self.dir: Optional[Path] = Path(root).absolute() if root is not None else None
        self.cache = bool(cache)
        self.retry_failed = bool(retry_failed)
        self.max_jobs = max_jobs
        self._scheduler = Scheduler(
            method, self.cache, self.retry_failed, max_jobs, callbacks or ()
        )
        given = {"start_method": start_method, "prefetch": prefetch, "comm": comm,
                 "progress_thread": progress_thread, "slurm": slurm}  # fmt: skip
        options: Mapping[str, Any] = {k: v for k, v in given.items() if k in spec.options}
        if spec.layout is not None:  # may never return (a process that serves)
            options, num_workers = spec.layout(options, num_workers, run_function,
                                               self.run_function_kwargs)  # fmt: skip
        self.num_workers = 1 if spec.single_worker else (num_workers or 1)
        self._backend = spec.start(Setup(run_function, self.run_function_kwargs,
                                         self.num_workers, self._scheduler.report, self.dir,
                                         options))  # fmt: skip
        self._scheduler.attach(self._backend)
        _open.add(self)
        _exit_first()

    @staticmethod
    def create(
        run_function: RunFunction,
        method: str = "serial",
        method_kwargs: Optional[Mapping[str, Any]] = None,
        **kwargs: Any,
    ) -> Evaluator:
        """An evaluator for ``method``, configured by ``method_kwargs`` (and/or ``kwargs``)."""
        spec = find_method(method)
        options = dict(method_kwargs or {})
        both = sorted(set(options) & set(kwargs))
        if both:
            raise UsageError(f"{', '.join(both)} given both in method_kwargs and as keywords")
        options.update(kwargs)
        allowed = COMMON_OPTIONS | spec.options
        unknown = sorted(set(options) - allowed)
        if unknown:
            raise UsageError(
                f"unknown option(s) for the {method} method: {', '.join(unknown)}",
                "valid options: " + ", ".join(sorted(allowed)),
            )
        return Evaluator(run_function, method, **options)

    # submitting
    def submit(self, configs: Iterable[Mapping[str, Any]]) -> list[int]:
        """Queue configurations (dicts of parameters) for evaluation; returns their job ids.

        With persistence, a configuration already evaluated is answered from disk (its job is
        finished at once, ``cached``), and one already in flight here waits for that run.
        Raises MaximumJobsSpawnReached (queuing nothing) when ``max_jobs`` would be exceeded.
        """
        if self._scheduler.closed:
            raise UsageError("this evaluator is closed", "create a new one to submit more")
        batch = [_parameters(config) for config in configs]
        plans = [self._plan(parameters) for parameters in batch]
        ids, tasks = self._scheduler.add(batch, plans)
        self._scheduler.dispatch(tasks)
        if self._backend.driven and not self._backend.lazy:
            self._backend.poll(0.0)  # hand the tasks over now, not at the next gather
        self._scheduler.fire()
        return ids

    def _plan(self, parameters: dict[str, Any]) -> Plan:
        """(sig, folder, stored result or None) of a configuration; creates its XP folder."""
        if self.dir is None:
            return None, None, None
        from .store import lookup, make_xp, prepare  # persistence only: keeps the import light

        xp = make_xp(self.dir, parameters)
        prepare(xp)
        hit = None
        if self.cache and not self._scheduler.known(xp.sig):
            hit = lookup(xp.folder, self.retry_failed)
        return xp.sig, xp.folder, hit

    # gathering
    def gather(self, type: str, size: int = 1, timeout: Optional[float] = None) -> list[Job]:
        """Finished jobs not returned by an earlier gather, in the order they finished.

        ``"ALL"``: wait until every submitted job has finished. ``"BATCH"``: wait until at least
        ``size`` are there (or nothing else is left to finish), then return all that are.
        ``timeout`` (seconds) returns what is there when it expires, possibly nothing. A failed
        run is a job with an ``F...`` objective, never an exception.
        """
        kind = type.upper() if isinstance(type, str) else None
        if kind not in ("ALL", "BATCH"):
            raise UsageError(
                f"unknown gather type {type!r}",
                "use gather('ALL') (wait for every job) or gather('BATCH', size=k)",
            )
        if kind == "BATCH" and (not isinstance(size, int) or size < 1):
            raise UsageError(f"gather('BATCH', size=...) needs a positive integer, not {size!r}")
        deadline = None if timeout is None else time.monotonic() + timeout
        scheduler, backend = self._scheduler, self._backend
        while True:
            scheduler.fire()  # before collecting: a callback that raises loses no result
            tasks: list[Task] = []
            with scheduler.lock:
                ready = scheduler.unfinished == 0
                if kind == "BATCH" and len(scheduler.done) >= size:
                    ready = True
                if ready or (deadline is not None and time.monotonic() >= deadline):
                    if not scheduler.events:
                        return scheduler.collect()
                    continue
                if backend.lazy:
                    tasks = scheduler.take()
                elif not backend.driven and not scheduler.events:
                    scheduler.wait(size if kind == "BATCH" else 0, _wait(deadline, 1.0))
                    continue
            scheduler.dispatch(tasks)
            scheduler.fire()
            if backend.driven:
                backend.poll(_wait(deadline, 0.05))

    # the rest of the API
    @property
    def jobs(self) -> list[Job]:
        """Every job submitted so far (snapshots), by id."""
        with self._scheduler.lock:
            return [entry.snapshot() for entry in self._scheduler.entries.values()]

    def job(self, job_id: int) -> Job:
        """The current snapshot of one job."""
        with self._scheduler.lock:
            entry = self._scheduler.entries.get(job_id)
            if entry is None:
                raise UsageError(f"no job with id {job_id!r} in this evaluator")
            return entry.snapshot()

    @property
    def num_running(self) -> int:
        """Jobs handed to a worker and not finished."""
        return self._scheduler.running

    @property
    def num_pending(self) -> int:
        """Jobs submitted and not finished yet (queued, running or waiting on a duplicate)."""
        return self._scheduler.unfinished

    def dump_evals(
        self,
        saved_keys: SavedKeys = None,
        log_dir: Union[str, Path, None] = None,
        filename: str = "results.csv",
    ) -> Path:
        """Write every finished job to ``<log_dir>/<filename>`` (CSV, see csvdump.py).

        ``log_dir`` defaults to the evaluator's own (else the current folder); ``saved_keys``:
        the parameters to keep (all by default), or a function job -> dict of columns.
        """
        with self._scheduler.lock:
            entries = self._scheduler.entries.values()
            jobs = [e.snapshot() for e in entries if e.status.finished]
        from .csvdump import write_csv

        folder = Path(log_dir) if log_dir is not None else (self.dir or Path("."))
        return write_csv(jobs, folder / filename, saved_keys)

    def close(self) -> None:
        """Cancel queued jobs, wait for running ones, release the workers. Idempotent.

        Finished jobs can still be gathered and dumped afterwards.
        """
        scheduler = self._scheduler
        with scheduler.lock:
            if scheduler.closed:
                return
            scheduler.closed = True
            scheduler.cancel_pending()
        try:
            while True:
                scheduler.fire()
                with scheduler.lock:
                    if scheduler.running == 0:
                        break
                    if not self._backend.driven:
                        scheduler.wait(0, 0.5)
                        continue
                self._backend.poll(0.05)
        except BaseException:  # interrupted while jobs run: do not wait for them
            _open.discard(self)
            self._backend.abort()
            raise
        _open.discard(self)
        self._backend.close()
        scheduler.fire(close=True)

    def _abandon(self) -> None:
        """At interpreter exit: cancel queued jobs and release the workers without waiting for
        running ones (a script that ends has no use for their results, and must end)."""
        scheduler = self._scheduler
        with scheduler.lock:
            if scheduler.closed:
                return
            scheduler.closed = True
            scheduler.cancel_pending()
        _open.discard(self)
        self._backend.abort()

    def __enter__(self) -> Evaluator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"Evaluator(method={self.method!r}, num_workers={self.num_workers}, "
            f"jobs={len(self._scheduler.entries)}, dir={str(self.dir) if self.dir else None!r})"
        )


def _parameters(config: Any) -> dict[str, Any]:
    if type(config) is dict and all(type(key) is str for key in config):
        return dict(config)  # the common case, fast
    if not isinstance(config, Mapping):
        raise UsageError(
            f"a configuration must be a dict of parameters, not {type(config).__name__}",
            "submit a list of dicts: ev.submit([{'x': 0.5}, {'x': 1.5}])",
        )
    return {str(key): value for key, value in config.items()}


def _wait(deadline: Optional[float], cap: float) -> float:
    if deadline is None:
        return cap
    return max(0.0, min(cap, deadline - time.monotonic()))


def _close_all() -> None:
    """At exit, release what the script left open (never closed, no ``with``).

    Running jobs are abandoned, not waited for: the script is over. Worker processes are
    stopped here, before multiprocessing's own exit handler runs (see ``_exit_first``); an mpi
    evaluator releases its worker ranks, which would otherwise wait for tasks forever.
    """
    for evaluator in list(_open):
        try:
            evaluator._abandon()
        except Exception:  # pragma: no cover - nothing to report to at exit
            pass


def _exit_first() -> None:
    """Have ``_close_all`` run before every exit handler registered so far.

    atexit runs its handlers last registered, first run. multiprocessing registers its own
    when first imported (the process method imports it, so before this is called): it
    terminates daemonic worker processes, then joins every child. Were it to run first, the
    pool's thread would see its workers die and start new ones, which that join then waits
    for forever (the hang of issue 14, about one run in six). Registering again after it
    puts ours first: the workers are stopped while the pool still knows why.
    """
    atexit.unregister(_close_all)
    atexit.register(_close_all)


atexit.register(_close_all)
