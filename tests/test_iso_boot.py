"""Install media booted for real under QEMU (TCG), BIOS (SeaBIOS) and UEFI (OVMF).

The stand-in installer DVD (tests/iso_standin.py: Rocky's boot layout, made the way Lorax
makes it) is remastered by `moat iso --base-iso` for the example blueprint, then booted four
ways: BIOS and UEFI, each as a CD and as a disk (the isohybrid image written to a USB stick).
The stand-in's /init plays Anaconda: it prints the kernel command line the default menu entry
booted with, reads the kickstart named by `inst.ks=hd:LABEL=...:/ks.cfg` from the volume with
that label, and hashes moat/bundle/manifest.json on it. So each boot proves: the unattended
entry is the default of that firmware's menu (isolinux.cfg for BIOS; for UEFI the ISO tree's
grub.cfg when booted as a CD, the one inside efiboot.img as a disk), inst.ks names the ISO's
own label, and the medium carries this bundle's ks.cfg and manifest. The BIOS CD boot also has
the VM seeds attached and reads them by label (OEMDRV, CIDATA) as Anaconda and cloud-init
would; one more boot of the stock stand-in with the OEMDRV host medium (no base ISO) proves
the kickstart is found by label when the installer is not remastered.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

from compiler.media.build import build_media

from . import iso_standin
from .conftest import ROOT

pytestmark = pytest.mark.slow

OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
BOOT_TIMEOUT = 600  # seconds; a boot takes 6-11 s on an idle machine, several times that on a busy one
EXAMPLE = ROOT / "blueprints" / "example.yaml"


def boot(tmp: Path, firmware: str, medium: Path, as_disk: bool = False,
         cds: tuple[Path, ...] = ()) -> tuple[list[str], str]:
    """Boot `medium` (as a CD, or as a disk), extra `cds` attached: the stand-in's MARK lines, the console."""
    cmd = ["timeout", str(BOOT_TIMEOUT), "qemu-system-x86_64", "-accel", "tcg", "-m", "512", "-nographic",
           "-serial", "mon:stdio", "-no-reboot", "-nic", "none"]
    if firmware == "uefi":
        vars_copy = tmp / f"vars-{medium.stem}-{as_disk}.fd"
        shutil.copyfile(OVMF_VARS, vars_copy)
        cmd += ["-drive", f"if=pflash,format=raw,readonly=on,file={OVMF_CODE}",
                "-drive", f"if=pflash,format=raw,file={vars_copy}"]
    drives = [(medium, "disk" if as_disk else "cdrom")] + [(cd, "cdrom") for cd in cds]
    for index, (path, media) in enumerate(drives):
        opts = f"file={path},format=raw,if=ide,index={index},media={media}"
        cmd += ["-drive", opts + (",snapshot=on" if media == "disk" else ",readonly=on")]
    cmd += ["-boot", "c" if as_disk else "d"]
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=BOOT_TIMEOUT + 30)
    console = proc.stdout.decode(errors="replace").replace("\r", "")
    lines = [ln[ln.index(iso_standin.MARK) + len(iso_standin.MARK) + 1:] for ln in console.splitlines()
             if iso_standin.MARK in ln]
    assert "done" in lines, f"the guest did not finish (exit {proc.returncode}):\n{console[-4000:]}\n{proc.stderr[-2000:]}"
    return lines, console


def printed_kickstart(console: str) -> str:
    """The text the guest printed between `ks-begin` and `ks-end` (cat, then an echo)."""
    begin = console.index(f"{iso_standin.MARK} ks-begin")
    begin = console.index("\n", begin) + 1
    end = console.index(f"{iso_standin.MARK} ks-end", begin)
    return console[begin:end]


def value(lines: list[str], key: str) -> str:
    found = [ln[len(key) + 1:] for ln in lines if ln.startswith(key + " ")]
    assert found, f"no {key!r} line in {lines}"
    return found[0]


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("iso-boot")
    standin = iso_standin.build()
    bundle = iso_standin.build_bundle(EXAMPLE, tmp / "out")
    secrets = tmp / "secrets"
    iso_standin.write_test_secrets(bundle, secrets)
    remastered = build_media(bundle, tmp / "media" / "host.iso", base_iso=standin, secrets=secrets)
    oemdrv = build_media(bundle, tmp / "oemdrv" / "host.iso", secrets=secrets)
    return {"tmp": tmp, "bundle": bundle, "standin": standin, "secrets": secrets,
            "host": remastered.media[-1], "seeds": remastered.media[:-1], "oemdrv": oemdrv.media[-1],
            "oemdrv_seeds": oemdrv.media[:-1]}


def guest_files(lines: list[str], label: str) -> dict[str, str]:
    """{path: sha256} of the files the guest found on the volume labelled `label`."""
    out = {}
    for ln in lines:
        if ln.startswith(f"seed {label} "):
            _seed, _label, digest, path = ln.split(" ", 3)
            out[path] = digest
    return out


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("firmware,as_disk", [("bios", False), ("bios", True), ("uefi", False), ("uefi", True)],
                         ids=["bios-cd", "bios-disk", "uefi-cd", "uefi-disk"])
def test_remastered_iso_installs_unattended(media, firmware, as_disk):
    host = media["host"]
    label = host.label
    seeds = tuple(m.path for m in media["seeds"]) if (firmware, as_disk) == ("bios", False) else ()
    lines, console = boot(media["tmp"], firmware, host.path, as_disk, seeds)
    cmdline = value(lines, "cmdline").split()
    # the default entry: the DVD's install entry plus inst.ks on the ISO's own label; no media check
    assert f"inst.ks=hd:LABEL={label}:/ks.cfg" in cmdline
    assert f"inst.stage2=hd:LABEL={label}" in cmdline
    assert "rd.live.check" not in cmdline and "inst.rescue" not in cmdline
    assert value(lines, "inst.ks") == f"label={label} path=/ks.cfg"
    bundle = media["bundle"]
    # the guest printed the kickstart it found through inst.ks: the bundle's, byte for byte
    kickstart = (bundle / "host/kickstart/ks.cfg").read_bytes()
    assert value(lines, "ks-digest") == sha(kickstart)
    assert printed_kickstart(console).rstrip("\n") == kickstart.decode().rstrip("\n")
    assert value(lines, "manifest") == sha((bundle / "manifest.json").read_bytes())
    assert int(value(lines, "bundle-files")) == len(list(p for p in bundle.rglob("*") if p.is_file()))
    if seeds:
        oemdrv = guest_files(lines, "OEMDRV")
        cidata = guest_files(lines, "CIDATA")
        assert oemdrv["ks.cfg"] == sha((bundle / "vms/vpn/kickstart/ks.cfg").read_bytes())
        assert oemdrv["moat/bundle/manifest.json"] == sha((bundle / "manifest.json").read_bytes())
        assert oemdrv["moat/bundle/vms/vpn/ssh/sshd_config"] == sha((bundle / "vms/vpn/ssh/sshd_config").read_bytes())
        assert not any(p.startswith("moat/bundle/host/") for p in oemdrv), "a VM's seed carries only its own files"
        for name in ("user-data", "meta-data", "network-config"):
            assert cidata[name] == sha((bundle / "vms/nextcloud/cloud-init" / name).read_bytes())
        assert cidata["moat/secrets/nextcloud-luks"] == sha((media["secrets"] / "nextcloud-luks").read_bytes())


def test_oemdrv_medium_beside_the_stock_installer(media):
    """No base ISO: the stock DVD boots its own default; the kickstart is on the volume labelled OEMDRV."""
    lines, _console = boot(media["tmp"], "bios", media["standin"], cds=(media["oemdrv"].path,))
    cmdline = value(lines, "cmdline")
    assert "inst.ks=" not in cmdline  # Anaconda looks for OEMDRV by itself
    files = guest_files(lines, "OEMDRV")
    bundle = media["bundle"]
    assert files["ks.cfg"] == sha((bundle / "host/kickstart/ks.cfg").read_bytes())
    for rel in ("manifest.json", "host/libvirt/domains/vpn.xml", "blueprint.yaml"):
        assert files[f"moat/bundle/{rel}"] == sha((bundle / rel).read_bytes())
    assert files["moat/secrets/host-luks"] == sha((media["secrets"] / "host-luks").read_bytes())
    for seed in media["oemdrv_seeds"]:
        assert files[f"moat/seeds/{seed.path.name}"] == seed.sha256
    # the seeds are the same bytes whichever host medium they were made with
    assert [s.sha256 for s in media["oemdrv_seeds"]] == [s.sha256 for s in media["seeds"]]
