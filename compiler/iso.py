"""Install media from a bundle, written with pycdlib: VM seed ISOs and the host's installer ISO.

`build_media(bundle, ...)` reads a store path (verified against its manifest first) and writes:

Seeds, one per VM (beside the host ISO, and inside it under moat/seeds/):
    <vm>-cidata.iso   label CIDATA: user-data, meta-data, network-config (cloud-init NoCloud)
                      of a VM installed from an image, plus moat/secrets/<name> it reads
    <vm>-oemdrv.iso   label OEMDRV: ks.cfg (Anaconda loads it by itself from that label) of a
                      VM installed by kickstart, plus moat/bundle/ (manifest.json and vms/<vm>/,
                      the files its %post installs) and moat/secrets/<name> it reads
The host ISO, two modes:
- remaster (`base_iso`, the user's Rocky/Alma 9 installer DVD): the DVD as it is plus
      ks.cfg                the host kickstart (host/kickstart/ks.cfg of the bundle)
      moat/bundle/...       the whole store path, manifest.json included
      moat/seeds/*.iso      the VM seeds
      moat/seeds/SHA256SUMS their sha256 (`sha256sum` format), which the host kickstart's %post
                            checks before it copies them into the pool ISOs (compiler/seeds.py)
      moat/secrets/<name>   the secrets the kickstarts read (only with `secrets`)
  with a new first boot entry, the default after TIMEOUT seconds, in the BIOS menu (the
  isolinux.cfg beside the El Torito BIOS image) and in every UEFI GRUB menu (EFI/BOOT/grub.cfg
  in the ISO tree and inside the El Torito EFI image): the DVD's own install entry plus
  `inst.ks=hd:LABEL=<the ISO's volume label>:/ks.cfg`. The volume label, both El Torito
  entries and the isohybrid MBR (boot code, isolinux LBA) are kept, so the result boots from a
  DVD and from a USB stick, BIOS and UEFI; the GPT is rewritten valid (iso_gpt), and the DVD's
  media-check sum is computed again (iso_md5) so "Test this media" still passes.
- no base ISO: `<name>-host.iso`, label OEMDRV, with ks.cfg, moat/bundle/, moat/seeds/ (and SHA256SUMS) and
  moat/secrets/: attach it beside the stock installer medium and Anaconda finds the kickstart.
The layout (moat/bundle, moat/secrets, label OEMDRV) is the one the kickstart family's %pre
looks for (render/kickstart.py: MEDIUM_*).

Names: ISO 9660 names are derived (upper case, A-Z 0-9 _) and unique per directory; Rock
Ridge and Joliet carry the real names and modes (0444, 0555 for scripts, 0400 for secrets).

Secrets: the kickstarts and user-data name the files they read as moat/secrets/<name>; the
value is <secrets>/<name> (its bytes as they are). A name may have subdirectories, as the
OpenVPN PKI of `moat secrets` has (openvpn/clients/home1.key): only the files named are copied,
never the rest of the directory (the CA key, other clients' keys). A medium whose consumer
needs a secret that is not there is an error (iso-secret-missing). An ISO holding secrets is written 0600.

Reproducible: the same bundle, base ISO, secrets and SOURCE_DATE_EPOCH give the same bytes
at any time and in any time zone (iso_reproducible): one date (SOURCE_DATE_EPOCH, else one
derived from the bundle's manifest), GUIDs and the MBR id derived from the inputs.

Streams: the base ISO is opened as a file object and written to a path, so pycdlib copies it
in blocks; only the bundle, the seeds, the boot menus and the EFI image (at most
MAX_EFI_IMAGE) are held in memory. Each ISO is written to a temporary file beside the
output and renamed into place when complete.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import re
import struct
from pathlib import Path
from typing import Callable, Iterable

import attrs

from . import iso_fat, iso_md5
from .diagnostics import Diagnostic, MoatError
from .iso_gpt import fix_hybrid_gpt
from .iso_reproducible import frozen, source_date
from .seeds import SEED_DIR, SUMS, seed_name
from .store import MANIFEST
from .store import verify as verify_store

try:  # the medium's layout is the kickstart family's
    from .render.kickstart import MEDIUM_BUNDLE, MEDIUM_LABEL, MEDIUM_SECRETS
except ImportError:  # pragma: no cover - family not present
    MEDIUM_BUNDLE, MEDIUM_LABEL, MEDIUM_SECRETS = "moat/bundle", "OEMDRV", "moat/secrets"

HOST_KICKSTART = "host/kickstart/ks.cfg"
VM_KICKSTART = "kickstart/ks.cfg"
CLOUD_INIT = ("user-data", "meta-data", "network-config")
KS_PATH = "/ks.cfg"
CIDATA_LABEL = "CIDATA"
TIMEOUT = 5                       # seconds before the unattended entry boots
MAX_EFI_IMAGE = 64 << 20          # the EFI boot image is edited in memory
BLOCKSIZE = 1 << 20               # pycdlib's copy buffer
GRUB_CONFIGS = ("EFI/BOOT/grub.cfg", "boot/grub2/grub.cfg", "boot/grub/grub.cfg")
FAT_GRUB_CONFIG = "EFI/BOOT/grub.cfg"
EXPECTED_LAYOUT = ("a Rocky Linux or AlmaLinux 9 installer DVD (x86_64): El Torito BIOS image isolinux/isolinux.bin "
                   "with isolinux/isolinux.cfg, El Torito EFI image images/efiboot.img with EFI/BOOT/grub.cfg, "
                   "menu entries that boot with inst.stage2=hd:LABEL=...")
BASE_HINT = "pass the installer DVD of Rocky Linux 9 or AlmaLinux 9 for x86_64 (e.g. Rocky-9.4-x86_64-dvd.iso) as downloaded"

Progress = Callable[[str, int, int], None]  # (what, done, total) in bytes; done == total at the end


@attrs.frozen
class Medium:
    """One ISO written: what it is for, where, its volume label and sha256."""

    kind: str            # "host" (remastered DVD), "host-oemdrv", "cidata", "oemdrv"
    vm: str | None
    path: Path
    label: str
    sha256: str
    size: int
    secrets: tuple[str, ...] = ()      # names of the secrets on it (moat/secrets/<name>, <name> may hold '/')
    boot_menus: tuple[str, ...] = ()   # boot menus made unattended (remastered DVD)


@attrs.frozen
class Result:
    media: tuple[Medium, ...]
    warnings: tuple[Diagnostic, ...]


@attrs.frozen
class _File:
    path: str            # path on the ISO, without a leading slash
    content: bytes
    mode: int            # permission bits for Rock Ridge


def _error(rule: str, message: str, hint: str | None = None) -> MoatError:
    return MoatError([Diagnostic(rule, message, hint=hint)])


# --- the bundle ------------------------------------------------------------------------------


@attrs.frozen
class Bundle:
    root: Path
    manifest: dict
    manifest_bytes: bytes

    @property
    def name(self) -> str:
        return self.manifest.get("name", self.root.name.split("-", 1)[-1])

    def files(self, prefix: str = "") -> list[str]:
        return sorted(p for p in self.manifest["files"] if p.startswith(prefix))

    def read(self, rel: str) -> bytes:
        return (self.root / rel).read_bytes()

    def mode(self, rel: str) -> int:
        return int(self.manifest["files"][rel]["mode"], 8) & 0o555


def load_bundle(path: Path) -> Bundle:
    root = Path(path).resolve()
    if not (root / MANIFEST).is_file():
        raise _error("iso-no-bundle", f"{path} is not a bundle: it has no {MANIFEST}",
                     hint="build one first: moat build BLUEPRINT --out OUT (then moat iso --out OUT)")
    problems = verify_store(root)
    if problems:
        raise _error("iso-bundle-corrupt", f"{root} differs from its manifest: {problems[0]}",
                     hint="a store path is never changed after it is written; delete it and build again")
    raw = (root / MANIFEST).read_bytes()
    return Bundle(root, json.loads(raw), raw)


def blueprint_base_iso(bundle: Bundle) -> str | None:
    """host.install.base_iso of the bundle's blueprint, if the blueprint has it."""
    from . import load

    try:
        data = load.load_text(bundle.read("blueprint.yaml").decode(), "blueprint.yaml").data
    except (MoatError, OSError, UnicodeDecodeError):
        return None
    value = ((data.get("host") or {}).get("install") or {}).get("base_iso") if isinstance(data, dict) else None
    return value if isinstance(value, str) and value else None


# --- secrets ---------------------------------------------------------------------------------

# a name is one or more path components under moat/secrets/ (openvpn/clients/home1.key): each
# starts with a letter or digit, so there is no leading '/', no empty component and no '..'
_SECRET_COMPONENT = r"[A-Za-z0-9][A-Za-z0-9._-]*"
_SECRET_REF = re.compile(re.escape(MEDIUM_SECRETS) + rf"/({_SECRET_COMPONENT}(?:/{_SECRET_COMPONENT})*)")


def secrets_read_by(text: bytes) -> list[str]:
    """Names of the secrets a kickstart or user-data reads from its medium (moat/secrets/<name>),
    relative to the secrets directory: `host-luks`, `openvpn/clients/home1.key`."""
    return sorted(set(_SECRET_REF.findall(text.decode(errors="replace"))))


def _secret_name(path: str) -> str:
    """moat/secrets/<name> on a medium -> <name>."""
    return path[len(MEDIUM_SECRETS) + 1:]


def _secret_files(names: Iterable[str], secrets: Path | None, consumer: str) -> list[_File]:
    files = []
    for name in sorted(set(names)):
        source = secrets / name if secrets else None
        if source is None or not source.is_file():
            where = f"{secrets}/{name} does not exist" if secrets else "no secrets directory was given (--secrets DIR)"
            hint = ("make it with `moat secrets init BLUEPRINT --dir DIR` (or put the value of "
                    f"secret:{name} in DIR/{name}, first line) and pass --secrets DIR; secrets never enter the bundle")
            if "/" in name:  # a file of the OpenVPN PKI
                hint = "make it with `moat secrets init BLUEPRINT --dir DIR` and pass --secrets DIR"
            raise _error("iso-secret-missing", f"{consumer} reads {MEDIUM_SECRETS}/{name} from its medium, "
                         f"but {where}", hint=hint)
        value = source.read_bytes()
        if not value.strip():
            raise _error("iso-secret-missing", f"{source} is empty", hint=f"write the value of secret:{name} into it")
        files.append(_File(f"{MEDIUM_SECRETS}/{name}", value, 0o400))
    return files


# --- ISO 9660 names ------------------------------------------------------------------------


class _Names:
    """ISO 9660 names for new entries: A-Z 0-9 _, within the interchange level's lengths,
    unique (case-insensitively) per directory."""

    def __init__(self, level: int):
        self.level = level
        self.taken: dict[str, set[str]] = {}

    def reserve(self, parent: str, names: Iterable[str]) -> None:
        self.taken.setdefault(parent, set()).update(n.upper().split(";")[0].rstrip(".") for n in names)

    @staticmethod
    def _clean(text: str) -> str:
        return re.sub(r"[^A-Z0-9_]", "_", text.upper())

    def _unique(self, parent: str, make: Callable[[str], str], base: str, limit: int) -> str:
        taken = self.taken.setdefault(parent, set())
        candidate, n = make(base[:limit]), 0
        while candidate.rstrip(".") in taken:
            n += 1
            suffix = f"_{n}"
            candidate = make(base[:max(limit - len(suffix), 1)] + suffix)
        taken.add(candidate.rstrip("."))
        return candidate

    def file(self, parent: str, name: str) -> str:
        stem, dot, ext = name.rpartition(".")
        if not dot or not stem:
            stem, ext = name, ""
        ext = self._clean(ext)[:3 if self.level == 1 else 8]
        stem = self._clean(stem) or "_"
        limit = 8 if self.level == 1 else 30 - len(ext)
        return self._unique(parent, lambda s: f"{s}.{ext}", stem, limit) + ";1"

    def directory(self, parent: str, name: str) -> str:
        return self._unique(parent, lambda s: s, self._clean(name) or "_", 8 if self.level == 1 else 31)


class _Tree:
    """Adds files (and their directories) to a pycdlib ISO with Rock Ridge, Joliet, UDF names."""

    def __init__(self, iso, names: _Names):
        self.iso = iso
        self.names = names
        self.rr = iso.has_rock_ridge()
        self.joliet = iso.has_joliet()
        self.udf = iso.has_udf()
        self.dirs: dict[str, str] = {"": ""}  # real path -> ISO 9660 path
        self.keep: list[io.BytesIO] = []

    def _names(self, real: str, iso_path: str) -> dict:
        kw: dict = {"iso_path": iso_path}
        leaf = real.rsplit("/", 1)[-1]
        if self.rr:
            kw["rr_name"] = leaf
        if self.joliet:
            if any(len(part) > 64 for part in real.split("/")):
                raise _error("iso-name-too-long", f"{real}: a name on the ISO is longer than Joliet's 64 characters",
                             hint="use shorter VM and file names")
            kw["joliet_path"] = "/" + real
        if self.udf:
            kw["udf_path"] = "/" + real
        return kw

    def directory(self, real: str) -> str:
        if real in self.dirs:
            return self.dirs[real]
        parent, _, leaf = real.rpartition("/")
        parent_iso = self.directory(parent)
        iso_path = f"{parent_iso}/{self.names.directory(parent_iso, leaf)}"
        self.iso.add_directory(file_mode=0o040555 if self.rr else None, **self._names(real, iso_path))
        self.dirs[real] = iso_path
        return iso_path

    def add(self, f: _File) -> None:
        parent, _, leaf = f.path.rpartition("/")
        parent_iso = self.directory(parent)
        iso_path = f"{parent_iso}/{self.names.file(parent_iso, leaf)}"
        fp = io.BytesIO(f.content)
        self.keep.append(fp)
        self.iso.add_fp(fp, len(f.content), file_mode=(0o100000 | f.mode) if self.rr else None,
                        **self._names(f.path, iso_path))


# --- writing ---------------------------------------------------------------------------------


@contextlib.contextmanager
def _kernel_copy():
    """pycdlib copies file data with os.copy_file_range between real files (the base ISO and the
    output): the bytes stay in the kernel (or are shared by a reflink), much faster than its
    read/write loop, same result; BytesIO sources and file systems that refuse it use the loop."""
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
                n = os.copy_file_range(infd, outfd, min(left, 1 << 30), src, dst)
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


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _tmp_for(output: Path) -> Path:
    """An empty temporary file beside `output`, 0600 from the start (it may receive secrets)."""
    tmp = output.with_name(f".{output.name}.tmp-{os.getpid()}")
    if tmp.exists():
        tmp.unlink()
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    return tmp


def _finish(tmp: Path, output: Path, secret: bool) -> None:
    os.chmod(tmp, 0o600 if secret else 0o644)
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, output)


def _new_iso(label: str, files: list[_File], epoch: int, seed: bytes, outfp, progress: Progress | None = None,
             what: str = "") -> None:
    """A new ISO (level 3, Rock Ridge 1.09, Joliet) labelled `label` holding `files`, written to `outfp`."""
    import pycdlib

    with frozen(epoch, seed):
        iso = pycdlib.PyCdlib()
        iso.new(interchange_level=3, vol_ident=label, sys_ident="LINUX", app_ident_str="MOAT",
                rock_ridge="1.09", joliet=3)
        tree = _Tree(iso, _Names(3))
        for f in sorted(files, key=lambda f: f.path):
            tree.add(f)
        iso.write_fp(outfp, blocksize=BLOCKSIZE, progress_cb=_callback(progress, what))
        iso.close()


def _write_new(output: Path, label: str, files: list[_File], epoch: int, seed: bytes,
               progress: Progress | None) -> None:
    tmp = _tmp_for(output)
    try:
        with open(tmp, "wb") as fh:
            _new_iso(label, files, epoch, seed, fh, progress, output.name)
        _finish(tmp, output, any(f.mode == 0o400 for f in files))
    finally:
        if tmp.exists():
            tmp.unlink()


def _write_bytes(output: Path, data: bytes, secret: bool) -> None:
    tmp = _tmp_for(output)
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
        _finish(tmp, output, secret)
    finally:
        if tmp.exists():
            tmp.unlink()


def _callback(progress: Progress | None, what: str):
    if progress is None:
        return None
    return lambda done, total: progress(what, done, total)


# --- the base ISO ------------------------------------------------------------------------------


def check_base_iso(path: Path) -> None:
    """A clear error for a base ISO that is missing, not an ISO 9660 image, or truncated."""
    if not path.exists():
        raise _error("iso-not-found", f"base ISO {path} does not exist", hint=BASE_HINT)
    if not path.is_file():
        raise _error("iso-not-found", f"base ISO {path} is not a file", hint=BASE_HINT)
    try:
        with open(path, "rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            fh.seek(16 * 2048)
            pvd = fh.read(2048)
    except OSError as exc:
        raise _error("iso-not-found", f"cannot read base ISO {path}: {exc.strerror or exc}", hint=BASE_HINT) from None
    if len(pvd) < 2048 or pvd[1:6] != b"CD001" or pvd[0] != 1:
        found = f"the file has only {size} bytes" if len(pvd) < 2048 else f"found {bytes(pvd[0:6])!r} there"
        raise _error("iso-invalid", f"{path} is not an ISO 9660 image: expected a primary volume descriptor "
                     f"(type 1, 'CD001') at byte 32768, but {found}", hint=BASE_HINT)
    blocks = struct.unpack_from("<L", pvd, 80)[0]
    block_size = struct.unpack_from("<H", pvd, 128)[0]
    if blocks * block_size > size:
        raise _error("iso-invalid", f"{path} is truncated: its volume descriptor says {blocks * block_size} bytes "
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


def _kernel_arg_label(label: str) -> str:
    """The volume label as dracut's hd:LABEL= reads it: anything but A-Z a-z 0-9 . _ - as \\xHH."""
    return "".join(c if re.match(r"[A-Za-z0-9._-]", c) else f"\\x{ord(c):02x}" for c in label)


# --- boot menus ---------------------------------------------------------------------------------

_STAGE2 = "inst.stage2="


def _pick(candidates: list[tuple[int, str]]) -> int | None:
    """The install entry: the first whose kernel line has inst.stage2= and no media check or rescue."""
    plain = [i for i, text in candidates if _STAGE2 in text and "rd.live.check" not in text and "inst.rescue" not in text]
    any_stage2 = [i for i, text in candidates if _STAGE2 in text]
    return (plain or any_stage2 or [None])[0]


def _with_ks(args: str, ks_arg: str) -> str:
    """Kernel arguments without a media check or an earlier inst.ks, with `ks_arg` last; the rest as it was."""
    kept = re.sub(r"(^|\s)(rd\.live\.check|inst\.ks=\S*)(?=\s|$)", "", args).strip()
    return f"{kept} {ks_arg}".strip()


def unattended_isolinux(text: str, ks_arg: str, title: str) -> str:
    """isolinux.cfg with a first entry `moat` (the install entry + inst.ks), the menu default,
    booting after TIMEOUT seconds."""
    lines = text.splitlines()
    labels = [i for i, line in enumerate(lines) if re.match(r"\s*label\s", line, re.I)]
    blocks = []
    for n, start in enumerate(labels):
        end = labels[n + 1] if n + 1 < len(labels) else len(lines)
        for j in range(start + 1, end):  # a block ends where menu structure starts
            if re.match(r"\s*menu\s+(begin|end|separator)\b", lines[j], re.I):
                end = j
                break
        blocks.append((start, end))
    candidates = []
    for start, end in blocks:
        kernel = next((ln for ln in lines[start:end] if re.match(r"\s*(kernel|linux)\s", ln, re.I)), None)
        append = next((ln for ln in lines[start:end] if re.match(r"\s*append\s", ln, re.I)), None)
        candidates.append((start, f"{kernel or ''} {append or ''}" if kernel and append else ""))
    chosen = _pick(candidates)
    if chosen is None:
        raise ValueError("no entry whose kernel boots with inst.stage2=")
    start, end = next(b for b in blocks if b[0] == chosen)
    kernel = next(ln for ln in lines[start:end] if re.match(r"\s*(kernel|linux)\s", ln, re.I)).strip()
    append = next(ln for ln in lines[start:end] if re.match(r"\s*append\s", ln, re.I)).strip()
    append_args = append.split(None, 1)[1] if len(append.split(None, 1)) > 1 else ""
    entry = ["# moat: unattended install with the kickstart on this medium (the default)",
             "label moat",
             f"  menu label ^{title}",
             "  menu default",
             f"  {kernel}",
             f"  append {_with_ks(append_args, ks_arg)}",
             ""]
    out = []
    has_timeout = False
    menu_ui = False
    for i, line in enumerate(lines):
        if i == labels[0]:
            out.extend(entry)
        stripped = line.strip()
        if re.match(r"menu\s+default$", stripped, re.I):
            continue
        if re.match(r"timeout\s", stripped, re.I):
            out.append(f"timeout {TIMEOUT * 10}")
            has_timeout = True
            continue
        if re.match(r"ontimeout\s", stripped, re.I):
            out.append("ontimeout moat")
            continue
        if re.match(r"(ui\s|default\s+\S+\.c32\b)", stripped, re.I):
            menu_ui = True
        out.append(line)
    if not menu_ui:
        out = [("default moat" if re.match(r"\s*default\s", ln, re.I) else ln) for ln in out]
        if not any(re.match(r"\s*default\s", ln, re.I) for ln in out):
            out.insert(0, "default moat")
    if not has_timeout:
        out.insert(1 if out and re.match(r"\s*default\s", out[0], re.I) else 0, f"timeout {TIMEOUT * 10}")
    return "\n".join(out) + "\n"


def _braces(line: str) -> int:
    """{ minus } outside quotes and comments."""
    depth, quote = 0, None
    for ch in line:
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#":
            break
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
    return depth


def _grub_quote(word: str) -> str:
    return f"'{word}'" if re.search(r"[^A-Za-z0-9._:/=,+-]", word) else word


def unattended_grub(text: str, ks_arg: str, title: str) -> str:
    """grub.cfg with a first menuentry (the install entry + inst.ks), `set default="0"`,
    `set timeout=TIMEOUT`."""
    lines = text.splitlines()
    depth = 0
    entries = []  # (start, end) of top-level menuentry blocks
    start = None
    for i, line in enumerate(lines):
        if depth == 0 and re.match(r"\s*menuentry\s", line):
            start = i
        depth += _braces(line)
        if start is not None and depth == 0:
            entries.append((start, i + 1))
            start = None
    candidates = []
    for s, e in entries:
        kernel = next((ln for ln in lines[s:e] if re.match(r"\s*linux(efi|16)?\s", ln)), "")
        candidates.append((s, kernel))
    chosen = _pick(candidates)
    if chosen is None:
        raise ValueError("no menuentry whose linux line boots with inst.stage2=")
    s, e = next(b for b in entries if b[0] == chosen)
    body = []
    for ln in lines[s + 1:e]:
        m = re.match(r"(\s*)(linux(?:efi|16)?)\s+(\S+)\s*(.*)$", ln)
        if m:
            indent, cmd, kernel, args = m.groups()
            ln = f"{indent}{cmd} {kernel} {_with_ks(args, _grub_quote(ks_arg))}"
        body.append(ln)
    head = re.sub(r"^(\s*menuentry\s+)('[^']*'|\"[^\"]*\"|\S+)", lambda m: f"{m.group(1)}'{title}'", lines[s])
    entry = ["# moat: unattended install with the kickstart on this medium (the default)", head, *body, ""]
    out, has_default, has_timeout = [], False, False
    depth = 0
    for i, line in enumerate(lines):
        if i == entries[0][0]:
            if not has_default:
                out.append('set default="0"')
                has_default = True
            if not has_timeout:
                out.append(f"set timeout={TIMEOUT}")
                has_timeout = True
            out.extend(entry)
        if depth == 0 and re.match(r"\s*set\s+default=", line):
            out.append('set default="0"')
            has_default = True
        elif depth == 0 and re.match(r"\s*set\s+timeout=", line):
            out.append(f"set timeout={TIMEOUT}")
            has_timeout = True
        else:
            out.append(line)
        depth += _braces(line)
    return "\n".join(out) + "\n"


# --- remastering -----------------------------------------------------------------------------


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
        raise _error("iso-no-el-torito", "the base ISO has no El Torito boot catalog, so it cannot boot: expected "
                     + EXPECTED_LAYOUT, hint=BASE_HINT)
    ks_arg = f"inst.ks=hd:LABEL={_kernel_arg_label(label)}:{KS_PATH}"
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
            raise _error("iso-unknown-boot-layout", f"the base ISO's /{path} has an unknown layout: {exc}; expected "
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
                raise _error("iso-unknown-boot-layout", f"the base ISO boots BIOS with {image.path} but has no "
                             f"isolinux.cfg beside it; expected " + EXPECTED_LAYOUT, hint=BASE_HINT)
        elif not any(rewrite(p, "grub") for p in GRUB_CONFIGS[1:]):
            raise _error("iso-unknown-boot-layout", f"the base ISO boots BIOS with {image.path}, neither isolinux "
                         f"nor GRUB with boot/grub2/grub.cfg; expected " + EXPECTED_LAYOUT, hint=BASE_HINT)
    if efi:
        tree_grub = rewrite(GRUB_CONFIGS[0], "grub")
        image = efi[0]
        rec = _find(iso, image.path) if image.path.startswith("/") else None
        fat_grub = False
        if rec is not None:
            size = rec.get_data_length()
            if size > MAX_EFI_IMAGE:
                raise _error("iso-unknown-boot-layout", f"the base ISO's EFI boot image {image.path} is {size} bytes; "
                             f"expected at most {MAX_EFI_IMAGE} (a FAT image with EFI/BOOT/grub.cfg)", hint=BASE_HINT)
            content = bytearray(_read(iso, rec))
            try:
                if iso_fat.has_file(content, FAT_GRUB_CONFIG):
                    text = iso_fat.read_file(content, FAT_GRUB_CONFIG).decode("utf-8", errors="surrogateescape")
                    try:
                        new = unattended_grub(text, ks_arg, title)
                    except ValueError as exc:
                        raise _error("iso-unknown-boot-layout", f"{FAT_GRUB_CONFIG} in the base ISO's {image.path} "
                                     f"has an unknown layout: {exc}; expected " + EXPECTED_LAYOUT,
                                     hint=BASE_HINT) from None
                    iso_fat.replace_file(content, FAT_GRUB_CONFIG, new.encode("utf-8", errors="surrogateescape"), epoch)
                    efi_record, efi_content, fat_grub = rec, bytes(content), True
                    changed.append(f"{image.path}:/{FAT_GRUB_CONFIG}")
            except iso_fat.FatError as exc:
                raise _error("iso-unknown-boot-layout", f"the base ISO's EFI boot image {image.path} is not a FAT "
                             f"image moat can edit ({exc}); expected " + EXPECTED_LAYOUT, hint=BASE_HINT) from None
        if not (tree_grub or fat_grub):
            raise _error("iso-unknown-boot-layout", f"the base ISO boots UEFI with {image.path} but has no GRUB "
                         f"configuration (/{GRUB_CONFIGS[0]}, or {FAT_GRUB_CONFIG} inside the EFI image); expected "
                         + EXPECTED_LAYOUT, hint=BASE_HINT)
    if not changed:
        raise _error("iso-unknown-boot-layout", f"the base ISO's boot images ({found}) have no menu moat knows; "
                     "expected " + EXPECTED_LAYOUT, hint=BASE_HINT)
    return _BootPlan(tree, efi_record, efi_content, changed)


def _base_identity(path: Path) -> bytes:
    """Cheap and stable: size, system area and volume descriptors (not the whole multi-GB file)."""
    with open(path, "rb") as fh:
        head = fh.read(18 * 2048)
        size = fh.seek(0, os.SEEK_END)
    return hashlib.sha256(size.to_bytes(8, "big") + head).digest()


def _remaster(base: Path, output: Path, files: list[_File], title: str, epoch: int, seed: bytes,
              progress: Progress | None) -> tuple[str, list[str], list[Diagnostic]]:
    import pycdlib
    import pycdlib.pycdlibexception as exc

    warnings: list[Diagnostic] = []
    keep: list = []
    media_check = iso_md5.embedded(iso_md5.read_appdata(base))
    tmp = _tmp_for(output)
    try:
        with open(base, "rb") as fh, frozen(epoch, seed), _kernel_copy():
            iso = pycdlib.PyCdlib()
            try:
                iso.open_fp(fh)
            except exc.PyCdlibException as err:
                raise _error("iso-invalid", f"{base} is not a readable ISO 9660 image: {err}", hint=BASE_HINT) from None
            label = iso.pvd.volume_identifier.decode("ascii", errors="replace").rstrip(" \0")
            if not (iso.has_rock_ridge() or iso.has_joliet()):
                raise _error("iso-invalid", f"{base} has neither Rock Ridge nor Joliet names: the files moat adds "
                             "would only have ISO 9660 names, which the installer cannot find", hint=BASE_HINT)
            if _find(iso, "moat") is not None:
                raise _error("iso-already-remastered", f"{base} already has /moat: it was written by moat iso",
                             hint="pass the distribution's installer ISO, not one moat made")
            hybrid = getattr(iso, "isohybrid_mbr", None)
            if hybrid is not None and getattr(hybrid, "mac", False):
                raise _error("iso-unknown-boot-layout", f"{base} carries an Apple partition map (HFS+ hybrid); expected "
                             + EXPECTED_LAYOUT, hint=BASE_HINT)
            boot = _plan_boot(iso, label, title, epoch)
            efi_images = [i for i in _boot_images(iso) if i.platform == "efi"]
            if hybrid is None:
                warnings.append(Diagnostic("iso-not-hybrid", f"{base} has no isohybrid MBR: {output.name} boots from "
                                           "a DVD (or virtual CD), not from a USB stick", severity="warning",
                                           hint="use the distribution's DVD image, which is isohybrid"))
            for rec, content in boot.tree:
                _replace(iso, rec, content, keep)
            if boot.efi_image is not None:
                _replace(iso, boot.efi_image, boot.efi_image_content, keep)
            names = _Names(max(iso.interchange_level, 1))
            names.reserve("", (c.file_identifier().decode(errors="replace")
                               for c in iso.list_children(iso_path="/") if not c.is_dot() and not c.is_dotdot()))
            tree = _Tree(iso, names)
            for f in sorted(files, key=lambda f: f.path):
                existing = _find(iso, f.path) if "/" not in f.path else None
                if existing is not None:  # a ks.cfg the DVD already had
                    _replace(iso, existing, f.content, keep)
                else:
                    tree.add(f)
            iso.write(str(tmp), blocksize=BLOCKSIZE, progress_cb=_callback(progress, output.name))
            efi_inode = efi_images[0].inode if efi_images else None
            efi_extent = efi_inode.extent_location() if efi_inode is not None else None
            efi_length = efi_inode.get_data_length() if efi_inode is not None else 0
            iso.close()
        if hybrid is not None and getattr(hybrid, "efi", False) and efi_extent is not None:
            with open(tmp, "rb") as fh:
                fh.seek(16 * 2048 + 80)
                blocks = struct.unpack("<L", fh.read(4))[0]
            fix_hybrid_gpt(tmp, blocks * 2048, efi_extent * 4, -(-efi_length // 512), seed)
        if media_check is not None:  # last: the sum covers the system area too
            status = media_check.get("RHLISOSTATUS", "0")
            iso_md5.implant(tmp, int(status) if status.isdigit() else 0)
        _finish(tmp, output, any(f.mode == 0o400 for f in files))
        return label, boot.changed, warnings
    finally:
        if tmp.exists():
            tmp.unlink()


# --- the media ---------------------------------------------------------------------------------


def _vms(bundle: Bundle) -> list[str]:
    return sorted({p.split("/")[1] for p in bundle.files("vms/") if p.count("/") >= 2})


def _seed_files(bundle: Bundle, vm: str, kind: str, secrets: Path | None) -> list[_File]:
    prefix = f"vms/{vm}/"
    if kind == "cidata":
        files = [_File(name, bundle.read(f"{prefix}cloud-init/{name}"), 0o444) for name in CLOUD_INIT]
        needed = secrets_read_by(files[0].content)
        return files + _secret_files(needed, secrets, f"the cloud-init seed of VM {vm} (user-data)")
    ks = bundle.read(prefix + VM_KICKSTART)
    files = [_File(KS_PATH.lstrip("/"), ks, 0o444),
             _File(f"{MEDIUM_BUNDLE}/{MANIFEST}", bundle.manifest_bytes, 0o444)]
    files += [_File(f"{MEDIUM_BUNDLE}/{rel}", bundle.read(rel), bundle.mode(rel)) for rel in bundle.files(prefix)]
    return files + _secret_files(secrets_read_by(ks), secrets, f"the kickstart of VM {vm} ({prefix}{VM_KICKSTART})")


def seed_kinds(bundle: Bundle) -> list[tuple[str, str]]:
    """(vm, "cidata" | "oemdrv") for every VM that has a cloud-init seed or a kickstart."""
    out = []
    files = set(bundle.files("vms/"))
    for vm in _vms(bundle):
        if all(f"vms/{vm}/cloud-init/{n}" in files for n in CLOUD_INIT):
            out.append((vm, "cidata"))
        if f"vms/{vm}/{VM_KICKSTART}" in files:
            out.append((vm, "oemdrv"))
    return out


def seed_sums(seeds: Iterable[Medium]) -> bytes:
    """moat/seeds/SHA256SUMS: `<sha256>  <file name>` per seed, by name (`sha256sum -c` reads it)."""
    return "".join(f"{m.sha256}  {m.path.name}\n" for m in sorted(seeds, key=lambda m: m.path.name)).encode()


def default_output(out: Path, bundle: Bundle) -> Path:
    return out / "iso" / f"{bundle.name}-host.iso"


def build_media(bundle_path: Path, output: Path, base_iso: Path | None = None, secrets: Path | None = None,
                progress: Progress | None = None, environ: dict | None = None) -> Result:
    """Write the seeds beside `output` and the host ISO at `output` (module docstring). Nothing is
    written when an error is found; `environ` stands for os.environ (SOURCE_DATE_EPOCH)."""
    try:
        return _build_media(bundle_path, Path(output), base_iso, secrets, progress, environ)
    except OSError as exc:
        where = exc.filename or output
        raise _error("iso-write", f"cannot write the install media ({where}): {exc.strerror or exc}",
                     hint="check the free space and permissions of the output directory (--output)") from None


def _build_media(bundle_path: Path, output: Path, base_iso: Path | None, secrets: Path | None,
                 progress: Progress | None, environ: dict | None) -> Result:
    bundle = load_bundle(bundle_path)
    if HOST_KICKSTART not in bundle.manifest["files"]:
        raise _error("iso-no-kickstart", f"the bundle {bundle.root} has no {HOST_KICKSTART}",
                     hint="rebuild the blueprint with a moat that renders the host kickstart")
    if base_iso is not None:
        check_base_iso(base_iso)
        if base_iso.resolve() == output.resolve():
            raise _error("iso-output", f"{output} is the base ISO itself",
                         hint="write the remastered ISO elsewhere (--output); the base stays as downloaded")
    if secrets is not None and not secrets.is_dir():
        raise _error("iso-secret-missing", f"secrets directory {secrets} does not exist",
                     hint="create it with one file per secret name, readable only by you (chmod 700)")
    output.parent.mkdir(parents=True, exist_ok=True)
    bundle_seed = hashlib.sha256(b"moat-iso-v1\0" + bundle.manifest_bytes).digest()
    epoch = source_date(bundle_seed, environ=environ)
    # every medium's files first, seeds in memory (they are small): a missing secret or a bad
    # base ISO fails before anything is written
    host_ks = bundle.read(HOST_KICKSTART)
    host_files = [_File(KS_PATH.lstrip("/"), host_ks, 0o444),
                  _File(f"{MEDIUM_BUNDLE}/{MANIFEST}", bundle.manifest_bytes, 0o444)]
    host_files += [_File(f"{MEDIUM_BUNDLE}/{rel}", bundle.read(rel), bundle.mode(rel)) for rel in bundle.files()]
    host_secrets = _secret_files(secrets_read_by(host_ks), secrets, f"the host kickstart ({HOST_KICKSTART})")
    seeds = []  # (Medium, ISO bytes)
    for vm, kind in seed_kinds(bundle):
        files = _seed_files(bundle, vm, kind, secrets)
        label = CIDATA_LABEL if kind == "cidata" else MEDIUM_LABEL
        buf = io.BytesIO()
        _new_iso(label, files, epoch, bundle_seed + f"\0seed\0{vm}\0{kind}".encode(), buf)
        names = tuple(_secret_name(f.path) for f in files if f.mode == 0o400)
        data = buf.getvalue()
        path = output.parent / seed_name(vm, kind)  # the volume name the VM's domain attaches
        if path.resolve() == output.resolve():
            raise _error("iso-output", f"{output} is also the name of VM {vm}'s seed",
                         hint="name the host ISO differently (--output)")
        seeds.append((Medium(kind, vm, path, label, hashlib.sha256(data).hexdigest(), len(data), names), data))
    host_files += [_File(f"{SEED_DIR}/{m.path.name}", data, 0o400 if m.secrets else 0o444) for m, data in seeds]
    if seeds:
        host_files.append(_File(f"{SEED_DIR}/{SUMS}", seed_sums(m for m, _ in seeds), 0o444))
    host_files += host_secrets
    title = f"Install unattended: moat blueprint {bundle.name} (ks.cfg)".replace("'", "")
    secret_names = tuple(sorted({_secret_name(f.path) for f in host_secrets}
                                | {n for m, _ in seeds for n in m.secrets}))
    warnings: list[Diagnostic] = []
    if base_iso is None:
        _write_new(output, MEDIUM_LABEL, host_files, epoch, bundle_seed + b"\0host-oemdrv", progress)
        host = Medium("host-oemdrv", None, output, MEDIUM_LABEL, _sha256(output), output.stat().st_size, secret_names)
    else:
        seed = bundle_seed + b"\0host\0" + _base_identity(base_iso)
        label, menus, warnings = _remaster(base_iso, output, host_files, title, epoch, seed, progress)
        host = Medium("host", None, output, label, _sha256(output), output.stat().st_size, secret_names, tuple(menus))
    for medium, data in seeds:
        _write_bytes(medium.path, data, bool(medium.secrets))
    media = [m for m, _ in seeds] + [host]
    return Result(tuple(media), tuple(warnings))
