"""Configuration data: attribute-access mappings, YAML files read safely, dotted overrides.

Used by YAML mains (``cfg.model.depth``) and by the project file ``gridman.yaml``. YAML is
always read with ``yaml.safe_load``; a malformed file is a ConfigError naming the file and line.
"""

from __future__ import annotations

import copy
import difflib
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigError, UsageError


class AttrDict(dict):
    """A dict whose keys are also attributes, recursively (``cfg.model.depth``)."""

    def __init__(self, data: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        for key, value in (data or {}).items():
            self[key] = _wrap(value)

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            close = difflib.get_close_matches(name, [str(k) for k in self], n=1)
            extra = f" (did you mean {close[0]!r}?)" if close else ""
            raise AttributeError(f"config has no key {name!r}{extra}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = _wrap(value)

    def __deepcopy__(self, memo: dict[int, Any]) -> AttrDict:
        return AttrDict(copy.deepcopy(dict(self), memo))

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dicts and lists (for JSON)."""
        return dict(_unwrap(self))


def _wrap(value: Any) -> Any:
    if isinstance(value, Mapping) and not isinstance(value, AttrDict):
        return AttrDict(value)
    if isinstance(value, list):
        return [_wrap(v) for v in value]
    return value


def _unwrap(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unwrap(v) for v in value]
    return value


def load_yaml(path: Path) -> Any:
    """``yaml.safe_load`` a file; a syntax error is a ConfigError with the file and line."""
    import yaml  # lazy: keep `import gridman` light

    try:
        text = Path(path).read_text(encoding="utf8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}: malformed YAML: {problem}", "fix the file and retry") from None


def load_mapping(path: Path) -> dict[str, Any]:
    """Load a YAML file that must hold a mapping (an empty file is an empty mapping)."""
    data = load_yaml(path)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: expected a mapping of keys to values, found {type(data).__name__}"
        )
    return data


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists and scalars are leaves."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


_YAML11_BOOLS = {"yes", "no", "on", "off", "y", "n"}
_FLOAT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


def parse_value(text: str) -> Any:
    """Parse an override's value as YAML (``4`` -> int, ``[1,2]`` -> list, ``null`` -> None).

    Numbers follow YAML 1.2 (``1e-3`` is a float, not a string) and ``yes``/``no``/``on``/
    ``off`` stay strings, as a reader of the command line expects.
    """
    import yaml

    stripped = text.strip()
    if not stripped:
        return ""
    if stripped.lower() in _YAML11_BOOLS:
        return text
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str) and _FLOAT.match(stripped):
        return float(stripped)
    return value


def iter_overrides(argv: Sequence[str]) -> Iterator[tuple[str, str, bool]]:
    """Split ``key=value`` / ``+key=value`` tokens into (key, raw value, adds_new_key)."""
    for index, token in enumerate(argv):
        if token.startswith("-"):
            _refuse_flag(token, argv[index + 1] if index + 1 < len(argv) else None)
        if "=" not in token or token.startswith("="):
            raise UsageError(
                f"bad override {token!r}: expected key=value (e.g. lr=0.01 model.depth=4)",
                "use +key=value to add a key that the config does not have",
            )
        key, _, raw = token.partition("=")
        add = key.startswith("+")
        key = key.lstrip("+")
        if not key or any(not part for part in key.split(".")):
            raise UsageError(f"bad override {token!r}: empty key component")
        yield key, raw, add


def _refuse_flag(token: str, following: str | None) -> None:
    """``--lr 0.5`` (or ``--lr=0.5``) given to a YAML main: say the override it meant."""
    key, eq, value = token.lstrip("-").partition("=")
    if not eq:
        value = following if following is not None and not following.startswith("-") else "..."
    raise UsageError(
        f"bad override {token!r}: a YAML main takes key=value overrides, not --flags",
        f"write {key.replace('-', '_') if key else 'key'}={value}",
    )


def apply_overrides(base: Mapping[str, Any], argv: Sequence[str], source: str) -> dict[str, Any]:
    """Return a deep copy of ``base`` with the dotted ``key=value`` overrides applied.

    A key absent from ``base`` is an error (with a close match) unless written ``+key=value``;
    a value that does not fit the config's (a word for a number, a scalar for a section) is an
    error saying what was expected.
    """
    cfg = _unwrap(copy.deepcopy(dict(base)))
    for key, raw, add in iter_overrides(argv):
        parts = key.split(".")
        node = cfg
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None and add:
                child = node[part] = {}
            if not isinstance(child, dict):
                _unknown_key(".".join(parts[: depth + 1]), node, source, parts[:depth])
            node = child
        if parts[-1] not in node and not add:
            _unknown_key(key, node, source, parts[:-1])
        value = parse_value(raw)
        if parts[-1] in node:
            check_type(key, raw, value, node[parts[-1]], source)
        node[parts[-1]] = value
    return cfg


def _kind(value: Any) -> str | None:
    """What an override of a config value must be (None: anything goes)."""
    if isinstance(value, bool):
        return "a boolean (true or false)"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, Mapping) and value:
        return "a section"
    if isinstance(value, list):
        return "a list"
    return None  # strings, null and empty sections take anything


def _fits(value: Any, old: Any) -> bool:
    if isinstance(old, bool):
        return isinstance(value, bool)
    if isinstance(old, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(old, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(old, Mapping) and old:
        return isinstance(value, Mapping)
    if isinstance(old, list):
        return isinstance(value, list)
    return True


def check_type(key: str, raw: str, value: Any, old: Any, source: str) -> None:
    """Raise a UsageError when ``key=raw`` does not fit the config's value ``old``
    (``null`` always fits: it unsets a value)."""
    if value is None or _fits(value, old):
        return
    expected = _kind(old)
    if isinstance(old, Mapping):
        keys = ", ".join(f"{key}.{k}" for k in list(old)[:5])
        raise UsageError(
            f"bad override {key}={raw}: {key} is a section of {source}, not a value",
            f"set its keys instead: {keys}",
        )
    raise UsageError(
        f"bad override {key}={raw}: expected {expected}, as {key}: {json.dumps(old)} in "
        f"{source}; got {type(value).__name__} {json.dumps(value)}",
        f"give {expected}, e.g. {key}={json.dumps(old, separators=(',', ':'))} (the config's "
        "value); +key=value adds new keys only",
    )


def _unknown_key(key: str, node: Mapping[str, Any], source: str, parents: list[str]) -> None:
    prefix = ".".join(parents) + "." if parents else ""
    known = [prefix + str(k) for k in node]
    close = difflib.get_close_matches(key, known, n=3)
    hint = f"did you mean {', '.join(close)}?" if close else f"valid keys here: {', '.join(known)}"
    raise UsageError(
        f"unknown config key {key!r} (not in {source})", hint + " Use +key=value to add a key."
    )
