"""The temporary file an output (an ISO, the VPS archive) is written to before it is renamed into
place, such that a killed run never leaves one for good.

A temporary is 0600 from the start (it may receive secrets, and an ISO is hundreds of MB), named
PREFIX<output name>.<pid> beside its output, and flocked (LOCK_EX) by its writer from creation
until it is renamed or removed. SIGKILL, a power cut or an OOM kill skip every `finally`, but the
kernel drops the lock with the process: so each run first removes, in the output's directory,
the temporaries whose lock it can take (their writer is gone) and keeps those still locked (a
run writing at the same time). A writer checks, once it holds the lock, that its file is still
the one at that name (a sweep may have removed it between create and flock) and starts again if
not. A leaf module (standard library only)."""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Iterator

ISO_PREFIX = ".moat-iso-tmp."
ARCHIVE_PREFIX = ".moat-archive-tmp."


def sweep(directory: Path, prefix: str = ISO_PREFIX) -> list[Path]:
    """Remove the temporaries in `directory` whose writer is gone (their lock is free)."""
    removed = []
    for path in sorted(directory.glob(prefix + "*")) if directory.is_dir() else ():
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.path.samestat(os.fstat(fd), os.lstat(path)):
                path.unlink()
                removed.append(path)
        except OSError:  # locked: being written; or gone meanwhile
            pass
        finally:
            os.close(fd)
    return removed


@contextlib.contextmanager
def temporary(output: Path, prefix: str = ISO_PREFIX) -> Iterator[Path]:
    """An empty temporary file beside `output`, locked until the block ends (then removed, if the
    block did not rename it into place); stale ones of killed runs are removed first."""
    sweep(output.parent, prefix)
    tmp = output.with_name(f"{prefix}{output.name}.{os.getpid()}")
    while True:
        tmp.unlink(missing_ok=True)  # a process of this pid that is gone left it
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if os.path.samestat(os.fstat(fd), os.lstat(tmp)):
                break
        except FileNotFoundError:
            pass
        os.close(fd)  # swept by another run before the lock was taken: again
    try:
        yield tmp
    finally:
        tmp.unlink(missing_ok=True)
        os.close(fd)
