"""Baking a golden image with diskimage-builder into the image cache, once per key.

`bake(recipe)` returns the cached image when its key is there (a hash hit costs one stat);
otherwise it runs `disk-image-create` and stores the result under `CACHE/NAME-KEY/`:
`NAME.qcow2`, `image.json` (what /etc/moat/image.json inside says) and `bake.log`. Atomic like
every cached build (compiler/cached_build.py): a bake killed at any instant leaves no image or a
whole one, and the next bake removes the leftover (its files, and the loop devices DIB had
attached to them).

DIB runs in mount and pid namespaces of its own (bake.sh): its mounts and processes die with it.
Where the kernel has no device-mapper, DIB's kpartx/dmsetup are replaced, inside that mount
namespace only, by dm_shim/ (each partition a loop device over the image file at its offset);
where device-mapper works, DIB runs unchanged. Either way DIB writes the same partitioned image.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from ..cached_build import die_with_parent, locked, remove_leftovers, temp_path, user_cache
from ..diagnostics import Diagnostic, MoatError
from ..tools_tree.recipe import mirror as debian_mirror
from ..verify import which
from .recipe import DIB_VERSION, ImageRecipe, baked_path, cache_root, elements_dir

HERE = Path(__file__).resolve().parent
BAKE_SCRIPT = HERE / "bake.sh"
SHIM_DIR = HERE / "dm_shim"
AS_ROOT_DIR = HERE / "as_root"  # sudo as a pass-through: the bake runs as root
INFO = "image.json"
LOG = "bake.log"

# what disk-image-create runs on this machine, by Debian package (host.debs beside this file lists
# the packages, for `make images`)
HOST_PROGRAMS = {
    "debootstrap": "debootstrap", "qemu-img": "qemu-utils", "kpartx": "kpartx", "dmsetup": "dmsetup",
    "sgdisk": "gdisk", "partx": "util-linux", "losetup": "mount", "mkfs.ext4": "e2fsprogs",
    "mksquashfs": "squashfs-tools", "mkfs.vfat": "dosfstools", "parted": "parted", "sudo": "sudo",
    "unshare": "util-linux", "ps": "procps",
}



def dib_cache() -> Path:
    """DIB's download caches (debootstrap's and apt's .debs): $MOAT_DIB_CACHE, else
    ~/.cache/moat/dib. Downloads only, never a result: one for every image cache."""
    return user_cache("MOAT_DIB_CACHE", "dib")


_SECURITY = re.compile(r"^(?:URIs:\s*|deb\s+(?:\[[^]]*\]\s+)?)(\S+/debian-security)\b", re.M)


def security_mirror(etc: Path = Path("/etc/apt")) -> str:
    """Debian's security archive: $MOAT_SECURITY_MIRROR, else this machine's apt sources, else the default."""
    if os.environ.get("MOAT_SECURITY_MIRROR"):
        return os.environ["MOAT_SECURITY_MIRROR"].rstrip("/")
    files = [etc / "sources.list", *sorted((etc / "sources.list.d").glob("*"))]
    for path in files:
        if path.is_file():
            found = _SECURITY.search(path.read_text(errors="replace"))
            if found:
                return found.group(1).rstrip("/")
    return "http://deb.debian.org/debian-security"


def mirrors(recipe: ImageRecipe) -> dict[str, str]:
    """The DIB_* mirror settings: from configuration (MOAT_*_MIRROR, the machine's apt sources),
    or snapshot.debian.org at the blueprint's timestamp; never a host written into moat."""
    if recipe.distribution == "ubuntu":
        return {"DIB_DISTRIBUTION_MIRROR": os.environ.get("MOAT_UBUNTU_MIRROR", "http://archive.ubuntu.com/ubuntu")}
    if recipe.snapshot:
        base = os.environ.get("MOAT_SNAPSHOT_MIRROR", "http://snapshot.debian.org/archive").rstrip("/")
        return {"DIB_DISTRIBUTION_MIRROR": f"{base}/debian/{recipe.snapshot}",
                "DIB_DEBIAN_SECURITY_MIRROR": f"{base}/debian-security/{recipe.snapshot}"}
    return {"DIB_DISTRIBUTION_MIRROR": debian_mirror(), "DIB_DEBIAN_SECURITY_MIRROR": security_mirror()}


def disk_image_create() -> str | None:
    """diskimage-builder's command: beside moat's interpreter (its venv), else on PATH."""
    beside = Path(sys.executable).parent / "disk-image-create"
    return str(beside) if beside.exists() else shutil.which("disk-image-create")


def device_mapper() -> bool:
    """Does this kernel have device-mapper (DIB's normal path)?"""
    dmsetup = which("dmsetup")
    return bool(dmsetup) and subprocess.run([dmsetup, "version"], capture_output=True).returncode == 0


def unbakeable() -> list[Diagnostic]:
    """Why this machine cannot bake (empty when it can), every reason at once."""
    problems = []
    if os.geteuid() != 0:
        problems.append(Diagnostic("images-need-root", "baking an image needs root (debootstrap, loop devices, chroot)",
                                   hint="run it as root: sudo moat images BLUEPRINT (or sudo make images)"))
    missing = sorted({pkg for prog, pkg in HOST_PROGRAMS.items() if not which(prog)})
    if missing:
        problems.append(Diagnostic("images-tools-missing", "diskimage-builder needs programs this machine lacks: "
                                   + ", ".join(prog for prog, pkg in HOST_PROGRAMS.items() if pkg in missing),
                                   hint="apt-get install " + " ".join(missing)))
    dib = disk_image_create()
    if dib is None:
        problems.append(Diagnostic("images-tools-missing", "diskimage-builder is not installed",
                                   hint=f"pip install diskimage-builder=={DIB_VERSION} (in moat's venv)"))
    else:
        try:
            from importlib.metadata import version
            found = version("diskimage-builder")
        except Exception:  # a disk-image-create from elsewhere: its version is unknown
            found = None
        if found is not None and found != DIB_VERSION:
            problems.append(Diagnostic("images-tools-missing", f"diskimage-builder {found} is installed; "
                                       f"moat's image keys are made with {DIB_VERSION}",
                                       hint=f"pip install diskimage-builder=={DIB_VERSION}"))
    return problems


def detach_loops(under: Path) -> None:
    """Detach loop devices whose backing file lies under `under` (left by a killed bake)."""
    listed = subprocess.run(["losetup", "--json", "--list", "--output", "NAME,BACK-FILE"],
                            capture_output=True, text=True)
    if listed.returncode != 0 or not listed.stdout.strip():
        return
    prefix = str(under) + "/"
    for dev in json.loads(listed.stdout).get("loopdevices", []):
        back = (dev.get("back-file") or "").removesuffix(" (deleted)")
        if back.startswith(prefix):
            subprocess.run(["losetup", "--detach", dev["name"]], capture_output=True)


def bake(recipe: ImageRecipe, progress: Callable[[str], None] = lambda line: None) -> Path:
    """The baked image of this recipe: from the cache, or baked now. Raises MoatError."""
    key = recipe.key()
    dest = baked_path(recipe.name, key).parent
    root = cache_root()
    with locked(root, key):
        if (dest / INFO).is_file() and (dest / f"{recipe.name}.qcow2").is_file():
            progress(f"image {recipe.name} {key}: cached ({dest})")
            return dest / f"{recipe.name}.qcow2"
        remove_leftovers(root, key, before_remove=detach_loops)
        if dest.exists():  # no image.json: not a bake moat finished
            shutil.rmtree(dest)
        problems = unbakeable()
        if problems:
            raise MoatError(problems)
        tmp = temp_path(root, key)
        tmp.mkdir(parents=True)
        (tmp / "work").mkdir()
        info = recipe.info()
        env = {
            **os.environ,
            "PATH": f"{Path(disk_image_create()).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "ELEMENTS_PATH": str(elements_dir()),
            "DIB_RELEASE": recipe.release,
            **mirrors(recipe),
            "DIB_MOAT_IMAGE_JSON": json.dumps(info, sort_keys=True),
            # DIB's download caches (the debootstrap .debs, apt's archives): downloads, not results
            "DIB_IMAGE_CACHE": str(dib_cache()),
            "TMPDIR": str(tmp / "work"),
            "MOAT_DM_SHIM": "" if device_mapper() else str(SHIM_DIR),
            "MOAT_AS_ROOT": str(AS_ROOT_DIR),
        }
        args = ["-a", "amd64", "-t", "qcow2", "-o", str(tmp / recipe.name)]
        if recipe.packages:
            args += ["-p", ",".join(sorted(set(recipe.packages)))]
        log = root / f"{recipe.name}-{key}.log"  # beside the image while baking; kept there if it fails
        started = time.monotonic()
        progress(f"baking image {recipe.name} {key} ({recipe.distribution} {recipe.release}, "
                 f"elements {' '.join(recipe.all_elements)}"
                 f"{', device-mapper stand-in' if env['MOAT_DM_SHIM'] else ''}); log: {log}")
        with open(log, "w") as out:
            proc = subprocess.Popen(
                ["unshare", "--mount", "--pid", "--fork", "--kill-child", "--mount-proc", "--propagation", "private",
                 "sh", str(BAKE_SCRIPT), *args, *recipe.all_elements],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True, env=env,
                preexec_fn=die_with_parent)
            assert proc.stdout is not None
            phases = _Phases()
            for line in proc.stdout:
                out.write(line)
                step = phases.step(line)
                if step:
                    progress(f"[{time.monotonic() - started:5.0f} s] {step}")
            status = proc.wait()
        if status != 0 or not (tmp / f"{recipe.name}.qcow2").is_file():
            kept = log
            detach_loops(tmp)
            shutil.rmtree(tmp, ignore_errors=True)
            tail = [ln for ln in kept.read_text(errors="replace").strip().splitlines() if ln.strip()][-3:]
            raise MoatError([Diagnostic("image-bake-failed", f"baking image {recipe.name} failed (exit {status}): "
                                        + " | ".join(tail)[:400], hint=f"the whole log is {kept}")])
        shutil.rmtree(tmp / "work", ignore_errors=True)
        for extra in tmp.glob(f"{recipe.name}.*"):  # DIB's manifests etc. beside the image
            if extra.name != f"{recipe.name}.qcow2" and extra.is_dir():
                shutil.rmtree(extra)
        shutil.move(log, tmp / LOG)
        (tmp / INFO).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
        with open(tmp / f"{recipe.name}.qcow2", "rb") as f:
            os.fsync(f.fileno())
        os.sync()
        os.rename(tmp, dest)
        size = (dest / f"{recipe.name}.qcow2").stat().st_size
        progress(f"image {recipe.name} {key} baked in {time.monotonic() - started:.0f} s "
                 f"({size / 2**20:.0f} MiB): {dest}")
        return dest / f"{recipe.name}.qcow2"


# DIB's phases (root.d, extra-data.d, pre-install.d, install.d, ..., block-device, finalise.d) and
# its last steps, as its log names them: the progress lines (a phase once, when it starts)
_RUNS = re.compile(r"dib-run-parts Running \S*/([a-z][a-z-]*\.d)/[^/\s]+$")
_STEPS = re.compile(r"(Building elements: .*)|(Calculating image size)|(Converting image using qemu-img convert)|"
                    r"(Image file \S+ created)")


class _Phases:
    def __init__(self) -> None:
        self.current: str | None = None

    def step(self, line: str) -> str | None:
        m = _RUNS.search(line)
        if m:
            if m.group(1) == self.current:
                return None
            self.current = m.group(1)
            return self.current
        m = _STEPS.search(line)
        return next(g for g in m.groups() if g) if m else None
