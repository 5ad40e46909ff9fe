"""Rules for addresses: ip-outside-subnet, ip-reserved, ip-duplicate, ip-in-dhcp-range, dhcp-range,
subnet-overlap, address-required, address-not-allowed, mac-duplicate, mac-multicast."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network
from typing import Iterator

from ..diagnostics import Diagnostic, Path
from ..model import DhcpRange
from . import Context, first_claims


def gateway_of(subnet: IPv4Network, gateway: IPv4Address | None) -> IPv4Address:
    """The host's address on a network: given, or the first address of the subnet."""
    return gateway if gateway is not None else subnet.network_address + 1


def _in_subnet(ctx: Context, address: IPv4Address, subnet: IPv4Network, subnet_path: Path,
               gateway: IPv4Address | None, what: str, path: Path) -> Iterator[Diagnostic]:
    if address not in subnet:
        yield Diagnostic("ip-outside-subnet", f"{what} {address} is outside {subnet} ({ctx.line(subnet_path)})", path,
                         hint=f"pick an address between {subnet.network_address + 1} and {subnet.broadcast_address - 1}")
    elif address == subnet.network_address or address == subnet.broadcast_address:
        kind = "network" if address == subnet.network_address else "broadcast"
        yield Diagnostic("ip-reserved", f"{what} {address} is the {kind} address of {subnet}", path,
                         hint="usable host addresses exclude the first and last of the subnet")
    elif gateway is not None and address == gateway:
        yield Diagnostic("ip-reserved", f"{what} {address} is the host's (gateway) address on {subnet}", path,
                         hint="the gateway is the host; give the VM another address")


def _dhcp(ctx: Context, dhcp: DhcpRange, subnet: IPv4Network, subnet_path: Path,
          gateway: IPv4Address) -> Iterator[Diagnostic]:
    ok = True
    for end in ("start", "end"):
        bad = list(_in_subnet(ctx, getattr(dhcp, end), subnet, subnet_path, gateway, f"DHCP {end}", dhcp.at + (end,)))
        ok = ok and not bad
        yield from bad
    if ok and dhcp.start > dhcp.end:
        yield Diagnostic("dhcp-range", f"DHCP range starts at {dhcp.start}, after its end {dhcp.end}",
                         dhcp.at + ("start",), hint="swap start and end")
    elif ok and dhcp.start <= gateway <= dhcp.end:
        yield Diagnostic("dhcp-range", f"DHCP range {dhcp.start}-{dhcp.end} contains the gateway {gateway}",
                         dhcp.at, hint="start the range after the gateway address")


def _overlaps(ctx: Context, nets: list[tuple[IPv4Network, str, Path]]) -> Iterator[Diagnostic]:
    """Sweep over subnets sorted by start: each one is compared with the widest-reaching one before it."""
    widest: tuple[IPv4Network, str, Path] | None = None
    for net, label, path in sorted(nets, key=lambda n: (n[0].network_address, n[0].prefixlen)):
        if widest and net.network_address <= widest[0].broadcast_address:
            # report at the one written later, naming the other
            (here, here_label, here_path), (there, there_label, there_path) = sorted(
                [(net, label, path), widest], key=lambda n: ctx.order(n[2]), reverse=True)
            yield Diagnostic("subnet-overlap", f"{here_label} {here} overlaps {there_label} {there} ({ctx.line(there_path)})",
                             here_path, hint="every network (NAT, VPN tunnel, uplink) needs its own address range")
        if widest is None or net.broadcast_address > widest[0].broadcast_address:
            widest = (net, label, path)


def _too_small(subnet: IPv4Network, what: str, path: Path) -> Iterator[Diagnostic]:
    """A network needs the host's address and at least one more besides network and broadcast."""
    if subnet.prefixlen > 30:
        yield Diagnostic("subnet-too-small", f"{what} {subnet} has no room for the host and a machine",
                         path, hint="use a /30 or larger, e.g. a /24")


def check(ctx: Context) -> Iterator[Diagnostic]:
    bp = ctx.bp
    networks = {n.name: n for n in bp.networks}
    subnets: list[tuple[IPv4Network, str, Path]] = []
    uplink = bp.host.uplink
    subnets.append((uplink.address.network, "host uplink network", uplink.at + ("address",)))
    if uplink.gateway not in uplink.address.network:
        yield Diagnostic("ip-outside-subnet", f"gateway {uplink.gateway} is outside the uplink network "
                         f"{uplink.address.network}", uplink.at + ("gateway",),
                         hint="the default gateway must be reachable on the uplink")

    claims: list[tuple] = []
    for net in bp.networks:
        if net.mode != "nat" or net.subnet is None:
            continue
        subnets.append((net.subnet, f"network '{net.name}'", net.at + ("subnet",)))
        small = list(_too_small(net.subnet, f"network '{net.name}'", net.at + ("subnet",)))
        if small:
            yield from small
            continue
        gateway = gateway_of(net.subnet, None)
        if net.gateway is not None:
            yield from _in_subnet(ctx, net.gateway, net.subnet, net.at + ("subnet",), None, "gateway",
                                  net.at + ("gateway",))
            gateway = net.gateway
        if net.dhcp:
            yield from _dhcp(ctx, net.dhcp, net.subnet, net.at + ("subnet",), gateway)

    for vm in bp.vms:
        for nic in vm.nics:
            net = networks.get(nic.network)
            if net is None:
                continue  # unknown-reference reports it
            what = f"address of VM '{vm.name}'"
            if net.mode == "mirror":
                if nic.address is not None:
                    yield Diagnostic("address-not-allowed", f"NIC on mirror network '{net.name}' cannot have an address",
                                     nic.at + ("address",), hint="the mirror bridge only carries copies; remove the address")
                continue
            if nic.address is None:
                yield Diagnostic("address-required", f"VM '{vm.name}' has no static address on nat network '{net.name}'",
                                 nic.at, hint=f"add address: with a free address in {net.subnet}")
                continue
            assert net.subnet is not None
            if net.subnet.prefixlen > 30:
                continue  # subnet-too-small reports the network
            gateway = gateway_of(net.subnet, net.gateway)
            bad = list(_in_subnet(ctx, nic.address, net.subnet, net.at + ("subnet",), gateway, what, nic.at + ("address",)))
            yield from bad
            if not bad and net.dhcp and net.dhcp.start <= nic.address <= net.dhcp.end:
                yield Diagnostic("ip-in-dhcp-range", f"{what} {nic.address} lies in the DHCP range "
                                 f"{net.dhcp.start}-{net.dhcp.end} ({ctx.line(net.dhcp.at)})", nic.at + ("address",),
                                 hint="static leases must be outside the dynamic range, or two machines may get it")
            claims.append(((net.name, nic.address), f"VM '{vm.name}'", nic.at + ("address",)))

    if bp.vps:
        vpn = bp.vps.openvpn
        subnets.append((vpn.subnet, "VPN tunnel", vpn.at + ("subnet",)))
        small = list(_too_small(vpn.subnet, "VPN tunnel", vpn.at + ("subnet",)))
        yield from small
        server = gateway_of(vpn.subnet, None) if not small else None
        for client in vpn.clients if not small else ():
            yield from _in_subnet(ctx, client.address, vpn.subnet, vpn.at + ("subnet",), server,
                                  f"tunnel address of client '{client.name}'", client.at + ("address",))
            claims.append((("vpn", client.address), f"client '{client.name}'", client.at + ("address",)))

    yield from first_claims(ctx, claims, "ip-duplicate", "address", "each machine needs its own address")
    yield from _overlaps(ctx, subnets)

    macs = []
    for vm in bp.vms:
        for nic in vm.nics:
            if nic.mac is None:
                continue
            if int(nic.mac[:2], 16) & 1:
                yield Diagnostic("mac-multicast", f"MAC {nic.mac} of VM '{vm.name}' is a multicast address",
                                 nic.at + ("mac",), hint="the first octet must be even; libvirt's prefix is 52:54:00")
            macs.append((nic.mac, f"VM '{vm.name}'", nic.at + ("mac",)))
    yield from first_claims(ctx, macs, "mac-duplicate", "MAC", "leave mac out to derive a unique one")
