"""Baking a golden image with diskimage-builder into the image cache, once per key.

`bake(recipe)` returns the cached image when its key is there (a hash hit costs one stat);
otherwise it runs `disk-image-create` and stores the result under `CACHE/NAME-KEY/`:
`NAME.qcow2`, `image.json` (what /etc/moat/image.json inside says), `packages.txt` (its
installed packages) and `bake.log`. `refresh(recipe)` bakes afresh whatever the cache holds and
keys the image by the packages it got (compiler/images/lock.py: the lock's rhythm). Atomic like
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

import attrs

from ..cached_build import die_with_parent, locked, remove_leftovers, temp_path, user_cache
from ..diagnostics import Diagnostic, MoatError
from ..tools_tree.recipe import mirror as debian_mirror
from ..verify import which
from .lock import changes, parse_packages
from .recipe import DIB_VERSION, ImageRecipe, baked_path, cache_root, elements_dir

HERE = Path(__file__).resolve().parent
BAKE_SCRIPT = HERE / "bake.sh"
SHIM_DIR = HERE / "dm_shim"
AS_ROOT_DIR = HERE / "as_root"  # sudo as a pass-through: the bake runs as root
INFO = "image.json"
LOG = "bake.log"
PACKAGES = "packages.txt"  # the image's installed packages, NAME=VERSION (its /etc/moat/image-packages.txt)
# in a locked bake's image.json until moat-base's cleanup.d knows the packages
KEY_PLACEHOLDER, DIGEST_PLACEHOLDER = "@MOAT_LOCKED_KEY@", "@MOAT_PACKAGES_SHA256@"

# what disk-image-create runs on this machine, by Debian package (host.debs beside this file lists
# the packages, for `make images`)
HOST_PROGRAMS = {
    "debootstrap": "debootstrap", "qemu-img": "qemu-utils", "kpartx": "kpartx", "dmsetup": "dmsetup",
    "sgdisk": "gdisk", "partx": "util-linux", "losetup": "mount", "mkfs.ext4": "e2fsprogs",
    "mksquashfs": "squashfs-tools", "mkfs.vfat": "dosfstools", "parted": "parted", "sudo": "sudo",
    "unshare": "util-linux", "ps": "procps", "dpkg-query": "dpkg", "sha256sum": "coreutils",
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


@attrs.frozen
class Baked:
    """A golden image in the cache: its file, key and installed packages (NAME=VERSION)."""

    path: Path
    key: str
    packages: tuple[str, ...]
    fresh: bool = False  # baked by this call (not found in the cache)


def _cached(name: str, key: str) -> Baked | None:
    dest = baked_path(name, key).parent
    if not ((dest / INFO).is_file() and (dest / f"{name}.qcow2").is_file()):
        return None
    packages = parse_packages((dest / PACKAGES).read_text()) if (dest / PACKAGES).is_file() else ()
    return Baked(dest / f"{name}.qcow2", key, packages)


def bake(recipe: ImageRecipe, progress: Callable[[str], None] = lambda line: None,
         locked_packages: tuple[str, ...] = ()) -> Baked:
    """The baked image of this recipe: from the cache, or baked now. Raises MoatError.

    A locked recipe (recipe.locked; `locked_packages` the lock's list, for the message) is baked,
    on a miss, as refresh bakes: the image is kept under the key its packages give, and unless
    those are the locked ones, it is an error (image-lock-mismatch): the mirror moved on since
    the lock was written."""
    key = recipe.key()
    with locked(cache_root(), recipe.recipe_key()):
        hit = _cached(recipe.name, key)
        if hit is not None:
            progress(f"image {recipe.name} {key}: cached ({hit.path.parent})")
            return hit
        done = _bake(recipe, progress, lock=recipe.locked is not None)
    if done.key != key:
        raise MoatError([Diagnostic(
            "image-lock-mismatch", f"image {recipe.name}: the mirror gives other packages than the lock "
            f"(baked and kept as key {done.key}, the lock says {key}): "
            + _summary(changes(locked_packages, done.packages)),
            hint="sudo moat images --refresh BLUEPRINT locks what the mirror gives now (a new key: review and commit "
                 "the lock); an image whose versions must not move pins a `snapshot:` of the mirror")])
    return done


def refresh(recipe: ImageRecipe, progress: Callable[[str], None] = lambda line: None) -> Baked:
    """Bake the recipe afresh, whatever the cache holds, keyed by the packages it got (the
    recipe's lock is not asked). Kept under that key unless an image of it is cached already
    (the same recipe and packages: the same image), then that one is returned (fresh False)."""
    with locked(cache_root(), recipe.recipe_key()):
        return _bake(recipe, progress, lock=True)


def _summary(changed: list[str], most: int = 8) -> str:
    """The first changes of a package list, and how many more."""
    if not changed:
        return "the package lists differ"
    return ", ".join(changed[:most]) + (f" and {len(changed) - most} more" if len(changed) > most else "")


def _bake(recipe: ImageRecipe, progress: Callable[[str], None], lock: bool) -> Baked:
    """Run DIB (the recipe's lock held). `lock`: key the result by its packages (locked_key)."""
    base = recipe.recipe_key()
    root = cache_root()
    remove_leftovers(root, base, before_remove=detach_loops)
    if not lock:
        dest = baked_path(recipe.name, base).parent
        if dest.exists():  # no image.json: not a bake moat finished
            shutil.rmtree(dest)
    problems = unbakeable()
    if problems:
        raise MoatError(problems)
    tmp = temp_path(root, base)
    tmp.mkdir(parents=True)
    (tmp / "work").mkdir()
    unlocked = attrs.evolve(recipe, locked=None)
    info = unlocked.info()
    if lock:  # moat-base's cleanup.d fills them in once the packages are known
        info.update(key=KEY_PLACEHOLDER, locked=DIGEST_PLACEHOLDER, recipe=base)
    env = {
        **os.environ,
        "PATH": f"{Path(disk_image_create()).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "ELEMENTS_PATH": str(elements_dir()),
        "DIB_RELEASE": recipe.release,
        **mirrors(recipe),
        "DIB_MOAT_IMAGE_JSON": json.dumps(info, sort_keys=True),
        "DIB_MOAT_OUT": str(tmp),
        "DIB_MOAT_RECIPE_KEY": base if lock else "",
        # DIB's download caches (the debootstrap .debs, apt's archives): downloads, not results
        "DIB_IMAGE_CACHE": str(dib_cache()),
        "TMPDIR": str(tmp / "work"),
        "MOAT_DM_SHIM": "" if device_mapper() else str(SHIM_DIR),
        "MOAT_AS_ROOT": str(AS_ROOT_DIR),
    }
    args = ["-a", "amd64", "-t", "qcow2", "-o", str(tmp / recipe.name)]
    if recipe.packages:
        args += ["-p", ",".join(sorted(set(recipe.packages)))]
    log = root / f"{recipe.name}-{base}.log"  # beside the image while baking; kept there if it fails
    started = time.monotonic()
    progress(f"baking image {recipe.name} {'(recipe ' + base + ', keyed by its packages)' if lock else base} "
             f"({recipe.distribution} {recipe.release}, elements {' '.join(recipe.all_elements)}"
             f"{', device-mapper stand-in' if env['MOAT_DM_SHIM'] else ''}); log: {log}")
    with open(log, "w") as out:
        proc = subprocess.Popen(
            ["unshare", "--mount", "--pid", "--fork", "--kill-child", "--mount-proc", "--propagation", "private",
             "sh", str(BAKE_SCRIPT), *args, *recipe.all_elements],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True, env=env,
            preexec_fn=die_with_parent())
        assert proc.stdout is not None
        phases = _Phases()
        for line in proc.stdout:
            out.write(line)
            step = phases.step(line)
            if step:
                progress(f"[{time.monotonic() - started:5.0f} s] {step}")
        status = proc.wait()
    if status != 0 or not (tmp / f"{recipe.name}.qcow2").is_file() or not (tmp / PACKAGES).is_file():
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
    packages = parse_packages((tmp / PACKAGES).read_text())
    key = base
    if lock:
        got = recipe.lock_to(packages)
        key = got.key()
        inside = (tmp / "key").read_text().strip() if (tmp / "key").is_file() else None
        (tmp / "key").unlink(missing_ok=True)
        if inside != key:  # the image's own /etc/moat/image.json says `inside`: it must be this key
            shutil.rmtree(tmp, ignore_errors=True)
            raise MoatError([Diagnostic("image-bake-failed", f"image {recipe.name}: the bake keyed it {inside}, "
                                        f"moat computes {key} from the same packages",
                                        hint="moat-base's cleanup.d/95-moat-image-packages and "
                                             "compiler/images/recipe.py's locked_key must agree: a bug in moat")])
        info.update(key=key, locked=got.locked)
    dest = baked_path(recipe.name, key).parent
    if _cached(recipe.name, key) is not None:  # the same recipe and packages are baked already
        shutil.rmtree(tmp, ignore_errors=True)
        log.unlink(missing_ok=True)
        progress(f"image {recipe.name} {key}: baked again in {time.monotonic() - started:.0f} s, the same "
                 f"packages as the cached one: kept ({dest})")
        return Baked(dest / f"{recipe.name}.qcow2", key, packages)
    if dest.exists():  # no image.json: not a bake moat finished
        shutil.rmtree(dest)
    shutil.move(log, tmp / LOG)
    (tmp / INFO).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    with open(tmp / f"{recipe.name}.qcow2", "rb") as f:
        os.fsync(f.fileno())
    os.sync()
    os.rename(tmp, dest)
    size = (dest / f"{recipe.name}.qcow2").stat().st_size
    progress(f"image {recipe.name} {key} baked in {time.monotonic() - started:.0f} s "
             f"({size / 2**20:.0f} MiB, {len(packages)} packages): {dest}")
    return Baked(dest / f"{recipe.name}.qcow2", key, packages, fresh=True)


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
