"""Stages on disk: commands run on completed XPs after training (``--stage test``).

This module is the stage model (folders, results, the command template, the plan's decision
for one XP); submitting, polling and cancelling stage jobs is api/stage.py's.

A stage attempt of XP ``sig`` is a job of its own, attached to the XP: it lives in
``<dir>/xps/<sig>/stages/<stage>/`` with its own ``job.json``, ``log/<n>.log`` and run lock, so
every backend records, polls and cancels it exactly as it does training attempts. It goes
through the ordinary Backend interface: the submission's folder is the stage folder and its
"main" is gridman's built-in stage main (stagerun.py), which runs the user's command and keeps
the metrics it reports in ``metrics.json``; any backend that can run a main runs stages.

The command template is an argv (split with shlex when given as one string), never a shell
line: ``{sig}``, ``{folder}`` (the XP folder), ``{dir}`` (the XP root) and ``{python}`` (this
interpreter) are replaced inside each token, and a token that is exactly ``{argv}`` becomes the
XP's training arguments. Metrics join the XP's results under the stage's name (``test.acc``).
An XP is skipped when it has results of a test made after its latest training attempt, unless
``force``.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Union

from ..errors import UsageError
from .fsutil import FORMAT_VERSION, atomic_write_json, read_json
from .jobs import JobRecord, State

if TYPE_CHECKING:
    from .explore import Sheep

STAGES = "stages"
METRICS = "metrics.json"
REQUEST = "request.json"
OUT = "out.json"
#: The built-in main that runs a stage's command (see stagerun.py).
STAGE_MAIN = "gridman.stagerun:main"
PLACEHOLDERS = ("{sig}", "{folder}", "{dir}", "{python}")
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")


def check_stage_name(name: str) -> str:
    if not _NAME.match(name or ""):
        raise UsageError(
            f"bad stage name {name!r}",
            "a stage name is a word (letters, digits, _), e.g. test: it names a folder and "
            "the metrics' namespace",
        )
    return name


def stage_folder(xp_folder: Path, name: str) -> Path:
    return Path(xp_folder) / STAGES / check_stage_name(name)


def read_result(folder: Path) -> Optional[dict[str, Any]]:
    """The content of a stage folder's ``metrics.json`` (None without a readable one)."""
    try:
        data = read_json(folder / METRICS)
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("metrics"), dict):
        return None
    return data


def stage_metrics(xp_folder: Path) -> dict[str, dict[str, Any]]:
    """Metrics of every stage of an XP that has results: ``{"test": {"acc": 0.9}}``."""
    try:  # plain strings: called for every row of the grid table
        names = sorted(os.listdir(os.path.join(str(xp_folder), STAGES)))
    except OSError:
        return {}
    out = {}
    for name in names:
        if _NAME.match(name):
            result = read_result(Path(xp_folder) / STAGES / name)
            if result is not None:
                out[name] = result["metrics"]
    return out


# -- the command template --------------------------------------------------------------------
def parse_template(command: Union[str, Sequence[str]]) -> tuple[str, ...]:
    """The template as argv: one string (or a single token holding spaces) is shlex-split."""
    tokens = [command] if isinstance(command, str) else list(command)
    if len(tokens) == 1 and any(ch.isspace() for ch in tokens[0]):
        try:
            tokens = shlex.split(tokens[0])
        except ValueError as exc:
            raise UsageError(f"cannot split the stage command: {exc}") from None
    if not tokens or not tokens[0]:
        raise UsageError("the stage needs a command", "gridman grid NAME --stage test -- CMD ...")
    for token in tokens:
        if "{argv}" in token and token != "{argv}":
            raise UsageError(
                f"{{argv}} must be a token of its own, not part of {token!r}",
                "it expands to the XP's training arguments, one token each",
            )
    return tuple(str(t) for t in tokens)


def expand(template: Sequence[str], sig: str, folder: Path, argv: Sequence[str]) -> list[str]:
    """The command for one XP (no shell: placeholders are replaced inside tokens)."""
    values = {"{sig}": sig, "{folder}": str(folder), "{dir}": str(Path(folder).parent.parent),
              "{python}": sys.executable}  # fmt: skip
    out: list[str] = []
    for token in template:
        if token == "{argv}":
            out += [str(a) for a in argv]
            continue
        for key, value in values.items():
            token = token.replace(key, value)
        out.append(token)
    return out


# -- planning -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class StageRequest:
    """What ``--stage NAME [--stage-force] -- COMMAND`` asks for."""

    name: str
    template: tuple[str, ...]
    force: bool = False


@dataclass(frozen=True)
class StageStep:
    sig: str
    action: str  # "submit", "keep" (results exist or running) or "skip" (not completed)
    reason: str


@dataclass(frozen=True)
class StagePlan:
    name: str
    steps: tuple[StageStep, ...]

    def counts(self) -> dict[str, int]:
        out = {"submit": 0, "keep": 0, "skip": 0}
        for step in self.steps:
            out[step.action] += 1
        return out

    def to_submit(self) -> list[str]:
        return [s.sig for s in self.steps if s.action == "submit"]


@dataclass(frozen=True)
class StageResult:
    plan: StagePlan
    committed: bool


def trained_attempt(sheep: Sheep) -> int:
    """The XP's latest training attempt (0: never trained): its stage results name it."""
    latest = sheep.job.latest if sheep.job else None
    return latest.n if latest else 0


def decide(sheep: Sheep, record: Optional[JobRecord], result: Optional[dict[str, Any]],
           force: bool) -> StageStep:  # fmt: skip
    """What to do with one XP (pure: its training record, its stage record and results)."""
    state = sheep.state or "NEW"
    if state != State.COMPLETED.value:
        return StageStep(sheep.sig, "skip", f"not completed ({state})")
    latest = record.latest if record else None
    if latest is not None and not latest.state.finished:
        return StageStep(sheep.sig, "keep", f"{latest.state.value.lower()} already")
    if force:
        return StageStep(sheep.sig, "submit", "--stage-force")
    if result is not None:
        tested = result.get("trained_attempt")
        if isinstance(tested, int) and tested < trained_attempt(sheep):
            return StageStep(sheep.sig, "submit", "trained again since its last results")
        return StageStep(sheep.sig, "keep", "has results")
    if latest is not None:
        return StageStep(sheep.sig, "submit", f"no results (last attempt {latest.state.value})")
    return StageStep(sheep.sig, "submit", "no results yet")


def write_request(folder: Path, name: str, sheep: Sheep, command: Sequence[str]) -> None:
    """Record what a stage attempt is to run (``request.json``, read by the stage main)."""
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(folder / REQUEST, {
        "version": FORMAT_VERSION, "stage": name, "sig": sheep.sig, "command": list(command),
        "trained_attempt": trained_attempt(sheep),
    }, fsync=False)  # fmt: skip
