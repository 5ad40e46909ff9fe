"""What a bundle is a function of, known without compiling anything: the compiler's identity (its
code, templates, schema and image elements) and a build's input key. The store hash (pipeline)
and `moat build`'s no-op short-circuit (store.recall) both start here; this module imports
nothing of moat's, so a no-op build does not pay for loading the pipeline."""

from __future__ import annotations

import hashlib
from pathlib import Path

from . import __version__

COMPILER_DIR = Path(__file__).resolve().parent
TEMPLATES = COMPILER_DIR / "render" / "templates"
SCHEMA_NAME = "blueprint.schema.json"


def schema_path() -> Path:
    """An installed wheel carries the schema as compiler/schema_data/ (pyproject.toml maps the
    repository's schema/ there); a checkout has only schema/ at its top."""
    installed = COMPILER_DIR / "schema_data" / SCHEMA_NAME
    return installed if installed.exists() else COMPILER_DIR.parent / "schema" / SCHEMA_NAME


def elements_dir() -> Path:
    """moat's diskimage-builder elements: images/ of a checkout, compiler/image_elements in a wheel."""
    for candidate in (COMPILER_DIR / "image_elements", COMPILER_DIR.parent / "images"):
        if candidate.is_dir():
            return candidate
    return COMPILER_DIR.parent / "images"


def templates_digest() -> str:
    """Hash of every template. Not the bytecode an installer compiles from the switch's Python
    source (templates/switch/): the same templates, the same hash."""
    h = hashlib.sha256()
    for path in sorted(TEMPLATES.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            h.update(path.relative_to(TEMPLATES).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def compiler_digest() -> str:
    """Hash of the compiler's own code and templates, its schema, and moat's image elements
    (images/, which decide the golden images' keys): a changed compiler or element gives new
    store paths."""
    h = hashlib.sha256(__version__.encode())
    for path in sorted(COMPILER_DIR.rglob("*.py")):
        h.update(path.relative_to(COMPILER_DIR).as_posix().encode() + b"\0" + path.read_bytes())
    h.update(templates_digest().encode())
    h.update(schema_path().read_bytes())
    elements = elements_dir()
    files = sorted(p for p in elements.rglob("*") if p.is_file() and "__pycache__" not in p.parts) if elements.is_dir() else []
    for path in files:
        mode = oct(path.stat().st_mode & 0o111).encode()
        h.update(b"element\0" + path.relative_to(elements).as_posix().encode() + b"\0" + mode + b"\0" + path.read_bytes())
    return h.hexdigest()


def input_key(blueprint: bytes, lock: bytes | None, validated: bool) -> str:
    """A build's inputs, as `moat build` sees them before parsing: the blueprint's bytes, its image
    lock's, this compiler, and whether the real validators vetted the result. Equal keys give the
    same store path (the store hash is a function of these), so a key seen before names it."""
    h = hashlib.sha256(b"moat-inputs-v1\0" + compiler_digest().encode())
    for part in (blueprint, b"-" if lock is None else b"lock\0" + lock, b"validated" if validated else b"unvalidated"):
        h.update(len(part).to_bytes(8, "big") + part)
    return h.hexdigest()[:40]
