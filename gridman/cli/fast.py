"""Plain CLI values converted without pydantic: typer's per-command coercion, short-cut.

typer 0.29 converts every non-boolean option through a pydantic ``TypeAdapter`` that it builds
on each invocation, for each option of the command, given or not: importing pydantic and
building the ~25 adapters of ``gridman grid`` cost about 60-75 ms per command on a 2-core VM,
a third of ``gridman info``. Every option gridman declares is a plain ``str``, ``int``,
``float``, ``bool`` or ``list[str]``, whose conversion from a command-line token is unambiguous, so
:func:`install` gives each such parameter a converter that handles the values it is sure of
(absent ones, defaults of the right type, plain decimal tokens) and hands anything else to
typer's own converter, built on first need. Bad input thus fails with typer's exact message.

It touches one private attribute, ``_runtime_param`` (typer's lazily built converter): where
it is missing (another typer release), nothing is installed and typer works as it always did.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

_INT = re.compile(r"(?:0|-?[1-9][0-9]{0,17})\Z")
_FLOAT = re.compile(r"-?(?:0|[1-9][0-9]{0,15})(?:\.[0-9]{1,15})?\Z")


class _Plain:
    """Converts the values of one parameter it is sure of; delegates the rest to typer."""

    __slots__ = ("kind", "multi")

    def __init__(self, kind: type, multi: bool) -> None:
        self.kind = kind
        self.multi = multi

    def coerce(self, value: Any, param: Any, ctx: Any) -> Any:
        if value is None:
            return () if self.multi else None
        if self.multi:
            if isinstance(value, (list, tuple)) and all(type(v) is str for v in value):
                return list(value)
        else:
            done = _convert(self.kind, value)
            if done is not _UNSURE:
                return done
        param._runtime_param = None  # typer's own converter, built now and kept
        return param.get_runtime_param().coerce(value, param=param, ctx=ctx)


_UNSURE = object()


def _convert(kind: type, value: Any) -> Any:
    if type(value) is kind:
        return value
    if type(value) is not str:
        return _UNSURE
    if kind is str:
        return value
    if kind is int and _INT.match(value):
        return int(value)
    if kind is float and _FLOAT.match(value):
        return float(value)
    return _UNSURE


def _plain_kind(param: Any) -> tuple[type, bool] | None:
    """(kind, multi) of a parameter whose values _Plain can convert, else None (also for a
    typer whose parameters look otherwise: they keep typer's own conversion)."""
    try:
        return _kind_of(param)
    except AttributeError:
        return None


def _kind_of(param: Any) -> tuple[type, bool] | None:
    descriptor = getattr(param, "type_descriptor", None)
    if descriptor is None or not hasattr(param, "get_runtime_param"):
        return None
    if getattr(param, "_runtime_param", 0) is not None:  # built already, or no such slot
        return None
    info = descriptor.parameter_info
    if descriptor.file_annotation is not None or info.parser is not None:
        return None
    if info.min is not None or info.max is not None:
        return None
    annotation = descriptor.annotation
    multi = bool(param.multiple or param.nargs == -1)
    if multi and annotation == list[str]:
        return str, True
    if not multi and param.nargs == 1 and annotation in (str, int, float, bool):
        return annotation, False
    return None


def install(params: Iterable[Any]) -> None:
    """Give each plain parameter of a command (``get_params(ctx)``) the fast converter."""
    for param in params:
        kind = _plain_kind(param)
        if kind is not None:
            param._runtime_param = _Plain(*kind)
