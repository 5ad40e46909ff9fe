"""Rule self-reference: nothing is mirrored, routed, resolved or reported into itself.

- a mirror whose interface is the bridge receiving the copies copies every copy again (a storm);
- an uplink gateway equal to the uplink address routes the default route to the host itself;
- a DNS server that is the host (its uplink address, or its address on a NAT network, where
  libvirt's dnsmasq forwards to the host's own resolvers) asks itself;
- a VPS address inside the tunnel subnet would be reached through the tunnel to that VPS, and a
  VPS address equal to the host's uplink address makes the host its own front;
- a Wazuh manager listed among its agents would report to itself, and cannot: the wazuh-agent
  package conflicts with wazuh-manager (its spec: `Conflicts: ... wazuh-manager`).
"""

from __future__ import annotations

from typing import Iterator

from ..diagnostics import Diagnostic
from . import Context
from .addressing import gateway_of


def host_addresses(ctx: Context) -> dict:
    """The host's own addresses: uplink, and its address on each NAT network, with their node."""
    bp = ctx.bp
    own = {bp.host.uplink.address.ip: ("its uplink address", bp.host.uplink.at + ("address",))}
    for net in bp.networks:
        if net.mode == "nat" and net.subnet is not None and net.subnet.prefixlen <= 30:  # else subnet-too-small
            own.setdefault(gateway_of(net.subnet, net.gateway),
                           (f"its address on network '{net.name}'", net.at + ("gateway" if net.gateway else "subnet",)))
    return own


def check(ctx: Context) -> Iterator[Diagnostic]:
    bp = ctx.bp
    uplink = bp.host.uplink
    if bp.mirror and bp.mirror.interface:
        net = next((n for n in bp.networks if n.name == bp.mirror.network), None)
        if net is not None and net.mode == "mirror" and net.bridge == bp.mirror.interface:
            yield Diagnostic("self-reference", f"the mirror copies {net.bridge} onto {net.bridge}, the bridge of "
                             f"network '{net.name}' that receives the copies ({ctx.line(net.at + ('bridge',))})",
                             bp.mirror.at + ("interface",),
                             hint="mirror the uplink (leave interface out) or another interface into the mirror bridge")
    if uplink.gateway == uplink.address.ip:
        yield Diagnostic("self-reference", f"the uplink gateway {uplink.gateway} is the host's own uplink address",
                         uplink.at + ("gateway",), hint="the gateway is the router on the uplink network, not the host")
    own = host_addresses(ctx)
    for i, server in enumerate(uplink.dns):
        if server in own:
            what, where = own[server]
            yield Diagnostic("self-reference", f"DNS server {server} is the host itself ({what}, {ctx.line(where)})",
                             uplink.at + ("dns", i),
                             hint="the host runs no resolver of its own: name the router's or a public resolver")
    if bp.vps:
        vps = bp.vps
        if vps.address in vps.openvpn.subnet:
            yield Diagnostic("self-reference", f"the VPS address {vps.address} lies in the tunnel subnet "
                             f"{vps.openvpn.subnet}: the tunnel to the VPS would be routed through itself",
                             vps.at + ("address",), hint="use the VPS's public address and a private tunnel subnet")
        elif vps.address == uplink.address.ip:
            yield Diagnostic("self-reference", f"the VPS address {vps.address} is this host's own uplink address",
                             vps.at + ("address",), hint="the VPS is another machine: give its public address")
    if bp.monitoring and bp.monitoring.wazuh:
        wazuh = bp.monitoring.wazuh
        for i, agent in enumerate(wazuh.agents or ()):
            if agent == wazuh.manager:
                yield Diagnostic("self-reference", f"VM '{agent}' is the Wazuh manager and cannot be its own agent",
                                 wazuh.at + ("agents", i), hint="leave the manager out of agents: it monitors itself")
