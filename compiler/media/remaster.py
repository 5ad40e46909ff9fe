"""The host ISO remastered from the user's Rocky/Alma 9 installer DVD: the DVD as it is plus the
medium's files, its boot menus made unattended (boot_menu), its volume label, El Torito entries
and isohybrid MBR kept, the GPT rewritten valid (gpt) and the media-check sum computed again (md5),
while pycdlib writes (follow); then the sha256 of the result, hashed once more where the page
cache holds it (mapped)."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import struct
from pathlib import Path

import attrs

from ..diagnostics import Diagnostic
from . import fat, md5
from .boot_menu import unattended_grub, unattended_isolinux
from .follow import SYSTEM_AREA, Watched, WriteFollower, following
from .gpt import fix_hybrid_gpt, hybrid_system_area
from .layout import KS_PATH
from .medium import File, Progress, error
from .reproducible import frozen
from .tree import Names, Tree
from .temporary import temporary
from .write import BLOCKSIZE, background_fsync, cached_sha256, callback, finish, kernel_copy, read_pass

MAX_EFI_IMAGE = 64 << 20          # the EFI boot image is edited in memory
GRUB_CONFIGS = ("EFI/BOOT/grub.cfg", "boot/grub2/grub.cfg", "boot/grub/grub.cfg")
FAT_GRUB_CONFIG = "EFI/BOOT/grub.cfg"
EXPECTED_LAYOUT = ("a Rocky Linux or AlmaLinux 9 installer DVD (x86_64): El Torito BIOS image isolinux/isolinux.bin "
                   "with isolinux/isolinux.cfg, El Torito EFI image images/efiboot.img with EFI/BOOT/grub.cfg, "
                   "menu entries that boot with inst.stage2=hd:LABEL=...")
BASE_HINT = "pass the installer DVD of Rocky Linux 9 or AlmaLinux 9 for x86_64 (e.g. Rocky-9.4-x86_64-dvd.iso) as downloaded"


def check_base_iso(path: Path) -> None:
    """A clear error for a base ISO that is missing, not an ISO 9660 image, or truncated."""
    if not path.exists():
        raise error("iso-not-found", f"base ISO {path} does not exist", hint=BASE_HINT)
    if not path.is_file():
        raise error("iso-not-found", f"base ISO {path} is not a file", hint=BASE_HINT)
    try:
        with open(path, "rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            fh.seek(16 * 2048)
            pvd = fh.read(2048)
    except OSError as exc:
        raise error("iso-not-found", f"cannot read base ISO {path}: {exc.strerror or exc}", hint=BASE_HINT) from None
    if len(pvd) < 2048 or pvd[1:6] != b"CD001" or pvd[0] != 1:
        found = f"the file has only {size} bytes" if len(pvd) < 2048 else f"found {bytes(pvd[0:6])!r} there"
        raise error("iso-invalid", f"{path} is not an ISO 9660 image: expected a primary volume descriptor "
                     f"(type 1, 'CD001') at byte 32768, but {found}", hint=BASE_HINT)
    blocks = struct.unpack_from("<L", pvd, 80)[0]
    block_size = struct.unpack_from("<H", pvd, 128)[0]
    if blocks * block_size > size:
        raise error("iso-invalid", f"{path} is truncated: its volume descriptor says {blocks * block_size} bytes "
                     f"({blocks} blocks of {block_size}), the file has {size}",
                     hint="download it again and compare its sha256 with the distribution's CHECKSUM file")


@attrs.frozen
class _BootImage:
    platform: str     # "bios" or "efi"
    path: str         # path on the ISO (Rock Ridge/Joliet name when there is one)
    inode: object


def _boot_images(iso) -> list[_BootImage]:
    catalog = getattr(iso, "eltorito_boot_catalog", None)
    if catalog is None:
        return []
    entries = [(catalog.validation_entry.platform_id, catalog.initial_entry)]
    entries += [(section.platform_id, e) for section in catalog.sections for e in section.section_entries]
    images = []
    for platform_id, entry in entries:
        path = None
        for rec, is_pvd in entry.inode.linked_records:
            if is_pvd and hasattr(rec, "file_identifier"):
                path = _display_path(iso, rec)
                break
        images.append(_BootImage("efi" if platform_id == 0xEF else "bios", path or "(not in the file tree)",
                                 entry.inode))
    return images


def _display_path(iso, rec) -> str:
    try:
        return iso.full_path_from_dirrecord(rec, rockridge=iso.has_rock_ridge())
    except Exception:  # noqa: BLE001 - pycdlib raises several types for odd records
        return iso.full_path_from_dirrecord(rec)


def _find(iso, path: str):
    """The file record at `path` (real name), looked up by Rock Ridge, Joliet, then ISO 9660 name
    case-insensitively (xorriso's -U writes lowercase ISO 9660 names)."""
    import pycdlib.pycdlibexception as exc

    path = "/" + path.strip("/")
    attempts = []
    if iso.has_rock_ridge():
        attempts.append({"rr_path": path})
    if iso.has_joliet():
        attempts.append({"joliet_path": path})
    for kw in attempts:
        try:
            return iso.get_record(**kw)
        except exc.PyCdlibException:
            continue
    if attempts:
        return None
    current = "/"
    rec = None
    for part in path.strip("/").split("/"):
        try:
            children = list(iso.list_children(iso_path=current))
        except exc.PyCdlibException:
            return None
        for child in children:
            ident = child.file_identifier().decode(errors="replace")
            if ident.split(";")[0].rstrip(".").lower() == part.lower():
                rec = child
                current = iso.full_path_from_dirrecord(child)
                break
        else:
            return None
    return rec


def _read(iso, rec) -> bytes:
    buf = io.BytesIO()
    iso.get_file_from_iso_fp(buf, iso_path=iso.full_path_from_dirrecord(rec))
    return buf.getvalue()


def _replace(iso, rec, content: bytes, keep: list) -> None:
    fp = io.BytesIO(content)
    keep.append(fp)
    iso.update_file_contents_fp(fp, len(content), iso_path=iso.full_path_from_dirrecord(rec))


def kernel_arg_label(label: str) -> str:
    """The volume label as dracut's hd:LABEL= reads it: anything but A-Z a-z 0-9 . _ - as \\xHH."""
    return "".join(c if re.match(r"[A-Za-z0-9._-]", c) else f"\\x{ord(c):02x}" for c in label)


@attrs.frozen
class _BootPlan:
    """Boot configurations to rewrite: (record, new text) in the ISO tree; the EFI image's."""

    tree: list
    efi_image: object | None
    efi_image_content: bytes | None
    changed: list[str]


def _plan_boot(iso, label: str, title: str, epoch: int) -> _BootPlan:
    images = _boot_images(iso)
    if not images:
        raise error("iso-no-el-torito", "the base ISO has no El Torito boot catalog, so it cannot boot: expected "
                     + EXPECTED_LAYOUT, hint=BASE_HINT)
    ks_arg = f"inst.ks=hd:LABEL={kernel_arg_label(label)}:{KS_PATH}"
    found = ", ".join(f"{i.platform.upper()} {i.path}" for i in images)
    tree, changed = [], []
    efi_record, efi_content = None, None

    def rewrite(path: str, kind: str) -> bool:
        rec = _find(iso, path)
        if rec is None:
            return False
        text = _read(iso, rec).decode("utf-8", errors="surrogateescape")
        try:
            new = unattended_isolinux(text, ks_arg, title) if kind == "isolinux" else unattended_grub(text, ks_arg, title)
        except ValueError as exc:
            raise error("iso-unknown-boot-layout", f"the base ISO's /{path} has an unknown layout: {exc}; expected "
                         + EXPECTED_LAYOUT, hint=BASE_HINT) from None
        tree.append((rec, new.encode("utf-8", errors="surrogateescape")))
        changed.append("/" + path)
        return True

    bios = [i for i in images if i.platform == "bios"]
    efi = [i for i in images if i.platform == "efi"]
    for image in bios:
        directory = image.path.rsplit("/", 1)[0].strip("/")
        if image.path.lower().endswith("isolinux.bin"):
            options = [f"{directory}/isolinux.cfg".strip("/"), "boot/isolinux/isolinux.cfg", "isolinux/isolinux.cfg",
                       "isolinux.cfg"]
            if not any(rewrite(p, "isolinux") for p in dict.fromkeys(options)):
                raise error("iso-unknown-boot-layout", f"the base ISO boots BIOS with {image.path} but has no "
                             f"isolinux.cfg beside it; expected " + EXPECTED_LAYOUT, hint=BASE_HINT)
        elif not any(rewrite(p, "grub") for p in GRUB_CONFIGS[1:]):
            raise error("iso-unknown-boot-layout", f"the base ISO boots BIOS with {image.path}, neither isolinux "
                         f"nor GRUB with boot/grub2/grub.cfg; expected " + EXPECTED_LAYOUT, hint=BASE_HINT)
    if efi:
        tree_grub = rewrite(GRUB_CONFIGS[0], "grub")
        image = efi[0]
        rec = _find(iso, image.path) if image.path.startswith("/") else None
        fat_grub = False
        if rec is not None:
            size = rec.get_data_length()
            if size > MAX_EFI_IMAGE:
                raise error("iso-unknown-boot-layout", f"the base ISO's EFI boot image {image.path} is {size} bytes; "
                             f"expected at most {MAX_EFI_IMAGE} (a FAT image with EFI/BOOT/grub.cfg)", hint=BASE_HINT)
            content = bytearray(_read(iso, rec))
            try:
                if fat.has_file(content, FAT_GRUB_CONFIG):
                    text = fat.read_file(content, FAT_GRUB_CONFIG).decode("utf-8", errors="surrogateescape")
                    try:
                        new = unattended_grub(text, ks_arg, title)
                    except ValueError as exc:
                        raise error("iso-unknown-boot-layout", f"{FAT_GRUB_CONFIG} in the base ISO's {image.path} "
                                     f"has an unknown layout: {exc}; expected " + EXPECTED_LAYOUT,
                                     hint=BASE_HINT) from None
                    fat.replace_file(content, FAT_GRUB_CONFIG, new.encode("utf-8", errors="surrogateescape"), epoch)
                    efi_record, efi_content, fat_grub = rec, bytes(content), True
                    changed.append(f"{image.path}:/{FAT_GRUB_CONFIG}")
            except fat.FatError as exc:
                raise error("iso-unknown-boot-layout", f"the base ISO's EFI boot image {image.path} is not a FAT "
                             f"image moat can edit ({exc}); expected " + EXPECTED_LAYOUT, hint=BASE_HINT) from None
        if not (tree_grub or fat_grub):
            raise error("iso-unknown-boot-layout", f"the base ISO boots UEFI with {image.path} but has no GRUB "
                         f"configuration (/{GRUB_CONFIGS[0]}, or {FAT_GRUB_CONFIG} inside the EFI image); expected "
                         + EXPECTED_LAYOUT, hint=BASE_HINT)
    if not changed:
        raise error("iso-unknown-boot-layout", f"the base ISO's boot images ({found}) have no menu moat knows; "
                     "expected " + EXPECTED_LAYOUT, hint=BASE_HINT)
    return _BootPlan(tree, efi_record, efi_content, changed)


def base_identity(path: Path) -> bytes:
    """Cheap and stable: size, system area and volume descriptors (not the whole multi-GB file)."""
    with open(path, "rb") as fh:
        head = fh.read(18 * 2048)
        size = fh.seek(0, os.SEEK_END)
    return hashlib.sha256(size.to_bytes(8, "big") + head).digest()


def _followed(path: Path, follower: WriteFollower, check: md5.MediaCheck) -> bool:
    """Whether the sum the follower computed is the written image's."""
    with open(path, "rb") as fh:
        head = fh.read(SYSTEM_AREA)
    return (follower.broken is None and follower.position >= check.total and head == follower.predicted
            and md5.media_check(path).total == check.total)


def remaster(base: Path, output: Path, files: list[File], title: str, epoch: int, seed: bytes,
              progress: Progress | None) -> tuple[str, list[str], list[Diagnostic], str]:
    """Write the remastered ISO at `output`: its label, the boot menus made unattended, warnings
    and its sha256."""
    import pycdlib
    import pycdlib.pycdlibexception as exc

    warnings: list[Diagnostic] = []
    keep: list = []
    media_check = md5.embedded(md5.read_appdata(base))
    with temporary(output) as tmp, contextlib.ExitStack() as stack:
        follower = None
        if media_check is not None:  # the sum computed while pycdlib writes (follow.py)
            follower = WriteFollower(tmp, lambda head: begin(head))
            stack.callback(follower.cancel)
        with open(base, "rb") as fh, frozen(epoch, seed), kernel_copy(*([follower.write] if follower else [])):
            iso = pycdlib.PyCdlib()
            try:
                iso.open_fp(fh)
            except exc.PyCdlibException as err:
                raise error("iso-invalid", f"{base} is not a readable ISO 9660 image: {err}", hint=BASE_HINT) from None
            label = iso.pvd.volume_identifier.decode("ascii", errors="replace").rstrip(" \0")
            if not (iso.has_rock_ridge() or iso.has_joliet()):
                raise error("iso-invalid", f"{base} has neither Rock Ridge nor Joliet names: the files moat adds "
                             "would only have ISO 9660 names, which the installer cannot find", hint=BASE_HINT)
            if _find(iso, "moat") is not None:
                raise error("iso-already-remastered", f"{base} already has /moat: it was written by moat iso",
                             hint="pass the distribution's installer ISO, not one moat made")
            hybrid = getattr(iso, "isohybrid_mbr", None)
            if hybrid is not None and getattr(hybrid, "mac", False):
                raise error("iso-unknown-boot-layout", f"{base} carries an Apple partition map (HFS+ hybrid); expected "
                             + EXPECTED_LAYOUT, hint=BASE_HINT)
            boot = _plan_boot(iso, label, title, epoch)
            efi_images = [i for i in _boot_images(iso) if i.platform == "efi"]
            fix_gpt = hybrid is not None and getattr(hybrid, "efi", False) and bool(efi_images)
            if hybrid is None:
                warnings.append(Diagnostic("iso-not-hybrid", f"{base} has no isohybrid MBR: {output.name} boots from "
                                           "a DVD (or virtual CD), not from a USB stick", severity="warning",
                                           hint="use the distribution's DVD image, which is isohybrid"))
            for rec, content in boot.tree:
                _replace(iso, rec, content, keep)
            if boot.efi_image is not None:
                _replace(iso, boot.efi_image, boot.efi_image_content, keep)
            names = Names(max(iso.interchange_level, 1))
            names.reserve("", (c.file_identifier().decode(errors="replace")
                               for c in iso.list_children(iso_path="/") if not c.is_dot() and not c.is_dotdot()))
            with contextlib.closing(Tree(iso, names)) as tree:
                for f in sorted(files, key=lambda f: f.path):
                    existing = _find(iso, f.path) if "/" not in f.path else None
                    if existing is not None:  # a ks.cfg the DVD already had
                        _replace(iso, existing, f.content, keep)
                    else:
                        tree.add(f)
                write_progress = callback(progress, f"writing {output.name}")
                if follower is None:
                    iso.write(str(tmp), blocksize=BLOCKSIZE, progress_cb=write_progress)
                else:
                    checks: list[md5.MediaCheck] = []

                    def begin(head: bytes):
                        """The follower's start (pycdlib's layout is final): the system area as
                        the GPT fix-up will leave it, the end of the sum, the sum's update."""
                        iso_bytes = iso.pvd.space_size * iso.logical_block_size
                        checks.append(md5.MediaCheck(iso_bytes))
                        if fix_gpt:
                            size = iso_bytes + len(hybrid.record_padding(iso_bytes))  # what pycdlib writes
                            efi = efi_images[0].inode
                            head = hybrid_system_area(head, size, iso_bytes, efi.extent_location() * 4,
                                                      -(-efi.get_data_length() // 512), seed)
                        return head, checks[0].total, checks[0].update

                    with open(tmp, "wb", buffering=0) as raw, following(follower, iso):
                        iso.write_fp(Watched(raw, follower), blocksize=BLOCKSIZE, progress_cb=write_progress)
                    follower.finish(callback(progress, f"media check of {output.name}"))
            efi_inode = efi_images[0].inode if efi_images else None
            efi_extent = efi_inode.extent_location() if efi_inode is not None else None
            efi_length = efi_inode.get_data_length() if efi_inode is not None else 0
            iso.close()
        if fix_gpt and efi_extent is not None:
            with open(tmp, "rb") as fh:
                fh.seek(16 * 2048 + 80)
                blocks = struct.unpack("<L", fh.read(4))[0]
            fix_hybrid_gpt(tmp, blocks * 2048, efi_extent * 4, -(-efi_length // 512), seed)
        with background_fsync(tmp):
            if media_check is not None:  # after the GPT: the sum covers the system area too
                status = media_check.get("RHLISOSTATUS", "0")
                check = checks[0] if follower is not None and checks and _followed(tmp, follower, checks[0]) else None
                if check is None:  # pycdlib wrote out of order, or the system area is not as foreseen
                    check = md5.media_check(tmp)
                    read_pass(tmp, [check.update], progress, f"media check of {output.name}")
                md5.write_field(tmp, check, int(status) if status.isdigit() else 0)
            # a pass of its own: the sum written above is in the first 40 KiB
            digest = cached_sha256(tmp, progress, f"checksum of {output.name}")
        finish(tmp, output, any(f.mode == 0o400 for f in files))
        return label, boot.changed, warnings, digest

