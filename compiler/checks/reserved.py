"""Rule reserved-range: addresses and subnets in IPv4 space that cannot work where they are used.

Unusable as a subnet, a host or VM address, a gateway, a DNS server or the VPS address:
"this network" 0.0.0.0/8 (0.0.0.0 means any/unspecified), loopback 127.0.0.0/8, link-local
169.254.0.0/16 (never routed; libvirt's NAT and the uplink need routing), multicast 224.0.0.0/4,
and the reserved 240.0.0.0/4 with the limited broadcast 255.255.255.255. As the source of a
firewall opening (`from`), a network entirely inside loopback, multicast or 240.0.0.0/4 can never
match a packet from outside.

Deliberately legal: the documentation ranges (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24; the
examples use them for public addresses, and to the kernel they are ordinary unicast), private
ranges, shared address space 100.64.0.0/10 (carrier-grade NAT uplinks) and the benchmarking
range 198.18.0.0/15. Addresses inside a blueprint subnet (VMs, DHCP, gateways, tunnel clients)
are judged through their subnet here, and by addressing's rules against it.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network
from typing import Iterator

from ..diagnostics import Diagnostic, Path
from . import Context

RESERVED = (
    (IPv4Network("0.0.0.0/8"), "'this network' range"),
    (IPv4Network("127.0.0.0/8"), "loopback range"),
    (IPv4Network("169.254.0.0/16"), "link-local range"),
    (IPv4Network("224.0.0.0/4"), "multicast range"),
    (IPv4Network("240.0.0.0/4"), "reserved range (with the broadcast address 255.255.255.255)"),
)
# a firewall source inside one of these never matches a packet from the outside
NEVER_A_SOURCE = {IPv4Network("127.0.0.0/8"), IPv4Network("224.0.0.0/4"), IPv4Network("240.0.0.0/4")}


def reserved_block(value: IPv4Address | IPv4Network) -> tuple[IPv4Network, str] | None:
    net = IPv4Network(value) if isinstance(value, IPv4Address) else value
    return next(((block, label) for block, label in RESERVED if net.overlaps(block)), None)


def _check(what: str, value: IPv4Address | IPv4Network, path: Path) -> Iterator[Diagnostic]:
    found = reserved_block(value)
    if found:
        block, label = found
        yield Diagnostic("reserved-range", f"{what} {value} is in the {label} {block}, which cannot work here",
                         path, hint="use a private range (10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16) or a public one")


def check(ctx: Context) -> Iterator[Diagnostic]:
    bp = ctx.bp
    uplink = bp.host.uplink
    yield from _check("the uplink network", uplink.address.network, uplink.at + ("address",))
    if uplink.gateway not in uplink.address.network:  # inside it, the uplink network's finding covers it
        yield from _check("the uplink gateway", uplink.gateway, uplink.at + ("gateway",))
    for i, server in enumerate(uplink.dns):
        yield from _check("DNS server", server, uplink.at + ("dns", i))
    for net in bp.networks:
        if net.subnet is not None:
            yield from _check(f"the subnet of network '{net.name}'", net.subnet, net.at + ("subnet",))
    for opening in bp.firewall.allow:
        source = opening.source
        if source is not None and any(source.subnet_of(block) for block in NEVER_A_SOURCE):
            yield Diagnostic("reserved-range", f"no packet from outside comes from {source}: the opening of "
                             f"{opening.port}/{opening.proto} would never match", opening.at + ("from",),
                             hint="name the network the clients really come from, or leave from out (anywhere)")
    if bp.vps:
        yield from _check("the VPS address", bp.vps.address, bp.vps.at + ("address",))
        yield from _check("the tunnel subnet", bp.vps.openvpn.subnet, bp.vps.openvpn.at + ("subnet",))
