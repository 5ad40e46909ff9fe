"""Stage 6, render: Plan -> bundle files. One module per artifact family, templates beside.

Each family module defines `render(plan, bundle) -> Iterator[Output]` and `VALIDATORS`,
the real tools that check its files (see compiler/verify.py). Modules are discovered, so
adding a family is adding a module. A family that embeds another's files (cloud-init
carrying the sshd config, say) names it in `AFTER` and reads it from `bundle`. Templates get resolved values only (StrictUndefined, XML
autoescaped) and hold no logic beyond loops and conditionals.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import os
import pkgutil
from pathlib import Path as FsPath
from types import ModuleType
from typing import Any

import attrs
import jinja2

from ..cached_build import moat_cache
from ..derive import Plan
from ..identity import TEMPLATES



@attrs.frozen
class Output:
    """One generated file. `template`/`context` let provenance re-render it traced."""

    path: str
    content: bytes
    mode: int = 0o444
    template: str | None = None
    context: dict[str, Any] = attrs.field(factory=dict, eq=False, repr=False)


class _TemplateCache(jinja2.FileSystemBytecodeCache):
    """Compiled templates kept between runs (compiling all of them from source took 0.2 s a
    start). Jinja2 keys each by template name and checks the source's checksum and its own
    bytecode version, and writes by rename; a cache that cannot be read or written is only slower."""

    def load_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        try:
            super().load_bytecode(bucket)
        except (OSError, EOFError, ValueError):
            bucket.reset()

    def dump_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        try:
            os.makedirs(self.directory, exist_ok=True)
            super().dump_bytecode(bucket)
        except OSError:
            pass


@functools.cache
def environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        bytecode_cache=_TemplateCache(str(moat_cache() / "jinja")),
        undefined=jinja2.StrictUndefined,
        autoescape=lambda name: bool(name) and name.endswith(".xml.j2"),
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def template(path: str, name: str, mode: int = 0o444, **context: Any) -> Output:
    """Render template `name` into bundle file `path`."""
    text = environment().get_template(name).render(**context)
    return Output(path, text.encode(), mode, name, context)


@functools.cache
def families() -> tuple[ModuleType, ...]:
    """Every artifact family module in this package, each after the families in its AFTER."""
    names = sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))
    modules = {name: importlib.import_module(f"{__name__}.{name}") for name in names}
    ordered: list[str] = []

    def visit(name: str, stack: tuple[str, ...] = ()) -> None:
        assert name not in stack, f"render families depend on each other in a cycle: {stack + (name,)}"
        if name in ordered:
            return
        for dep in getattr(modules[name], "AFTER", ()):
            visit(dep, stack + (name,))
        ordered.append(name)

    for name in names:
        visit(name)
    return tuple(modules[name] for name in ordered)


def render(plan: Plan) -> dict[str, Output]:
    files: dict[str, Output] = {}
    for family in families():
        for out in family.render(plan, files):
            assert out.path not in files, f"two renderers wrote {out.path}"
            files[out.path] = out
    return files
