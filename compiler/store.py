"""Stage 7, store: a content-addressed, read-only bundle under out/store, Nix-style.

out/store/<hash>-<name>/ is written in a temporary directory and renamed into place, so a
failed or killed build leaves no store entry; a build that finds its store path renamed into
place meanwhile by another build of the same inputs adopts it once it is vetted. out/current and
out/generations/N are symlinks swapped atomically with rename(2), under an flock on out/.lock so
that builds running at once each get their own generation.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Callable

import attrs

from .diagnostics import Diagnostic, MoatError

MANIFEST = "manifest.json"


@attrs.frozen
class Artifact:
    content: bytes
    mode: int = 0o444


@attrs.frozen
class Stored:
    path: Path
    created: bool
    generation: int
    generation_created: bool


def store_hash(*parts: bytes) -> str:
    """32 base32 characters (160 bits) of sha256 over the length-prefixed parts."""
    h = hashlib.sha256()
    for part in parts:
        h.update(len(part).to_bytes(8, "big") + part)
    return base64.b32encode(h.digest()[:20]).decode().lower()


def manifest(files: dict[str, Artifact], meta: dict) -> bytes:
    entries = {path: {"sha256": hashlib.sha256(a.content).hexdigest(), "mode": f"{a.mode:04o}", "size": len(a.content)}
               for path, a in sorted(files.items())}
    return (json.dumps({**meta, "files": entries}, indent=2, sort_keys=True) + "\n").encode()


def _write_tree(root: Path, files: dict[str, Artifact]) -> None:
    written = []
    for rel, art in sorted(files.items()):
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "xb") as fh:
            fh.write(art.content)
        os.chmod(target, art.mode)
        written.append(target)
    # directories read-only last, deepest first
    folders = [dirpath for dirpath, _dirs, _files in sorted(os.walk(root), key=lambda w: -w[0].count(os.sep))]
    for dirpath in folders:
        os.chmod(dirpath, 0o555)
    _make_durable(root, written + [Path(d) for d in folders])


def _syncfs(path: Path) -> bool:
    """syncfs(2) of the filesystem holding `path`: every file written there reaches the disk in one
    call, where an fsync per file costs a journal commit each. False where there is none."""
    try:
        import ctypes

        syncfs = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return False
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return syncfs(fd) == 0
    finally:
        os.close(fd)


def _make_durable(root: Path, paths: list[Path]) -> None:
    """Nothing enters the store unsynced: the tree's files and folders are on disk before the
    rename that makes it a store entry. One syncfs; without it, an fsync of each."""
    if _syncfs(root):
        return
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _clean_stale(store: Path) -> None:
    """Remove temporary trees of builds that were killed (their pid is gone)."""
    for tmp in store.glob(".tmp-*"):
        pid = tmp.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and not Path(f"/proc/{pid}").exists():
            _force_remove(tmp)


def _force_remove(path: Path) -> None:
    for dirpath, _dirs, _files in os.walk(path):
        os.chmod(dirpath, 0o755)
    shutil.rmtree(path, ignore_errors=True)


def _swap_symlink(link: Path, target: str) -> None:
    tmp = link.with_name(f".{link.name}.tmp-{os.getpid()}")
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(target, tmp)
    os.replace(tmp, link)


Check = Callable[[Path], list[Diagnostic]]


def store(out: Path, name: str, digest: str, files: dict[str, Artifact], meta: dict,
          check: Check | None = None) -> Stored:
    """Write files under out/store/<digest>-<name> unless present; `check` vets the tree before it lands."""
    try:
        return _store(out, name, digest, files, meta, check)
    except OSError as exc:
        raise MoatError([Diagnostic("store-write", f"cannot write the bundle into {out}: {exc.strerror or exc}",
                                    hint="check free space and permissions of the output directory (--out)")]) from None


def _store(out: Path, name: str, digest: str, files: dict[str, Artifact], meta: dict,
           check: Check | None) -> Stored:
    store_dir = out / "store"
    store_dir.mkdir(parents=True, exist_ok=True)
    _clean_stale(store_dir)
    final = store_dir / f"{digest}-{name}"
    created = False
    if final.exists():
        _vet(final, check)
    else:
        tmp = store_dir / f".tmp-{digest}-{os.getpid()}"
        _force_remove(tmp) if tmp.exists() else None
        tmp.mkdir()
        try:
            all_files = dict(files)
            all_files[MANIFEST] = Artifact(manifest(files, meta))
            _write_tree(tmp, all_files)
            found = check(tmp) if check else []
            if any(d.is_error for d in found):
                raise MoatError(found)
            try:
                os.rename(tmp, final)
                created = True
            except OSError as exc:  # another build of the same inputs renamed it first
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST) or not final.is_dir():
                    raise
                _vet(final, check)
        finally:
            if tmp.exists():
                _force_remove(tmp)
    generation, gen_created = _link_generation(out, final)
    return Stored(final, created, generation, gen_created)


def _vet(final: Path, check: Check | None) -> None:
    """An existing store path is used only when it matches its manifest and passes `check`."""
    problems = verify(final)
    if problems:
        raise MoatError([Diagnostic("store-corrupt", f"{final} differs from its manifest: {problems[0]}",
                                    hint=f"a store path is never changed after it is written; delete it (rm -rf {final}) and build again")])
    found = check(final) if check else []  # built before without the validators, perhaps (--no-tools)
    if any(d.is_error for d in found):
        raise MoatError(found)


LOCK = ".lock"


@contextlib.contextmanager
def _locked(out: Path):
    """out/.lock held exclusively: one build at a time picks a generation number and swaps links."""
    fd = os.open(out / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _link_generation(out: Path, final: Path) -> tuple[int, bool]:
    with _locked(out):
        return _link_generation_locked(out, final)


def _link_generation_locked(out: Path, final: Path) -> tuple[int, bool]:
    gens = out / "generations"
    gens.mkdir(exist_ok=True)
    numbers = sorted(int(p.name) for p in gens.iterdir() if p.name.isdigit())
    target = os.path.relpath(final, out)
    current = out / "current"
    if numbers and current.is_symlink() and os.readlink(current) == target:
        return numbers[-1], False
    number = (numbers[-1] + 1) if numbers else 1
    _swap_symlink(gens / str(number), os.path.relpath(final, gens))
    _swap_symlink(current, target)
    return number, True


def verify(path: Path) -> list[str]:
    """Differences between a store path and its manifest; empty when intact."""
    try:
        data = json.loads((path / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        return [f"unreadable manifest: {exc}"]
    problems = []
    listed = data.get("files", {})
    present = {p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file() or p.is_symlink()} - {MANIFEST}
    for extra in sorted(present - set(listed)):
        problems.append(f"{extra}: not in the manifest")
    for rel, entry in sorted(listed.items()):
        file = path / rel
        if not file.is_file() or file.is_symlink():
            problems.append(f"{rel}: missing")
            continue
        if hashlib.sha256(file.read_bytes()).hexdigest() != entry["sha256"]:
            problems.append(f"{rel}: content changed")
        if f"{file.stat().st_mode & 0o7777:04o}" != entry["mode"]:
            problems.append(f"{rel}: mode changed")
    return problems


# out/store/.inputs/KEY -> <hash>-<name>: the store path a build with input key KEY
# (identity.input_key: blueprint and lock bytes, compiler, validated or not) produced, Nix-style:
# the same inputs are not compiled again.
INPUTS = ".inputs"


def remember(out: Path, key: str, final: Path) -> None:
    """Record that inputs KEY build the store path `final` (a symlink swapped into place)."""
    inputs = out / "store" / INPUTS
    inputs.mkdir(exist_ok=True)
    with _locked(out):
        _swap_symlink(inputs / key, f"../{final.name}")


def recall(out: Path, key: str) -> Path | None:
    """The store path inputs KEY built before, if it is still there."""
    link = out / "store" / INPUTS / key
    try:
        name = os.readlink(link)
    except OSError:
        return None
    final = out / "store" / Path(name).name
    return final if (final / MANIFEST).is_file() else None


def link(out: Path, final: Path) -> Stored:
    """Make an existing store path current (a new generation unless it is current already)."""
    generation, gen_created = _link_generation(out, final)
    return Stored(final, False, generation, gen_created)
