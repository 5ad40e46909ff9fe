"""Stage 6, render: Plan -> {bundle path: bytes}. One module per artifact family, templates beside.

Templates get resolved values only (StrictUndefined, XML autoescaped) and hold no logic
beyond loops and conditionals.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path as FsPath

import jinja2

from ..derive import Plan

TEMPLATES = FsPath(__file__).resolve().parent / "templates"


@functools.cache
def environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        undefined=jinja2.StrictUndefined,
        autoescape=lambda name: bool(name) and name.endswith(".xml.j2"),
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def template(name: str, **context: object) -> bytes:
    return environment().get_template(name).render(**context).encode()


def templates_digest() -> str:
    """Hash of every template, part of the store hash."""
    h = hashlib.sha256()
    for path in sorted(TEMPLATES.rglob("*")):
        if path.is_file():
            h.update(path.relative_to(TEMPLATES).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def render(plan: Plan) -> dict[str, bytes]:
    from . import libvirt

    files: dict[str, bytes] = {}
    for family in (libvirt,):
        for path, content in family.render(plan):
            assert path not in files, f"two renderers wrote {path}"
            files[path] = content
    return files
