"""Rule mount-collision: two file systems on one place, or one over the system's own.

- two data disks of a VM on one mount point;
- a data disk mounted over a directory of the installed system: `/`, `/usr`, `/var`, `/home`,
  `/root`, ... hide what the OS (or the users' ~/.ssh, so every login) needs; anything under
  `/boot`, `/etc` (crypttab and the data disks' keyfiles live there), `/proc`, `/sys`, `/dev` or
  `/run` (kernel and runtime file systems) cannot hold a disk;
- two `dir` pools on one directory (libvirt refuses: "Storage source conflict"), or a pool on a
  system directory (`/boot` would fill the boot partition, `/run` is gone after a reboot).
Nested mount points (/srv and /srv/data) are legal: systemd mounts a parent before its children.
"""

from __future__ import annotations

from typing import Iterator

from ..diagnostics import Diagnostic, quote
from . import Context, first_claims

SYSTEM_DIRS = {"/": "the root file system", "/usr": "the installed programs", "/var": "the system's state",
               "/home": "the users' homes (and their SSH keys)", "/root": "root's home", "/bin": "programs",
               "/sbin": "programs", "/lib": "libraries", "/lib64": "libraries"}
SYSTEM_TREES = {"/boot": "the boot partition", "/etc": "the system's configuration (crypttab, keyfiles)",
                "/proc": "the kernel's process file system", "/sys": "the kernel's sysfs",
                "/dev": "the device file system", "/run": "the runtime tmpfs"}


def normal(path: str) -> str:
    return path.rstrip("/") or "/"


def system_use(path: str) -> str | None:
    """What of the system lives at `path`, if a disk or pool may not be put there."""
    path = normal(path)
    if path in SYSTEM_DIRS:
        return SYSTEM_DIRS[path]
    for tree, what in SYSTEM_TREES.items():
        if path == tree or path.startswith(tree + "/"):
            return what
    return None


def check(ctx: Context) -> Iterator[Diagnostic]:
    bp = ctx.bp
    for vm in bp.vms:
        mounts = []
        for disk in vm.data_disks:
            what = system_use(disk.mount)
            if what:
                yield Diagnostic("mount-collision", f"data disk '{disk.name}' of VM '{vm.name}' would be mounted on "
                                 f"{quote(disk.mount)}, over {what}", disk.at + ("mount",),
                                 hint="mount data disks on a directory of their own, such as /srv/" + disk.name)
            else:
                mounts.append((normal(disk.mount), f"disk '{disk.name}'", disk.at + ("mount",)))
        yield from first_claims(ctx, mounts, "mount-collision", f"mount point of VM '{vm.name}'",
                                "each data disk needs its own mount point")
    paths = []
    for pool in bp.host.pools:
        if pool.type != "dir" or pool.path is None:
            continue
        what = system_use(pool.path)
        if what:
            yield Diagnostic("mount-collision", f"pool '{pool.name}' would keep its images in {quote(pool.path)}, {what}",
                             pool.at + ("path",), hint="give the pool a directory of its own, such as /var/lib/libvirt/"
                             + pool.name)
        else:
            paths.append((normal(pool.path), f"pool '{pool.name}'", pool.at + ("path",)))
    yield from first_claims(ctx, paths, "mount-collision", "pool directory",
                            "libvirt refuses two pools on one directory: give each its own")
