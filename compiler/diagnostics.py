"""Diagnostics: what went wrong, where in the blueprint, and how to fix it."""

from __future__ import annotations

import unicodedata
from typing import TYPE_CHECKING, Iterator, Literal

import attrs

if TYPE_CHECKING:
    from .load import Source

Path = tuple[str | int, ...]
Severity = Literal["error", "warning"]


@attrs.frozen
class Diagnostic:
    """One finding. `path` points into the blueprint data; the source resolves it to line:col."""

    rule: str
    message: str
    path: Path = ()
    hint: str | None = None
    severity: Severity = "error"
    # point at the key of `path` (e.g. an unknown property) rather than its value
    at_key: bool = False
    # a fixed (line, col) when the problem is in the text itself (YAML syntax)
    position: tuple[int, int] | None = None

    @property
    def is_error(self) -> bool:
        return self.severity == "error"


class MoatError(Exception):
    """The only exception the compiler raises for bad input: carries every diagnostic found."""

    def __init__(self, diagnostics: list[Diagnostic], source: Source | None = None):
        super().__init__(f"{sum(d.is_error for d in diagnostics)} error(s)")
        self.diagnostics = diagnostics
        self.source = source


def position_of(diag: Diagnostic, source: Source | None) -> tuple[int, int] | None:
    if diag.position is not None:
        return diag.position
    if source is None:
        return None
    return source.locate(diag.path, key=diag.at_key)


def format_diagnostic(diag: Diagnostic, source: Source | None, filename: str | None = None) -> str:
    name = filename or (source.name if source else "<blueprint>")
    pos = position_of(diag, source)
    where = f"{name}:{pos[0]}:{pos[1]}" if pos else name
    text = f"{where}: {diag.severity}[{diag.rule}]: {diag.message}"
    if diag.hint:
        text += f"\n  hint: {diag.hint}"
    return text


def diagnostic_record(diag: Diagnostic, source: Source | None, filename: str | None = None) -> dict:
    """The fields of format_diagnostic's text, for machines (`moat check --format json`)."""
    line, column = position_of(diag, source) or (None, None)
    return {"rule": diag.rule, "severity": diag.severity,
            "file": filename or (source.name if source else "<blueprint>"), "line": line, "column": column,
            "message": diag.message, "hint": diag.hint}


def sort_key(diag: Diagnostic, source: Source | None) -> tuple:
    pos = position_of(diag, source) or (0, 0)
    return (pos, diag.rule, diag.message)


def related_line(source: Source | None, path: Path) -> str:
    """'line N' of another blueprint node, for messages such as 'first at line 30'."""
    if source is None:
        return "elsewhere"
    pos = source.locate(path)
    return f"line {pos[0]}" if pos else "elsewhere"


QUOTE_LIMIT = 60  # characters of an input value a message repeats; the rest is elided


def quote(value: object, limit: int = QUOTE_LIMIT, sized: bool = True) -> str:
    """An input value as a message repeats it: repr'd, and when long, its start, an ellipsis and
    (`sized`) its length, so that an error about a 20,000-character value is one line, not the value."""
    text = repr(value)
    if len(text) <= limit:
        return text
    size = f"{len(value)} characters" if isinstance(value, str) else f"{len(text)} characters written"
    return f"{text[:limit]}..." + (f" ({size})" if sized else "")


# Ordinary whitespace a YAML text may hold besides printable characters (str.isprintable()).
TEXT_WHITESPACE = frozenset("\t\n\r")


def invisible_characters(text: str, allowed: frozenset[str] = TEXT_WHITESPACE) -> Iterator[tuple[int, str]]:
    """(index, character) of every character of `text` that is not printable (str.isprintable():
    controls, format characters such as U+202E or U+200B, separators other than the space,
    private-use, surrogates, unassigned) and not in `allowed`. Printable runs are skipped at C speed."""
    start = 0
    for line in text.split("\n"):
        if not line.isprintable():
            for i, char in enumerate(line):
                if not char.isprintable() and char not in allowed:
                    yield start + i, char
        start += len(line) + 1


def codepoint(char: str) -> str:
    """'U+202E (RIGHT-TO-LEFT OVERRIDE)': a character named the way Unicode charts name it."""
    name = unicodedata.name(char, None) or f"category {unicodedata.category(char)}"
    return f"U+{ord(char):04X} ({name})"
