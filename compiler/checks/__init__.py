"""Stage 4, check: semantic rules the schema cannot express. One module per rule family.

Every rule has a stable id (the `rule` of its diagnostics) and a failing fixture under
tests/fixtures/invalid/. Checks only read the model; each runs in about linear time.
"""

from __future__ import annotations

from typing import Iterator

import attrs

from ..diagnostics import Diagnostic, Path, quote, related_line
from ..load import Source
from ..model import Blueprint


@attrs.frozen
class Context:
    bp: Blueprint
    source: Source | None = None

    def line(self, path: Path) -> str:
        return related_line(self.source, path)

    def order(self, path: Path) -> tuple[int, int]:
        """Where a node was written, to tell which of two came later."""
        return (self.source.locate(path) if self.source else None) or (0, 0)


def _show(key: object) -> str:
    if isinstance(key, tuple) and len(key) == 2 and isinstance(key[0], int):
        return f"{key[0]}/{key[1]}"  # (port, proto)
    if isinstance(key, tuple):
        return _show(key[-1])  # (scope, value)
    return quote(key) if isinstance(key, str) else str(key)


def first_claims(ctx: Context, items, rule: str, what: str, hint: str) -> Iterator[Diagnostic]:
    """One general mechanism for uniqueness: items are (key, owner, path); report every repeat."""
    seen: dict = {}
    for key, owner, path in items:
        if key in seen:
            first_owner, first_path = seen[key]
            yield Diagnostic(rule, f"{what} {_show(key)} is already used by {first_owner} (at {ctx.line(first_path)})",
                             path, hint=hint)
        else:
            seen[key] = (owner, path)


def run_checks(bp: Blueprint, source: Source | None = None) -> list[Diagnostic]:
    from . import (addressing, egress, identity, images, lockout, loops, mounts, names, ports, references, reserved,
                   resources, seeds, tunnel, unused)

    ctx = Context(bp, source)
    diags: list[Diagnostic] = []
    for module in (names, references, images, addressing, reserved, identity, loops, ports, resources, mounts, tunnel,
                   seeds, egress, lockout, unused):
        diags.extend(module.check(ctx))
    return diags
