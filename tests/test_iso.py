"""Install media (compiler/media/), checked with the real tools: isoinfo and xorriso list the
ISOs, sgdisk verifies the hybrid GPT, fsck.fat and mtools read the edited EFI image.

The boots themselves are in tests/test_iso_boot.py; here: seeds (labels, Rock Ridge and
Joliet names, contents, modes), the remastered DVD (El Torito entries, isohybrid MBR, volume
label, menus), the GPT, reproducibility across wall-clock time and time zones, clear errors
for bad base ISOs and missing secrets, bounded memory on a big base ISO, and the pieces
(ISO 9660 names, menu rewriting, the FAT editor) on their own.
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import re
import struct
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from compiler.diagnostics import MoatError
from compiler.media import bundle as bundle_mod
from compiler.media import fat as iso_fat
from compiler.media import follow, layout, mapped, md5, remaster, tree, write
from compiler.media.boot_menu import unattended_grub, unattended_isolinux
from compiler.media.build import build_media
from compiler.media.gpt import fix_hybrid_gpt

from . import iso_standin
from .conftest import ROOT, run_moat

EXAMPLE = ROOT / "blueprints" / "example.yaml"
LABEL = iso_standin.LABEL
KS_ARG = f"inst.ks=hd:LABEL={LABEL}:/ks.cfg"


def run(*cmd, check=True, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, **kw)
    if check and proc.returncode:
        raise AssertionError(f"{cmd} exited {proc.returncode}: {proc.stdout!r} {proc.stderr!r}")
    return proc


def iso_files(path: Path, joliet: bool = False) -> set[str]:
    """Files (not directories) on an ISO by their Rock Ridge (or Joliet) names, per isoinfo."""
    listing = run("isoinfo", "-J" if joliet else "-R", "-l", "-i", path, text=True).stdout
    files, current = set(), None
    for line in listing.splitlines():
        if line.startswith("Directory listing of "):
            current = line[len("Directory listing of "):].strip()
        elif line[:1] == "-":
            name = line.rsplit("]", 1)[1].strip()
            files.add((current + name).lstrip("/"))
    return files


def iso_read(path: Path, name: str) -> bytes:
    return run("isoinfo", "-R", "-i", path, "-x", "/" + name).stdout


def volume_id(path: Path) -> str:
    out = run("isoinfo", "-d", "-i", path, text=True).stdout
    return re.search(r"^Volume id: (.*)$", out, re.M).group(1).strip()


def sgdisk_verify(path: Path) -> str:
    proc = run("sgdisk", "-v", path, check=False, text=True)
    return proc.stdout + proc.stderr


def system_area(path: Path) -> str:
    proc = run("xorriso", "-indev", path, "-report_el_torito", "plain", "-report_system_area", "plain",
               check=False, text=True)
    return proc.stdout + proc.stderr


GPT_COMPLAINTS = re.compile(r"wrong|problem|overlapping|differ|implausible|cannot", re.I)


@pytest.fixture(scope="module")
def standin() -> Path:
    return iso_standin.build()


@pytest.fixture(scope="module")
def built(tmp_path_factory, standin):
    tmp = tmp_path_factory.mktemp("iso")
    bundle = iso_standin.build_bundle(EXAMPLE, tmp / "out")
    secrets = tmp / "secrets"
    values = iso_standin.write_test_secrets(bundle, secrets)
    result = build_media(bundle, tmp / "media" / "example-host.iso", base_iso=standin, secrets=secrets, environ={})
    return {"tmp": tmp, "out": tmp / "out", "bundle": bundle, "secrets": secrets, "values": values,
            "media": {(m.kind, m.vm): m for m in result.media}, "result": result}


# --- seeds ---------------------------------------------------------------------------------


def test_seeds_of_both_examples_have_the_label_and_names(example, tmp_path):
    bundle = iso_standin.build_bundle(example, tmp_path / "out")
    iso_standin.write_test_secrets(bundle, tmp_path / "secrets")
    result = build_media(bundle, tmp_path / "media" / "host.iso", secrets=tmp_path / "secrets")
    seeds = [m for m in result.media if m.vm]
    vms = {p.name for p in (bundle / "vms").iterdir()}
    expected_kinds = {(vm, "cidata") for vm in vms if (bundle / "vms" / vm / "cloud-init").is_dir()}
    expected_kinds |= {(vm, "oemdrv") for vm in vms if (bundle / "vms" / vm / "kickstart").is_dir()}
    assert {(m.vm, m.kind) for m in seeds} == expected_kinds and expected_kinds
    for seed in seeds:
        assert seed.path.name == f"{seed.vm}-{seed.kind}.iso"
        assert volume_id(seed.path) == ("CIDATA" if seed.kind == "cidata" else "OEMDRV")
        files = iso_files(seed.path)
        assert iso_files(seed.path, joliet=True) == files  # Joliet carries the same names
        secrets = {f"moat/secrets/{name}" for name in seed.secrets}
        if seed.kind == "cidata":
            assert files == {"user-data", "meta-data", "network-config"} | secrets
            for name in ("user-data", "meta-data", "network-config"):
                assert iso_read(seed.path, name) == (bundle / "vms" / seed.vm / "cloud-init" / name).read_bytes()
        else:
            own = {f"moat/bundle/{p.relative_to(bundle).as_posix()}"
                   for p in (bundle / "vms" / seed.vm).rglob("*") if p.is_file()}
            assert files == {"ks.cfg", "moat/bundle/manifest.json"} | own | secrets
            assert iso_read(seed.path, "ks.cfg") == (bundle / "vms" / seed.vm / "kickstart/ks.cfg").read_bytes()
        for name in seed.secrets:
            assert iso_read(seed.path, f"moat/secrets/{name}") == (tmp_path / "secrets" / name).read_bytes()
        # xorriso agrees on the names (Rock Ridge)
        found = run("xorriso", "-indev", seed.path, "-find", "/", "-type", "f", text=True).stdout
        assert {ln.strip().strip("'").lstrip("/") for ln in found.splitlines() if ln.strip()} == files


def test_seed_modes_and_secret_permissions(built):
    cidata = built["media"][("cidata", "nextcloud")]
    listing = run("isoinfo", "-R", "-l", "-i", cidata.path, text=True).stdout
    modes = {line.rsplit("]", 1)[1].strip(): line.split()[0] for line in listing.splitlines() if line[:1] == "-"}
    assert modes["user-data"] == "-r--r--r--"
    assert modes["nextcloud-luks"] == "-r--------"
    assert cidata.secrets == ("nextcloud-luks",)
    assert cidata.path.stat().st_mode & 0o777 == 0o600  # it holds a secret
    vpn = built["media"][("oemdrv", "vpn")]
    assert vpn.path.stat().st_mode & 0o777 == 0o644 and not vpn.secrets


# --- the remastered DVD ------------------------------------------------------------------------


def test_remaster_keeps_label_el_torito_and_isohybrid_mbr(built, standin):
    host = built["media"][("host", None)]
    assert host.label == LABEL == volume_id(host.path)
    before, after = system_area(standin), system_area(host.path)
    paths = re.compile(r"El Torito img path\s*:\s*(\d)\s+(\S+)")
    platforms = re.compile(r"El Torito boot img\s*:\s*(\d)\s+(\w+)")
    assert paths.findall(after) == paths.findall(before) == [("1", "/isolinux/isolinux.bin"), ("2", "/images/efiboot.img")]
    assert platforms.findall(after) == platforms.findall(before) == [("1", "BIOS"), ("2", "UEFI")]
    assert "boot-info-table" in after and "isohybrid-suitable" in after
    base_mbr, new_mbr = standin.read_bytes()[:512], host.path.read_bytes()[:512]
    assert new_mbr[:432] == base_mbr[:432], "the isohybrid boot code is the DVD's"
    assert new_mbr[440:444] == base_mbr[440:444], "the MBR id is the DVD's"
    # the MBR code loads isolinux.bin from the LBA at byte 432 (in 512-byte sectors)
    bios_lba = int(re.search(r"El Torito boot img\s*:\s*1\s+BIOS.*\s(\d+)\s*$", after, re.M).group(1))
    assert int.from_bytes(new_mbr[432:436], "little") == bios_lba * 4
    assert re.search(r"MBR partition path\s*:\s*2\s+/images/efiboot.img", after)
    assert new_mbr[510:512] == b"\x55\xaa"


def test_remaster_adds_the_kickstart_bundle_seeds_and_secrets(built, standin):
    host = built["media"][("host", None)]
    bundle = built["bundle"]
    files = iso_files(host.path)
    assert iso_files(standin) <= files, "nothing of the DVD is lost"
    assert iso_read(host.path, "ks.cfg") == (bundle / "host/kickstart/ks.cfg").read_bytes()
    for path in bundle.rglob("*"):
        if path.is_file():
            rel = path.relative_to(bundle).as_posix()
            assert iso_read(host.path, f"moat/bundle/{rel}") == path.read_bytes(), rel
    seeds = {m.path.name: m for (_k, vm), m in built["media"].items() if vm}
    for name, seed in seeds.items():
        assert iso_read(host.path, f"moat/seeds/{name}") == seed.path.read_bytes()
    assert {f for f in files if f.startswith("moat/secrets/")} == {"moat/secrets/host-luks"}
    assert iso_read(host.path, "moat/secrets/host-luks") == built["values"]["host-luks"]
    assert host.path.stat().st_mode & 0o777 == 0o600


def test_remaster_makes_the_unattended_entry_the_default_everywhere(built):
    host = built["media"][("host", None)]
    assert host.boot_menus == ("/isolinux/isolinux.cfg", "/EFI/BOOT/grub.cfg", "/images/efiboot.img:/EFI/BOOT/grub.cfg")
    isolinux = iso_read(host.path, "isolinux/isolinux.cfg").decode()
    tree_grub = iso_read(host.path, "EFI/BOOT/grub.cfg").decode()
    efi_image = built["tmp"] / "efiboot.img"
    efi_image.write_bytes(iso_read(host.path, "images/efiboot.img"))
    assert run("fsck.fat", "-n", efi_image).returncode == 0
    fat_grub = run("mtype", "-i", efi_image, "::EFI/BOOT/grub.cfg", text=True).stdout
    assert fat_grub == tree_grub
    # isolinux: the first entry is ours, the only menu default, with the install entry's kernel
    labels = re.findall(r"^label (\S+)", isolinux, re.M)
    assert labels[0] == "moat" and labels[1:] == ["linux", "check", "rescue", "local", "returntomain"]
    ours = isolinux.split("label moat", 1)[1].split("label linux", 1)[0]
    assert "menu default" in ours and isolinux.count("menu default") == 1
    assert f"append initrd=initrd.img inst.stage2=hd:LABEL={LABEL} quiet console=ttyS0 {KS_ARG}" in ours
    assert re.search(r"^timeout 50$", isolinux, re.M)
    # GRUB: default 0 is ours, 5 s
    assert re.search(r'^set default="0"$', tree_grub, re.M) and 'set default="1"' not in tree_grub
    assert re.search(r"^set timeout=5$", tree_grub, re.M)
    first = tree_grub[tree_grub.index("menuentry"):]
    first = first[:first.index("}")]
    assert f"linuxefi /images/pxeboot/vmlinuz inst.stage2=hd:LABEL={LABEL} quiet console=ttyS0 {KS_ARG}" in first
    assert "rd.live.check" not in first


def test_hybrid_gpt_is_valid_and_the_check_can_fail(built, standin):
    host = built["media"][("host", None)]
    # xorriso's own isohybrid GPT (Lorax's layout) and pycdlib's fail sgdisk -v ...
    assert "No problems found" not in sgdisk_verify(standin)
    import pycdlib

    raw = built["tmp"] / "pycdlib-only.iso"
    iso = pycdlib.PyCdlib()
    with open(standin, "rb") as fh:
        iso.open_fp(fh)
        iso.write(str(raw))
        iso.close()
    assert "No problems found" not in sgdisk_verify(raw)
    assert GPT_COMPLAINTS.search(system_area(raw).split("GPT", 1)[1])
    # ... the written ISO passes
    report = sgdisk_verify(host.path)
    assert "No problems found" in report, report
    area = system_area(host.path)
    gpt = area[area.index("GPT  "):]
    assert not GPT_COMPLAINTS.search(gpt), gpt
    assert re.search(r"GPT partition path\s*:\s*2\s+/images/efiboot.img", gpt)
    assert "0xee" in area  # the MBR sends GPT-aware firmware to the GPT


def test_media_check_passes_on_the_remastered_dvd_and_can_fail(built, standin):
    """'Test this media' (checkisomd5) passes: the DVD's implanted MD5 is computed again."""
    host = built["media"][("host", None)]
    assert "Fragment sums: " in run("checkisomd5", "--md5sumonly", "--verbose", standin, text=True).stdout
    proc = run("checkisomd5", host.path, check=False, text=True)
    assert proc.returncode == 0 and "the result is: PASS" in proc.stderr, proc.stderr
    supported = run("checkisomd5", "--md5sumonly", "--verbose", host.path, check=False, text=True).stdout
    assert "Supported ISO: yes" in supported  # RHLISOSTATUS kept from the DVD
    # pycdlib alone keeps the DVD's sum, which no longer matches: checkisomd5 rejects that
    import pycdlib

    stale = built["tmp"] / "stale-md5.iso"
    iso = pycdlib.PyCdlib()
    with open(standin, "rb") as fh:
        iso.open_fp(fh)
        ks = b"# a kickstart\n"
        iso.add_fp(io.BytesIO(ks), len(ks), "/KS.CFG;1", rr_name="ks.cfg", joliet_path="/ks.cfg")
        iso.write(str(stale))
        iso.close()
    proc = run("checkisomd5", stale, check=False, text=True)
    assert proc.returncode != 0 and "the result is: FAIL" in proc.stderr, proc.stderr


def test_the_recorded_sha256_is_the_final_files(built, standin):
    """The host medium's sha256 is read after the media-check sum was written into its first
    sectors: sha256sum's of the file as it is, not of the bytes before the sum."""
    host = built["media"][("host", None)]
    assert host.sha256 == hashlib.sha256(host.path.read_bytes()).hexdigest()
    assert md5.embedded(md5.read_appdata(host.path)) != md5.embedded(md5.read_appdata(standin))


def test_the_media_check_is_summed_while_pycdlib_writes(built, standin, tmp_path, monkeypatch):
    """No read pass for the media check after the write (a follower read the image behind
    pycdlib), and the same bytes as the read pass after it gives (the follower made to fail)."""
    passes = []
    real_pass = remaster.read_pass
    monkeypatch.setattr(remaster, "read_pass", lambda *a, **kw: passes.append(a[2:]) or real_pass(*a, **kw))
    followed = build_media(built["bundle"], tmp_path / "followed" / "host.iso", base_iso=standin,
                           secrets=built["secrets"], environ={})
    assert passes == []
    monkeypatch.setattr(remaster, "_followed", lambda *a: False)
    read_after = build_media(built["bundle"], tmp_path / "read-after" / "host.iso", base_iso=standin,
                             secrets=built["secrets"], environ={})
    assert len(passes) == 1
    paths = [next(m.path for m in r.media if m.kind == "host") for r in (followed, read_after)]
    assert paths[0].read_bytes() == paths[1].read_bytes() == built["media"][("host", None)].path.read_bytes()


def test_a_follower_gives_up_when_a_write_lands_behind_it(tmp_path):
    image = tmp_path / "image"
    image.write_bytes(bytes(follow.SYSTEM_AREA))
    end = follow.SYSTEM_AREA + 3 * follow.READ_CHUNK
    h = hashlib.md5()
    follower = follow.WriteFollower(image, lambda head: (head, end, h.update))
    with open(image, "r+b", buffering=0) as raw:
        out = follow.Watched(raw, follower)
        follower.file_starts(follow.SYSTEM_AREA, False)
        out.seek(follow.SYSTEM_AREA)
        data = os.urandom(3 * follow.READ_CHUNK)
        follower.write(follow.SYSTEM_AREA, len(data), lambda: os.pwrite(raw.fileno(), data, follow.SYSTEM_AREA),
                       copied=True)
        deadline = time.monotonic() + 30
        while follower.position < follow.SYSTEM_AREA + follow.READ_CHUNK and time.monotonic() < deadline:
            time.sleep(0.01)
        assert follower.broken is None
        out.seek(follow.SYSTEM_AREA + 1)
        out.write(b"late")
        follower.finish()
    assert follower.broken and "a write at byte 32769" in follower.broken  # so the caller reads the file again


def test_a_follower_hashes_while_a_write_runs_but_never_claims_its_bytes(tmp_path):
    """The writer's copy runs without the follower's lock (the follower hashes what is final
    meanwhile), and the follower claims nothing from where that copy starts until it returns."""
    image = tmp_path / "image"
    image.write_bytes(bytes(follow.SYSTEM_AREA))
    first, second = os.urandom(2 * follow.READ_CHUNK), os.urandom(2 * follow.READ_CHUNK)
    middle = follow.SYSTEM_AREA + len(first)
    h = hashlib.md5()
    follower = follow.WriteFollower(image, lambda head: (head, middle + len(second), h.update))
    seen = []

    def second_copy() -> int:
        deadline = time.monotonic() + 30
        while follower.position < middle and time.monotonic() < deadline:
            time.sleep(0.01)
        seen.append((follower.position, follower._claimed))
        time.sleep(0.05)  # a follower that claimed past `middle` would be reading by now
        seen.append((follower.position, follower._claimed))
        return os.pwrite(fd, second, middle)

    with open(image, "r+b", buffering=0) as raw:
        fd = raw.fileno()
        follower.file_starts(follow.SYSTEM_AREA, False)
        follower.write(follow.SYSTEM_AREA, len(first), lambda: os.pwrite(fd, first, follow.SYSTEM_AREA), copied=True)
        follower.write(middle, len(second), second_copy, copied=True)
        follower.finish()
    assert seen == [(middle, middle), (middle, middle)]  # it had hashed up to the copy, not into it
    assert follower.broken is None
    assert h.hexdigest() == hashlib.md5(bytes(follow.SYSTEM_AREA) + first + second).hexdigest()


def test_mapped_hashing_gives_the_files_bytes_and_zeros_past_its_end(tmp_path):
    """The follower and the final sha256 hash the page cache in place (mapped.py): the bytes a
    read gives, from any offset, across windows, and zeros where the file does not reach yet."""
    data = random.Random(7).randbytes(2 * mapped.WINDOW + 12345)
    image = tmp_path / "image"
    image.write_bytes(data)
    with open(image, "rb") as fh:
        for start, stop in ((0, len(data)), (4095, mapped.WINDOW + 1), (mapped.WINDOW - 3, len(data) + 70000),
                            (len(data) + 5, len(data) + 9), (7, 7)):
            pieces: list[bytes] = []
            mapped.feed(fh.fileno(), start, stop, lambda view: pieces.append(bytes(view)))
            assert all(len(p) <= mapped.WINDOW for p in pieces)
            assert b"".join(pieces) == data[start:stop] + bytes(max(stop - max(start, len(data)), 0))
    assert write.cached_sha256(image) == write.sha256(image) == hashlib.sha256(data).hexdigest()


def test_gpt_fix_grows_the_image_when_the_padding_is_short(tmp_path):
    """A backup GPT never lands on ISO data, even when the ISO ends on a cylinder boundary."""
    image = tmp_path / "tight.img"
    iso_bytes = 4 << 20  # the ISO data fill the image exactly
    with open(image, "wb") as fh:
        fh.write(b"\x33\xed" + b"\x90" * 30 + b"\0" * 478 + b"\x55\xaa")
        fh.seek(iso_bytes - 1)
        fh.write(b"\xff")
    fix_hybrid_gpt(image, iso_bytes, 128, 64, b"seed")
    assert image.stat().st_size == 5 << 20
    with open(image, "rb") as fh:
        fh.seek(iso_bytes - 1)
        assert fh.read(1) == b"\xff"
    assert "No problems found" in sgdisk_verify(image)


# --- reproducibility -------------------------------------------------------------------------


def test_same_inputs_same_bytes_at_any_time_and_time_zone(built, standin, tmp_path):
    out = built["out"]
    runs = []
    for n, tz in enumerate(("UTC", "Pacific/Chatham")):  # +12:45: every field of a local date differs
        if n:
            time.sleep(1.1)  # the dates have whole seconds: the second run is at another time
        target = tmp_path / f"run{n}" / "host.iso"
        env = {"TZ": tz, "SOURCE_DATE_EPOCH": ""}
        proc = run_moat("iso", "--out", out, "--base-iso", standin, "--output", target, "--secrets", built["secrets"],
                        env=env)
        assert proc.returncode == 0, proc.stderr
        runs.append({p.name: p.read_bytes() for p in target.parent.iterdir()})
    assert runs[0].keys() == {"host.iso", "nextcloud-cidata.iso", "vpn-oemdrv.iso"}
    assert runs[0] == runs[1]
    # and the same bytes as the in-process build of the fixture
    assert runs[0]["host.iso"] == built["media"][("host", None)].path.read_bytes()
    # SOURCE_DATE_EPOCH sets the date (and so the bytes)
    target = tmp_path / "sde" / "host.iso"
    proc = run_moat("iso", "--out", out, "--base-iso", standin, "--output", target, "--secrets", built["secrets"],
                    env={"SOURCE_DATE_EPOCH": "1700000000", "TZ": "America/New_York"})
    assert proc.returncode == 0, proc.stderr
    assert target.read_bytes() != runs[0]["host.iso"]
    info = run("xorriso", "-indev", target, "-pvd_info", text=True).stdout
    assert "Modif. Time  : 2023111422132000" in info, info  # created when the base was, changed then
    listing = run("isoinfo", "-R", "-l", "-i", target, text=True).stdout
    assert "Nov 14 2023" in listing  # the records moat wrote, in UTC whatever TZ says
    assert "No problems found" in sgdisk_verify(target)
    # but not the seeds': their bytes are their identity (a deploy, which makes them again, often
    # without SOURCE_DATE_EPOCH, reinstalls a VM whose seed differs), so they depend on what they hold
    for seed in ("nextcloud-cidata.iso", "vpn-oemdrv.iso"):
        assert (target.parent / seed).read_bytes() == runs[0][seed], seed


def test_source_date_epoch_must_be_a_number(built, tmp_path):
    proc = run_moat("iso", "--out", built["out"], "--output", tmp_path / "h.iso", "--secrets", built["secrets"],
                    env={"SOURCE_DATE_EPOCH": "yesterday"})
    assert proc.returncode == 1
    assert "error[iso-source-date]" in proc.stderr and "whole number of seconds" in proc.stderr


# --- errors ------------------------------------------------------------------------------------


def _no_boot_iso(tmp: Path) -> Path:
    tree = tmp / "plain"
    tree.mkdir()
    (tree / "README").write_text("no boot catalog\n")
    run("xorrisofs", "-quiet", "-R", "-J", "-V", "PLAIN", "-o", tmp / "plain.iso", tree)
    return tmp / "plain.iso"


def _unknown_layout_iso(tmp: Path) -> Path:
    """El Torito with a BIOS image that is neither isolinux nor GRUB with a known config."""
    tree = tmp / "odd"
    (tree / "boot").mkdir(parents=True)
    (tree / "boot" / "loader.img").write_bytes(b"\xeb\xfe" + b"\0" * 2046)
    run("xorrisofs", "-quiet", "-R", "-J", "-V", "ODD", "-b", "boot/loader.img", "-no-emul-boot",
        "-o", tmp / "odd.iso", tree)
    return tmp / "odd.iso"


def _efi_without_grub_iso(tmp: Path) -> Path:
    """isolinux for BIOS fine, but an EFI image without any GRUB configuration."""
    tree = tmp / "noefi"
    (tree / "isolinux").mkdir(parents=True)
    (tree / "images").mkdir()
    shutil.copy("/usr/lib/ISOLINUX/isolinux.bin", tree / "isolinux")
    (tree / "isolinux" / "isolinux.cfg").write_text(iso_standin.ISOLINUX_CFG.format(label="NOEFI"))
    img = tree / "images" / "efiboot.img"
    run("mkfs.vfat", "-C", img, "1024")
    run("xorrisofs", "-quiet", "-R", "-J", "-V", "NOEFI", "-b", "isolinux/isolinux.bin", "-c", "isolinux/boot.cat",
        "-no-emul-boot", "-boot-load-size", "4", "-boot-info-table", "-eltorito-alt-boot", "-e", "images/efiboot.img",
        "-no-emul-boot", "-o", tmp / "noefi.iso", tree)
    return tmp / "noefi.iso"


def make_bad_base(case: str, tmp: Path, standin: Path) -> Path:
    if case == "missing":
        return tmp / "nope.iso"
    if case == "directory":
        return tmp
    if case == "text":
        (tmp / "notes.txt").write_text("hello\n" * 10000)
        return tmp / "notes.txt"
    if case == "truncated":
        (tmp / "half.iso").write_bytes(standin.read_bytes()[:standin.stat().st_size // 2])
        return tmp / "half.iso"
    if case == "no-el-torito":
        return _no_boot_iso(tmp)
    if case == "unknown-layout":
        return _unknown_layout_iso(tmp)
    return _efi_without_grub_iso(tmp)


BAD_BASES = {  # case: (rule, what the message says)
    "missing": ("iso-not-found", "does not exist"),
    "directory": ("iso-not-found", "is not a file"),
    "text": ("iso-invalid", "is not an ISO 9660 image: expected a primary volume descriptor"),
    "truncated": ("iso-invalid", "is truncated: its volume descriptor says"),
    "no-el-torito": ("iso-no-el-torito", "expected a Rocky Linux or AlmaLinux 9 installer DVD"),
    "unknown-layout": ("iso-unknown-boot-layout", "neither isolinux nor GRUB"),
    "efi-without-grub": ("iso-unknown-boot-layout", "has no GRUB configuration"),
}


@pytest.mark.parametrize("case", sorted(BAD_BASES))
def test_bad_base_iso_is_a_clear_error_and_writes_nothing(case, built, standin, tmp_path):
    rule, text = BAD_BASES[case]
    base = make_bad_base(case, tmp_path, standin)
    media = tmp_path / "media"
    proc = run_moat("iso", "--out", built["out"], "--base-iso", base, "--output", media / "host.iso",
                    "--secrets", built["secrets"])
    assert proc.returncode == 1, proc.stderr
    assert f"error[{rule}]" in proc.stderr and text in proc.stderr, proc.stderr
    assert "hint:" in proc.stderr and "Traceback" not in proc.stderr
    assert not media.exists() or not any(media.iterdir())


def test_a_remastered_iso_is_not_a_base(built, tmp_path):
    host = built["media"][("host", None)]
    with pytest.raises(MoatError) as err:
        build_media(built["bundle"], tmp_path / "again.iso", base_iso=host.path, secrets=built["secrets"])
    assert err.value.diagnostics[0].rule == "iso-already-remastered"


def test_missing_secret_is_a_clear_error(built, tmp_path):
    secrets = tmp_path / "secrets"
    secrets.mkdir(mode=0o700)
    (secrets / "host-luks").write_text("only the host's\n")
    (secrets / "host-luks").chmod(0o600)
    proc = run_moat("iso", "--out", built["out"], "--output", tmp_path / "m" / "host.iso", "--secrets", secrets)
    assert proc.returncode == 1
    assert "error[iso-secret-missing]" in proc.stderr and "moat/secrets/nextcloud-luks" in proc.stderr
    assert "moat secrets init" in proc.stderr  # the hint names the command that makes it
    assert not (tmp_path / "m").exists() or not any((tmp_path / "m").iterdir())
    # (without --secrets, moat iso takes the checkout's secrets/ when there is one: name an empty directory)
    (tmp_path / "empty").mkdir(mode=0o700)
    proc = run_moat("iso", "--out", built["out"], "--output", tmp_path / "m" / "host.iso", "--secrets", tmp_path / "empty")
    assert proc.returncode == 1 and "--secrets DIR" in proc.stderr


def test_no_bundle_is_a_clear_error(tmp_path):
    proc = run_moat("iso", "--out", tmp_path)
    assert proc.returncode == 1
    assert "error[iso-no-bundle]" in proc.stderr and "moat build" in proc.stderr


def test_cli_writes_the_oemdrv_medium_by_default(built, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(built["out"], out, symlinks=True)
    proc = run_moat("iso", "--out", out, "--secrets", built["secrets"])
    assert proc.returncode == 0, proc.stderr
    host = out / "iso" / "example" / "example-host.iso"
    assert volume_id(host) == "OEMDRV"
    assert {"ks.cfg", "moat/bundle/manifest.json", "moat/secrets/host-luks",
            "moat/seeds/vpn-oemdrv.iso"} <= iso_files(host)
    assert "host-oemdrv: " in proc.stdout and "label OEMDRV" in proc.stdout


def test_the_media_of_two_blueprints_built_into_one_out_never_overwrite_each_other(tmp_path):
    """Both examples have a VM nextcloud: each blueprint's media live under OUT/iso/<its name>/,
    and after both `moat iso` runs every medium each one wrote is still the bytes it reported."""
    import hashlib

    out = tmp_path / "out"
    written: dict[str, dict[Path, str]] = {}
    for blueprint in sorted((ROOT / "blueprints").glob("*.yaml")):
        secrets = tmp_path / f"secrets-{blueprint.stem}"
        assert run_moat("build", blueprint, "--out", out, "--no-tools").returncode == 0
        assert run_moat("secrets", "init", blueprint, "--dir", secrets).returncode == 0
        proc = run_moat("iso", "--out", out, "--secrets", secrets)
        assert proc.returncode == 0, proc.stderr
        media = re.findall(r"^\S[^:]*: (\S+) \(label \S+, \d+ bytes, sha256 ([0-9a-f]{64})", proc.stdout, re.M)
        written[blueprint.stem] = {Path(path): sha for path, sha in media}
    assert len(written) == 2 and all(len(media) >= 2 for media in written.values()), written
    (first, one), (second, other) = written.items()
    assert not set(one) & set(other), "the same medium path written for both blueprints"
    names = {"example": "example", "vps-front": "home"}  # the blueprints' name:
    for stem, media in written.items():
        for path, sha in media.items():
            assert path.parent == out / "iso" / names[stem], path
            assert hashlib.sha256(path.read_bytes()).hexdigest() == sha, f"{path} of {stem} was overwritten"


def test_secret_names_may_have_directories_but_never_escape():
    text = (b'a "$medium/moat/secrets/openvpn/clients/home1.key" b moat/secrets/host-luks\n'
            b"moat/secrets/../etc/shadow moat/secrets//etc/shadow moat/secrets/.hidden moat/secrets/a/../b")
    assert layout.secrets_read_by(text) == ["a", "host-luks", "openvpn/clients/home1.key"]


def test_vps_host_medium_carries_exactly_its_openvpn_client_keys(tmp_path):
    """`moat secrets init` then `moat iso --secrets`: the host's medium gets the four files of its
    OpenVPN client (and its LUKS passphrase, and alice's TOTP secret: host.sshd.totp), never the
    CA key, the server's or another client's key."""
    out, secrets = tmp_path / "out", tmp_path / "secrets"
    vps = ROOT / "blueprints" / "vps-front.yaml"
    assert run_moat("build", vps, "--out", out, "--no-tools").returncode == 0
    r = run_moat("secrets", "init", vps, "--dir", secrets)
    assert r.returncode == 0, r.stderr
    target = tmp_path / "media" / "home-host.iso"
    proc = run_moat("iso", "--out", out, "--secrets", secrets, "--output", target)
    assert proc.returncode == 0, proc.stderr
    carried = {"host-luks", "openvpn/ca.crt", "openvpn/clients/home1.crt", "openvpn/clients/home1.key",
               "openvpn/tls-crypt.key", "totp/host/alice"}
    # the host medium's secrets: its own, plus nextcloud's inside that VM's seed
    assert "secrets: " + " ".join(sorted(carried | {"nextcloud-luks"})) + ")" in proc.stdout, proc.stdout
    files = iso_files(target)
    assert {f for f in files if f.startswith("moat/secrets/")} == {f"moat/secrets/{n}" for n in carried}
    assert iso_files(target, joliet=True) == files
    for name in carried:
        assert iso_read(target, f"moat/secrets/{name}") == (secrets / name).read_bytes(), name
    listing = run("isoinfo", "-R", "-l", "-i", target, text=True).stdout
    modes = {line.rsplit("]", 1)[1].strip(): line.split()[0] for line in listing.splitlines() if line[:1] == "-"}
    assert all(modes[n.rsplit("/", 1)[-1]] == "-r--------" for n in carried)
    assert target.stat().st_mode & 0o777 == 0o600
    # no other key of the PKI anywhere in the ISO's bytes (the seeds inside it included)
    image = target.read_bytes()
    for other in ("openvpn/ca.key", "openvpn/server.key", "openvpn/clients/home2.key", "openvpn/clients/home2.crt",
                  "openvpn/crl.pem"):
        assert (secrets / other).read_bytes() not in image, other
    assert (secrets / "openvpn/clients/home1.key").read_bytes() in image  # the scan can find a key
    # without the PKI the medium is refused, naming the file and how to make it
    (secrets / "openvpn/clients/home1.key").unlink()
    proc = run_moat("iso", "--out", out, "--secrets", secrets, "--output", tmp_path / "m2" / "host.iso")
    assert proc.returncode == 1 and "moat/secrets/openvpn/clients/home1.key" in proc.stderr
    assert "moat secrets init" in proc.stderr


def test_the_host_medium_carries_the_host_users_totp_secrets_not_the_vps_users(tmp_path):
    """vps-front with vps.sshd.totp too: `moat secrets init` makes totp/host/alice and
    totp/vps/alice; the host's medium carries exactly the host's (0400), never the VPS's."""
    vps = ROOT / "blueprints" / "vps-front.yaml"
    text = vps.read_text()
    both = tmp_path / "totp-both.yaml"
    both.write_text(text.replace("  sshd:\n    port: 53202\n", "  sshd:\n    port: 53202\n    totp: true\n"))
    assert both.read_text() != text
    out, secrets = tmp_path / "out", tmp_path / "secrets"
    assert run_moat("build", both, "--out", out, "--no-tools").returncode == 0
    assert run_moat("secrets", "init", both, "--dir", secrets).returncode == 0
    assert (secrets / "totp/vps/alice").is_file()
    target = tmp_path / "media" / "home-host.iso"
    proc = run_moat("iso", "--out", out, "--secrets", secrets, "--output", target)
    assert proc.returncode == 0, proc.stderr
    files = iso_files(target)
    assert {f for f in files if f.startswith("moat/secrets/totp")} == {"moat/secrets/totp/host/alice"}
    assert iso_read(target, "moat/secrets/totp/host/alice") == (secrets / "totp/host/alice").read_bytes()
    listing = run("isoinfo", "-R", "-l", "-i", target, text=True).stdout
    assert re.search(r"^-r-------- .* alice\s*$", listing, re.M), listing
    image = target.read_bytes()
    assert (secrets / "totp/host/alice").read_bytes().split(b"\n")[0] in image  # the scan can find a secret
    assert (secrets / "totp/vps/alice").read_bytes().split(b"\n")[0] not in image
    # without alice's secret the medium is refused, naming the file
    (secrets / "totp/host/alice").unlink()
    proc = run_moat("iso", "--out", out, "--secrets", secrets, "--output", tmp_path / "m2" / "host.iso")
    assert proc.returncode == 1 and "moat/secrets/totp/host/alice" in proc.stderr and "moat secrets init" in proc.stderr


# --- streaming ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_peak_memory_does_not_grow_with_the_base_iso(built, tmp_path):
    """A 512 MiB base ISO is remastered in the memory a 25 MiB one takes (pycdlib streams)."""
    big = iso_standin.build(pad=512 << 20, cache=tmp_path)  # not kept: quick to make, big to keep
    peaks = {}
    for name, base in (("small", iso_standin.build()), ("big", big)):
        target = tmp_path / name / "host.iso"
        cmd = [sys.executable, "-m", "compiler.cli", "iso", "--out", str(built["out"]), "--base-iso", str(base),
               "--output", str(target), "--secrets", str(built["secrets"])]
        _seconds, peaks[name], stderr = iso_standin.measure(cmd)
        assert target.stat().st_size > base.stat().st_size - (1 << 20)
        if name == "big":
            assert "writing host.iso: 100%" in stderr  # progress on the console for long writes
    print(f"peak RSS of moat iso: {peaks['small'] >> 20} MiB (25 MiB base), {peaks['big'] >> 20} MiB (537 MiB base)")
    assert peaks["big"] < peaks["small"] + (8 << 20), peaks
    assert peaks["big"] < 96 << 20, peaks
    assert "No problems found" in sgdisk_verify(tmp_path / "big" / "host.iso")


# --- the pieces -----------------------------------------------------------------------------


def test_iso9660_names_are_valid_and_unique():
    names = tree.Names(3)
    assert names.file("", "br1.nmconnection") == "BR1.NMCONNEC;1"
    assert names.file("", "br1.nmconnection") == "BR1_1.NMCONNEC;1"
    assert names.file("", "moat-mirror") == "MOAT_MIRROR.;1"
    assert names.directory("", "NetworkManager") == "NETWORKMANAGER"
    assert names.directory("", "networkmanager") == "NETWORKMANAGER_1"
    long = names.file("/D", "x" * 40 + ".conf")
    assert len(long.split(";")[0].replace(".", "")) <= 30
    level1 = tree.Names(1)
    assert level1.file("", "nextcloud-cidata.iso") == "NEXTCLOU.ISO;1"
    assert level1.file("", "nextcloud-oemdrv.iso") == "NEXTCL_1.ISO;1"
    assert level1.directory("", "system-connections") == "SYSTEM_C"


ROCKY_ISOLINUX = iso_standin.ISOLINUX_CFG.format(label=LABEL)
ROCKY_GRUB = iso_standin.GRUB_CFG.format(label=LABEL)


def test_isolinux_menu_rewrite_variants():
    out = unattended_isolinux(ROCKY_ISOLINUX, KS_ARG, "Install")
    assert out.count("menu default") == 1 and out.index("label moat") < out.index("label linux")
    # a plain (menu-less) configuration: `default` names the label
    plain = "default linux\ntimeout 600\nlabel linux\n  kernel vmlinuz\n  append initrd=initrd.img inst.stage2=hd:LABEL=X\n"
    out = unattended_isolinux(plain, "inst.ks=hd:LABEL=X:/ks.cfg", "Install")
    assert out.splitlines()[:2] == ["default moat", "timeout 50"]
    assert "append initrd=initrd.img inst.stage2=hd:LABEL=X inst.ks=hd:LABEL=X:/ks.cfg" in out
    # only a media-check entry: used, without the check
    check = "label check\n  kernel vmlinuz\n  append inst.stage2=hd:LABEL=X rd.live.check quiet\n"
    out = unattended_isolinux(check, "inst.ks=hd:LABEL=X:/ks.cfg", "Install")
    assert "append inst.stage2=hd:LABEL=X quiet inst.ks=hd:LABEL=X:/ks.cfg" in out
    assert out.startswith("default moat\ntimeout 50\n")
    with pytest.raises(ValueError):
        unattended_isolinux("label local\n  localboot 0xffff\n", KS_ARG, "Install")


def test_grub_menu_rewrite_variants():
    label = "Rocky 9 x86_64"  # a label with blanks: \x20 for dracut, quoted for GRUB
    arg = f"inst.ks=hd:LABEL={remaster.kernel_arg_label(label)}:/ks.cfg"
    assert arg == "inst.ks=hd:LABEL=Rocky\\x209\\x20x86_64:/ks.cfg"
    out = unattended_grub(ROCKY_GRUB, arg, "Install")
    assert "linuxefi /images/pxeboot/vmlinuz inst.stage2=hd:LABEL=STANDIN-9-x86_64-dvd quiet console=ttyS0 " \
           "'inst.ks=hd:LABEL=Rocky\\x209\\x20x86_64:/ks.cfg'" in out
    # the entries inside the submenu are left alone; no default/timeout lines: added
    bare = ("submenu 'More' {\n  menuentry 'inner' {\n    linux /vmlinuz inst.stage2=hd:LABEL=X\n  }\n}\n"
            "menuentry 'Install' {\n\tlinux /vmlinuz inst.stage2=hd:LABEL=X\n\tinitrd /initrd.img\n}\n")
    out = unattended_grub(bare, "inst.ks=hd:LABEL=X:/ks.cfg", "Unattended")
    lines = out.splitlines()
    assert lines[5:9] == ['set default="0"', "set timeout=5",
                          "# moat: unattended install with the kickstart on this medium (the default)",
                          "menuentry 'Unattended' {"]
    assert "\tlinux /vmlinuz inst.stage2=hd:LABEL=X inst.ks=hd:LABEL=X:/ks.cfg" in lines
    with pytest.raises(ValueError):
        unattended_grub("submenu 'x' {\n menuentry 'y' {\n  linux /v inst.stage2=hd:LABEL=X\n }\n}\n", KS_ARG, "I")


def _iso_of_random_bytes(path: Path, sectors: int, seed: int) -> None:
    """Random sectors with a primary volume descriptor (all implantisomd5 reads) in sector 16."""
    data = bytearray(random.Random(seed).randbytes(sectors * md5.SECTOR))
    pvd = bytearray(md5.SECTOR)
    pvd[0:7] = b"\x01CD001\x01"
    pvd[80:88] = struct.pack("<L", sectors) + struct.pack(">L", sectors)
    data[md5.PVD_OFFSET:md5.PVD_OFFSET + md5.SECTOR] = pvd
    path.write_bytes(data)


@pytest.mark.parametrize("sectors", [40, 60, 600, 5000])  # a twenty-first shorter, and longer, than a 32 KiB read
@pytest.mark.parametrize("piece", [1 << 20, 32 * 1024, 4097, 511])
def test_media_check_fed_in_any_pieces_is_implantisomd5s(tmp_path, sectors, piece):
    """implantisomd5 is the oracle: the same sum and fragment sums, whatever pieces one read
    pass gives MediaCheck (the field itself is read as blanks, whatever it held)."""
    ours, theirs = tmp_path / "ours.iso", tmp_path / "theirs.iso"
    _iso_of_random_bytes(ours, sectors, seed=sectors)
    shutil.copy(ours, theirs)
    run("implantisomd5", "--force", "--supported-iso", theirs)
    check = md5.media_check(ours)
    data = ours.read_bytes()
    for offset in range(0, len(data), piece):
        check.update(data[offset:offset + piece])
    md5.write_field(ours, check, 1)
    assert ours.read_bytes() == theirs.read_bytes()


@pytest.mark.parametrize("fat,size_kib", [(12, 2048), (16, 70000), (32, 70000)])
def test_fat_editor_against_mtools_and_fsck(tmp_path, fat, size_kib):
    img = tmp_path / "efiboot.img"
    run("mkfs.vfat", "-F", fat, "-C", img, str(size_kib))
    run("mmd", "-i", img, "::EFI", "::EFI/BOOT")
    before = tmp_path / "before.bin"
    before.write_bytes(os.urandom(5000))
    (tmp_path / "grub.cfg").write_text("set default=1\n")
    run("mcopy", "-i", img, before, "::EFI/BOOT/BOOTX64.EFI")
    run("mcopy", "-i", img, tmp_path / "grub.cfg", "::EFI/BOOT/grub.cfg")
    run("mcopy", "-i", img, before, "::EFI/BOOT/after.bin")
    data = bytearray(img.read_bytes())
    new = ("menuentry 'x' {\n" + "# padding\n" * 3000 + "}\n").encode()  # several clusters, fragmented
    iso_fat.replace_file(data, "efi/boot/GRUB.CFG", new, 1700000000)
    img.write_bytes(data)
    assert iso_fat.read_file(data, "EFI/BOOT/grub.cfg") == new
    assert run("fsck.fat", "-n", img).returncode == 0
    assert run("mtype", "-i", img, "::EFI/BOOT/grub.cfg").stdout == new
    assert run("mtype", "-i", img, "::EFI/BOOT/after.bin").stdout == before.read_bytes()
    assert "2023-11-14" in run("mdir", "-i", img, "::EFI/BOOT", text=True).stdout
    # fsck.fat does fail on a broken table: a cluster of grub.cfg marked free
    broken = bytearray(data)
    fat_table = iso_fat._Fat(broken)
    first = fat_table.first_cluster(fat_table.find("EFI/BOOT/grub.cfg"))
    fat_table.set(fat_table.chain(first)[1], 0)
    img.write_bytes(broken)
    assert run("fsck.fat", "-n", img, check=False).returncode != 0


def test_fat_editor_refuses_what_it_cannot_do(tmp_path):
    with pytest.raises(iso_fat.FatError):
        iso_fat.replace_file(bytearray(b"\0" * 4096), "EFI/BOOT/grub.cfg", b"x", 0)
    img = tmp_path / "small.img"
    run("mkfs.vfat", "-C", img, "200")
    run("mmd", "-i", img, "::EFI")
    (tmp_path / "grub.cfg").write_text("x\n")
    run("mcopy", "-i", img, tmp_path / "grub.cfg", "::EFI/grub.cfg")
    data = bytearray(img.read_bytes())
    with pytest.raises(iso_fat.FatError, match="no EFI/BOOT"):
        iso_fat.replace_file(data, "EFI/BOOT/grub.cfg", b"x", 0)
    original = bytes(data)
    with pytest.raises(iso_fat.FatError, match="no room"):
        iso_fat.replace_file(data, "EFI/grub.cfg", b"x" * (400 << 10), 0)
    assert bytes(data) == original
    assert iso_fat.read_file(data, "EFI/grub.cfg") == b"x\n"


def test_frozen_clock_is_restored():
    from compiler.media import reproducible as iso_reproducible
    from pycdlib import dates

    tz = os.environ.get("TZ")
    with iso_reproducible.frozen(1700000000, b"s"):
        assert dates.time.time() == 1700000000.0
        assert dates.time.localtime(0).tm_hour == 0
        assert time.time() > 1700000000 + 86400  # the rest of the process keeps the real clock
    assert dates.time is time
    assert os.environ.get("TZ") == tz
    assert iso_reproducible.clamp(-5) == iso_reproducible.EARLIEST
    assert iso_reproducible.source_date(b"s", {"SOURCE_DATE_EPOCH": "99999999999"}) == iso_reproducible.LATEST
    derived = iso_reproducible.source_date(b"s", {})
    assert derived == iso_reproducible.source_date(b"s", {}) != iso_reproducible.source_date(b"t", {})
    assert 1262304000 <= derived < 1262304000 + 10 * 365 * 86400


def test_base_iso_can_come_from_the_blueprint(tmp_path):
    """host.install.base_iso (a schema field still to be added) names the base ISO; absent: none."""
    (tmp_path / "blueprint.yaml").write_text("version: 1\nname: x\nhost:\n  install:\n    base_iso: isos/Rocky-9.iso\n")
    bundle = bundle_mod.Bundle(tmp_path, {"files": {}}, b"{}")
    assert bundle_mod.blueprint_base_iso(bundle) == "isos/Rocky-9.iso"
    (tmp_path / "blueprint.yaml").write_text(EXAMPLE.read_text())
    assert bundle_mod.blueprint_base_iso(bundle) is None


# --- the seeds reach the VMs (compiler/seeds.py) -------------------------------------------------


def test_host_iso_carries_sha256sums_of_exactly_its_seeds(built):
    """moat/seeds/SHA256SUMS on the host ISO: one line per seed, in `sha256sum -c` format; the
    host kickstart's %post checks the seeds against it (tests/test_kickstart.py runs that)."""
    host = built["media"][("host", None)]
    seeds = sorted((m for (_k, vm), m in built["media"].items() if vm), key=lambda m: m.path.name)
    sums = iso_read(host.path, "moat/seeds/SHA256SUMS").decode()
    assert sums == "".join(f"{m.sha256}  {m.path.name}\n" for m in seeds)
    # sha256sum itself accepts it for the seeds written beside the host ISO
    (built["tmp"] / "SUMS.check").write_text(sums)
    proc = run("sha256sum", "--check", "--strict", built["tmp"] / "SUMS.check", cwd=host.path.parent, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert {f for f in iso_files(host.path) if f.startswith("moat/seeds/")} == \
        {"moat/seeds/SHA256SUMS"} | {f"moat/seeds/{m.path.name}" for m in seeds}


def test_every_domain_attaches_exactly_the_seed_moat_iso_writes_for_it(built):
    """The names agree (one function, seeds.seed_name): the seed volume of each domain in the
    bundle is the file `moat iso` wrote for that VM, with the label its kind needs."""
    import xml.etree.ElementTree as ET

    from compiler import seeds as seeds_mod

    bundle = built["bundle"]
    written = {m.vm: m for (_k, vm), m in built["media"].items() if vm}
    attached = {}
    for domain in sorted((bundle / "host/libvirt/domains").glob("*.xml")):
        xml = ET.parse(domain)
        cdroms = [d for d in xml.iter("disk") if d.get("device") == "cdrom"]
        seeds = [d for d in cdroms if d.find("boot") is None]  # the seed is never booted
        assert len(seeds) <= 1
        for d in seeds:
            source = d.find("source")
            assert source.get("pool") == seeds_mod.SEED_POOL and d.find("readonly") is not None
            assert d.find("target").get("bus") == "sata"
            attached[domain.stem] = source.get("volume")
    assert attached == {vm: m.path.name for vm, m in written.items()} == {
        "nextcloud": "nextcloud-cidata.iso", "vpn": "vpn-oemdrv.iso"}
    assert volume_id(written["nextcloud"].path) == "CIDATA" and volume_id(written["vpn"].path) == "OEMDRV"
