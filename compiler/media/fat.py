"""Replace one file's contents inside a FAT12/16/32 image (the installer's images/efiboot.img).

The EFI boot image of a Rocky/Alma DVD is a small FAT file system holding EFI/BOOT/grub.cfg:
booted from a USB stick (and by some firmware from the DVD too) GRUB reads its menu there,
not from the ISO tree. `replace_file` edits a copy of that image in memory, without mtools or
a mount: it frees the file's cluster chain, allocates clusters first-fit (deterministic), writes
the data, and updates the directory entry (first cluster, size, modification date) in place. The
image keeps its size, so the El Torito entry and the EFI partition stay as they are. Only
existing files are replaced; long (VFAT) names are matched case-insensitively like the short ones.
"""

from __future__ import annotations

import struct
import time

EOC = {12: 0xFFF, 16: 0xFFFF, 32: 0x0FFFFFFF}


class FatError(Exception):
    """The image is not a FAT file system this module understands, or the file is not there."""


class _Fat:
    def __init__(self, image: bytearray):
        if len(image) < 512 or image[510:512] != b"\x55\xaa":
            raise FatError("no boot sector signature (0x55AA at byte 510)")
        self.img = image
        (self.bps, self.spc, self.reserved, self.nfats, self.root_entries, total16, _media, fatsz16) = \
            struct.unpack_from("<HBHBHHBH", image, 11)
        total32, fatsz32 = struct.unpack_from("<L", image, 32)[0], struct.unpack_from("<L", image, 36)[0]
        if self.bps not in (512, 1024, 2048, 4096) or self.spc == 0 or self.nfats == 0:
            raise FatError("implausible BIOS parameter block")
        self.fatsz = fatsz16 or fatsz32
        total = total16 or total32
        root_sectors = -(-self.root_entries * 32 // self.bps)
        self.root_start = (self.reserved + self.nfats * self.fatsz) * self.bps
        self.data_start = self.root_start + root_sectors * self.bps
        clusters = (total - self.reserved - self.nfats * self.fatsz - root_sectors) // self.spc
        self.bits = 12 if clusters < 4085 else 16 if clusters < 65525 else 32
        self.max_cluster = clusters + 1
        self.cluster_size = self.bps * self.spc
        self.root_cluster = struct.unpack_from("<L", image, 44)[0] if self.bits == 32 else None
        if self.data_start + clusters * self.cluster_size > len(image):
            raise FatError("the file system is larger than the image")

    # --- the allocation table ---------------------------------------------------------------
    def get(self, n: int) -> int:
        base = self.reserved * self.bps
        if self.bits == 12:
            off = base + n + n // 2
            v = struct.unpack_from("<H", self.img, off)[0]
            return (v >> 4) if n & 1 else (v & 0xFFF)
        if self.bits == 16:
            return struct.unpack_from("<H", self.img, base + n * 2)[0]
        return struct.unpack_from("<L", self.img, base + n * 4)[0] & 0x0FFFFFFF

    def set(self, n: int, value: int) -> None:
        for copy in range(self.nfats):
            base = (self.reserved + copy * self.fatsz) * self.bps
            if self.bits == 12:
                off = base + n + n // 2
                v = struct.unpack_from("<H", self.img, off)[0]
                v = ((v & 0x000F) | (value << 4)) if n & 1 else ((v & 0xF000) | value)
                struct.pack_into("<H", self.img, off, v & 0xFFFF)
            elif self.bits == 16:
                struct.pack_into("<H", self.img, base + n * 2, value)
            else:
                off = base + n * 4
                old = struct.unpack_from("<L", self.img, off)[0]
                struct.pack_into("<L", self.img, off, (old & 0xF0000000) | (value & 0x0FFFFFFF))

    def chain(self, first: int) -> list[int]:
        out: list[int] = []
        n = first
        while 2 <= n <= self.max_cluster:
            if n in out or len(out) > self.max_cluster:
                raise FatError("a cluster chain loops")
            out.append(n)
            n = self.get(n)
        return out

    def offset(self, cluster: int) -> int:
        return self.data_start + (cluster - 2) * self.cluster_size

    # --- directories ----------------------------------------------------------------------------
    def dir_slots(self, cluster: int | None) -> list[int]:
        """Byte offsets of every 32-byte entry of a directory (None: the FAT12/16 root)."""
        if cluster is None:
            return [self.root_start + i * 32 for i in range(self.root_entries)]
        return [self.offset(c) + i for c in self.chain(cluster) for i in range(0, self.cluster_size, 32)]

    def entries(self, cluster: int | None):
        """(long name or None, short name, offset of the short entry) of each entry in a directory."""
        lfn: dict[int, str] = {}
        for off in self.dir_slots(cluster):
            first = self.img[off]
            if first == 0x00:
                return
            if first == 0xE5:
                lfn = {}
                continue
            attr = self.img[off + 11]
            if attr == 0x0F:
                seq = first & 0x1F
                raw = bytes(self.img[off + 1:off + 11] + self.img[off + 14:off + 26] + self.img[off + 28:off + 32])
                lfn[seq] = raw.decode("utf-16-le", errors="replace")
                continue
            if attr & 0x08:  # volume label
                lfn = {}
                continue
            base, ext = bytes(self.img[off:off + 8]).decode("latin-1"), bytes(self.img[off + 8:off + 11]).decode("latin-1")
            short = base.rstrip() + ("." + ext.rstrip() if ext.strip() else "")
            long = "".join(lfn[k] for k in sorted(lfn)).split("\0", 1)[0] if lfn else None
            lfn = {}
            yield long, short, off

    def first_cluster(self, off: int) -> int:
        hi = struct.unpack_from("<H", self.img, off + 20)[0] if self.bits == 32 else 0
        return (hi << 16) | struct.unpack_from("<H", self.img, off + 26)[0]

    def find(self, path: str) -> int:
        cluster = self.root_cluster
        parts = [p for p in path.strip("/").split("/") if p]
        for i, part in enumerate(parts):
            for long, short, off in self.entries(cluster):
                if part.lower() in ((long or "").lower(), short.lower()):
                    is_dir = bool(self.img[off + 11] & 0x10)
                    if i == len(parts) - 1:
                        if is_dir:
                            raise FatError(f"{path} is a directory")
                        return off
                    if not is_dir:
                        raise FatError(f"{'/'.join(parts[:i + 1])} is not a directory")
                    cluster = self.first_cluster(off) or self.root_cluster
                    break
            else:
                raise FatError(f"no {'/'.join(parts[:i + 1])} in the FAT image")
        raise FatError("empty path")


def _fat_datetime(epoch: int) -> tuple[int, int]:
    t = time.gmtime(epoch)
    year = min(max(t.tm_year, 1980), 2107)
    return ((year - 1980) << 9) | (t.tm_mon << 5) | t.tm_mday, (t.tm_hour << 11) | (t.tm_min << 5) | (t.tm_sec // 2)


def read_file(image: bytes | bytearray, path: str) -> bytes:
    fat = _Fat(bytearray(image))
    off = fat.find(path)
    size = struct.unpack_from("<L", fat.img, off + 28)[0]
    data = b"".join(bytes(fat.img[fat.offset(c):fat.offset(c) + fat.cluster_size]) for c in fat.chain(fat.first_cluster(off)))
    return data[:size]


def has_file(image: bytes | bytearray, path: str) -> bool:
    try:
        _Fat(bytearray(image)).find(path)
    except FatError:
        return False
    return True


def replace_file(image: bytearray, path: str, data: bytes, epoch: int) -> None:
    """Give the existing file `path` of the FAT image `image` (edited in place) the contents `data`
    and the modification date `epoch` (UTC)."""
    fat = _Fat(image)
    off = fat.find(path)
    old = fat.chain(fat.first_cluster(off))
    for n in old:
        fat.set(n, 0)
    need = -(-len(data) // fat.cluster_size)
    free = []
    n = 2
    while len(free) < need and n <= fat.max_cluster:
        if fat.get(n) == 0:
            free.append(n)
        n += 1
    if len(free) < need:
        for c in old:  # leave the image as it was
            fat.set(c, 0)
        for a, b in zip(old, old[1:] + [EOC[fat.bits]]):
            fat.set(a, b)
        raise FatError(f"no room for {len(data)} bytes in the FAT image ({len(free)} free clusters of {fat.cluster_size} bytes)")
    for a, b in zip(free, free[1:] + [EOC[fat.bits]]):
        fat.set(a, b)
    for i, c in enumerate(free):
        chunk = data[i * fat.cluster_size:(i + 1) * fat.cluster_size]
        image[fat.offset(c):fat.offset(c) + fat.cluster_size] = chunk.ljust(fat.cluster_size, b"\0")
    first = free[0] if free else 0
    struct.pack_into("<H", image, off + 20, (first >> 16) if fat.bits == 32 else struct.unpack_from("<H", image, off + 20)[0])
    struct.pack_into("<H", image, off + 26, first & 0xFFFF)
    struct.pack_into("<L", image, off + 28, len(data))
    date, clock = _fat_datetime(epoch)
    struct.pack_into("<HH", image, off + 22, clock, date)
    struct.pack_into("<H", image, off + 18, date)  # last access date
    if fat.bits == 32:
        fsinfo = struct.unpack_from("<H", image, 48)[0]
        if 0 < fsinfo < fat.reserved and image[fsinfo * fat.bps:fsinfo * fat.bps + 4] == b"RRaA":
            free_count = sum(1 for c in range(2, fat.max_cluster + 1) if fat.get(c) == 0)
            struct.pack_into("<LL", image, fsinfo * fat.bps + 488, free_count, 0xFFFFFFFF)  # next-free hint: unknown
