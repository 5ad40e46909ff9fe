"""Provenance: which blueprint node produced each line of a generated file (Butane-style).

A file is rendered a second time with every value wrapped in a proxy that prints a marker
naming the blueprint path it came from. Templates hold no logic beyond loops and
conditionals and values never contain newlines, so line N of the traced render is line N
of the real file, and the markers on it name the blueprint paths behind it.
"""

from __future__ import annotations

import re
from typing import Any

import attrs

from ..diagnostics import Path
from . import Output, environment

_MARK = re.compile("\u27e6(\\d+)\u27e7")


class _Registry:
    def __init__(self) -> None:
        self.paths: list[Path] = []

    def mark(self, path: Path) -> str:
        self.paths.append(path)
        return f"\u27e6{len(self.paths) - 1}\u27e7"


class Traced:
    """A value plus the blueprint path it came from; attribute and item access keep tracing."""

    __slots__ = ("_value", "_path", "_reg")

    def __init__(self, value: Any, path: Path, reg: _Registry):
        self._value, self._path, self._reg = value, path, reg

    def _wrap(self, value: Any, path: Path) -> Any:
        if isinstance(value, (bool, type(None))):
            return value
        return Traced(value, getattr(value, "at", None) or path, self._reg)

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._value, name)
        if callable(value) and not attrs.has(type(value)):
            return value
        own = getattr(self._value, "at", None)
        path = own + (name,) if own is not None and attrs.has(type(self._value)) and name in attrs.fields_dict(type(self._value)) else self._path
        return self._wrap(value, path)

    def __getitem__(self, key: Any) -> Any:
        key = key._value if isinstance(key, Traced) else key
        return self._wrap(self._value[key], self._path + ((key,) if isinstance(key, int) else ()))

    def __iter__(self):
        for i, item in enumerate(self._value):
            yield self._wrap(item, self._path + (i,))

    def __len__(self) -> int:
        return len(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return self._value == (other._value if isinstance(other, Traced) else other)

    def __hash__(self) -> int:
        return hash(self._value)

    def __contains__(self, item: object) -> bool:
        return (item._value if isinstance(item, Traced) else item) in self._value

    def __str__(self) -> str:
        return self._reg.mark(self._path) + str(self._value)

    def __html__(self) -> str:  # autoescaped XML templates
        from markupsafe import escape

        return self._reg.mark(self._path) + str(escape(str(self._value)))


def trace(out: Output) -> dict[int, list[Path]]:
    """Line number (1-based) -> blueprint paths whose values appear on that line of `out`."""
    if out.template is None:
        return {}
    reg = _Registry()
    context = {k: Traced(v, getattr(v, "at", ()) or (), reg) for k, v in out.context.items()}
    text = environment().get_template(out.template).render(**context)
    lines: dict[int, list[Path]] = {}
    for number, line in enumerate(text.splitlines(), 1):
        paths = [reg.paths[int(i)] for i in _MARK.findall(line)]
        if paths:
            lines[number] = paths
    return lines
