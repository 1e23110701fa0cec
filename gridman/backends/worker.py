"""Child process that runs one XP: ``python -m gridman.backends.worker MAIN ROOT -- ARGV...``.

Loads the user's main, runs it on ARGV inside its XP, and turns every way the user's code can
end into an exit status (0 done, 1 an exception, its own code for SystemExit, 130 Ctrl-C), with
a traceback that shows the user's frames, not gridman's.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import Optional

#: Signals the XP's process ignores, by name ("SIGUSR2"): set by a host that handles them.
IGNORE_SIGNALS = "GRIDMAN_IGNORE_SIGNALS"


def main(args: Optional[list[str]] = None) -> int:
    args = list(sys.argv[1:] if args is None else args)
    if len(args) < 3 or args[2] != "--":
        print("usage: python -m gridman.backends.worker MAIN ROOT -- ARGV...", file=sys.stderr)
        return 2
    spec, root, xp_argv = args[0], Path(args[1]), args[3:]
    _ignore_signals(os.environ.pop(IGNORE_SIGNALS, ""))
    status = os.environ.get("GRIDMAN_STATUS_FILE")
    code = _run(spec, root, xp_argv)
    if status:
        _write_status(status, {"pid": os.getpid(), "ended": time.time(), "exit_code": code})
    return code


def _ignore_signals(names: str) -> None:
    """Ignore the signals a backend's host handles itself (it says which, by name)."""
    for name in names.replace(",", " ").split():
        number = getattr(signal, name.upper(), None)
        if isinstance(number, signal.Signals):
            signal.signal(number, signal.SIG_IGN)


def exit_status(exc: SystemExit) -> int:
    """The exit status Python gives ``sys.exit(code)``; a message is printed to stderr."""
    code = exc.code
    if code is None or isinstance(code, int):
        return code or 0
    print(code, file=sys.stderr)
    return 1


def _write_status(path: str, data: dict[str, object]) -> None:
    """What the XP itself says about its attempt; read when its runner died (see runner.py)."""
    from ..core.fsutil import atomic_write_json

    try:
        # Not fsync'd: it only matters when the runner dies and the machine does not.
        atomic_write_json(Path(path), {"version": 1, **data}, fsync=False)
    except OSError as exc:
        print(f"gridman: cannot write {path}: {exc}", file=sys.stderr)


def _run(spec: str, root: Path, xp_argv: list[str]) -> int:
    from ..core.loader import load_main, user_traceback
    from ..core.project import Project
    from ..errors import GridmanError

    try:
        # GRIDMAN_DIR is set by the runner: no need to read gridman.yaml again here.
        decorated = load_main(Project(root=root), spec)
        sys.argv = [str(decorated.source), *xp_argv]
        decorated.run_argv(xp_argv)
    except SystemExit as exc:
        return exit_status(exc)
    except KeyboardInterrupt:
        print("gridman: XP interrupted", file=sys.stderr)
        return 130
    except GridmanError as exc:
        print(f"gridman: error: {exc}", file=sys.stderr)
        return exc.exit_code or 1
    except BaseException as exc:
        print(user_traceback(exc), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
