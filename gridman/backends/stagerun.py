"""The built-in main that runs one stage attempt: ``gridman.stagerun:main``.

Backends run it as they run any main (``python -m gridman.backends.worker gridman.stagerun:main
ROOT -- STAGE_FOLDER -- COMMAND...``, or in-process for the inline backend), so a stage needs
nothing from a backend but what training needs. It runs COMMAND without a shell, in the
project root, with

- ``GRIDMAN_STAGE_OUT``: a path where the command may write its metrics as a JSON object;
- ``GRIDMAN_STAGE``, ``GRIDMAN_XP_FOLDER``, ``GRIDMAN_XP_SIG`` and ``GRIDMAN_DIR`` (the XP root).

The contract: the command exits 0 and either writes a JSON object to ``$GRIDMAN_STAGE_OUT`` or
prints one as the last non-empty line of its stdout. Its output is copied to the attempt's log;
the metrics go to ``metrics.json`` in the stage folder (replacing older results as soon as an
attempt starts: results always belong to the latest attempt). A stage ``test`` reporting
``{"test": {...}}`` is unwrapped, so that its metrics read ``test.acc``, not ``test.test.acc``.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any, Optional

from ..core.fsutil import FORMAT_VERSION, atomic_write_json, read_json
from ..core.main import DecoratedMain
from ..core.signature import jsonable
from ..core.stages import METRICS, OUT, REQUEST


def _stage() -> None:
    """A stage attempt (the function itself is never called: see StageMain.run_argv)."""


class StageMain(DecoratedMain):
    """A main whose argv is ``STAGE_FOLDER -- COMMAND...``; it makes no XP of its own."""

    def __init__(self) -> None:
        super().__init__(_stage, dir=".", exclude=())

    def run_argv(self, argv: Sequence[str]) -> Any:
        args = [str(a) for a in argv]
        if len(args) < 3 or args[1] != "--":
            raise SystemExit("usage: gridman.backends.stagerun STAGE_FOLDER -- COMMAND...")
        code = run_stage(Path(args[0]), args[2:])
        if code:
            raise SystemExit(code)
        return None


def run_stage(folder: Path, command: list[str]) -> int:
    """Run ``command`` for the stage in ``folder``; returns its exit status (1 when it exited
    0 but reported no metrics)."""
    request = _request(folder)
    name = str(request.get("stage") or folder.name)
    out = folder / OUT
    for stale in (folder / METRICS, out):
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()
    env = dict(os.environ)
    env.pop("GRIDMAN_STATUS_FILE", None)  # the runner's, for the stage main itself
    xp = folder.parent.parent  # <dir>/xps/<sig>/stages/<name>
    env.update({"GRIDMAN_STAGE_OUT": str(out), "GRIDMAN_STAGE": name, "GRIDMAN_XP_FOLDER": str(xp),
                "GRIDMAN_XP_SIG": xp.name, "GRIDMAN_DIR": str(xp.parent.parent)})  # fmt: skip
    print(f"gridman: stage {name}: {' '.join(command)}", flush=True)
    try:
        proc = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    except OSError as exc:
        print(f"gridman: stage {name}: cannot run {command[0]!r}: {exc}", file=sys.stderr)
        return 127
    assert proc.stdout is not None and proc.stderr is not None
    pump = threading.Thread(target=_copy, args=(proc.stderr, sys.stderr), daemon=True)
    pump.start()
    last = ""
    for raw in proc.stdout:
        line = raw.decode("utf8", errors="replace")
        sys.stdout.write(line)
        sys.stdout.flush()
        if line.strip():
            last = line.strip()
    code = proc.wait()
    pump.join()
    if code != 0:
        print(f"gridman: stage {name}: the command exited with {code}", file=sys.stderr)
        return code
    metrics, problem = _metrics(out, last)
    if metrics is None:
        print(f"gridman: stage {name}: {problem}", file=sys.stderr)
        return 1
    if set(metrics) == {name} and isinstance(metrics[name], dict):
        metrics = metrics[name]
    atomic_write_json(folder / METRICS, {
        "version": FORMAT_VERSION, "stage": name, "sig": request.get("sig"),
        "metrics": jsonable(metrics), "trained_attempt": request.get("trained_attempt"),
        "command": command, "ended": time.time(),
    }, fsync=True)  # fmt: skip
    return 0


def _request(folder: Path) -> dict[str, Any]:
    try:
        data = read_json(folder / REQUEST)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _metrics(out: Path, last_line: str) -> tuple[Optional[dict[str, Any]], str]:
    if out.exists():
        try:
            data = json.loads(out.read_text(encoding="utf8"))
        except (OSError, ValueError) as exc:
            return None, f"$GRIDMAN_STAGE_OUT ({out}) holds no valid JSON: {exc}"
        if not isinstance(data, dict):
            return None, f"$GRIDMAN_STAGE_OUT must hold a JSON object, not {type(data).__name__}"
        return data, ""
    try:
        data = json.loads(last_line) if last_line else None
    except ValueError:
        data = None
    if isinstance(data, dict):
        return data, ""
    return None, (
        "the command reported no metrics: write a JSON object to $GRIDMAN_STAGE_OUT or print "
        "one as the last line of stdout"
    )


def _copy(source: IO[bytes], sink: Any) -> None:
    for raw in source:
        try:
            sink.write(raw.decode("utf8", errors="replace"))
            sink.flush()
        except (OSError, ValueError):
            pass


#: The main backends load for stage attempts (stages.STAGE_MAIN).
main = StageMain()
