"""The backend registry: each backend declared once, asked by name; a new one is one module
plus one registry line (shown with gridman.testing.fake_backend); the evaluator's methods."""

from __future__ import annotations

from pathlib import Path

import pytest

from gridman.api.xp import open_project
from gridman.backends import registry
from gridman.backends.attempt import AttemptSpec
from gridman.core.project import load_project
from gridman.errors import ConfigError, UsageError
from gridman.evaluator import METHODS
from gridman.evaluator.methods import METHODS as METHOD_SPECS
from gridman.evaluator.methods import method
from gridman.testing import run_cli, write_project_file, xp_folders
from gridman.testing.grids import attempts_of, job_state, make_grid_project, parse_json_rows

FAKE = "gridman.testing.fake_backend"


@pytest.fixture
def with_fake(monkeypatch: pytest.MonkeyPatch) -> None:
    # The one registry line a new backend needs.
    monkeypatch.setattr(registry, "MODULES", (*registry.MODULES, FAKE))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return make_grid_project(tmp_path / "proj", {"g": "launcher(lr=0.2)\nlauncher(lr=0.3)"})


def test_the_registry_lists_each_backend_with_its_keys() -> None:
    specs = {spec.name: spec for spec in registry.specs()}
    assert list(specs) == ["mpi", "slurm", "local", "inline"]  # the automatic choice's order
    assert set(specs["local"].section_keys()) == {"workers", "gpus", "xps_per_gpu"}
    assert set(specs["mpi"].section_keys()) == {"gpus", "bind_gpus"}
    slurm = specs["slurm"].section_keys()
    assert {"group_arrays", "cache_s", "signal_delay_s", "max_array_size"} <= set(slurm)
    assert {"partition", "time", "gpus", "setup"} <= set(slurm)  # its resource defaults
    assert specs["inline"].section_keys() == ()
    assert all(spec.description for spec in specs.values())
    assert registry.find("foreground") is specs["local"]  # aliases
    assert registry.find("evaluator") is specs["local"]
    assert registry.find("nope") is None


def test_an_unknown_backend_lists_the_registered_ones() -> None:
    with pytest.raises(UsageError, match="unknown backend 'nope'") as info:
        registry.canonical("nope")
    assert info.value.hint is not None
    for name in ("local", "slurm", "mpi", "inline"):
        assert name in info.value.hint


def test_job_ids_show_as_their_backend_says() -> None:
    assert registry.job_label("local", "000123-abcd.json") is None  # a queue file: pid instead
    assert registry.job_label("foreground", "x.json") is None
    assert registry.job_label("slurm", "123_4") == "123_4"
    assert registry.job_label("gone-backend", "77") == "77"  # unknown: shown as recorded


@pytest.mark.parametrize(
    ("section", "settings", "says"),
    [
        ("local", {"worker": 4}, "did you mean 'workers'"),
        ("local", {"workers": 0}, "workers must be a positive integer"),
        ("local", {"gpus": "all"}, "gpus must be a count or a list"),
        ("mpi", {"bind_gpu": False}, "did you mean 'bind_gpus'"),
        ("slurm", {"tiem": 5}, "did you mean 'time'"),
        ("slurm", {"group_arrays": "yes"}, "group_arrays must be true or false"),
        ("inline", {"workers": 2}, "it takes no settings"),
    ],
)
def test_a_bad_section_is_reported_by_its_backend(
    tmp_path: Path, section: str, settings: dict[str, object], says: str
) -> None:
    file = write_project_file(tmp_path, {"main": "train.py", section: settings})
    load_project(tmp_path)  # core leaves backend sections to their backends
    with pytest.raises(ConfigError) as info:
        open_project(tmp_path)
    text = f"{info.value.message} {info.value.hint}"
    assert f"{file}: `{section}:`" in info.value.message and says in text, text


def test_a_misspelt_section_is_an_unknown_key(tmp_path: Path) -> None:
    write_project_file(tmp_path, {"main": "train.py", "slrum": {"partition": "gpu"}})
    load_project(tmp_path)  # not a misspelt core key: core cannot tell
    with pytest.raises(ConfigError, match="unknown key 'slrum'") as info:
        open_project(tmp_path)
    assert info.value.hint is not None and "did you mean 'slurm'" in info.value.hint


def test_a_bad_section_stops_the_grid_command(root: Path) -> None:
    write_project_file(root, {"main": "train.py", "dir": "outputs", "local": {"xps_per_gpus": 2}})
    result = run_cli(["grid", "g", "--dry-run"], root)
    assert result.exit_code == 2
    assert "`local:` unknown key 'xps_per_gpus'" in result.stderr
    assert "did you mean 'xps_per_gpu'" in result.stderr


def test_a_registered_backend_runs_a_grid(root: Path, with_fake: None) -> None:
    write_project_file(root, {"main": "train.py", "dir": "outputs", "fake": {"note": "hi"}})
    result = run_cli(["grid", "g", "--backend", "fake", "--no-monitor"], root)
    assert result.exit_code == 0, result.output
    assert "backend fake (2 XPs, note 'hi') (--backend)" in result.stderr
    folders = xp_folders(root)
    assert len(folders) == 2 and all(job_state(f) == "COMPLETED" for f in folders)
    attempt = attempts_of(folders[0])[-1]
    assert attempt["backend"] == "fake" and attempt["job_id"] == f"fake-{folders[0].name}"
    info = run_cli(["info", "--sig", folders[0].name], root)
    assert f"job <fake-{folders[0].name}>" in info.stdout  # its own job_label
    again = run_cli(["grid", "g", "--backend", "fake", "--json", "--no-monitor"], root)
    assert again.exit_code == 0, again.output
    assert [row["state"] for row in parse_json_rows(again.stdout)] == ["COMPLETED"] * 2


def test_a_registered_backend_checks_its_section(root: Path, with_fake: None) -> None:
    write_project_file(root, {"main": "train.py", "dir": "outputs", "fake": {"note": 3}})
    result = run_cli(["grid", "g", "--backend", "fake", "--dry-run"], root)
    assert result.exit_code == 2 and "`fake:` note must be a string" in result.stderr


def test_an_old_queue_entry_is_an_attempt() -> None:
    entry = {"version": 1, "sig": "0123abcd", "folder": "/x/xps/0123abcd", "gpus": 1,
             "cwd": "/x", "command": ["python", "-m", "gridman.worker", "train.py", "/x", "--"],
             "env": {"A": "1"}}  # fmt: skip
    spec = AttemptSpec.from_json(entry, job_id="q.json", gpus=("3",))
    assert spec.backend == "local" and spec.job_id == "q.json"
    assert spec.command[2] == "gridman.worker"
    assert spec.environment() == {"A": "1", "CUDA_VISIBLE_DEVICES": "3"}
    assert AttemptSpec.from_json(spec.to_json()) == AttemptSpec.from_json(entry, job_id="q.json")


def test_the_worker_ignores_the_signals_its_host_names() -> None:
    import signal

    from gridman.backends.worker import _ignore_signals

    before = signal.getsignal(signal.SIGUSR2)
    try:
        _ignore_signals("SIGUSR2, NOT_A_SIGNAL")
        assert signal.getsignal(signal.SIGUSR2) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGUSR2, before)


def test_the_evaluator_methods_come_from_their_registry() -> None:
    assert list(METHODS) == list(METHOD_SPECS) == ["serial", "thread", "process", "mpi", "slurm"]
    assert method("process").options == {"start_method", "prefetch"}
    assert method("serial").single_worker
    with pytest.raises(UsageError, match="unknown evaluator method 'gpu'") as info:
        method("gpu")
    assert info.value.hint is not None and "thread" in info.value.hint
