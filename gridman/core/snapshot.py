"""Code snapshots (Dora's ``git_save``): XPs run from a clean copy of the committed code.

When enabled (gridman.yaml ``git_save: true`` or ``{allow_dirty: true}``, a Hydra main's
``dora.git_save``, a main's own ``git_save``), submitting XPs first checks that the git work
tree holds no uncommitted change (the XP root excepted), then makes sure that a copy of the
current commit exists at ``<dir>/code/<commit>/`` (one per commit, shared by its XPs, built once
under a lock in a temporary folder and renamed into place, so a half-made copy is never used).
The XPs then run from that copy: a pending XP started later, or a Slurm job requeued after
more edits, still runs the code that was committed when it was submitted.

Every git call is an argument list (never a shell); git's own variables that could point it at
another repository (``GIT_DIR``...) are dropped.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from ..errors import ConfigError, UsageError
from .fsutil import file_lock
from .project import Project

#: Where the copies live, under the XP root.
CODE_DIR = "code"
#: Set in an XP's environment when it runs from a snapshot: the commit, and the copy's root.
COMMIT_ENV = "GRIDMAN_CODE_COMMIT"
ROOT_ENV = "GRIDMAN_CODE_ROOT"
#: git variables that would make a git call act on another repository than the one named.
_GIT_VARS = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY",
             "GIT_ALTERNATE_OBJECT_DIRECTORIES", "GIT_COMMON_DIR", "GIT_NAMESPACE")  # fmt: skip
_SHOWN = 10  # uncommitted files listed in the refusal


class DirtyTreeError(UsageError):
    """git_save is on and the work tree holds uncommitted changes."""


@dataclass(frozen=True)
class Snapshot:
    """A copy of one commit: ``path`` is the copy, ``root`` the project root inside it."""

    commit: str
    path: Path
    root: Path
    original: Path  # the project root the copy was made from

    def to_json(self) -> dict[str, Any]:
        """What ``argv.json`` records (its ``code`` key)."""
        return {"commit": self.commit, "path": str(self.root)}

    def main_spec(self, spec: str) -> str:
        """``spec`` for the copy: a path to the main inside the project points into the copy
        (a module name or a relative path is already found there: the copy is the root)."""
        target, colon, attr = spec.partition(":")
        path = Path(target)
        if not path.is_absolute():
            return spec
        moved = self._moved(path)
        return spec if moved is None else f"{moved}{colon}{attr}"

    def pythonpath(self, current: Optional[str]) -> str:
        """PYTHONPATH with the copy first and entries inside the project moved into it."""
        entries = [str(self.root)]
        for entry in (current or "").split(os.pathsep):
            if entry:
                moved = self._moved(Path(entry)) if os.path.isabs(entry) else None
                entries.append(str(moved) if moved is not None else entry)
        return os.pathsep.join(dict.fromkeys(entries))  # each once, the first place kept

    def _moved(self, path: Path) -> Optional[Path]:
        for base in (self.original, self.original.resolve()):
            if path == base or path.is_relative_to(base):
                return self.root / path.relative_to(base)
        return None


def wanted(project: Project, main: Any) -> bool:
    """Whether XPs of this project run from snapshots: gridman.yaml's ``git_save`` when set,
    else the main's (a Hydra main's ``dora.git_save``, or a ``git_save`` attribute)."""
    setting = project.git_save
    if setting is not None:
        return setting.enabled
    dora = getattr(main, "dora", None)
    own = getattr(dora, "git_save", None) if dora is not None else None
    if own is None:
        own = getattr(main, "git_save", None)
    return own is True


def code_snapshot(
    project: Project, dir: Path, main: Any, allow_dirty: bool = False
) -> Optional[Snapshot]:
    """The snapshot XPs submitted now run from (made if needed); None when git_save is off.

    Raises DirtyTreeError (exit 2) on uncommitted changes unless ``allow_dirty`` (the flag)
    or gridman.yaml's ``git_save: {allow_dirty: true}`` says to run the last commit anyway.
    """
    if not wanted(project, main):
        return None
    setting = project.git_save
    allow = allow_dirty or (setting is not None and setting.allow_dirty)
    return take_snapshot(project.root, Path(dir), allow_dirty=allow)


def take_snapshot(root: Path, dir: Path, allow_dirty: bool = False) -> Snapshot:
    """Check the work tree around ``root`` and return the copy of its HEAD under ``dir``."""
    top = Path(_git(root, "rev-parse", "--show-toplevel").strip())
    commit = _git(top, "rev-parse", "--verify", "--quiet", "HEAD^{commit}").strip()
    if not allow_dirty:
        _check_clean(top, dir)
    path = _ensure_copy(top, Path(dir).absolute() / CODE_DIR, commit)
    inside = Path(root).resolve().relative_to(top.resolve())
    return Snapshot(commit, path, path / inside, Path(root).absolute())


def uncommitted(top: Path, dir: Path) -> list[str]:
    """``git status`` lines (``XY path``) of the work tree at ``top``, the XP root (XP
    folders, code copies) and Python bytecode left out."""
    # Bytecode is no code either: importing the main to submit writes it beside the sources.
    args = ["status", "--porcelain", "-z", "--", ".", ":(exclude,glob)**/__pycache__/**",
            ":(exclude,glob)**/*.py[co]"]  # fmt: skip
    resolved = Path(dir).resolve()
    if resolved.is_relative_to(top.resolve()):
        args.append(f":(exclude){resolved.relative_to(top.resolve()).as_posix() or '.'}")
    fields = _git(top, *args).split("\0")
    lines: list[str] = []
    skip = False
    for entry in fields:
        if skip or not entry:
            skip = False
            continue
        lines.append(entry)
        skip = entry[0] in "RC"  # a rename's or copy's original path follows it
    return lines


def _check_clean(top: Path, dir: Path) -> None:
    lines = uncommitted(top, dir)
    if not lines:
        return
    shown = "\n".join(f"  {line}" for line in lines[:_SHOWN])
    more = f"\n  ... and {len(lines) - _SHOWN} more" if len(lines) > _SHOWN else ""
    raise DirtyTreeError(
        f"git_save is on and {top} has uncommitted changes ({len(lines)} file(s)); "
        f"XPs run from a copy of the last commit, which would not hold them:\n{shown}{more}",
        "commit them (or stash them, or add them to .gitignore) and run again; or pass "
        "--allow-dirty (gridman.yaml: `git_save: {allow_dirty: true}`) to run the last "
        "commit without them",
    )


def _ensure_copy(top: Path, codes: Path, commit: str) -> Path:
    """``codes/<commit>``, cloned from ``top`` once: under a lock, into a temporary folder
    renamed into place when complete (a copy that exists is whole)."""
    final = codes / commit
    if final.is_dir():
        return final
    codes.mkdir(parents=True, exist_ok=True)
    with file_lock(codes / ".lock"):
        if final.is_dir():  # made by another submission while this one waited
            return final
        _remove_leftovers(codes)
        temp = Path(tempfile.mkdtemp(prefix=f".{commit[:12]}-", dir=codes))
        try:
            _git(temp, "init", "--quiet")
            # Only this commit's objects (--depth=1): small, and independent of the original.
            _git(temp, "fetch", "--quiet", "--depth=1", "--no-tags", top.as_uri(), commit)
            _git(temp, "-c", "advice.detachedHead=false", "checkout", "--quiet", "--detach",
                 "FETCH_HEAD")  # fmt: skip
            os.rename(temp, final)
        except BaseException:
            shutil.rmtree(temp, ignore_errors=True)
            raise
    return final


def _remove_leftovers(codes: Path) -> None:
    """Temporary copies left by a submission that died (none is being built: the lock is
    held)."""
    for child in codes.iterdir():
        if child.name.startswith(".") and child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)


def _git(cwd: Path, *args: str) -> str:
    """Run ``git -C cwd ARGS`` (an argument list, no shell); its output, or a ConfigError."""
    env = {k: v for k, v in os.environ.items() if k not in _GIT_VARS}
    env["GIT_TERMINAL_PROMPT"] = "0"
    command: Sequence[str] = ["git", "-C", str(cwd), *args]
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False,
                              stdin=subprocess.DEVNULL)  # fmt: skip
    except FileNotFoundError:
        raise ConfigError(
            "git_save needs git, which is not on PATH",
            "install git, or set `git_save: false` in gridman.yaml",
        ) from None
    if done.returncode != 0:
        raise _git_error(cwd, args, done.stderr.strip())
    return done.stdout


def _git_error(cwd: Path, args: Sequence[str], stderr: str) -> ConfigError:
    if args[:1] == ("rev-parse",) and "--show-toplevel" in args:
        return ConfigError(
            f"git_save is on but {cwd} is not in a git repository ({stderr or 'git failed'})",
            "commit the project to git (git init; git add; git commit), or set "
            "`git_save: false` in gridman.yaml",
        )
    if "HEAD^{commit}" in args:
        return ConfigError(f"git_save is on but the repository at {cwd} has no commit yet",
                           "commit the project's code first (git add; git commit)")  # fmt: skip
    return ConfigError(f"git {' '.join(args)} failed in {cwd}: {stderr or 'no message'}",
                       "check the repository (git status), or set `git_save: false`")  # fmt: skip


def snapshot_env(snapshot: Snapshot, env: Mapping[str, str]) -> dict[str, str]:
    """``env`` for an XP running from ``snapshot``: PYTHONPATH with it first, and the commit
    and copy named (``GRIDMAN_CODE_COMMIT``, ``GRIDMAN_CODE_ROOT``)."""
    out = dict(env)
    out["PYTHONPATH"] = snapshot.pythonpath(env.get("PYTHONPATH"))
    out[COMMIT_ENV] = snapshot.commit
    out[ROOT_ENV] = str(snapshot.root)
    return out
