"""Rule unknown-reference (and reference-kind): every name used must be declared, with the right kind."""

from __future__ import annotations

from typing import Collection, Iterator

from ..diagnostics import Diagnostic, Path
from . import Context


def _ref(name: str, known: Collection[str], what: str, path: Path, how: str | None = None) -> Iterator[Diagnostic]:
    """`how`: how to declare one, added to the hint when none is declared."""
    if name in known:  # a set or dict: the hint below is only computed for a miss
        return
    import difflib  # for a miss only: a valid blueprint's check does not import it

    close = difflib.get_close_matches(name, known, n=1)
    hint = f"did you mean '{close[0]}'?" if close else (
        f"declared {what}s: {', '.join(sorted(known))}" if known else f"no {what} is declared" + (f": {how}" if how else ""))
    yield Diagnostic("unknown-reference", f"unknown {what} '{name}'", path, hint=hint)


def _on_nat(vm, networks) -> bool:
    """True if the VM has a NIC on a nat network (or an unknown one, reported elsewhere)."""
    if any(n.network not in networks for n in vm.nics):
        return True
    return any(networks[n.network].mode == "nat" for n in vm.nics)


def check(ctx: Context) -> Iterator[Diagnostic]:
    bp = ctx.bp
    users = {u.name for u in bp.users}
    networks = {n.name: n for n in bp.networks}
    vms = {v.name: v for v in bp.vms}
    pools = {p.name for p in bp.host.pools}
    images = {i.name for i in bp.images}

    for owner in (bp.host, bp.vps):
        for i, name in enumerate((owner.users if owner else None) or ()):
            yield from _ref(name, users, "user", owner.at + ("users", i))  # type: ignore[union-attr]
    for vm in bp.vms:
        for i, name in enumerate(vm.users or ()):
            yield from _ref(name, users, "user", vm.at + ("users", i))
        for disk in (vm.os_disk, *vm.data_disks):
            yield from _ref(disk.pool, pools, "pool", disk.at + ("pool",))
        for nic in vm.nics:
            yield from _ref(nic.network, networks, "network", nic.at + ("network",))
        if vm.install.image is not None:
            yield from _ref(vm.install.image, images, "image", vm.install.at + ("image",),
                            "declare it in the top-level images (name, distribution, release)")
    for fwd in bp.forwards:
        yield from _ref(fwd.to, vms, "VM", fwd.at + ("to",))
        vm = vms.get(fwd.to)
        if vm and not _on_nat(vm, networks):
            yield Diagnostic("reference-kind", f"VM '{fwd.to}' has no NIC on a nat network to forward to",
                             fwd.at + ("to",), hint="forwards go to the VM's static address on its first nat network")
    if bp.mirror:
        net = networks.get(bp.mirror.network)
        yield from _ref(bp.mirror.network, networks, "network", bp.mirror.at + ("network",))
        if net and net.mode != "mirror":
            yield Diagnostic("reference-kind", f"network '{net.name}' is a {net.mode} network, not a mirror network",
                             bp.mirror.at + ("network",), hint="declare a network with mode: mirror and name it here")
    if bp.monitoring and bp.monitoring.wazuh:
        wazuh = bp.monitoring.wazuh
        yield from _ref(wazuh.manager, vms, "VM", wazuh.at + ("manager",))
        manager = vms.get(wazuh.manager)
        if manager and not _on_nat(manager, networks):
            yield Diagnostic("reference-kind", f"VM '{wazuh.manager}' has no NIC on a nat network for agents to reach",
                             wazuh.at + ("manager",), hint="agents report to the manager's address on its first nat network")
        for i, agent in enumerate(wazuh.agents or ()):
            yield from _ref(agent, {"host", *vms}, "agent location (host or VM)", wazuh.at + ("agents", i))
    if bp.vps:
        clients = {c.name for c in bp.vps.openvpn.clients}
        yield from _ref(bp.vps.client, clients, "OpenVPN client", bp.vps.at + ("client",))
        for site in bp.vps.sites:
            yield from _ref(site.client, clients, "OpenVPN client", site.at + ("client",))
