"""XP folders (argv.json, collisions, signature checks, get_xp) and job state (job.json)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import gridman
import gridman.backends.runner
import gridman.core.xp
from gridman.backends.runner import run_attempt
from gridman.core.jobs import (
    JOB_FILE,
    JobRecord,
    State,
    read_job,
    this_host,
    update_job,
    write_job,
)
from gridman.core.liveness import mark_vanished
from gridman.core.signature import compute_sig
from gridman.core.xp import (
    ARGV_FILE,
    XP,
    check_sig,
    get_xp,
    init_many,
    init_xp,
    is_xp,
    known_sigs,
    read_argv_file,
    require_xp_folder,
    xp_folder,
)
from gridman.errors import SignatureCollisionError, UnknownXPError, UsageError


def make_xp(root: Path, delta: list[tuple[str, Any]], argv: list[str] | None = None) -> XP:
    return XP(
        cfg=None,
        argv=argv if argv is not None else [f"--{k}={v}" for k, v in delta],
        delta=delta,
        sig=compute_sig(delta),
        dir=root,
    )


def test_init_xp_creates_folder_and_argv(tmp_path: Path) -> None:
    xp = make_xp(tmp_path, [("lr", 0.5)], ["--lr", "0.5"])
    assert xp.sig == "3b45fed1"
    assert xp.folder == tmp_path / "xps" / "3b45fed1"
    assert not xp.folder.exists()
    init_xp(xp)
    assert xp.folder.is_dir()
    data = json.loads((xp.folder / ARGV_FILE).read_text(encoding="utf8"))
    assert data["argv"] == ["--lr", "0.5"]
    assert data["delta"] == [["lr", 0.5]]
    assert data["sig"] == "3b45fed1"
    assert data["gridman"] == gridman.__version__
    assert read_argv_file(xp.folder)["argv"] == ["--lr", "0.5"]
    assert known_sigs(tmp_path) == ["3b45fed1"]


@pytest.mark.parametrize(
    "delta",
    [[], [("lr", 0.5)], [("cfg", {"b": [1, "é"], "a": None}), ("name", 'quo"te')]],
)
def test_argv_file_line_is_json_dumps_of_its_fields(tmp_path: Path, delta: Any) -> None:
    """The hand-built line holds what json.dumps of the fields holds (the delta canonical)."""
    xp = make_xp(tmp_path, delta, ["--x", "ü"])
    line = gridman.core.xp._argv_bytes(xp)
    assert line.endswith(b"}\n") and line.count(b"\n") == 1
    fields = {"version": 1, "sig": xp.sig, "argv": ["--x", "ü"],
              "delta": [[k, v] for k, v in delta], "gridman": gridman.__version__}  # fmt: skip
    assert json.loads(line) == fields
    if not any(isinstance(v, dict) for _, v in delta):  # dict keys come sorted, else the same
        assert line == (json.dumps(fields) + "\n").encode("utf8")


def test_init_many_names_the_folders_it_created(tmp_path: Path) -> None:
    old = make_xp(tmp_path, [("lr", 0.5)])
    assert init_many([old]) == [old.sig]
    new = make_xp(tmp_path, [("lr", 0.25)])
    assert init_many([old, new]) == [new.sig]  # the first exists already
    assert init_many([old, new]) == []
    (old.folder / ARGV_FILE).unlink()  # the folder exists: argv.json is rewritten, not created
    assert init_many([old]) == [] and (old.folder / ARGV_FILE).exists()


def test_reinit_same_delta_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    init_xp(make_xp(tmp_path, [("lr", 0.5)], ["--lr", "0.5"]))
    writes: list[Path] = []
    monkeypatch.setattr(
        gridman.core.xp, "atomic_write_bytes", lambda path, *a, **k: writes.append(path)
    )
    # the same delta from a different spelling of the argv: kept as first written
    init_xp(make_xp(tmp_path, [("lr", 0.5)], ["--lr=0.50"]))
    assert writes == []
    argv = read_argv_file(tmp_path / "xps" / "3b45fed1")["argv"]
    assert argv == ["--lr", "0.5"]


def test_collision_raises(tmp_path: Path) -> None:
    xp = make_xp(tmp_path, [("lr", 0.5)])
    init_xp(xp)
    stored = xp.folder / ARGV_FILE
    data = json.loads(stored.read_text(encoding="utf8"))
    data["delta"] = [["lr", 0.7]]  # another XP that happens to hash to the same sig
    stored.write_text(json.dumps(data), encoding="utf8")
    with pytest.raises(SignatureCollisionError, match="signature collision: 3b45fed1") as info:
        init_xp(xp)
    assert info.value.hint is not None
    assert json.loads(stored.read_text(encoding="utf8"))["delta"] == [["lr", 0.7]]  # untouched


@pytest.mark.parametrize("content", ["{torn", "[]", '{"argv": "x"}', '{"argv": [], "delta": 3}'])
def test_unreadable_argv_file_is_rewritten(tmp_path: Path, content: str) -> None:
    xp = make_xp(tmp_path, [("lr", 0.5)])
    xp.folder.mkdir(parents=True)
    (xp.folder / ARGV_FILE).write_text(content, encoding="utf8")
    init_xp(xp)
    assert read_argv_file(xp.folder)["delta"] == [["lr", 0.5]]


@pytest.mark.parametrize("bad", ["../..", "..", "", "ABCDEF12", "3b45fed", "3b45fed1/..", "/etc"])
def test_xp_folder_rejects_non_signatures(tmp_path: Path, bad: str) -> None:
    with pytest.raises(UsageError, match="is not a signature"):
        xp_folder(tmp_path, bad)
    with pytest.raises(UsageError):
        check_sig(bad)


def test_require_xp_folder_suggests_recent_xps(tmp_path: Path) -> None:
    # Issue 14 case 8: a hash "close" to another says nothing; the recent XPs, with their argv, do.
    for delta in ([("lr", 0.5)], [("lr", 0.7)], [("seed", 1)]):
        init_xp(make_xp(tmp_path, delta))
    assert require_xp_folder(tmp_path, "3b45fed1") == tmp_path / "xps" / "3b45fed1"
    with pytest.raises(UnknownXPError) as info:
        require_xp_folder(tmp_path, "3b45fed2")
    assert "no XP with signature 3b45fed2" in info.value.message
    assert info.value.hint is not None and info.value.hint.startswith("recent XPs:")
    assert "3b45fed1 (" in info.value.hint and "6c3a68e5 (" in info.value.hint


def test_require_xp_folder_without_xps(tmp_path: Path) -> None:
    with pytest.raises(UnknownXPError) as info:
        require_xp_folder(tmp_path, "deadbeef")
    assert info.value.hint is not None and "no XP has that signature" in info.value.hint
    assert info.value.exit_code == 2


def test_get_xp_outside_raises() -> None:
    assert not is_xp()
    with pytest.raises(RuntimeError, match="outside an XP"):
        get_xp()
    with pytest.raises(RuntimeError):
        gridman.get_xp()


def test_enter_makes_get_xp_work_and_closes_link(tmp_path: Path) -> None:
    outer, inner = make_xp(tmp_path, []), make_xp(tmp_path, [("lr", 0.5)])
    with outer.enter():
        assert get_xp() is outer and is_xp()
        with inner.enter():
            assert get_xp() is inner
            inner.link.push_metrics({"a": 1})
            assert inner.link._journal_fd is not None
        assert get_xp() is outer
    assert not is_xp()
    assert inner.link._journal_fd is None  # flushed and closed on exit
    assert inner.history == [{"a": 1}]


def test_enter_pops_on_exception(tmp_path: Path) -> None:
    with pytest.raises(ValueError), make_xp(tmp_path, []).enter():
        raise ValueError("user error")
    assert not is_xp()


# -- job.json ---------------------------------------------------------------------------------


def sample_record() -> JobRecord:
    record = JobRecord(sig="3b45fed1")
    record = record.with_new_attempt("local", State.PENDING, submitted=1.0)
    record = record.with_latest(state=State.FAILED, exit_code=3, started=2.0, ended=3.0, pid=42)
    return record.with_new_attempt(
        "slurm", State.RUNNING, job_id="1234_5", array_index=5, extra={"node": "n1"}
    )


def test_job_record_json_round_trip(tmp_path: Path) -> None:
    record = sample_record()
    data = record.to_json()
    assert data["state"] == "RUNNING" and data["backend"] == "slurm" and data["job_id"] == "1234_5"
    assert [a["log"] for a in data["attempts"]] == ["log/1.log", "log/2.log"]
    back = JobRecord.from_json(json.loads(json.dumps(data)), "ignored")
    assert back == record
    assert back.attempts[0].state is State.FAILED and back.attempts[0].exit_code == 3
    write_job(tmp_path, record)
    assert read_job(tmp_path) == record


def test_job_record_tolerates_unknown_fields_and_states() -> None:
    data = sample_record().to_json()
    data["attempts"][0]["future_field"] = 1
    data["attempts"][1]["state"] = "SOMETHING_NEW"
    back = JobRecord.from_json(data, "3b45fed1")
    assert back.attempts[1].state is State.UNKNOWN
    assert back.attempts[0].state is State.FAILED


def test_read_job_missing_is_none(tmp_path: Path) -> None:
    assert read_job(tmp_path) is None


@pytest.mark.parametrize(
    "content",
    ["{torn", "[]", '{"attempts": 3}', '{"version": 99, "attempts": []}', ""],
)
def test_corrupt_job_file_reads_as_failed(tmp_path: Path, content: str) -> None:
    # FAILED with the reason (attempt 0): never "running" forever, and --retry replaces it
    (tmp_path / JOB_FILE).write_text(content, encoding="utf8")
    record = read_job(tmp_path)
    assert record is not None
    assert record.state is State.FAILED and record.latest is not None and record.latest.n == 0
    assert record.latest is not None and "error" in record.latest.extra
    # the next update starts from a clean record instead of failing
    new = update_job(tmp_path, lambda r: r.with_new_attempt("foreground", State.RUNNING))
    assert [a.n for a in new.attempts] == [1]
    assert read_job(tmp_path) == new


@pytest.mark.parametrize(
    "content", ['{"attempts": [{"state": "RUNNING"}]}', '{"version": null, "attempts": []}']
)
def test_job_file_with_bad_fields_reads_as_failed(tmp_path: Path, content: str) -> None:
    (tmp_path / JOB_FILE).write_text(content, encoding="utf8")
    record = read_job(tmp_path)
    assert record is not None and record.state is State.FAILED
    assert record.latest is not None and "job.json" in record.latest.extra["error"]


def test_state_properties() -> None:
    assert State.COMPLETED.finished and not State.COMPLETED.failed
    assert State.VANISHED.finished and State.VANISHED.failed
    for state in (State.PENDING, State.RUNNING, State.UNKNOWN):
        assert not state.finished and not state.failed
    assert str(State.FAILED) == "FAILED"


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def running_record(tmp_path: Path, pid: int, host: str | None = None) -> None:
    update_job(
        tmp_path,
        lambda r: r.with_new_attempt(
            "foreground", State.RUNNING, pid=pid, host=host or this_host(), started=1.0
        ),
    )


def test_mark_vanished_dead_runner(tmp_path: Path) -> None:
    running_record(tmp_path, _dead_pid())
    record = mark_vanished(tmp_path)
    assert record is not None and record.state is State.VANISHED
    assert record.latest is not None and record.latest.ended is not None
    assert read_job(tmp_path) == record


def test_mark_vanished_keeps_live_or_remote_runs(tmp_path: Path) -> None:
    running_record(tmp_path, os.getpid())
    assert mark_vanished(tmp_path).state is State.RUNNING  # type: ignore[union-attr]
    other = tmp_path / "other"
    other.mkdir()
    running_record(other, _dead_pid(), host="some-other-host")
    assert mark_vanished(other).state is State.RUNNING  # type: ignore[union-attr]
    assert mark_vanished(tmp_path / "never") is None


def test_run_attempt_records_states(tmp_path: Path) -> None:
    env = dict(os.environ)
    ok = run_attempt(
        tmp_path, [sys.executable, "-c", "print('hi')"], cwd=tmp_path, env=env, backend="local"
    )
    assert ok.state is State.COMPLETED and ok.exit_code == 0 and ok.attempt == 1
    assert ok.log.read_text(encoding="utf8") == "hi\n"
    bad = run_attempt(
        tmp_path, [sys.executable, "-c", "raise SystemExit(4)"], cwd=tmp_path, env=env, backend="x"
    )
    assert bad.state is State.FAILED and bad.exit_code == 4 and bad.attempt == 2
    record = read_job(tmp_path)
    assert record is not None
    assert [(a.n, a.state, a.exit_code) for a in record.attempts] == [
        (1, State.COMPLETED, 0),
        (2, State.FAILED, 4),
    ]
    assert all(a.pid and a.host == this_host() for a in record.attempts)


def test_attempt_is_not_submitted_after_it_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = iter(range(1, 100))
    monkeypatch.setattr(gridman.backends.runner, "now", lambda: float(next(clock)))
    run_attempt(tmp_path, [sys.executable, "-c", "pass"], cwd=tmp_path, env=os.environ, backend="x")
    latest = read_job(tmp_path).latest  # type: ignore[union-attr]
    assert latest is not None and latest.submitted is not None and latest.started is not None
    assert latest.submitted <= latest.started
