"""The installer's media check (isomd5sum) for a remastered ISO.

Rocky's and Alma's DVDs carry an MD5 of themselves in the primary volume descriptor's
application-use field (implantisomd5, run by pungi): "Test this media & install"
(rd.live.check) runs checkisomd5, which fails on any changed byte. A remastered DVD would
keep the base's now wrong sum, so `MediaCheck` computes it again, the way implantisomd5 does:
MD5 over the ISO up to its last 15 sectors, the 512-byte application-use field read as
blanks, 32 KiB at a time; after each read that enters a new twenty-first of the data, the
first hex digit of each of the first three bytes of the MD5 so far is a fragment sum
(checkisomd5 stops at the first bad fragment). Written only when the base ISO had a sum.
"""

from __future__ import annotations

import hashlib
import os
import re

SECTOR = 2048
PVD_OFFSET = 16 * SECTOR
APPDATA_OFFSET = 883           # in the primary volume descriptor
APPDATA_SIZE = 512
SKIPSECTORS = 15
FRAGMENT_COUNT = 20
FRAGMENT_DIGITS = 60 // FRAGMENT_COUNT
READ_SIZE = 16 * SECTOR        # implantisomd5 reads (and so takes fragment sums) in these steps
BLANK_AT = PVD_OFFSET + APPDATA_OFFSET


def embedded(appdata: bytes) -> dict[str, str] | None:
    """The fields of an implanted sum (ISO MD5SUM, RHLISOSTATUS, ...), or None."""
    text = appdata.decode("ascii", errors="replace")
    if "ISO MD5SUM = " not in text:
        return None
    return {k.strip(): v.strip() for k, v in re.findall(r"([A-Z][A-Z0-9 ]*?)\s*=\s*([^;]*);", text)}


def read_appdata(path: str | os.PathLike) -> bytes:
    with open(path, "rb") as fh:
        fh.seek(PVD_OFFSET + APPDATA_OFFSET)
        return fh.read(APPDATA_SIZE)


def _fragment_digit(byte: int) -> str:
    return f"{byte:x}"[0]  # "%01x" then the first character, as isomd5sum does


class MediaCheck:
    """implantisomd5's sum of an image, fed its bytes in order in pieces of any size (one read
    pass can feed other hashes too): the fragment sums are taken where implantisomd5's 32 KiB
    reads would take them, whatever the pieces."""

    def __init__(self, iso_size: int):
        self.total = max(iso_size - SKIPSECTORS * SECTOR, 0)
        self._marks = _fragment_marks(self.total, self.total // (FRAGMENT_COUNT + 1))
        self._md5 = hashlib.md5()
        self._sums: list[str] = []
        self._offset = 0

    def update(self, data: bytes | memoryview) -> None:
        """The next `len(data)` bytes of the image (those past the covered part are ignored)."""
        view = memoryview(data)
        start = self._offset
        end = min(start + len(view), self.total)
        position = start
        while position < end:
            stop = min(end, self._marks[0]) if self._marks else end
            self._feed(position, view[position - start:stop - start])
            if self._marks and stop == self._marks[0]:
                self._sums.append("".join(_fragment_digit(b) for b in self._md5.copy().digest()[:FRAGMENT_DIGITS]))
                del self._marks[0]
            position = stop
        self._offset += len(view)

    def _feed(self, offset: int, view: memoryview) -> None:
        lo = min(max(BLANK_AT - offset, 0), len(view))
        hi = min(max(BLANK_AT + APPDATA_SIZE - offset, 0), len(view))
        if lo < hi:  # the field counts as blanks
            self._md5.update(view[:lo])
            self._md5.update(b" " * (hi - lo))
            view = view[hi:]
        self._md5.update(view)

    def hexdigest(self) -> str:
        return self._md5.hexdigest()

    def field(self, supported: int) -> bytes:
        """The application-use field that carries the sum (once every covered byte was fed)."""
        text = (f"ISO MD5SUM = {self.hexdigest()};SKIPSECTORS = {SKIPSECTORS};RHLISOSTATUS={supported};"
                f"FRAGMENT SUMS = {''.join(self._sums)};FRAGMENT COUNT = {FRAGMENT_COUNT};"
                "THIS IS NOT THE SAME AS RUNNING MD5SUM ON THIS ISO!!")
        return text.encode("ascii").ljust(APPDATA_SIZE, b" ")


def _fragment_marks(total: int, fragment_size: int) -> list[int]:
    """The offsets after which implantisomd5 takes a fragment sum: the end of each 32 KiB read
    that starts in a later twenty-first than the read before it."""
    marks: list[int] = []
    fragment = 1
    while fragment_size:
        start = -(-fragment * fragment_size // READ_SIZE) * READ_SIZE  # the first read starting in it
        if start >= total:
            break
        marks.append(min(start + READ_SIZE, total))
        fragment = start // fragment_size + 1
    return marks


def media_check(path: str | os.PathLike) -> MediaCheck:
    """A MediaCheck for the ISO at `path` (its size read from its volume descriptor), not yet fed."""
    with open(path, "rb") as fh:
        fh.seek(PVD_OFFSET)
        return MediaCheck(int.from_bytes(fh.read(SECTOR)[84:88], "big") * SECTOR)


def write_field(path: str | os.PathLike, check: MediaCheck, supported: int) -> None:
    with open(path, "r+b") as fh:
        fh.seek(BLANK_AT)
        fh.write(check.field(supported))
