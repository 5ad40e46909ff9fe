"""The whole pipeline in one place:
load -> validate -> structure -> check -> derive -> render -> store -> verify.

`moat check` runs the stages up to derive (check_source); the render, store and verify stages
(and Jinja2 with them) are imported when a build needs them."""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

import attrs

from . import __version__, load, schema
from .checks import run_checks
from .derive import Plan, derive
from .diagnostics import Diagnostic, MoatError
from .images import lock as images_lock
from .model import structure
from .identity import compiler_digest

if TYPE_CHECKING:
    from .render import Output
    from .store import Stored


@attrs.frozen
class Checked:
    """A blueprint that passed every check, derived into its plan."""

    source: load.Source
    data: dict  # with the schema's defaults
    plan: Plan
    warnings: list[Diagnostic]


@attrs.frozen
class Compiled:
    source: load.Source
    plan: Plan
    files: dict[str, Output]
    warnings: list[Diagnostic]
    digest: str
    meta: dict


def check_source(source: load.Source) -> Checked:
    """Validate, structure, check and derive one loaded blueprint (and its image lock)."""
    lock = images_lock.read(source.lock)
    problems = schema.validate(source.data)
    if any(d.is_error for d in problems):
        raise MoatError(problems, source)
    data = schema.with_defaults(source.data)
    blueprint = structure(data)
    found = run_checks(blueprint, source)
    if any(d.is_error for d in found):
        raise MoatError(found, source)
    plan = derive(blueprint, lock)
    found.extend(_stale_locks(plan, source))
    return Checked(source, data, plan, found)


def compile_source(source: load.Source) -> Compiled:
    """check_source, then render the bundle's files and name its store path."""
    from .render import Output, render
    from .store import store_hash

    checked = check_source(source)
    data, plan, found, blueprint = checked.data, checked.plan, checked.warnings, checked.plan.blueprint
    files = render(plan)
    files["blueprint.yaml"] = Output("blueprint.yaml", source.text.encode())
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
    compiler = compiler_digest()
    inputs = [canonical, source.text.encode()]
    if source.lock is not None:  # the bundle carries its lock beside its blueprint (BUNDLE_LOCK)
        files[BUNDLE_LOCK] = Output(BUNDLE_LOCK, source.lock.text.encode())
        inputs.append(b"images.lock\0" + source.lock.text.encode())
    digest = store_hash(b"moat-store-v1", __version__.encode(), compiler.encode(), *inputs)
    meta = {
        "name": blueprint.name,
        "store_hash": digest,
        "blueprint_sha256": hashlib.sha256(source.text.encode()).hexdigest(),
        "compiler": {"version": __version__, "sha256": compiler},
    }
    return Compiled(source, plan, files, found, digest, meta)


BUNDLE_LOCK = "blueprint" + load.LOCK_SUFFIX  # beside blueprint.yaml in a bundle (load.lock_path)


def _stale_locks(plan: Plan, source: load.Source) -> list[Diagnostic]:
    lock = source.lock.name if source.lock is not None else "the image lock"
    return [Diagnostic("image-lock-stale", f"{lock} was made for another recipe of image {g.name!r} "
                       f"(recipe key {g.stale_lock.recipe}, now {g.key}): the image is keyed by its recipe alone",
                       g.image.at, severity="warning",
                       hint=f"sudo moat images --refresh {source.name} bakes it and locks its packages again")
            for g in plan.images if g.stale_lock is not None]


@contextlib.contextmanager
def _collector_paused():
    """The stages build one large graph of objects that all stay alive until the end (there are
    no cycles to free): the cyclic garbage collector would walk it again and again, and more often
    the larger it grows. Paused while they run, on again after (`moat check` of an 8 MB blueprint:
    17.5 s with it, 10.8 s without; of 1 MB: 1.7 s and 1.6 s)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def check_file(path: str | Path) -> Compiled:
    with _collector_paused():
        return compile_source(load.load_file(path))


def checked_file(path: str | Path) -> Checked:
    with _collector_paused():
        return check_source(load.load_file(path))


def build_file(path: str | Path, out: Path, tools: bool = True, tools_mode: str | None = None,
               progress=lambda line: None) -> tuple[Compiled, Stored]:
    """Compile and store; with `tools`, the real validators vet the tree before it enters the store
    (tools_mode and progress: where they come from, see verify.toolset)."""
    from .store import Artifact, store, verify
    from .verify import check_bundle

    compiled = check_file(path)
    artifacts = {path: Artifact(o.content, o.mode) for path, o in compiled.files.items()}
    tool_findings: list[Diagnostic] = []

    def vet(root: Path) -> list[Diagnostic]:
        tool_findings.extend(check_bundle(root, compiled.files, tools_mode, progress))
        return tool_findings

    try:
        stored = store(out, compiled.plan.blueprint.name, compiled.digest, artifacts, compiled.meta,
                       vet if tools else None)
    except MoatError as err:
        raise MoatError(err.diagnostics, compiled.source) from None
    compiled.warnings.extend(tool_findings)
    problems = verify(stored.path)
    if problems:
        raise MoatError([Diagnostic("store-corrupt", f"{stored.path} failed verification: {problems[0]}",
                                    hint="delete the store path and build again")])
    return compiled, stored
