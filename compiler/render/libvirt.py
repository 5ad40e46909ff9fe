"""libvirt definitions: networks (NAT with static leases, mirror bridge), pools, volumes, domains.

Each domain attaches, as read-only SATA cdroms from the pool ISOs (compiler/seeds.py): its
installer (install.method `iso`: install.iso; `kickstart`: the distribution's DVD) and its seed
(`image`: <vm>-cidata.iso, `kickstart`: <vm>-oemdrv.iso), which the host's kickstart copies
into that pool. Boot order: the OS disk, then the installer; an empty disk falls through to
the installer, an installed one boots itself, so a VM is never installed twice. The seed is
never booted. moat-libvirt-apply refreshes the pools before it defines the domains, so the
seed volumes the domains name exist, and says which are missing.

The OS volume of a VM installed from a golden image (install.method `image`) is not left blank:
moat-libvirt-apply creates it at the blueprint's size and copies the image into it
(host/images.json names the files, NAME-KEY.qcow2, which the host's medium carries), and a
marker per volume under /var/lib/moat/volumes says which image it holds once the copy is
complete. A new image (a new key) or a copy cut short recreates the volume, unless its VM
runs. Data volumes and the OS volumes of other VMs are created blank once and never touched.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import attrs

from ..derive import Plan, ResolvedVm, stable_uuid
from ..diagnostics import Path as BlueprintPath
from ..seeds import added_pools, installer_of, seed_of, seed_pool
from ..verify import Validator
from . import Output, template
from .images import HOST_IMAGES_DIR, HOST_STATE_DIR

TOOLS = Path(__file__).resolve().parent.parent / "verify_tools"
DEFINITIONS = "/etc/moat/libvirt"  # where the host's kickstart installs the XML below
APPLY = "host/libvirt/moat-libvirt-apply"
APPLY_INSTALLED = "/usr/local/libexec/moat/moat-libvirt-apply"
APPLY_UNIT = "host/systemd/moat-libvirt-apply.service"
APPLY_UNIT_INSTALLED = "/etc/systemd/system/moat-libvirt-apply.service"

VALIDATORS = (
    Validator(APPLY, ("shellcheck", "-S", "warning", "-s", "sh", "{file}"), "shellcheck"),
    Validator(APPLY_UNIT, (str(TOOLS / "systemd-unit.sh"), "{file}", APPLY_UNIT, APPLY_UNIT_INSTALLED,
                           f"{APPLY_INSTALLED}={APPLY}"), "systemd", needs="systemd-analyze"),
    Validator("host/libvirt/domains/*.xml", (str(TOOLS / "libvirt-xml.sh"), "domain", "{file}"), "libvirt-clients",
              needs="virt-xml-validate", batch=True),
    Validator("host/libvirt/networks/*.xml", (str(TOOLS / "libvirt-xml.sh"), "network", "{file}"), "libvirt-clients",
              needs="virt-xml-validate", batch=True),
    Validator("host/libvirt/pools/*.xml", (str(TOOLS / "libvirt-xml.sh"), "storagepool", "{file}"), "libvirt-clients",
              needs="virt-xml-validate", batch=True),
    Validator("host/libvirt/volumes/*/*.xml", (str(TOOLS / "libvirt-xml.sh"), "storagevol", "{file}"), "libvirt-clients",
              needs="virt-xml-validate", batch=True),
)


@attrs.frozen
class Cdrom:
    """A read-only cdrom of a domain: `volume` of `pool`, guest device `target` (sata), `boot`
    its place in the boot order (None: never booted), `what` it is for the XML's comment.
    An installer (booted) is optional: libvirt starts the domain without it when the volume is
    gone; a seed is required: libvirt refuses to start the domain without it."""

    pool: str
    volume: str
    target: str
    boot: int | None
    what: str
    at: BlueprintPath = ()


def cdroms(rvm: ResolvedVm) -> list[Cdrom]:
    """The installer (booted after the OS disk) then the seed, on sda, sdb."""
    found = []
    targets = (f"sd{chr(ord('a') + i)}" for i in range(26))
    installer = installer_of(rvm.vm)
    if installer is not None:
        what = (f"installer of {rvm.vm.install.os}, the DVD as published (no blueprint field names it); "
                "optional: once installed, the VM starts without it" if installer.defaulted else
                "installer (blueprint install.iso); optional: once installed, the VM starts without it")
        found.append(Cdrom(installer.pool, installer.volume, next(targets), 2, what, installer.at))
    seed = seed_of(rvm.vm)
    if seed is not None:
        what = {"cidata": "cloud-init NoCloud seed (label CIDATA)", "oemdrv": "kickstart seed (label OEMDRV)"}[seed.kind]
        found.append(Cdrom(seed.pool, seed.name, next(targets), None, what, seed.at))
    return found


@attrs.frozen
class GoldenVolume:
    """The OS volume of a VM installed from a golden image: moat-libvirt-apply makes it a copy of
    `image` (NAME-KEY; the file NAME-KEY.qcow2) in its `format`, and recreates it for a new image."""

    pool: str
    volume: str
    domain: str
    image: str
    format: str


def golden_volumes(plan: Plan) -> list[GoldenVolume]:
    pools = {p.name: p for p in plan.blueprint.host.pools}
    return [GoldenVolume(rvm.volumes[0].pool, rvm.volumes[0].name, rvm.name, rvm.image.ref,
                         _format(pools[rvm.volumes[0].pool].type)) for rvm in plan.vms if rvm.image is not None]


def render(plan: Plan, bundle: dict[str, Output]) -> Iterator[Output]:
    bp = plan.blueprint
    pools = {p.name: p for p in bp.host.pools}
    added = added_pools(bp)  # the default seed pool, when the blueprint declares no ISOs pool
    for net in plan.networks:
        yield template(f"host/libvirt/networks/{net.network.name}.xml", "libvirt/network.xml.j2", net=net, uuid=stable_uuid("moat-network", bp.name, net.network.name))
    for pool in sorted((*bp.host.pools, *added), key=lambda p: p.name):
        yield template(f"host/libvirt/pools/{pool.name}.xml", "libvirt/pool.xml.j2", pool=pool, added=pool in added,
                       volume_group=bp.host.disk.volume_group, uuid=stable_uuid("moat-pool", bp.name, pool.name))
    for rvm in plan.vms:
        for vol in rvm.volumes:
            yield template(f"host/libvirt/volumes/{vol.pool}/{vol.name}.xml", "libvirt/volume.xml.j2",
                           volume=vol, format=_format(pools[vol.pool].type))
        yield template(f"host/libvirt/domains/{rvm.name}.xml", "libvirt/domain.xml.j2",
                       vm=rvm, formats={v.name: _format(pools[v.pool].type) for v in rvm.volumes},
                       cdroms=cdroms(rvm), installer=installer_of(rvm.vm) is not None,
                       accelerator=bp.host.accelerator)
    seeds = [s for s in (seed_of(rvm.vm) for rvm in plan.vms) if s is not None]
    yield template(APPLY, "libvirt/apply.sh.j2", mode=0o555, definitions=DEFINITIONS,
                   autostart=[rvm.vm for rvm in plan.vms if rvm.vm.autostart], seeds=seeds, seed_pool=seed_pool(bp),
                   golden=golden_volumes(plan), images_dir=HOST_IMAGES_DIR, state_dir=HOST_STATE_DIR)
    yield template(APPLY_UNIT, "libvirt/apply.service.j2", script=APPLY_INSTALLED)


def _format(pool_type: str) -> str:
    # logical volumes are raw block devices; files in a dir pool are sparse qcow2
    return "raw" if pool_type == "logical" else "qcow2"
