"""Hashing an image while pycdlib writes it: a thread reads the bytes pycdlib has finished with
and feeds them to a hash (the media-check MD5) where the page cache holds them (mapped.py), so
that one core writes while the other hashes and no read pass is needed for it afterwards.

pycdlib writes the volume descriptors and directories first, then each file's data at its
extent (utils.copy_data_yield, which write.kernel_copy turns into copy_file_range), then
padding past the ISO data. The follower starts at the first file's data and reads up to where
the writer has got: the start of the file being written, or, within a file, the end of its last
copy_file_range (not for a boot image with a boot info table, which pycdlib patches after its
data). Every write goes through `WriteFollower.write`, which checks, under the lock the follower
takes to claim a range for reading, where it lands: into a range already claimed (pycdlib wrote
out of order) marks the result broken, and the caller reads the file again instead; past it, the
write is in flight until it returns, and the follower claims nothing from its start on
meanwhile. The write itself runs without the lock: holding it during each 16 MiB copy kept the
follower from claiming its next range for as long as the copies ran (0.4 s of 2.1 s for 1 GiB).
The system area (the first 32 KiB) is rewritten after pycdlib (the GPT fix-up): the follower
hashes what the caller predicts it will hold, and the caller compares the prediction with the
final bytes.
"""

from __future__ import annotations

import contextlib
import os
import threading
from typing import Callable, Iterator

from . import mapped

SYSTEM_AREA = 16 * 2048
READ_CHUNK = 2 << 20


Begin = Callable[[bytes], tuple[bytes, int, Callable[[memoryview], object]]]


class WriteFollower:
    """Reads `path` as it is written and feeds its bytes to a hash. When the first file's data
    starts, `begin(what the system area holds then)` says what it will hold in the end, where to
    stop, and the hash's update."""

    def __init__(self, path: str | os.PathLike, begin: Begin):
        self._path = path
        self._begin = begin
        self._end = 0
        self._cond = threading.Condition()
        self._started = False
        self._limit = 0        # the follower may read below this
        self._claimed = 0      # and has read (or is reading) below this
        self._in_flight: int | None = None  # where the write under way starts (past the system area)
        self._patched = False  # the file being written has a boot info table: its start is not final
        self._writing = True
        self._cancelled = False
        self.broken: str | None = None
        self.predicted = b""
        self.position = 0
        self._thread = threading.Thread(target=self._run, name="moat-follow", daemon=True)

    # --- the writer's side ----------------------------------------------------------------

    def file_starts(self, offset: int, patched: bool) -> None:
        """pycdlib starts a file's data at `offset` (everything written so far is flushed)."""
        with self._cond:
            self._check(offset, 1)
            self._limit, self._patched = offset, patched
            self._cond.notify_all()
        if not self._started:
            self._started = True
            self._thread.start()

    def write(self, offset: int, length: int, action: Callable[[], object], copied: bool = False):
        """Do `action`, the write of `length` bytes at `offset`; a copy_file_range (`copied`) of a
        file without a boot info table makes its bytes readable at once."""
        with self._cond:
            self._check(offset, length)
            self._in_flight = max(offset, SYSTEM_AREA) if offset + length > SYSTEM_AREA else None
        result = None
        try:
            result = action()
            return result
        finally:
            with self._cond:
                self._in_flight = None
                if copied and not self._patched and isinstance(result, int):
                    self._limit = max(self._limit, offset + result)
                self._cond.notify_all()

    def finish(self, progress: Callable[[int, int], object] | None = None) -> None:
        """The writer is done: the follower reads the rest; returns when it has."""
        with self._cond:
            self._writing = False
            self._limit = max(self._limit, self._end)
            self._cond.notify_all()
        if not self._started:
            self._started = True
            self._thread.start()
        while self._thread.is_alive():
            self._thread.join(0.25)
            if progress is not None:
                progress(self.position, self._end)

    def cancel(self) -> None:
        with self._cond:
            self._cancelled = True
            self._cond.notify_all()
        if self._started:
            self._thread.join()

    def _frontier(self) -> int:
        """Below this the bytes are final (taken with the lock held)."""
        return self._limit if self._in_flight is None else min(self._limit, self._in_flight)

    def _check(self, offset: int, length: int) -> None:
        if length > 0 and offset + length > SYSTEM_AREA and max(offset, SYSTEM_AREA) < self._claimed \
                and self.broken is None:
            self.broken = f"a write at byte {offset} after the follower had read up to {self._claimed}"

    # --- the follower's thread ------------------------------------------------------------

    def _run(self) -> None:
        try:
            with open(self._path, "rb", buffering=0) as fh:
                head = os.pread(fh.fileno(), SYSTEM_AREA, 0)
                self.predicted, end, consume = self._begin(head.ljust(SYSTEM_AREA, b"\0"))
                with self._cond:
                    self._end = end
                    if not self._writing:
                        self._limit = end
                consume(memoryview(self.predicted)[:end])
                self.position = position = min(SYSTEM_AREA, self._end)
                while position < self._end:
                    with self._cond:
                        # a whole chunk at a time while the writer runs: fewer, bigger reads
                        while not (self._cancelled or self.broken or not self._writing
                                   or self._frontier() - position >= READ_CHUNK):
                            self._cond.wait()
                        if self._cancelled or self.broken:
                            return
                        stop = min(self._end, max(self._frontier(), position), position + READ_CHUNK)
                        self._claimed = max(self._claimed, stop)
                    mapped.feed(fh.fileno(), position, stop, consume)  # past the end so far: a hole, zeros
                    self.position = position = stop
        except Exception as exc:  # noqa: BLE001 - the caller reads the file again instead
            self.broken = f"the follower failed: {exc!r}"


class Watched:
    """The output file as pycdlib writes it: every write goes through the follower."""

    def __init__(self, raw, follower: WriteFollower):
        self._raw = raw
        self._follower = follower

    def write(self, data) -> int:
        return self._follower.write(self._raw.tell(), len(data), lambda: self._write_all(data))

    def _write_all(self, data) -> int:
        view = memoryview(data)
        while view:
            view = view[self._raw.write(view):]
        return len(data)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._raw.seek(offset, whence)

    def tell(self) -> int:
        return self._raw.tell()

    def flush(self) -> None:
        self._raw.flush()

    def fileno(self) -> int:
        return self._raw.fileno()


@contextlib.contextmanager
def following(follower: WriteFollower, iso) -> Iterator[None]:
    """pycdlib (about to write `iso`) writes the files' data in the order of their extents, and
    tells `follower` where each starts (and whether it patches it after): the same bytes, since
    each file's data has extents of its own, but the follower can read behind it."""
    import pycdlib

    if iso._needs_reshuffle:  # the layout is final before the order is taken from it
        iso._reshuffle_extents()
    iso.inodes.sort(key=lambda ino: ino.extent_location())  # stable: files of one extent keep their order
    original = pycdlib.PyCdlib._output_file_data

    def output(self, outfp, blocksize, ino):
        outfp.flush()
        follower.file_starts(ino.extent_location() * self.logical_block_size, ino.boot_info_table is not None)
        yield from original(self, outfp, blocksize, ino)

    pycdlib.PyCdlib._output_file_data = output
    try:
        yield
    finally:
        pycdlib.PyCdlib._output_file_data = original
