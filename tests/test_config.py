"""YAML configuration: overrides, AttrDict, YAML errors, and YAML-main deltas and signatures."""

from __future__ import annotations

import copy
import pickle
from pathlib import Path
from typing import Any

import pytest

import gridman
from gridman.core.config import (
    AttrDict,
    apply_overrides,
    flatten,
    iter_overrides,
    load_mapping,
    load_yaml,
    parse_value,
)
from gridman.core.main import YamlMain
from gridman.core.signature import compute_sig
from gridman.errors import ConfigError, HelpRequested, UsageError
from gridman.testing import YAML_CONFIG

BASE_SIG = "97d170e1"


def _noop() -> None:
    pass


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(YAML_CONFIG, encoding="utf8")
    return path


@pytest.fixture
def main(config_file: Path) -> YamlMain:
    return gridman.yaml_main(config=config_file, exclude=["logging.*"])(_noop)


def xp_of(main: YamlMain, *argv: str) -> Any:
    return main.get_xp(list(argv), dir=Path("/nonexistent"))


# -- overrides --------------------------------------------------------------------------------


def test_no_override_is_the_base(main: YamlMain) -> None:
    xp = xp_of(main)
    assert xp.delta == [] and xp.sig == BASE_SIG
    assert xp.cfg.model.depth == 2
    assert xp.cfg.model.layers == [8, 8]


def test_nested_override(main: YamlMain) -> None:
    xp = xp_of(main, "model.depth=4")
    assert xp.cfg.model.depth == 4 and isinstance(xp.cfg.model.depth, int)
    assert xp.delta == [("model.depth", 4)]
    assert xp.sig == compute_sig([("model.depth", 4)])
    assert main.base["model"]["depth"] == 2  # the base is never modified


def test_list_override(main: YamlMain) -> None:
    xp = xp_of(main, "model.layers=[1,2]")
    assert xp.cfg.model.layers == [1, 2]
    assert xp.delta == [("model.layers", [1, 2])]
    assert xp_of(main, "model.layers=[8, 8]").sig == BASE_SIG


@pytest.mark.parametrize(
    ("token", "key", "value"),
    [
        ("fail=true", "fail", True),
        ("fail=True", "fail", True),
        ("name=null", "name", None),
        ("name=~", "name", None),
        ("name=", "name", ""),
        ("name=hello world", "name", "hello world"),
        ("name=123", "name", 123),
        ("name='123'", "name", "123"),
        ("lr=0.5", "lr", 0.5),
        ("epochs=7", "epochs", 7),
    ],
)
def test_scalar_parsing(main: YamlMain, token: str, key: str, value: Any) -> None:
    xp = xp_of(main, token)
    got = xp.cfg[key]
    assert got == value and type(got) is type(value)
    assert xp.delta == [(key, value)]


@pytest.mark.parametrize(
    "argv",
    [
        ["lr=0.1"],
        ["lr=0.10"],
        ["fail=false"],
        ["extra=null"],
        ["model.depth=2", "name=base"],
        ["model.layers=[8,8]"],
    ],
)
def test_override_equal_to_base_gives_base_sig(main: YamlMain, argv: list[str]) -> None:
    xp = xp_of(main, *argv)
    assert xp.delta == []
    assert xp.sig == BASE_SIG


def test_later_override_wins_and_order_is_irrelevant(main: YamlMain) -> None:
    assert xp_of(main, "lr=0.3", "lr=0.5").sig == xp_of(main, "lr=0.5").sig
    a = xp_of(main, "lr=0.5", "model.depth=4").sig
    b = xp_of(main, "model.depth=4", "lr=0.5").sig
    assert a == b == compute_sig([("lr", 0.5), ("model.depth", 4)])


@pytest.mark.parametrize(
    "argv", [["logging.verbose=true"], ["logging.every=1"], ["logging.verbose=true", "lr=0.1"]]
)
def test_excluded_dotted_keys_never_change_the_sig(main: YamlMain, argv: list[str]) -> None:
    xp = xp_of(main, *argv)
    assert xp.sig == BASE_SIG
    assert xp.delta == []
    assert xp_of(main, *argv, "lr=0.5").sig == xp_of(main, "lr=0.5").sig


def test_excluded_value_still_reaches_the_config(main: YamlMain) -> None:
    assert xp_of(main, "logging.verbose=true").cfg.logging.verbose is True


def test_unknown_key_suggests_close_match(main: YamlMain) -> None:
    with pytest.raises(UsageError) as info:
        xp_of(main, "model.dept=4")
    assert "unknown config key 'model.dept'" in info.value.message
    assert info.value.hint is not None and "model.depth" in info.value.hint
    assert "+key=value" in info.value.hint
    with pytest.raises(UsageError, match="did you mean lr"):
        xp_of(main, "lrr=0.5")


def test_unknown_top_level_section(main: YamlMain) -> None:
    with pytest.raises(UsageError, match="unknown config key 'optim'"):
        xp_of(main, "optim.lr=0.5")


def test_override_through_a_scalar_is_an_error(main: YamlMain) -> None:
    with pytest.raises(UsageError, match=r"model\.depth"):
        xp_of(main, "model.depth.x=1")


def test_plus_adds_a_key(main: YamlMain) -> None:
    xp = xp_of(main, "+new.key=1", "+model.width=3")
    assert xp.cfg.new.key == 1
    assert xp.cfg.model.width == 3
    assert xp.delta == [("model.width", 3), ("new.key", 1)]
    assert main.value_to_argv("new.key", 1) == ["+new.key=1"]
    assert main.value_to_argv("model.depth", 4) == ["model.depth=4"]


def test_plus_on_existing_key_sets_it(main: YamlMain) -> None:
    assert xp_of(main, "+lr=0.5").sig == xp_of(main, "lr=0.5").sig


@pytest.mark.parametrize("token", ["lr", "=1", "a..b=1", ".a=1", "a.=1", "+=1", "--lr"])
def test_malformed_override_token(main: YamlMain, token: str) -> None:
    with pytest.raises(UsageError, match="bad override"):
        xp_of(main, token)


def test_iter_overrides() -> None:
    assert list(iter_overrides(["a.b=1", "+c=x=y"])) == [("a.b", "1", False), ("c", "x=y", True)]


def test_apply_overrides_is_a_copy() -> None:
    base = {"a": {"b": [1]}}
    cfg = apply_overrides(base, ["a.b=[2]"], "test")
    assert cfg == {"a": {"b": [2]}}
    assert base == {"a": {"b": [1]}}


def test_help_lists_the_keys(main: YamlMain) -> None:
    with pytest.raises(HelpRequested) as info:
        xp_of(main, "--help")
    assert "model.depth=2" in info.value.message
    assert info.value.exit_code == 0


def test_parse_value() -> None:
    assert parse_value("[1, 2]") == [1, 2]
    assert parse_value("{a: 1}") == {"a": 1}
    assert parse_value("") == ""
    assert parse_value("[1,") == "[1,"  # not YAML: kept as text


def test_exponent_override_is_a_float(main: YamlMain) -> None:
    xp = xp_of(main, "lr=1e-3")
    assert xp.cfg.lr == 0.001


def test_flatten() -> None:
    assert flatten({"a": {"b": 1, "c": {"d": [1]}}, "e": {}, "f": None}) == {
        "a.b": 1,
        "a.c.d": [1],
        "e": {},
        "f": None,
    }


# -- YAML files -------------------------------------------------------------------------------


def test_malformed_yaml_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("lr: 0.1\nepochs: 2\nmodel: : bad\n", encoding="utf8")
    with pytest.raises(ConfigError) as info:
        load_yaml(path)
    assert f"{path}:3" in str(info.value)
    assert "malformed YAML" in str(info.value)


def test_malformed_config_of_a_yaml_main(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("lr: 0.1\nlayers: [1, 2\nepochs: 2\n", encoding="utf8")
    main = gridman.yaml_main(config=path)(_noop)
    with pytest.raises(ConfigError, match=rf"{path}:\d+: malformed YAML"):
        xp_of(main, "lr=0.5")


def test_load_mapping(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("", encoding="utf8")
    assert load_mapping(path) == {}
    path.write_text("- 1\n- 2\n", encoding="utf8")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_mapping(path)
    with pytest.raises(ConfigError, match="no such file"):
        load_mapping(tmp_path / "missing.yaml")


def test_yaml_is_loaded_safely(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("x: !!python/object/apply:os.system ['true']\n", encoding="utf8")
    with pytest.raises(ConfigError):
        load_yaml(path)


def test_relative_config_is_next_to_the_main(tmp_path: Path) -> None:
    main = gridman.yaml_main(config="conf/config.yaml")(_noop)
    assert main.config_path == Path(__file__).parent / "conf" / "config.yaml"


# -- AttrDict ---------------------------------------------------------------------------------


def test_attrdict_access() -> None:
    cfg = AttrDict({"model": {"depth": 2, "blocks": [{"width": 3}]}, "lr": 0.1})
    assert cfg.model.depth == 2
    assert cfg.model.blocks[0].width == 3
    assert cfg["model"]["depth"] == 2
    cfg.new = {"x": 1}
    assert cfg.new.x == 1
    assert isinstance(cfg.new, AttrDict)


def test_attrdict_missing_key() -> None:
    cfg = AttrDict({"model": {"depth": 2}})
    with pytest.raises(AttributeError, match=r"no key 'dpth' \(did you mean 'depth'\?\)"):
        _ = cfg.model.dpth
    with pytest.raises(AttributeError, match="no key 'zzz'"):
        _ = cfg.zzz
    assert not hasattr(cfg, "zzz")
    assert getattr(cfg, "zzz", 5) == 5


def test_attrdict_copy_pickle_and_plain() -> None:
    cfg = AttrDict({"model": {"depth": 2}, "layers": [{"a": 1}]})
    deep = copy.deepcopy(cfg)
    deep.model.depth = 9
    assert cfg.model.depth == 2
    assert isinstance(deep, AttrDict)
    back = pickle.loads(pickle.dumps(cfg))
    assert back == cfg and back.model.depth == 2
    plain = cfg.to_dict()
    assert plain == {"model": {"depth": 2}, "layers": [{"a": 1}]}
    assert type(plain["model"]) is dict and type(plain["layers"][0]) is dict
