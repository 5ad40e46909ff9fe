"""A stand-in for a Rocky/Alma 9 installer DVD, built from Debian packages, for tests/test_iso*.py
and bench/iso.py.

It has the boot layout of Rocky's DVD and is made the way Lorax makes it (xorrisofs with
`-U -J --joliet-long -R -T`: lowercase ISO9660 names without versions, TRANS.TBL files,
isohybrid MBR from isohdpfx.bin, a hybrid GPT from `-isohybrid-gpt-basdat`):

    isolinux/isolinux.bin ldlinux.c32 vesamenu.c32 ... isolinux.cfg vmlinuz initrd.img   BIOS (El Torito 1)
    images/efiboot.img   FAT: EFI/BOOT/BOOTX64.EFI + grub.cfg                             UEFI (El Torito 2)
    images/pxeboot/vmlinuz initrd.img                                                     UEFI's kernel
    EFI/BOOT/BOOTX64.EFI grub.cfg                                                         the same, in the ISO tree
    .discinfo .treeinfo
and, like pungi's DVDs, an isomd5sum in the volume descriptor (implantisomd5 --supported-iso).

Both menus have Rocky's entries (install, "Test this media" as the default, troubleshooting)
with `inst.stage2=hd:LABEL=<LABEL>`. BOOTX64.EFI is GRUB from grub-efi-amd64-bin
(grub-mkimage, prefix /EFI/BOOT): booted from the CD it reads the ISO tree's grub.cfg, booted
from a disk (isohybrid on a USB stick) the one inside efiboot.img, so the four boots of the
remastered ISO exercise both copies.

The kernel is Debian's (tests/system/iso.sh unpacks it into /opt/moat-tools/kernel); the
initramfs is a static busybox plus the CD/disk modules, and its /init plays Anaconda's part:
it prints the kernel command line, mounts the volume that `inst.ks=hd:LABEL=<label>:<path>`
names and prints that file and the sha256 of moat/bundle/manifest.json on it, prints every
file (with its sha256) of volumes labelled OEMDRV or CIDATA, then powers off. Lines start
with MARK so a test can pick them out of the serial console.

Built once per content (this file, the Debian package versions, the kernel) and cached under
.cache/iso/ in the repository (MOAT_TEST_CACHE overrides), since it takes a while.
Run `python tests/iso_standin.py` to build it and print its path.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("MOAT_TEST_CACHE", ROOT / ".cache" / "iso"))
KERNEL_ROOT = Path(os.environ.get("MOAT_TEST_KERNEL", "/opt/moat-tools/kernel"))
LABEL = "STANDIN-9-x86_64-dvd"  # like Rocky's "Rocky-9-4-x86_64-dvd": lowercase letters and dashes
MARK = "MOAT-TEST"
SEED_LABELS = ("OEMDRV", "CIDATA")
PACKAGES = ("busybox-static", "isolinux", "syslinux-common", "grub-efi-amd64-bin", "grub-common", "xorriso",
            "mtools", "dosfstools", "cpio", "isomd5sum")
# CD (sr_mod, isofs) and disk (sd_mod) drivers on QEMU's PIIX (pc) and AHCI (q35) controllers;
# their dependencies are read from the modules themselves, the crypto providers are soft deps
MODULES = ("crct10dif_generic", "crc64_rocksoft_generic", "ata_piix", "ahci", "sr_mod", "isofs", "sd_mod")
BIOS_FILES = ("ldlinux.c32", "libcom32.c32", "libutil.c32", "vesamenu.c32")
GRUB_MODULES = ("part_gpt", "part_msdos", "fat", "iso9660", "search", "search_label", "search_fs_file", "normal",
                "configfile", "linux", "linuxefi", "echo", "test", "all_video", "gzio", "ext2", "serial",
                "terminal")

ISOLINUX_CFG = """\
default vesamenu.c32
timeout 10

display boot.msg

menu clear
menu background splash.png
menu title Stand-in 9
menu vshift 8
menu rows 18
menu margin 8
menu helpmsgrow 15
menu tabmsgrow 13

label linux
  menu label ^Install Stand-in 9
  kernel vmlinuz
  append initrd=initrd.img inst.stage2=hd:LABEL={label} quiet console=ttyS0

label check
  menu label Test this ^media & install Stand-in 9
  menu default
  kernel vmlinuz
  append initrd=initrd.img inst.stage2=hd:LABEL={label} rd.live.check quiet console=ttyS0

menu separator # insert an empty line

menu begin ^Troubleshooting
  menu title Troubleshooting Stand-in 9

label rescue
  menu indent count 5
  menu label ^Rescue a Stand-in system
  kernel vmlinuz
  append initrd=initrd.img inst.stage2=hd:LABEL={label} inst.rescue quiet console=ttyS0

menu separator # insert an empty line

label local
  menu label Boot first ^drive
  localboot 0xffff

menu separator # insert an empty line

label returntomain
  menu label Return to ^main menu
  menu exit

menu end
"""

GRUB_CFG = """\
set default="1"

function load_video {{
  insmod all_video
}}

load_video
set gfxpayload=keep
insmod gzio
insmod part_gpt
insmod ext2

set timeout=1
### END /etc/grub.d/00_header ###

search --no-floppy --set=root -l '{label}'

### BEGIN /etc/grub.d/10_linux ###
menuentry 'Install Stand-in 9' --class fedora --class gnu-linux --class gnu --class os {{
	linuxefi /images/pxeboot/vmlinuz inst.stage2=hd:LABEL={label} quiet console=ttyS0
	initrdefi /images/pxeboot/initrd.img
}}
menuentry 'Test this media & install Stand-in 9' --class fedora --class gnu-linux --class gnu --class os {{
	linuxefi /images/pxeboot/vmlinuz inst.stage2=hd:LABEL={label} rd.live.check quiet console=ttyS0
	initrdefi /images/pxeboot/initrd.img
}}
submenu 'Troubleshooting -->' {{
	menuentry 'Rescue a Stand-in system' --class fedora --class gnu-linux --class gnu --class os {{
		linuxefi /images/pxeboot/vmlinuz inst.stage2=hd:LABEL={label} inst.rescue quiet console=ttyS0
		initrdefi /images/pxeboot/initrd.img
	}}
}}
"""

INIT = r"""#!/bin/busybox sh
# /init of the stand-in installer: plays Anaconda's part of finding ks.cfg, prints what it found
/bin/busybox mkdir -p /proc /sys /dev /mnt /tmp
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec >/dev/console 2>&1
for m in $(cat /modules.order); do insmod "/modules/$m.ko" 2>/dev/null; done
say() { echo "@MARK@ $*"; }
say "cmdline $(cat /proc/cmdline)"
arg() { tr ' ' '\n' </proc/cmdline | sed -n "s/^$1=//p" | head -n 1; }
unescape() { printf '%b' "$(echo "$1" | sed 's/\\x\([0-9a-fA-F][0-9a-fA-F]\)/\\x\1/g')"; }
# wait for the boot medium (inst.stage2=hd:LABEL=...) and for the block devices to settle
stage2=$(arg inst.stage2)
label=$(unescape "${stage2#hd:LABEL=}")
i=0
while [ $i -lt 100 ] && ! findfs "LABEL=$label" >/dev/null 2>&1; do sleep 0.2; i=$((i + 1)); done
last=; same=0
while [ $same -lt 3 ]; do
    now=$(ls /sys/class/block | tr '\n' ' ')
    if [ "$now" = "$last" ]; then same=$((same + 1)); else same=0; last=$now; fi
    sleep 0.3
done
say "devices $now"
mountlabel() {  # LABEL DIR: the first device with that volume label, read-only
    dev=$(findfs "LABEL=$1" 2>/dev/null) || return 1
    mkdir -p "$2"
    mount -o ro "$dev" "$2" || return 1
    say "mounted $1 $dev"
}
ks=$(arg inst.ks)
if [ -n "$ks" ]; then
    spec=${ks#hd:LABEL=}
    kslabel=$(unescape "${spec%%:*}")
    kspath=${spec#*:}
    say "inst.ks label=$kslabel path=$kspath"
    if mountlabel "$kslabel" /mnt/ks; then
        if [ -f "/mnt/ks$kspath" ]; then
            say "ks-begin $kspath"
            cat "/mnt/ks$kspath"
            echo
            say "ks-end"
            say "ks-digest $(sha256sum "/mnt/ks$kspath" | cut -d' ' -f1)"
        else
            say "ks-missing $kspath"
        fi
        m=/mnt/ks/moat/bundle/manifest.json
        [ -f "$m" ] && say "manifest $(sha256sum "$m" | cut -d' ' -f1)"
        [ -f /mnt/ks/moat/bundle/manifest.json ] && say "bundle-files $(find /mnt/ks/moat/bundle -type f | wc -l)"
        umount /mnt/ks
    else
        say "inst.ks-no-volume $kslabel"
    fi
fi
for seed in @SEEDS@; do
    if mountlabel "$seed" "/mnt/$seed"; then
        (cd "/mnt/$seed" && find . -type f | sort | while read -r f; do
            say "seed $seed $(sha256sum "$f" | cut -d' ' -f1) ${f#./}"
        done)
        umount "/mnt/$seed"
    fi
done
say "done"
poweroff -f
"""


def _run(*cmd: str | Path, cwd: Path | None = None) -> str:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return proc.stdout


def _package_versions() -> str:
    out = subprocess.run(["dpkg-query", "-W", "-f", "${Package}=${Version} ${Status}\n", *PACKAGES],
                         capture_output=True, text=True)
    missing = [p for p in PACKAGES if f"{p}=" not in out.stdout or "not-installed" in
               next((line for line in out.stdout.splitlines() if line.startswith(f"{p}=")), "not-installed")]
    if missing:
        raise RuntimeError(f"the stand-in ISO needs the Debian packages {' '.join(missing)}: "
                           "run `make system-deps` as root (tests/system/iso.debs)")
    return out.stdout


def kernel() -> tuple[Path, Path]:
    """(vmlinuz, modules directory) of the kernel unpacked by tests/system/iso.sh."""
    images = sorted(KERNEL_ROOT.glob("boot/vmlinuz-*"))
    if not images:
        raise RuntimeError(f"no kernel under {KERNEL_ROOT}: run `bash tests/system/iso.sh` as root "
                           "(or `make system-deps`), which unpacks Debian's linux-image package there")
    vmlinuz = images[-1]
    return vmlinuz, KERNEL_ROOT / "lib" / "modules" / vmlinuz.name.removeprefix("vmlinuz-")


def _module_order(moddir: Path) -> list[Path]:
    """MODULES and what they depend on (read from each module's .modinfo), dependencies first."""
    index = {p.name[:-3].replace("-", "_"): p for p in moddir.rglob("*.ko")}
    order: list[str] = []

    def visit(name: str) -> None:
        if name in order:
            return
        if name not in index:
            raise RuntimeError(f"kernel module {name} not found under {moddir}")
        found = re.search(rb"\x00depends=([^\x00]*)\x00", index[name].read_bytes())
        for dep in (found.group(1).decode().split(",") if found else []):
            if dep:
                visit(dep.replace("-", "_"))
        order.append(name)

    for name in MODULES:
        visit(name)
    return [index[n] for n in order]


def _initramfs(work: Path) -> Path:
    _vmlinuz, moddir = kernel()
    root = work / "initramfs"
    (root / "bin").mkdir(parents=True)
    (root / "modules").mkdir()
    shutil.copy2("/bin/busybox", root / "bin" / "busybox")
    modules = _module_order(moddir)
    for ko in modules:
        shutil.copy2(ko, root / "modules" / ko.name)
    (root / "modules.order").write_text("".join(ko.name[:-3] + "\n" for ko in modules))
    init = root / "init"
    init.write_text(INIT.replace("@MARK@", MARK).replace("@SEEDS@", " ".join(SEED_LABELS)))
    init.chmod(0o755)
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    cpio = subprocess.run(["cpio", "-o", "-H", "newc", "--quiet", "--owner=0:0"], cwd=root,
                          input=("\n".join(files) + "\n").encode(), capture_output=True)
    if cpio.returncode:
        raise RuntimeError(f"cpio failed: {cpio.stderr.decode()}")
    out = work / "initrd.img"
    out.write_bytes(gzip.compress(cpio.stdout, mtime=0))
    return out


def _efiboot(work: Path, tree: Path) -> Path:
    """images/efiboot.img: FAT with EFI/BOOT/{BOOTX64.EFI,grub.cfg}, made with mkfs.vfat and mtools."""
    img = work / "efiboot.img"
    efi = tree / "EFI" / "BOOT"
    size_kib = (sum(p.stat().st_size for p in efi.iterdir()) // 1024) + 1024
    _run("mkfs.vfat", "-C", "-n", "ANACONDA", "-i", "4d4f4154", img, str(size_kib))
    env_img = f"-i{img}"
    _run("mmd", env_img, "::EFI", "::EFI/BOOT")
    _run("mcopy", env_img, efi / "BOOTX64.EFI", efi / "grub.cfg", "::EFI/BOOT/")
    return img


def _build(out: Path, pad: int = 0) -> None:
    vmlinuz, _moddir = kernel()
    with tempfile.TemporaryDirectory(prefix="moat-standin-") as tmp:
        work = Path(tmp)
        tree = work / "tree"
        for d in ("isolinux", "images/pxeboot", "EFI/BOOT"):
            (tree / d).mkdir(parents=True)
        initrd = _initramfs(work)
        for d in ("isolinux", "images/pxeboot"):
            shutil.copy2(vmlinuz, tree / d / "vmlinuz")
            shutil.copy2(initrd, tree / d / "initrd.img")
        shutil.copy2("/usr/lib/ISOLINUX/isolinux.bin", tree / "isolinux" / "isolinux.bin")
        for name in BIOS_FILES:
            shutil.copy2(Path("/usr/lib/syslinux/modules/bios") / name, tree / "isolinux" / name)
        (tree / "isolinux" / "isolinux.cfg").write_text(ISOLINUX_CFG.format(label=LABEL))
        (tree / "isolinux" / "boot.msg").write_text("\nStand-in 9 installer\n\n")
        (tree / "EFI" / "BOOT" / "grub.cfg").write_text(GRUB_CFG.format(label=LABEL))
        _run("grub-mkimage", "-O", "x86_64-efi", "-p", "/EFI/BOOT", "-o", tree / "EFI" / "BOOT" / "BOOTX64.EFI",
             *GRUB_MODULES)
        shutil.copy2(_efiboot(work, tree), tree / "images" / "efiboot.img")
        (tree / ".discinfo").write_text("1700000000.000000\nStand-in 9\nx86_64\n")
        (tree / ".treeinfo").write_text("[general]\nfamily = Stand-in\nversion = 9\narch = x86_64\n"
                                        "[images-x86_64]\nkernel = images/pxeboot/vmlinuz\n"
                                        "initrd = images/pxeboot/initrd.img\nefiboot.img = images/efiboot.img\n")
        if pad:
            # a big file, like the DVD's BaseOS/AppStream repositories (sparse: costs no disk here)
            (tree / "BaseOS").mkdir()
            with open(tree / "BaseOS" / "packages.img", "wb") as fh:
                fh.truncate(pad)
        tmp_iso = out.with_name(out.name + f".tmp-{os.getpid()}")
        # Lorax's arguments (share/templates.d/99-generic/x86.tmpl) for boot.iso / the DVD
        _run("xorrisofs", "-quiet", "-U", "-J", "--joliet-long", "-R", "-T", "-V", LABEL,
             "-b", "isolinux/isolinux.bin", "-c", "isolinux/boot.cat", "-no-emul-boot", "-boot-load-size", "4",
             "-boot-info-table", "-eltorito-alt-boot", "-e", "images/efiboot.img", "-no-emul-boot",
             "-isohybrid-gpt-basdat", "-isohybrid-mbr", "/usr/lib/ISOLINUX/isohdpfx.bin",
             "-o", tmp_iso, tree)
        _run("implantisomd5", "--supported-iso", tmp_iso)  # the media-check sum, as pungi adds it
        os.replace(tmp_iso, out)


def cache_key(pad: int = 0) -> str:
    vmlinuz, _ = kernel()
    h = hashlib.sha256(Path(__file__).read_bytes())
    h.update(_package_versions().encode())
    h.update((KERNEL_ROOT / ".version").read_bytes() if (KERNEL_ROOT / ".version").exists() else vmlinuz.name.encode())
    h.update(str(pad).encode())
    return h.hexdigest()[:16]


def build(pad: int = 0, cache: Path = CACHE) -> Path:
    """The stand-in ISO (built on first use, then cached); `pad` bytes of extra payload make a big one."""
    cache.mkdir(parents=True, exist_ok=True)
    out = cache / f"standin-{cache_key(pad)}{f'-pad{pad}' if pad else ''}.iso"
    if not out.exists():
        for stale in cache.glob(f"standin-*{f'-pad{pad}' if pad else ''}.iso"):
            if pad or "-pad" not in stale.name:
                stale.unlink()
        _build(out, pad)
    return out


if __name__ == "__main__":
    pad = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    print(build(pad))


# --- helpers shared by tests/test_iso*.py and bench/iso.py ------------------------------------


def build_bundle(blueprint: Path, out: Path) -> Path:
    """`moat build` of a blueprint (without the other families' validators): the store path."""
    from compiler.pipeline import build_file

    _compiled, stored = build_file(blueprint, out, tools=False)
    return stored.path


def write_test_secrets(bundle: Path, directory: Path) -> dict[str, bytes]:
    """A test value for every secret the bundle's kickstarts and user-data read from their media."""
    from compiler.media.layout import secrets_read_by

    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    values = {}
    for path in sorted(bundle.rglob("*")):
        if path.is_file():
            for name in secrets_read_by(path.read_bytes()):
                values[name] = f"test value of secret {name}\n".encode()
    for name, value in values.items():  # a name may have directories (openvpn/clients/home1.key)
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_bytes(value)
        (directory / name).chmod(0o600)  # private, as moat secrets makes them (compiler/private.py)
    for sub in directory.rglob("*"):
        if sub.is_dir():
            sub.chmod(0o700)
    return values


def measure(cmd: list[str], cwd: Path = ROOT) -> tuple[float, int, str]:
    """Run `cmd`: (wall-clock seconds, peak RSS in bytes, stderr); raises if it fails.

    The peak is the process's VmHWM, polled every 10 ms: wait4's ru_maxrss would also count
    the forked copy of this (big) Python process from before the exec."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    errors: list[bytes] = []
    reader = threading.Thread(target=lambda: errors.append(proc.stderr.read()), daemon=True)
    reader.start()
    peak = 0
    status = Path(f"/proc/{proc.pid}/status")  # Popen returns once the child has exec'd
    while proc.poll() is None:
        try:
            found = re.search(r"^VmHWM:\s+(\d+) kB", status.read_text(), re.M)
        except OSError:
            found = None
        if found:
            peak = max(peak, int(found.group(1)) * 1024)
        time.sleep(0.01)
    elapsed = time.perf_counter() - start
    reader.join()
    stderr = b"".join(errors).decode(errors="replace")
    if proc.returncode:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{stderr}")
    return elapsed, peak, stderr
