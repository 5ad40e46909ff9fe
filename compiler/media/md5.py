"""The installer's media check (isomd5sum) for a remastered ISO.

Rocky's and Alma's DVDs carry an MD5 of themselves in the primary volume descriptor's
application-use field (implantisomd5, run by pungi): "Test this media & install"
(rd.live.check) runs checkisomd5, which fails on any changed byte. A remastered DVD would
keep the base's now wrong sum, so `implant` computes it again, the way implantisomd5 does:
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


def implant(path: str | os.PathLike, supported: int) -> str:
    """Write a fresh isomd5sum into the ISO at `path`; the MD5 it implanted."""
    with open(path, "r+b") as fh:
        fh.seek(PVD_OFFSET)
        pvd = fh.read(SECTOR)
        iso_size = int.from_bytes(pvd[84:88], "big") * SECTOR
        total = iso_size - SKIPSECTORS * SECTOR
        fragment_size = total // (FRAGMENT_COUNT + 1)
        blank_at = PVD_OFFSET + APPDATA_OFFSET
        md5 = hashlib.md5()
        sums: list[str] = []
        previous = 0
        offset = 0
        fh.seek(0)
        while offset < total:
            data = fh.read(min(total - offset, READ_SIZE))
            if not data:
                break
            start, end = offset, offset + len(data)
            if start < blank_at + APPDATA_SIZE and blank_at < end:  # the field counts as blanks
                lo, hi = max(blank_at, start) - start, min(blank_at + APPDATA_SIZE, end) - start
                data = data[:lo] + b" " * (hi - lo) + data[hi:]
            md5.update(data)
            current = offset // fragment_size if fragment_size else 0
            if current != previous:
                digest = md5.copy().digest()
                sums.append("".join(_fragment_digit(b) for b in digest[:FRAGMENT_DIGITS]))
                previous = current
            offset = end
        value = md5.hexdigest()
        text = (f"ISO MD5SUM = {value};SKIPSECTORS = {SKIPSECTORS};RHLISOSTATUS={supported};"
                f"FRAGMENT SUMS = {''.join(sums)};FRAGMENT COUNT = {FRAGMENT_COUNT};"
                "THIS IS NOT THE SAME AS RUNNING MD5SUM ON THIS ISO!!")
        fh.seek(blank_at)
        fh.write(text.encode("ascii").ljust(APPDATA_SIZE, b" "))
    return value
