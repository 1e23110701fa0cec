"""Configuration data: attribute-access mappings, YAML files read safely, dotted overrides.

Used by YAML mains (``cfg.model.depth``) and by the project file ``gridman.yaml``. YAML is
always read with ``yaml.safe_load``; a malformed file is a ConfigError naming the file and line.
"""

from __future__ import annotations

import copy
import difflib
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
    for token in argv:
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


def apply_overrides(base: Mapping[str, Any], argv: Sequence[str], source: str) -> dict[str, Any]:
    """Return a deep copy of ``base`` with the dotted ``key=value`` overrides applied.

    A key absent from ``base`` is an error (with a close match) unless written ``+key=value``.
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
        node[parts[-1]] = parse_value(raw)
    return cfg


def _unknown_key(key: str, node: Mapping[str, Any], source: str, parents: list[str]) -> None:
    prefix = ".".join(parents) + "." if parents else ""
    known = [prefix + str(k) for k in node]
    close = difflib.get_close_matches(key, known, n=3)
    hint = f"did you mean {', '.join(close)}?" if close else f"valid keys here: {', '.join(known)}"
    raise UsageError(
        f"unknown config key {key!r} (not in {source})", hint + " Use +key=value to add a key."
    )
