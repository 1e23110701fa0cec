"""Child process that runs one XP: ``python -m gridman.worker MAIN ROOT -- ARGV...``.

Loads the user's main, runs it on ARGV inside its XP, and turns every way the user's code can
end into an exit status (0 done, 1 an exception, its own code for SystemExit, 130 Ctrl-C), with
a traceback that shows the user's frames, not gridman's.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional


def main(args: Optional[list[str]] = None) -> int:
    args = list(sys.argv[1:] if args is None else args)
    if len(args) < 3 or args[2] != "--":
        print("usage: python -m gridman.worker MAIN ROOT -- ARGV...", file=sys.stderr)
        return 2
    spec, root, xp_argv = args[0], Path(args[1]), args[3:]
    from .errors import GridmanError
    from .project import load_main, load_project, user_traceback

    try:
        project = load_project(root)
        decorated = load_main(project, spec)
        sys.argv = [str(decorated.source), *xp_argv]
        decorated.run_argv(xp_argv)
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
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
