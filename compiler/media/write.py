"""Writing an ISO: a new one from files (pycdlib), atomically (a temporary file beside the
output, 0600 from the start, renamed into place when complete; a killed run's is removed by the
next: temporary.py), with progress; pycdlib's copy
loop replaced by the kernel's copy_file_range. Reading one back: the sha256 of one just written
hashes its pages where the page cache holds them (mapped.py); a pass for several hashes reads
the file once, in order, and hashes it in other threads meanwhile (hashlib lets go of the GIL);
either with the kernel writing the pages back to disk at the same time (background_fsync)."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterator

from . import mapped
from .medium import File, Progress
from .reproducible import frozen
from .temporary import temporary
from .tree import Names, Tree

BLOCKSIZE = 1 << 20               # pycdlib's copy buffer
COPY_PIECE = 16 << 20             # a copy_file_range call (a follower reads up to the last one's end)
READ_CHUNK = 2 << 20              # a read pass's pieces ...
IN_FLIGHT = 2                     # ... and how many at once: one read while the other is hashed (RSS: 4 MiB)


def _unobserved(offset: int, length: int, action: Callable[[], int], copied: bool = False) -> int:
    return action()


@contextlib.contextmanager
def kernel_copy(observe=_unobserved):
    """pycdlib copies file data with os.copy_file_range between real files (the base ISO and the
    output): the bytes stay in the kernel (or are shared by a reflink), much faster than its
    read/write loop, same result; BytesIO sources and file systems that refuse it use the loop.
    Each copy is `observe(offset, length, the copy, copied=True)` (follow.WriteFollower.write)."""
    from pycdlib import utils

    original = utils.copy_data_yield

    def copy(data_length, blocksize, infp, outfp):
        try:
            infd, outfd = infp.fileno(), outfp.fileno()
        except (AttributeError, OSError, io.UnsupportedOperation):
            yield from original(data_length, blocksize, infp, outfp)
            return
        outfp.flush()
        src, dst, left = infp.tell(), outfp.tell(), data_length
        try:
            while left > 0:
                piece = min(left, COPY_PIECE)
                n = observe(dst, piece, lambda: os.copy_file_range(infd, outfd, piece, src, dst), copied=True)
                if n == 0:  # the source is shorter than it says: pycdlib's loop stops too
                    yield left
                    left = 0
                    break
                src, dst, left = src + n, dst + n, left - n
                yield n
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EBADF):
                raise
        infp.seek(src)
        outfp.seek(dst)
        if left:
            yield from original(left, blocksize, infp, outfp)

    utils.copy_data_yield = copy
    try:
        yield
    finally:
        utils.copy_data_yield = original


def read_pass(path: Path, consumers: list[Callable[[memoryview], object]], progress: Progress | None = None,
              what: str = "") -> None:
    """Read `path` once, in order, and give every piece to each consumer, each in a thread of its
    own (in order too), while the next pieces are read; memory stays IN_FLIGHT pieces."""
    total, done = os.stat(path).st_size, 0
    buffers = [bytearray(READ_CHUNK) for _ in range(IN_FLIGHT)]
    pending: list[list[Future]] = [[] for _ in buffers]
    workers = [ThreadPoolExecutor(1, thread_name_prefix="moat-hash") for _ in consumers]
    try:
        with open(path, "rb", buffering=0) as fh:
            slot = 0
            while True:
                for future in pending[slot]:  # the buffer is free again (or a consumer failed)
                    future.result()
                n = fh.readinto(buffers[slot])
                if not n:
                    break
                view = memoryview(buffers[slot])[:n]
                pending[slot] = [worker.submit(consume, view) for worker, consume in zip(workers, consumers)]
                done += n
                if progress is not None:
                    progress(what, done, total)
                slot = (slot + 1) % IN_FLIGHT
        for futures in pending:
            for future in futures:
                future.result()
    finally:
        for worker in workers:
            worker.shutdown(cancel_futures=True)


def sha256(path: Path, progress: Progress | None = None, what: str = "") -> str:
    """The sha256 of `path` (a golden image, say: read from disk while hashed)."""
    h = hashlib.sha256()
    read_pass(path, [h.update], progress, what)
    return h.hexdigest()


def cached_sha256(path: Path, progress: Progress | None = None, what: str = "") -> str:
    """The sha256 of `path`, just written (in the page cache): hashed where the page cache holds
    it (mapped.py), in this thread, without a copy."""
    h = hashlib.sha256()
    total, done = os.stat(path).st_size, 0

    def consume(view: memoryview) -> None:
        nonlocal done
        h.update(view)
        done += len(view)
        if progress is not None:
            progress(what, done, total)

    with open(path, "rb", buffering=0) as fh:
        mapped.feed(fh.fileno(), 0, total, consume)
    return h.hexdigest()


@contextlib.contextmanager
def background_fsync(path: Path) -> Iterator[None]:
    """fsync `path` in another thread while the block runs (it reads the file, say): the disk
    writes what the page cache holds meanwhile; a write in the block may or may not be covered."""
    errors: list[OSError] = []

    def sync(fd: int) -> None:
        try:
            os.fsync(fd)
        except OSError as exc:
            errors.append(exc)

    fd = os.open(path, os.O_RDONLY)
    thread = threading.Thread(target=sync, args=(fd,), name="moat-fsync")
    thread.start()
    try:
        yield
    finally:
        thread.join()
        os.close(fd)
    if errors:
        raise errors[0]


def finish(tmp: Path, output: Path, secret: bool) -> None:
    os.chmod(tmp, 0o600 if secret else 0o644)
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, output)


def new_iso(label: str, files: list[File], epoch: int, seed: bytes, outfp, progress: Progress | None = None,
             what: str = "") -> None:
    """A new ISO (level 3, Rock Ridge 1.09, Joliet) labelled `label` holding `files`, written to `outfp`."""
    import pycdlib

    with frozen(epoch, seed), kernel_copy():
        iso = pycdlib.PyCdlib()
        iso.new(interchange_level=3, vol_ident=label, sys_ident="LINUX", app_ident_str="MOAT",
                rock_ridge="1.09", joliet=3)
        with contextlib.closing(Tree(iso, Names(3))) as tree:
            for f in sorted(files, key=lambda f: f.path):
                tree.add(f)
            iso.write_fp(outfp, blocksize=BLOCKSIZE, progress_cb=callback(progress, what))
            iso.close()


def write_new(output: Path, label: str, files: list[File], epoch: int, seed: bytes,
               progress: Progress | None) -> str:
    """Write the ISO at `output`: its sha256."""
    with temporary(output) as tmp:
        with open(tmp, "wb") as fh:
            new_iso(label, files, epoch, seed, fh, progress, f"writing {output.name}")
        with background_fsync(tmp):
            digest = cached_sha256(tmp, progress, f"checksum of {output.name}")
        finish(tmp, output, any(f.mode == 0o400 for f in files))
    return digest


def write_bytes(output: Path, data: bytes, secret: bool) -> None:
    with temporary(output) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
        finish(tmp, output, secret)


def callback(progress: Progress | None, what: str):
    if progress is None:
        return None
    return lambda done, total: progress(what, done, total)

