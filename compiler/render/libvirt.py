"""libvirt definitions: networks (NAT with static leases, mirror bridge), pools, volumes, domains."""

from __future__ import annotations

from typing import Iterator

from ..derive import Plan, stable_uuid
from . import template


def render(plan: Plan) -> Iterator[tuple[str, bytes]]:
    bp = plan.blueprint
    pools = {p.name: p for p in bp.host.pools}
    for net in plan.networks:
        yield (f"host/libvirt/networks/{net.network.name}.xml",
               template("network.xml.j2", net=net, uuid=stable_uuid("moat-network", bp.name, net.network.name)))
    for pool in sorted(bp.host.pools, key=lambda p: p.name):
        yield (f"host/libvirt/pools/{pool.name}.xml",
               template("pool.xml.j2", pool=pool, volume_group=bp.host.disk.volume_group,
                        uuid=stable_uuid("moat-pool", bp.name, pool.name)))
    for rvm in plan.vms:
        for vol in rvm.volumes:
            yield (f"host/libvirt/volumes/{vol.pool}/{vol.name}.xml",
                   template("volume.xml.j2", volume=vol, format=_format(pools[vol.pool].type)))
        yield (f"host/libvirt/domains/{rvm.name}.xml",
               template("domain.xml.j2", vm=rvm, formats={v.name: _format(pools[v.pool].type) for v in rvm.volumes}))


def _format(pool_type: str) -> str:
    # logical volumes are raw block devices; files in a dir pool are sparse qcow2
    return "raw" if pool_type == "logical" else "qcow2"
