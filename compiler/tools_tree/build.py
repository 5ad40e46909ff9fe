"""Building the tools tree: once per machine and recipe, atomically, with progress.

Atomic like every cached build (compiler/cached_build.py): a temporary name renamed when
complete, leftovers of killed builds removed, a lock per key (a second `moat build` waits for
the first instead of building the same tree twice). The builder runs in its own
mount and pid namespaces and dies with moat (PR_SET_PDEATHSIG): no mount or process outlives it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from ..cached_build import die_with_parent, locked, remove_leftovers, temp_path
from ..diagnostics import Diagnostic, MoatError
from .recipe import BUILD_SCRIPT, METADATA, Recipe, cache_root, mirror


def tree_path(r: Recipe) -> Path:
    return cache_root() / r.key


def current(r: Recipe) -> Path | None:
    """The built tree of this recipe, if there is one."""
    path = tree_path(r)
    return path if (path / METADATA).is_file() else None


def unbuildable() -> str | None:
    """Why this machine cannot build a tree (None when it can)."""
    if os.geteuid() != 0:
        return "building it needs root (debootstrap)"
    for program in ("debootstrap", "unshare", "chroot"):
        if shutil.which(program) is None and shutil.which(program, path="/usr/sbin:/sbin") is None:
            return f"{program} is not installed (apt-get install {'util-linux' if program == 'unshare' else program})"
    return None


def build(r: Recipe, progress: Callable[[str], None] = lambda line: None) -> Path:
    """Build the tree of this recipe unless it exists; return its path."""
    dest = tree_path(r)
    root = cache_root()
    with locked(root, r.key):
        if (dest / METADATA).is_file():
            return dest
        remove_leftovers(root, r.key)
        if dest.exists():  # no metadata: not a tree moat finished
            shutil.rmtree(dest)
        problem = unbuildable()
        if problem:
            raise MoatError([Diagnostic("tools-tree", f"cannot build the tools tree: {problem}",
                                        hint="run `sudo moat tools build` once, or build with the tools "
                                             "installed on this machine: moat build --host-tools")])
        tmp = temp_path(root, r.key)
        log = root / f"{r.key}.log"
        source = mirror()
        env = {**os.environ, "DEBCACHE": os.environ.get("MOAT_DEBOOTSTRAP_CACHE") or str(root / "debs")}
        pypi = " ".join(f"{name}=={version}" for name, version in r.pypi)
        started = time.monotonic()
        progress(f"building the tools tree {r.key} ({r.release}, {len(r.debs)} packages) in {dest}; log: {log}")
        wheels = root / "wheels"
        with open(log, "w") as err:
            if pypi:  # with moat's own pip: this machine's index, proxy and certificates
                fetched = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                                          "-w", str(wheels), *pypi.split()],
                                         stdout=err, stderr=err, stdin=subprocess.DEVNULL)
                if fetched.returncode != 0:
                    raise MoatError([Diagnostic("tools-tree", f"pip could not download {pypi} for the tools tree",
                                                hint=f"the log is {log}")])
            env["WHEELS"] = str(wheels)
            proc = subprocess.Popen(
                ["unshare", "--mount", "--pid", "--fork", "--kill-child", "--mount-proc",
                 "sh", str(BUILD_SCRIPT), str(tmp), r.release, source, " ".join(r.debs), pypi, " ".join(r.programs)],
                stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL, text=True, env=env,
                preexec_fn=die_with_parent())
            assert proc.stdout is not None
            for line in proc.stdout:
                progress(f"[{time.monotonic() - started:5.0f} s] {line.strip()}")
            status = proc.wait()
        if status != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            tail = log.read_text(errors="replace").strip().splitlines()[-3:]
            raise MoatError([Diagnostic("tools-tree", f"building the tools tree failed (exit {status}): "
                                        + " | ".join(tail)[:400], hint=f"the whole log is {log}")])
        meta = {**r.as_json(), "mirror": source, "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        (tmp / METADATA).write_text(json.dumps(meta, indent=2) + "\n")
        os.sync()
        os.rename(tmp, dest)
        progress(f"tools tree ready in {time.monotonic() - started:.0f} s: {dest}")
        return dest
