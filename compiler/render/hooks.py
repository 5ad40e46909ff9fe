"""libvirt hooks: the qemu hook that opens the blueprint's port forwards while their VM runs.

One self-contained POSIX sh script, `host/libvirt/hooks/qemu` (installed as
/etc/libvirt/hooks/qemu). The forwards are rendered into it as a `case` on the VM name, so
there is no configuration file and nothing to clone: at `<vm> start begin` (and `reconnect
begin` after a libvirtd restart) it writes the VM's DNAT chains into its own nftables table
`ip moat_forwards`, at `<vm> stopped end` / `release end` it deletes them. See the header of
the template for why those operations, and for the accept it also puts in libvirt's filter.

Where a forward's packets arrive (`forward_ingress`, also read by the firewall family): on the
uplink at its address, always; and, with a `vps`, on the OpenVPN tunnel `tun-moat` at this
host's tunnel address (vps.client) for the tcp forwards whose port is that of a site this host
serves (vps.sites[] with client == vps.client): HAProxy on the VPS sends those requests there.
Nothing else arriving on the tunnel is DNATed.
"""

from __future__ import annotations

from ipaddress import IPv4Address
from pathlib import Path as FsPath
from typing import Iterator

import attrs

from ..checks.tunnel import served_sites, site_forward
from ..derive import Plan, ResolvedForward, ResolvedVm
from ..diagnostics import Path
from ..model import Forward, Network, Nic, Site
from ..verify import Validator
from . import Output, template
from .vps import TUN_DEV

VERIFY_TOOLS = FsPath(__file__).resolve().parent.parent / "verify_tools"

# nftables table of the hook; the firewall family's forward chain accepts what it DNATs
TABLE = "moat_forwards"

VALIDATORS = (
    Validator("host/libvirt/hooks/qemu", ("shellcheck", "--severity=warning", "--shell=sh", "{file}"), "shellcheck"),
    # runs the hook in dry-run mode for every VM (start and stop) in a fresh network namespace:
    # each nft batch it would apply is checked by the kernel with `nft -c`
    Validator("host/libvirt/hooks/qemu", (str(VERIFY_TOOLS / "hooks-qemu.sh"), "{file}"), "nftables", needs="nft"),
)


@attrs.frozen
class Ingress:
    """Where a forward's packets arrive: an interface of the host and the host's address on it
    (the packets' destination). `at` is the blueprint node of that address (host.uplink, or this
    host's entry in vps.openvpn.clients), so provenance maps `interface` and `address` there;
    `sites` are the VPS sites that route through it (none for the uplink)."""

    interface: str
    address: IPv4Address
    tunnel: bool
    at: Path
    sites: tuple[Site, ...] = ()


@attrs.frozen
class Routed:
    """A forward with every ingress its packets are DNATed on: the uplink first, then the tunnel."""

    resolved: ResolvedForward
    ingress: tuple[Ingress, ...]

    @property
    def forward(self) -> Forward:
        return self.resolved.forward


def tunnel_ingress(plan: Plan) -> Ingress | None:
    """The OpenVPN tunnel to the VPS as an ingress, without sites; None without a vps."""
    vps = plan.blueprint.vps
    if vps is None:
        return None
    me = next(c for c in vps.openvpn.clients if c.name == vps.client)
    return Ingress(TUN_DEV, me.address, True, me.at)


def forward_ingress(plan: Plan) -> dict[tuple[str, int], tuple[Ingress, ...]]:
    """(proto, port) of every forward -> where its packets arrive. The one place that decides it:
    the hook DNATs on these, the firewall accepts what was DNATed on these."""
    bp = plan.blueprint
    uplink = Ingress(bp.host.uplink.interface, bp.host.uplink.address.ip, False, bp.host.uplink.at)
    tunnel = tunnel_ingress(plan)
    sites: dict[tuple[str, int], list[Site]] = {}
    for site in served_sites(bp):
        fwd = site_forward(bp, site)
        if fwd is not None:  # a site without one is the error site-unforwarded
            sites.setdefault((fwd.proto, fwd.port), []).append(site)
    out = {}
    for f in plan.forwards:
        key = (f.forward.proto, f.forward.port)
        ingress = [uplink]
        if tunnel is not None and key in sites:
            ingress.append(attrs.evolve(tunnel, sites=tuple(sorted(sites[key], key=lambda s: s.host))))
        out[key] = tuple(ingress)
    return out


@attrs.frozen
class VmForwards:
    """The forwards to one VM, with the NIC (and its network) that receives them."""

    vm: ResolvedVm
    nic: Nic          # the VM's NIC on its first nat network (blueprint node: its address)
    network: Network  # that NIC's network: the forwarded packets leave through its bridge
    forwards: tuple[Routed, ...]


def forwards_by_vm(plan: Plan) -> list[VmForwards]:
    """Forwards grouped by target VM, VMs by name, each VM's forwards by (proto, port)."""
    ingress = forward_ingress(plan)
    grouped = []
    for rvm in plan.vms:
        mine = plan.forwards_to(rvm.name)
        if not mine:
            continue
        resolved = next(n for n in rvm.nics if n.address == mine[0].address)
        nic = next(n for n in rvm.vm.nics if n.network == resolved.network.name)
        routed = tuple(Routed(f, ingress[(f.forward.proto, f.forward.port)]) for f in mine)
        grouped.append(VmForwards(rvm, nic, resolved.network, routed))
    return grouped


def render(plan: Plan, bundle: dict[str, Output]) -> Iterator[Output]:
    # rendered even without forwards: stopping a VM still removes forwards an older bundle added
    yield template("host/libvirt/hooks/qemu", "hooks/qemu.sh.j2", mode=0o555, table=TABLE,
                   uplink=plan.blueprint.host.uplink, tunnel=tunnel_ingress(plan), vms=forwards_by_vm(plan))
