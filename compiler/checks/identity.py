"""Rule host-identity: names, interfaces and addresses the host and the VPS already are, reused by
a VM, a network, a site or the VPS.

One mechanism: `identities` collects every (kind, value) the machines own once, with where it was
written; `uses` collects what VMs, networks, sites and the VPS take; every use that equals an
identity (other than itself) is an error. Ports are the port-collision rule's (checks/ports.py,
which counts the initramfs's unlock sshd too); addresses inside a subnet are addressing's.
"""

from __future__ import annotations

from typing import Iterator, NamedTuple

from ..diagnostics import Diagnostic, Path
from . import Context

# The OpenVPN tunnel's interface, on the VPS and on the home host alike: a fixed name, so firewall
# rules can match it (and another OpenVPN instance on the machine keeps its own tunN)
TUN_DEV = "tun-moat"

HINTS = {
    "name": "the host, the VPS and every VM are host names (DNS, agents, prompts): give each its own",
    "interface": "libvirt creates the bridge as a new interface: pick a name the host does not have (virbr1, br2)",
    "fqdn": "the host's own name must resolve to the host: serve the site under another name",
}


class Item(NamedTuple):
    kind: str
    value: object
    owner: str
    path: Path


def identities(ctx: Context) -> list[Item]:
    bp = ctx.bp
    host, uplink = bp.host, bp.host.uplink
    found = [
        Item("name", host.name, "the host", host.at + ("name",)),
        Item("fqdn", f"{host.name}.{host.domain}".lower().rstrip("."), "the host's own name", host.at + ("domain",)),
        Item("interface", uplink.interface, "the host's uplink", uplink.at + ("interface",)),
        Item("interface", "lo", "the host's loopback interface", uplink.at + ("interface",)),
    ]
    if bp.vps:
        found.append(Item("name", bp.vps.name, "the VPS", bp.vps.at + ("name",)))
        found.append(Item("interface", TUN_DEV, "the host's OpenVPN tunnel to the VPS", bp.vps.at + ("openvpn",)))
    return found


def uses(ctx: Context) -> list[Item]:
    bp = ctx.bp
    found = [Item("name", vm.name, f"VM '{vm.name}'", vm.at + ("name",)) for vm in bp.vms]
    found += [Item("interface", n.bridge, f"the bridge of network '{n.name}'", n.at + ("bridge",)) for n in bp.networks]
    if bp.vps:
        found.append(Item("name", bp.vps.name, "the VPS", bp.vps.at + ("name",)))
        found += [Item("fqdn", s.host.lower().rstrip("."), f"site '{s.host}'", s.at + ("host",)) for s in bp.vps.sites]
    return found


def check(ctx: Context) -> Iterator[Diagnostic]:
    own: dict[tuple[str, object], list[Item]] = {}
    for item in identities(ctx):
        own.setdefault((item.kind, item.value), []).append(item)
    for use in uses(ctx):
        for ident in own.get((use.kind, use.value), ()):
            if ident.path == use.path:
                continue  # the VPS's name is an identity and a use: not a clash with itself
            yield Diagnostic("host-identity", f"{use.owner} takes {use.kind} '{use.value}', which is {ident.owner}'s "
                             f"({ctx.line(ident.path)})", use.path, hint=HINTS[use.kind])
            break
    bp = ctx.bp
    if bp.vps:
        for net in bp.networks:
            if net.subnet is not None and bp.vps.address in net.subnet:
                yield Diagnostic("host-identity", f"the VPS address {bp.vps.address} lies in network '{net.name}' "
                                 f"{net.subnet}: the host routes it to its VMs, not to the VPS", bp.vps.at + ("address",),
                                 hint="give the VPS's public address, or move the network to another subnet")
