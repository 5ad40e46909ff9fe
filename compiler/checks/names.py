"""Rule duplicate-name: names that identify things must be unique in their scope."""

from __future__ import annotations

from typing import Iterator

from ..diagnostics import Diagnostic
from ..model import Blueprint, Pool
from . import Context, first_claims

HINT = "names identify things in generated configs; give each its own"


def storage_of(bp: Blueprint, pool: Pool) -> str:
    """Where a pool keeps its volumes: the host's volume group (every logical pool), or a directory."""
    if pool.type == "logical":
        return f"volume group {bp.host.disk.volume_group}"
    return f"directory {(pool.path or '').rstrip('/') or '/'}"


def check(ctx: Context) -> Iterator[Diagnostic]:
    bp = ctx.bp
    scopes = {
        "user": [(u.name, f"user '{u.name}'", u.at + ("name",)) for u in bp.users],
        "network": [(n.name, f"network '{n.name}'", n.at + ("name",)) for n in bp.networks],
        "bridge": [(n.bridge, f"network '{n.name}'", n.at + ("bridge",)) for n in bp.networks],
        # VM names share a namespace with the host: both are agents, domains and host names
        "VM": [("host", "the host", bp.host.at)]
        + [(v.name, f"VM '{v.name}'", v.at + ("name",)) for v in bp.vms],
        "pool": [(p.name, f"pool '{p.name}'", p.at + ("name",)) for p in bp.host.pools],
        "image": [(i.name, f"image '{i.name}'", i.at + ("name",)) for i in bp.images],
    }
    # volumes are named <vm>-os and <vm>-<disk>: VM 'a-b' and VM 'a' with disk 'b-os' would clash, in one
    # pool or in two pools on the same storage (every logical pool is the one volume group)
    unique = list({vm.name: vm for vm in reversed(bp.vms)}.values())  # a repeated VM name is reported once, below
    storage = {p.name: storage_of(bp, p) for p in bp.host.pools}
    volumes = [((storage.get(vm.os_disk.pool, vm.os_disk.pool), f"{vm.name}-os"), f"the OS disk of VM '{vm.name}'",
                vm.os_disk.at) for vm in unique]
    volumes += [((storage.get(d.pool, d.pool), f"{vm.name}-{d.name}"), f"disk '{d.name}' of VM '{vm.name}'",
                 d.at + ("name",)) for vm in unique for d in vm.data_disks]
    yield from first_claims(ctx, volumes, "duplicate-name", "volume", "rename the VM or the disk")
    for scope, items in scopes.items():
        yield from first_claims(ctx, items, "duplicate-name", f"{scope} name", HINT)
    for vm in bp.vms:
        yield from first_claims(ctx, [(d.name, f"disk '{d.name}'", d.at + ("name",)) for d in vm.data_disks],
                                "duplicate-name", f"data disk name of VM '{vm.name}'", HINT)
        yield from first_claims(ctx, [(n.network, f"NIC {i + 1}", n.at + ("network",)) for i, n in enumerate(vm.nics)],
                                "duplicate-name", f"network of VM '{vm.name}'",
                                "a VM has at most one NIC per network")
    if bp.vps:
        yield from first_claims(ctx, [(c.name, f"client '{c.name}'", c.at + ("name",)) for c in bp.vps.openvpn.clients],
                                "duplicate-name", "OpenVPN client name", HINT)
        yield from first_claims(ctx, [(s.host.lower().rstrip("."), f"site '{s.host}'", s.at + ("host",))
                                     for s in bp.vps.sites],
                                "duplicate-name", "site host name", "each host name is routed to one backend")
