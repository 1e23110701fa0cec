"""Start-up and overhead of the gridman CLI, against ``python -c pass`` and Dora's figures.

    python bench/startup.py [--runs N] [--json]

In a temporary copy of a tiny project (``gridman.yaml`` with ``main: train.py`` and
``dir: outputs``, and a trivial argparse main that pushes one nested metrics entry per epoch), it
prepares one XP with ``gridman run -- --lr 0.5 --epochs 3`` and then times, as child processes
(one warm-up, then N runs): the bare interpreter, ``import gridman``, ``gridman --help``,
``gridman info`` by signature and by argv (the latter imports the main), the bare training
script, and ``gridman run --sig SIG`` (the same three epochs through the CLI and its worker).

It also checks which heavy modules each light command imports (from ``PYTHONPROFILEIMPORTTIME``)
and prints PASS/MISS against the issue's targets. Figures, not asserts: it exits 0 unless a
command fails to run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import (
    CommandFailed,
    ForeignLoad,
    Summary,
    bench_command,
    load_line,
    machine_info,
    machine_line,
    markdown_table,
    ratio_text,
)

TARGET_INFO_S = 0.3
HEAVY = ("submitit", "mpi4py", "numpy", "torch")  # the list: never eager
WATCHED = (*HEAVY, "rich")
XP_ARGV = ("--lr", "0.5", "--epochs", "3")

# Dora on this kind of machine (2-core VM, Python 3.11.7): wall seconds, and peak MiB of `info`.
DORA_PASS_S = 0.014
DORA = {
    "help": (0.215, "dora --help"),
    "info_sig": (1.930, "dora info -- --lr=0.5"),  # Dora imports the main for every info
    "info_argv": (1.930, "dora info -- --lr=0.5"),
    "run": (1.913, "dora run -f <sig>"),
}
DORA_INFO_MIB = 213.6

PROJECT_YAML = "main: train.py\ndir: outputs\n"
TRAIN_PY = '''\
"""Benchmark main: trivial epochs, one nested metrics entry pushed per epoch."""

import argparse

import gridman

parser = argparse.ArgumentParser()
parser.add_argument("--lr", type=float, default=0.1)
parser.add_argument("--epochs", type=int, default=5)


@gridman.argparse_main(parser=parser, dir="outputs")
def main():
    xp = gridman.get_xp()
    loss = 1.0
    for epoch in range(xp.cfg.epochs):
        loss *= 1.0 - xp.cfg.lr / 2
        xp.link.push_metrics({"epoch": epoch, "train": {"loss": loss}, "valid": {"loss": loss}})
        print(f"epoch {epoch}: loss {loss:.4f}", flush=True)


if __name__ == "__main__":
    main()
'''


@dataclass(frozen=True)
class Case:
    """One timed command: a short key, how the table shows it, and its argv."""

    key: str
    label: str
    argv: list[str]


def make_project(root: Path) -> None:
    (root / "gridman.yaml").write_text(PROJECT_YAML)
    (root / "train.py").write_text(TRAIN_PY)


def child_env(root: Path) -> dict[str, str]:
    """The environment of the timed commands.

    No GRIDMAN_* variables (the temporary project decides), and bytecode cached under ``root``:
    commands run from cached bytecode, as after ``pip install``, even where
    PYTHONDONTWRITEBYTECODE is set; the warm-up run fills the cache and the source tree is left
    alone.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDMAN_")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(root / ".pycache")
    return env


def gridman_script() -> str:
    """The console script installed next to this interpreter (the venv's ``gridman``)."""
    script = Path(sys.executable).parent / "gridman"
    if not script.exists():
        sys.exit(f"no gridman console script next to {sys.executable}; install gridman first")
    return str(script)


def prepare_xp(root: Path, gridman: str, env: Mapping[str, str]) -> str:
    """Run the benchmark XP once through the CLI and return its signature."""
    done = subprocess.run(
        [gridman, "run", "--", *XP_ARGV], cwd=root, env=dict(env), capture_output=True, text=True
    )
    if done.returncode != 0:
        sys.exit(f"`gridman run -- {' '.join(XP_ARGV)}` failed ({done.returncode}):\n{done.stderr}")
    sigs = sorted(p.name for p in (root / "outputs" / "xps").iterdir())
    if len(sigs) != 1:
        sys.exit(f"expected one XP folder after `gridman run`, found {sigs}")
    return sigs[0]


def cases(python: str, gridman: str, sig: str) -> list[Case]:
    return [
        Case("pass", "python -c pass", [python, "-c", "pass"]),
        Case("import", "python -c 'import gridman'", [python, "-c", "import gridman"]),
        Case("help", "gridman --help", [gridman, "--help"]),
        Case("info_sig", "gridman info --sig SIG", [gridman, "info", "--sig", sig]),
        Case("info_argv", "gridman info -- --lr 0.5", [gridman, "info", "--", "--lr", "0.5"]),
        Case("bare", "python train.py " + " ".join(XP_ARGV), [python, "train.py", *XP_ARGV]),
        Case("run", "gridman run --sig SIG", [gridman, "run", "--sig", sig]),
    ]


def import_profile(argv: Sequence[str], cwd: Path, env: Mapping[str, str]) -> dict[str, Any]:
    """Which watched modules ``argv`` imports, how many modules, and self time per package."""
    profiled = {**env, "PYTHONPROFILEIMPORTTIME": "1"}
    done = subprocess.run(list(argv), cwd=cwd, env=profiled, capture_output=True, text=True)
    if done.returncode != 0:
        raise CommandFailed(f"{' '.join(argv)} exited with {done.returncode}")
    modules: list[str] = []
    per_package: dict[str, int] = defaultdict(int)
    for line in done.stderr.splitlines():
        parts = line.removeprefix("import time:").split("|")
        if not line.startswith("import time:") or len(parts) != 3 or not parts[0].strip().isdigit():
            continue
        name = parts[2].strip()
        modules.append(name)
        per_package[name.split(".")[0]] += int(parts[0])
    top = sorted(per_package.items(), key=lambda kv: -kv[1])[:6]
    return {
        "watched": sorted({m.split(".")[0] for m in modules} & set(WATCHED)),
        "modules": len(modules),
        "top_self_ms": {name: round(us / 1000, 1) for name, us in top},
    }


def measure(
    todo: Sequence[Case], runs: int, root: Path, env: Mapping[str, str]
) -> dict[str, Summary]:
    results = {}
    for case in todo:
        print(f"  timing {case.label} ...", file=sys.stderr, flush=True)
        results[case.key] = bench_command(case.argv, runs, cwd=root, env=env)
    return results


def verdicts(results: Mapping[str, Summary], imports: Mapping[str, Any]) -> dict[str, bool]:
    """The issue's targets: ``info`` within 0.3 s; ``import gridman`` and ``--help`` light."""
    fast = {k: results[k].median <= TARGET_INFO_S for k in ("info_sig", "info_argv")}
    light = {k: not set(imports[k]["watched"]) & set(HEAVY) for k in ("import", "help")}
    heavy = ", ".join(HEAVY)
    return {
        f"gridman info --sig SIG within {TARGET_INFO_S} s (median)": fast["info_sig"],
        f"gridman info -- --lr 0.5 within {TARGET_INFO_S} s (median)": fast["info_argv"],
        f"import gridman imports none of {heavy}": light["import"],
        f"gridman --help imports none of {heavy}": light["help"],
    }


def run_benchmark(runs: int) -> dict[str, Any]:
    python, gridman = sys.executable, gridman_script()
    machine = machine_info()  # taken before the runs: the date is when they started
    with tempfile.TemporaryDirectory(prefix="gridman-bench-") as tmp:
        root = Path(tmp)
        make_project(root)
        env = child_env(root)
        sig = prepare_xp(root, gridman, env)
        todo = cases(python, gridman, sig)
        with ForeignLoad() as load:
            results = measure(todo, runs, root, env)
        profiled = [c for c in todo if c.key in ("pass", "import", "help", "info_sig", "info_argv")]
        imports = {c.key: import_profile(c.argv, root, env) for c in profiled}
    return {
        "machine": machine,
        "runs": runs,
        "sig": sig,
        "foreign_load": load.share,
        "labels": {c.key: c.label for c in todo},
        "results": results,
        "imports": imports,
        "verdicts": verdicts(results, imports),
    }


def table_lines(report: Mapping[str, Any]) -> list[str]:
    results: Mapping[str, Summary] = report["results"]
    base = results["pass"].median
    headers = ["command", "median s", "min s", "CPU s", "peak MiB", "vs pass s"]
    headers += ["Dora s", "vs Dora"]
    rows = []
    for key, summary in results.items():
        dora = DORA_PASS_S if key == "pass" else DORA.get(key, (None, ""))[0]
        rows.append(
            [
                f"`{report['labels'][key]}`",
                f"{summary.median:.3f}",
                f"{summary.min:.3f}",
                f"{summary.cpu:.3f}",
                f"{summary.peak_mib:.1f}",
                f"{summary.median - base:+.3f}",
                f"{dora:.3f}" if dora else "",
                ratio_text(summary.median, dora) if dora else "",
            ]
        )
    return markdown_table(headers, rows)


def comparison_lines(results: Mapping[str, Summary], labels: Mapping[str, str]) -> list[str]:
    """Each command against Dora's, in wall time and in overhead over ``python -c pass``."""
    base = results["pass"].median
    lines = []
    for key, (dora, dora_label) in DORA.items():
        ours = results[key].median
        lines.append(
            f"{labels[key]}: {ours:.3f} s vs {dora_label} {dora:.3f} s = {ratio_text(ours, dora)}"
            f"; over python -c pass {ours - base:.3f} s vs {dora - DORA_PASS_S:.3f} s"
        )
    info = results["info_argv"]
    lines.append(
        f"{labels['info_argv']} peak RSS: {info.peak_mib:.1f} MiB vs Dora {DORA_INFO_MIB} MiB "
        f"({DORA_INFO_MIB / info.peak_mib:.1f}x less)"
    )
    over = results["run"].median - results["bare"].median
    lines.append(f"run overhead ({labels['run']} - {labels['bare']}): {over:+.3f} s median")
    return lines


def import_lines(imports: Mapping[str, Any], labels: Mapping[str, str]) -> list[str]:
    lines = [f"watched modules ({', '.join(WATCHED)}) imported by:"]
    for key, profile in imports.items():
        watched = ", ".join(profile["watched"]) or "none"
        top = ", ".join(f"{n} {ms} ms" for n, ms in profile["top_self_ms"].items())
        lines.append(f"  {labels[key]:<28} {watched:<10} ({profile['modules']} modules)")
        lines.append(f"  {'':<28} self time by package: {top}")
    return lines


def render(report: Mapping[str, Any]) -> str:
    verdict = report["verdicts"]
    lines = [
        f"machine: {machine_line(report['machine'])}",
        f"runs: {report['runs']} after 1 warm-up; XP sig {report['sig']}",
        load_line(report["foreign_load"]),
        "",
        *table_lines(report),
        "",
        *comparison_lines(report["results"], report["labels"]),
        "",
        *import_lines(report["imports"], report["labels"]),
        "",
        *(f"{name}: {'PASS' if ok else 'MISS'}" for name, ok in verdict.items()),
    ]
    return "\n".join(lines)


def to_json(report: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(report)
    out["results"] = {k: s.to_json() for k, s in report["results"].items()}
    out["dora"] = {"pass": DORA_PASS_S, "info_peak_mib": DORA_INFO_MIB} | {
        k: v[0] for k, v in DORA.items()
    }
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="timed runs per command")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    try:
        report = run_benchmark(max(1, args.runs))
    except CommandFailed as exc:
        print(f"startup.py: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(to_json(report), indent=2) if args.json else render(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
