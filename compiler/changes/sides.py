"""The two sides of a change: each a blueprint file, a bundle directory, a generation number in
an output directory, or a git revision of a blueprint, resolved to the same thing: the bundle's
files and the derived plan of the blueprint it was built from.

A bundle carries its blueprint (blueprint.yaml), so a bundle built by an older moat is read the
same way: its files as they are, its plan derived again from its blueprint.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import attrs

from .. import load
from ..derive import Plan
from ..diagnostics import Diagnostic, MoatError
from ..pipeline import BUNDLE_LOCK, check_source, compile_source

MANIFEST = "manifest.json"  # hashes and store paths only: never a change of its own
BLUEPRINT = "blueprint.yaml"


@attrs.frozen
class Side:
    """One side: `label` as the user named it, `files` the bundle's files by path (without the
    manifest), `plan` the derived blueprint."""

    label: str
    files: dict[str, bytes] = attrs.field(eq=False, repr=False)
    plan: Plan = attrs.field(eq=False, repr=False)
    blueprint: str = attrs.field(eq=False, repr=False)


def _unreadable(label: str, message: str, hint: str) -> MoatError:
    return MoatError([Diagnostic("side-unreadable", f"{label}: {message}", hint=hint)])


def _compile(text: str, name: str, lock: str | None = None) -> Plan:
    """A bundle's plan from its blueprint: checked and derived, not rendered (its files are there)."""
    return check_source(_with_lock(load.load_text(text, name), lock, f"{name}{load.LOCK_SUFFIX}")).plan


def _with_lock(source: load.Source, lock: str | None, name: str) -> load.Source:
    """The blueprint with its image lock (text), as load.load_file reads both from the disk."""
    return attrs.evolve(source, lock=load.load_lock_text(lock, name)) if lock is not None else source


def from_blueprint(path: Path, label: str) -> Side:
    compiled = compile_source(load.load_file(path))
    files = {p: o.content for p, o in compiled.files.items()}
    return Side(label, files, compiled.plan, compiled.source.text)


def from_bundle(path: Path, label: str) -> Side:
    files = {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}
    files.pop(MANIFEST, None)
    if BLUEPRINT not in files:
        raise _unreadable(label, f"{path} holds no {BLUEPRINT}", "name a bundle directory moat built "
                          "(out/current, out/generations/N, out/store/...), a blueprint or a git revision")
    text = files[BLUEPRINT].decode("utf-8", "replace")
    lock = files[BUNDLE_LOCK].decode("utf-8", "replace") if BUNDLE_LOCK in files else None
    return Side(label, files, _compile(text, f"{label}:{BLUEPRINT}", lock), text)


def from_git(revision: str, blueprint: str, label: str) -> Side:
    """`blueprint` as committed in `revision`, compiled now (its path relative to the current
    directory, as git's REV:./PATH reads it)."""
    shown = subprocess.run(["git", "show", f"{revision}:./{blueprint}"], capture_output=True, timeout=60)
    if shown.returncode != 0:
        why = shown.stderr.decode(errors="replace").strip().splitlines()
        raise _unreadable(label, f"no {blueprint} in git revision {revision}" + (f" ({why[-1]})" if why else ""),
                          "name a revision git knows (a branch, a tag, a commit) and the blueprint's path after --")
    text = shown.stdout.decode("utf-8", "replace")
    lock_file = load.lock_path(blueprint).as_posix()
    locked = subprocess.run(["git", "show", f"{revision}:./{lock_file}"], capture_output=True, timeout=60)
    lock = locked.stdout.decode("utf-8", "replace") if locked.returncode == 0 else None
    compiled = compile_source(_with_lock(load.load_text(text, f"{revision}:{blueprint}"), lock,
                                         f"{revision}:{lock_file}"))
    return Side(label, {p: o.content for p, o in compiled.files.items()}, compiled.plan, text)


def resolve(spec: str, out: Path, blueprint: str | None = None) -> Side:
    """A side as the user wrote it: an existing file (a blueprint) or directory (a bundle), a
    generation number of `out`, else a git revision of `blueprint`."""
    path = Path(spec)
    if path.is_dir():
        return from_bundle(path.resolve(), spec)
    if path.is_file():
        return from_blueprint(path, spec)
    if spec.isdigit():
        generation = out / "generations" / spec
        if not generation.is_dir():
            raise _unreadable(spec, f"no generation {spec} in {out}", f"`ls {out}/generations` lists them")
        return from_bundle(generation.resolve(), f"generation {spec}")
    if blueprint is None:
        raise _unreadable(spec, "is neither a file, a bundle directory, nor a generation number",
                          "to compare git revisions name the blueprint after --: moat diff main HEAD -- blueprints/example.yaml")
    return from_git(spec, blueprint, spec)
