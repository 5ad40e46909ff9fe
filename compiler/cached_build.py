"""What every cached, content-addressed build of moat shares (the tools tree, golden images):
a lock per key, a temporary name beside the final one, leftovers of killed builds removed, and
builders that die with moat.

A build writes `ROOT/.tmp-KEY-PID` and renames it to its final name when complete, so a build
killed at any instant leaves either nothing or a whole result; the next build of any key removes
the leftovers of builds that are not running (their lock is free).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
from collections.abc import Callable, Iterator
from pathlib import Path


def moat_cache() -> Path:
    """moat's own small caches (passed validations, compiled templates): $MOAT_CACHE_DIR, else
    $XDG_CACHE_HOME/moat, else ~/.cache/moat."""
    if os.environ.get("MOAT_CACHE_DIR"):
        return Path(os.environ["MOAT_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "moat"


def user_cache(variable: str, name: str) -> Path:
    """A cache of moat's: $VARIABLE, else $XDG_CACHE_HOME/moat/NAME, else ~/.cache/moat/NAME."""
    if os.environ.get(variable):
        return Path(os.environ[variable])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "moat" / name


def die_with_parent() -> Callable[[], None]:
    """A preexec_fn: the child gets SIGKILL when moat dies (PR_SET_PDEATHSIG). libc is loaded here,
    in moat, and ctypes imported only by a build that starts a builder (not by every moat check)."""
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def setup() -> None:
        prctl(1, signal.SIGKILL)
    return setup


def temp_path(root: Path, key: str) -> Path:
    return root / f".tmp-{key}-{os.getpid()}"


@contextlib.contextmanager
def locked(root: Path, key: str) -> Iterator[None]:
    """Hold the lock of KEY under ROOT: a second build of the same key waits for the first."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def remove_leftovers(root: Path, ours: str, before_remove=lambda path: None) -> None:
    """Remove what killed builds left (.tmp-KEY-PID), of any key whose build is not running;
    call with the lock of `ours` held. `before_remove(path)` releases what a leftover still holds
    outside the file system (loop devices of an image bake)."""
    for stale in root.glob(".tmp-*-*"):
        key = stale.name.split("-")[1]
        if key != ours:
            with open(root / f".{key}.lock", "a") as other:
                try:
                    fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # that build is running (its lock is held)
                before_remove(stale)
                shutil.rmtree(stale, ignore_errors=True)
            continue
        before_remove(stale)
        shutil.rmtree(stale, ignore_errors=True)
