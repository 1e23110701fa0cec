"""Issue 14 case 8: ``info --sig`` takes a unique prefix; an ambiguous one lists the candidates;
an unknown signature names the recent XPs (with their argv), not hashes "close" to it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gridman.core.signature import compute_sig
from gridman.core.xp import XP, init_xp
from gridman.testing import make_project, run_cli

GRIDMAN = Path(sys.executable).parent / "gridman"
SIG_LR05 = "3b45fed1"  # --lr 0.5


def _xps(project: Path, count: int) -> list[str]:
    """``count`` XP folders (--seed 1..count) under the project's root; their signatures."""
    sigs = []
    for seed in range(1, count + 1):
        delta = [("seed", seed)]
        xp = XP(cfg=None, argv=["--seed", str(seed)], delta=delta, sig=compute_sig(delta),
                dir=project / "outputs")  # fmt: skip
        init_xp(xp)
        sigs.append(xp.sig)
    return sigs


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_project(tmp_path / "proj")


def test_unique_prefix_in_a_real_process(project: Path) -> None:
    ran = run_cli(["run", "--", "--lr", "0.5"], project)
    assert ran.exit_code == 0, ran.output
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDMAN_")}
    shown = subprocess.run([str(GRIDMAN), "info", "--sig", "3b45f", "--json"], cwd=project,
                           env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert data["sig"] == SIG_LR05 and data["state"] == "COMPLETED"


def test_prefix_in_process_and_full_sig(project: Path) -> None:
    sigs = _xps(project, 3)
    for text in (sigs[0], sigs[0][:4], sigs[0][:1] if sum(s[0] == sigs[0][0] for s in sigs) == 1
                 else sigs[0][:6]):  # fmt: skip
        result = run_cli(["info", "--sig", text], project)
        assert result.exit_code == 0, result.output
        assert result.stdout.startswith(f"sig      {sigs[0]}\n")


def test_ambiguous_prefix_lists_the_candidates(project: Path) -> None:
    sigs = _xps(project, 40)  # 40 signatures: some share a first character
    first = max(set(s[0] for s in sigs), key=lambda c: sum(s[0] == c for s in sigs))
    candidates = [s for s in sigs if s[0] == first]
    assert len(candidates) > 1
    result = run_cli(["info", "--sig", first], project)
    assert result.exit_code == 2
    assert f"signature prefix {first} is ambiguous: {len(candidates)} XPs match" in result.stderr
    for sig in candidates[:10]:
        assert sig in result.stderr  # with its argv: `3f9a2c1b (--seed 4)`
    seed = sigs.index(candidates[0]) + 1
    assert f"{candidates[0]} (--seed {seed})" in result.stderr


def test_unknown_sig_names_recent_xps(project: Path) -> None:
    sigs = _xps(project, 3)
    newest = project / "outputs" / "xps" / sigs[1]
    os.utime(newest, (2e9, 2e9))  # the most recently changed folder comes first
    for text in ("ffffffff", "fffff"):
        result = run_cli(["info", "--sig", text], project)
        assert result.exit_code == 2
        assert f"recent XPs: {sigs[1]} (--seed 2);" in result.stderr
    assert "closest known" not in result.stderr


@pytest.mark.parametrize("bad", ["3B45", "xyz", "../3b"])
def test_a_prefix_is_hex(project: Path, bad: str) -> None:
    result = run_cli(["info", "--sig", bad], project)
    assert result.exit_code == 2 and "is not a signature" in result.stderr


def test_run_takes_a_unique_prefix_too(tmp_path: Path) -> None:
    """``gridman run --sig PREFIX`` reruns the XP a unique prefix names, as ``info`` finds it."""
    from gridman.testing import make_project, run_cli, xps_dir

    project = make_project(tmp_path / "proj")
    first = run_cli(["run", "--", "--lr", "0.3"], project)
    assert first.exit_code == 0, first.output
    (folder,) = xps_dir(project).iterdir()
    again = run_cli(["run", "--sig", folder.name[:5]], project)
    assert again.exit_code == 0, again.output
    assert [p.name for p in xps_dir(project).iterdir()] == [folder.name]  # the same XP
    bad = run_cli(["run", "--sig", "../etc"], project)
    assert bad.exit_code == 2 and "not a signature" in bad.output
