"""A valid hybrid MBR + GPT for a remastered isohybrid ISO (written after pycdlib).

pycdlib keeps the base ISO's isohybrid MBR (its boot code, the LBA of isolinux.bin, the MBR
id) and writes a GPT of its own that is invalid: the partition-array CRC covers only the used
entries, the backup header has other GUIDs, the backup entries may land on ISO data when the
padding is short, and, like every isohybrid layout, partition 1 starts at sector 0 over the
GPT itself. `fix_hybrid_gpt` rewrites the partition tables of the written image:

MBR (sector 0: the boot code and fields before byte 446 stay as pycdlib wrote them)
    1  0xEE  sectors 1 .. start of the EFI image - 1   protective: firmware and kernels use the GPT
    2  0xEF  the EFI boot image (El Torito entry 2)      firmware that only reads the MBR boots it too
    3  0x00, active, the ISO data after the EFI image    BIOSes that want an active partition
GPT (128 entries, primary at sectors 1-33, backup in the last 33 sectors)
    1  "ISO9660"         sector 64 .. start of the EFI image - 1   hidden, no automount
    2  "EFI boot image"  the EFI boot image                          read-only
    3  "ISO9660 data"    end of the EFI image .. end of the ISO      hidden, no automount
All partitions are "Basic data", like xorriso's -isohybrid-gpt-basdat (Rocky's DVD), so pycdlib
can open the result again. Disk and partition GUIDs come from the caller's seed; both headers
and arrays carry correct CRC32s, the backup header sits in the last sector. The image grows by
whole cylinders (1 MiB) when the space after the ISO cannot hold the backup GPT. The result
passes `sgdisk -v`; BIOS boots through the MBR code, UEFI through the GPT's (or the MBR's) EFI
partition, CD boots through El Torito, which none of this touches.
"""

from __future__ import annotations

import os
import struct
import uuid
import zlib

from .reproducible import uuid_sequence

SECTOR = 512
ENTRIES = 128
ENTRY_SIZE = 128
ARRAY_SECTORS = ENTRIES * ENTRY_SIZE // SECTOR  # 32
HEADS, SECTORS = 64, 32                          # isohybrid's geometry: 1 MiB cylinders
CYLINDER = HEADS * SECTORS * SECTOR
ISO_START = 64                                   # sector of the volume descriptors (2048-byte block 16)
BASIC_DATA = uuid.UUID("ebd0a0a2-b9e5-4433-87c0-68b6b72699c7")
EFI_MBR_ENTRY = b"\x00\xfe\xff\xff\xef\xfe\xff\xff"  # the exact bytes isohybrid, xorriso and pycdlib write
REQUIRED, READ_ONLY, HIDDEN, NO_AUTOMOUNT = 1 << 0, 1 << 60, 1 << 62, 1 << 63


def _chs(lba: int) -> bytes:
    cyl, rest = divmod(lba, HEADS * SECTORS)
    head, sector = divmod(rest, SECTORS)
    if cyl > 1023:
        return b"\xfe\xff\xff"
    return bytes([head, (sector + 1) | ((cyl >> 2) & 0xC0), cyl & 0xFF])


def _mbr_entry(status: int, ptype: int, start: int, count: int) -> bytes:
    return (bytes([status]) + _chs(start) + bytes([ptype]) + _chs(start + count - 1)
            + struct.pack("<LL", start, count))


def _gpt_entry(guid: uuid.UUID, first: int, last: int, attributes: int, name: str) -> bytes:
    return struct.pack("<16s16sQQQ72s", BASIC_DATA.bytes_le, guid.bytes_le, first, last, attributes,
                       name.encode("utf-16-le"))


def _header(current: int, backup: int, first_usable: int, last_usable: int, disk: uuid.UUID, entries_lba: int,
            entries_crc: int) -> bytes:
    fields = [b"EFI PART", 0x00010000, 92, 0, 0, current, backup, first_usable, last_usable, disk.bytes_le,
              entries_lba, ENTRIES, ENTRY_SIZE, entries_crc]
    fmt = "<8sLLLLQQQQ16sQLLL"
    raw = struct.pack(fmt, *fields)
    fields[3] = zlib.crc32(raw)
    return struct.pack(fmt, *fields).ljust(SECTOR, b"\0")


def fix_hybrid_gpt(path: str | os.PathLike, iso_bytes: int, efi_start: int, efi_sectors: int, seed: bytes) -> None:
    """Rewrite the MBR partition entries and both GPTs of the image at `path` (see the module
    docstring). `iso_bytes`: size of the ISO 9660 data; `efi_start`/`efi_sectors`: the EFI boot
    image in 512-byte sectors."""
    with open(path, "r+b") as fh:
        size = fh.seek(0, os.SEEK_END)
        total, writes = _plan(size, iso_bytes, efi_start, efi_sectors, seed)
        # the system area after the MBR (pycdlib's primary GPT) and everything after the ISO
        # data (padding, pycdlib's backup GPT) are ours to rewrite
        fh.seek(SECTOR)
        fh.write(b"\0" * (ISO_START - 1) * SECTOR)
        iso_end = -(-iso_bytes // SECTOR) * SECTOR
        fh.seek(iso_end)
        remaining = total - iso_end
        while remaining:
            chunk = min(remaining, 1 << 20)
            fh.write(b"\0" * chunk)
            remaining -= chunk
        for offset, data in writes:
            fh.seek(offset)
            fh.write(data)


def hybrid_system_area(head: bytes, size: int, iso_bytes: int, efi_start: int, efi_sectors: int,
                       seed: bytes) -> bytes:
    """The first ISO_START sectors as fix_hybrid_gpt will leave them, from `head` (what they
    hold before) and the image's `size` before: the media check hashes them before they are
    written (follow.py)."""
    area = bytearray(head[:SECTOR].ljust(ISO_START * SECTOR, b"\0"))
    for offset, data in _plan(size, iso_bytes, efi_start, efi_sectors, seed)[1]:
        if offset < len(area):
            area[offset:offset + len(data)] = data
    return bytes(area[:ISO_START * SECTOR])


def _plan(size: int, iso_bytes: int, efi_start: int, efi_sectors: int, seed: bytes
          ) -> tuple[int, list[tuple[int, bytes]]]:
    """The image's new size, and the bytes to write where once the system area after the MBR and
    everything after the ISO data are zeros."""
    iso_sectors = -(-iso_bytes // SECTOR)
    efi_end = efi_start + efi_sectors - 1
    if not ISO_START <= efi_start <= efi_end < iso_sectors:
        raise ValueError(f"EFI image at sectors {efi_start}..{efi_end} is not inside the ISO (0..{iso_sectors - 1})")
    needed = iso_sectors * SECTOR + (ARRAY_SECTORS + 1) * SECTOR
    total = max(size, -(-needed // CYLINDER) * CYLINDER)
    disk_sectors = total // SECTOR
    guids = uuid_sequence(b"moat-gpt\0" + seed)
    disk_guid = next(guids)
    parts = []
    if efi_start > ISO_START:
        parts.append(_gpt_entry(next(guids), ISO_START, efi_start - 1, HIDDEN | NO_AUTOMOUNT | READ_ONLY, "ISO9660"))
    parts.append(_gpt_entry(next(guids), efi_start, efi_end, READ_ONLY | REQUIRED, "EFI boot image"))
    if efi_end + 1 < iso_sectors:
        parts.append(_gpt_entry(next(guids), efi_end + 1, iso_sectors - 1, HIDDEN | NO_AUTOMOUNT | READ_ONLY,
                                "ISO9660 data"))
    array = b"".join(parts).ljust(ENTRIES * ENTRY_SIZE, b"\0")
    crc = zlib.crc32(array)
    first_usable = 2 + ARRAY_SECTORS
    last_usable = disk_sectors - 2 - ARRAY_SECTORS
    backup_array = disk_sectors - 1 - ARRAY_SECTORS
    table = [_mbr_entry(0x00, 0xEE, 1, efi_start - 1),
             EFI_MBR_ENTRY + struct.pack("<LL", efi_start, efi_sectors)]
    if efi_end + 1 < iso_sectors:
        table.append(_mbr_entry(0x80, 0x00, efi_end + 1, iso_sectors - 1 - efi_end))
    return total, [
        (SECTOR, _header(1, disk_sectors - 1, first_usable, last_usable, disk_guid, 2, crc) + array),
        (backup_array * SECTOR,
         array + _header(disk_sectors - 1, 1, first_usable, last_usable, disk_guid, backup_array, crc)),
        (446, b"".join(table).ljust(64, b"\0") + b"\x55\xaa"),
    ]
