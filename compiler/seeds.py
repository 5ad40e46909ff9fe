"""The VMs' seed ISOs: which VM has which, the libvirt pool that holds them. Read by the media
step (compiler/media/ writes them), the libvirt family (each domain attaches its VM's seed), the
kickstart family (the host's %post copies them into the pool) and the checks. Their names and
kinds, and where they sit on the host's medium, are the medium's layout (compiler/media/layout.py).

A VM installed from a golden image (install.method `image`) gets `<vm>-cidata.iso` (label
CIDATA, cloud-init NoCloud); a VM installed by kickstart gets `<vm>-oemdrv.iso` (label OEMDRV,
ks.cfg, which Anaconda loads by itself from that label). A VM installed by hand from an ISO
(`iso`) has none. Both kinds are volumes of the same pool, attached the same way: a read-only
SATA cdrom, never booted from.

The pool is SEED_POOL (`ISOs`), the pool installer ISOs already come from (install.method
`iso`): the one the blueprint declares, which must then be a `dir` pool (rule seed-pool); a
blueprint that declares none gets it by default, a `dir` pool at DEFAULT_POOL_PATH, the
directory blueprints/example.yaml declares.

The media step writes the seeds after the bundle exists (they carry secrets the bundle must
not), so the host kickstart cannot carry their sha256: `moat iso` also writes layout.SUMS
(moat/seeds/SHA256SUMS, `sha256sum` format) on the host medium, and the host's %post checks
every seed it copies against it.

A VM installed by kickstart also boots its distribution's installer DVD from the same pool:
install.iso when given, else INSTALLER_ISO of install.os, the file name the distribution
publishes for its latest 9.x DVD.
"""

from __future__ import annotations

import attrs

from .diagnostics import Path
from .media.layout import seed_kind, seed_name
from .model import Blueprint, Pool, Vm

SEED_POOL = "ISOs"
DEFAULT_POOL_PATH = "/ISOs"
# install.os -> the installer DVD a kickstart VM boots (as published: download.rockylinux.org
# and repo.almalinux.org, .../9/isos/x86_64/)
INSTALLER_ISO = {"rocky9": "Rocky-9-latest-x86_64-dvd.iso", "alma9": "AlmaLinux-9-latest-x86_64-dvd.iso"}
SEED_MODE = "0644"                 # a seed in the pool: world-readable media, like any ISO
SECRET_SEED_MODE = "0600"          # a seed holding secrets (0400 on the medium): root only
SELINUX_TYPE = "virt_content_t"    # read-only media of VMs (what libvirt gives read-only disks)


@attrs.frozen
class Seed:
    """A VM's seed: its file/volume `name` in `pool`. `at` is the VM's install node."""

    vm: str
    kind: str
    name: str
    pool: str
    at: Path = ()


@attrs.frozen
class Installer:
    """The installer DVD a VM boots: `volume` in `pool`; `at` is the blueprint node it comes from."""

    volume: str
    pool: str
    defaulted: bool  # the name is INSTALLER_ISO's (kickstart), not the blueprint's install.iso
    at: Path = ()


def seed_of(vm: Vm) -> Seed | None:
    kind = seed_kind(vm.install.method)
    return Seed(vm.name, kind, seed_name(vm.name, kind), SEED_POOL, vm.install.at) if kind else None


def seeds(bp: Blueprint) -> list[Seed]:
    """Every VM's seed, by VM name."""
    return [s for s in (seed_of(vm) for vm in sorted(bp.vms, key=lambda v: v.name)) if s is not None]


def installer_of(vm: Vm) -> Installer | None:
    install = vm.install
    if install.method == "iso" and install.iso:
        return Installer(install.iso, SEED_POOL, False, install.at + ("iso",))
    if install.method == "kickstart" and install.iso:
        return Installer(install.iso, SEED_POOL, False, install.at + ("iso",))
    if install.method == "kickstart" and install.os:
        return Installer(INSTALLER_ISO[install.os], SEED_POOL, True, install.at + ("os",))
    return None


def declared_pool(bp: Blueprint) -> Pool | None:
    return next((p for p in bp.host.pools if p.name == SEED_POOL), None)


def default_pool(bp: Blueprint) -> Pool:
    return Pool(SEED_POOL, "dir", DEFAULT_POOL_PATH, at=bp.host.at + ("pools",))


def needs_pool(bp: Blueprint) -> bool:
    """Some VM needs the pool: it has a seed or boots an installer from it."""
    return any(seed_of(vm) or installer_of(vm) for vm in bp.vms)


def seed_pool(bp: Blueprint) -> Pool | None:
    """The pool holding seeds and installers: the declared one, else (when a VM needs it) the
    default. None when no VM needs one and none is declared."""
    declared = declared_pool(bp)
    if declared is not None:
        return declared
    return default_pool(bp) if needs_pool(bp) else None


def added_pools(bp: Blueprint) -> list[Pool]:
    """Pools moat defines although the blueprint does not declare them: the default seed pool."""
    return [] if declared_pool(bp) is not None or not needs_pool(bp) else [default_pool(bp)]


def selinux_spec(path: str) -> str:
    """semanage fcontext's regular expression for a directory and everything below it."""
    return "".join("\\" + c if c in ".+*?[](){}^$|\\" else c for c in path.rstrip("/")) + "(/.*)?"
