"""``dump_evals``: the finished jobs as a CSV file, one row per job, in job id order.

Columns: ``p:<name>`` for each parameter (first-seen order), ``objective`` (or ``objective_0``,
``objective_1``... when some job returned several objectives; a failure's ``F...`` reason fills
each of them), ``job_id``, ``job_status``, ``sig`` (with persistence), then ``m:<key>`` for the
metadata: ``m:timestamp_submit``, ``m:timestamp_start``, ``m:timestamp_end``,
``m:timestamp_gather`` first, the rest sorted. Lists and dicts are written as JSON, ``None`` as
an empty cell.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Callable, Union

from ..core.fsutil import atomic_write_text
from .job import Job

SavedKeys = Union[None, Sequence[str], Callable[[Job], Mapping[str, Any]]]
TIMESTAMPS = ("timestamp_submit", "timestamp_start", "timestamp_end", "timestamp_gather")


def convert_for_csv(value: Any) -> Any:
    """A CSV cell: numbers and strings as they are, None empty, anything else JSON (or str)."""
    if value is None:
        return ""
    if isinstance(value, (bool, int, float, str)):
        return value
    try:
        return json.dumps(value, sort_keys=True, default=str)
    except (TypeError, ValueError):
        return str(value)


def rows_of(jobs: Sequence[Job], saved_keys: SavedKeys = None) -> tuple[list[str], list[dict]]:
    """(header, rows) for these jobs."""
    params: dict[str, None] = {}
    width = 0
    meta: dict[str, None] = {}
    for job in jobs:
        if callable(saved_keys):
            params.update(dict.fromkeys(saved_keys(job)))
        elif saved_keys is None:
            params.update(dict.fromkeys(job.parameters))
        if isinstance(job.objective, tuple):
            width = max(width, len(job.objective))
        meta.update(dict.fromkeys(job.metadata))
    if saved_keys is not None and not callable(saved_keys):
        params = dict.fromkeys(saved_keys)
    prefix = "" if callable(saved_keys) else "p:"
    objectives = [f"objective_{i}" for i in range(width)] if width else ["objective"]
    ordered = [k for k in TIMESTAMPS if k in meta] + sorted(k for k in meta if k not in TIMESTAMPS)
    header = [f"{prefix}{k}" for k in params] + objectives + ["job_id", "job_status"]
    if any(job.sig for job in jobs):
        header.append("sig")
    header += [f"m:{k}" for k in ordered]
    rows = []
    for job in jobs:
        values = saved_keys(job) if callable(saved_keys) else job.parameters
        row: dict[str, Any] = {f"{prefix}{k}": values.get(k) for k in params}
        row.update(_objective_cells(job.objective, objectives))
        row.update({"job_id": job.id, "job_status": job.status.value, "sig": job.sig})
        row.update({f"m:{k}": job.metadata.get(k) for k in ordered})
        rows.append({k: convert_for_csv(row.get(k)) for k in header})
    return header, rows


def _objective_cells(objective: Any, columns: list[str]) -> dict[str, Any]:
    if len(columns) == 1:
        return {columns[0]: objective}
    if isinstance(objective, tuple):
        return dict(zip(columns, objective))
    if isinstance(objective, str):  # a failure: its reason in every objective column
        return dict.fromkeys(columns, objective)
    return {columns[0]: objective}


def write_csv(jobs: Sequence[Job], path: Path, saved_keys: SavedKeys = None) -> Path:
    """Write the CSV atomically (the whole file each time) and return its path."""
    header, rows = rows_of(jobs, saved_keys)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=header, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, buffer.getvalue(), fsync=False)
    return path
