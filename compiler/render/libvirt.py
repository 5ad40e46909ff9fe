"""libvirt definitions: networks (NAT with static leases, mirror bridge), pools, volumes, domains."""

from __future__ import annotations

from typing import Iterator

from ..derive import Plan, stable_uuid
from ..verify import Validator
from . import Output, template

VALIDATORS = (
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


def _format(pool_type: str) -> str:
    # logical volumes are raw block devices; files in a dir pool are sparse qcow2
    return "raw" if pool_type == "logical" else "qcow2"
