"""libvirt definitions: networks (NAT with static leases, mirror bridge), pools, volumes, domains."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from ..derive import Plan, stable_uuid
from ..verify import Validator
from . import Output, template

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
    Validator("host/libvirt/domains/*.xml", ("virt-xml-validate", "{file}", "domain"), "libvirt-clients"),
    Validator("host/libvirt/networks/*.xml", ("virt-xml-validate", "{file}", "network"), "libvirt-clients"),
    Validator("host/libvirt/pools/*.xml", ("virt-xml-validate", "{file}", "storagepool"), "libvirt-clients"),
    Validator("host/libvirt/volumes/*/*.xml", ("virt-xml-validate", "{file}", "storagevol"), "libvirt-clients"),
)


def render(plan: Plan, bundle: dict[str, Output]) -> Iterator[Output]:
    bp = plan.blueprint
    pools = {p.name: p for p in bp.host.pools}
    for net in plan.networks:
        yield template(f"host/libvirt/networks/{net.network.name}.xml", "libvirt/network.xml.j2", net=net, uuid=stable_uuid("moat-network", bp.name, net.network.name))
    for pool in sorted(bp.host.pools, key=lambda p: p.name):
        yield template(f"host/libvirt/pools/{pool.name}.xml", "libvirt/pool.xml.j2", pool=pool,
                       volume_group=bp.host.disk.volume_group, uuid=stable_uuid("moat-pool", bp.name, pool.name))
    for rvm in plan.vms:
        for vol in rvm.volumes:
            yield template(f"host/libvirt/volumes/{vol.pool}/{vol.name}.xml", "libvirt/volume.xml.j2",
                           volume=vol, format=_format(pools[vol.pool].type))
        yield template(f"host/libvirt/domains/{rvm.name}.xml", "libvirt/domain.xml.j2",
                       vm=rvm, formats={v.name: _format(pools[v.pool].type) for v in rvm.volumes})
    yield template(APPLY, "libvirt/apply.sh.j2", mode=0o555, definitions=DEFINITIONS,
                   autostart=[rvm.vm for rvm in plan.vms if rvm.vm.autostart])
    yield template(APPLY_UNIT, "libvirt/apply.service.j2", script=APPLY_INSTALLED)


def _format(pool_type: str) -> str:
    # logical volumes are raw block devices; files in a dir pool are sparse qcow2
    return "raw" if pool_type == "logical" else "qcow2"
