"""Host firewall: a firewalld zone for the uplink, and the same policy as one nftables table.

Both come from `plan.openings` (sshd, forwarded ports, firewall.allow) and `plan.forwards`.
Ports opened on the host itself are accepted on the uplink; forwarded ports are not opened
on the host at all: the libvirt qemu hook DNATs them to the VM (its own nftables table
`ip moat_forwards`, not defined here), so they are forwarded traffic, accepted only when
conntrack saw that DNAT (`ct status dnat`) on an interface the forward arrives on
(derive.ResolvedForward.ingress: the uplink, and the OpenVPN tunnel for this host's VPS sites).

With a `vps`, the tunnel interface (tun-moat) gets a firewalld zone of its own,
`moat-tunnel` (zones/moat-tunnel.xml): target DROP and no ports, so the host's own ports
(sshd, firewall.allow) are not reachable through it, as they would be if it fell into the
default zone `public`. firewalld accepts DNATed flows in its forward chain before any zone,
so the site requests the hook DNATs on the tunnel still reach their VM; everything else
from the tunnel, to the host or onwards, is dropped. The tunnel's own OpenVPN packets leave
and return on the uplink (outbound, and its replies are established): nothing to open.

Outbound (plan.egress, derive.egress_plans): the firewalld policy `moat-egress`
(policies/moat-egress.xml), from the host (HOST) to the uplink's zone and the tunnel's, target
DROP with one rich rule per allowed destination and a last one that logs (rate-limited) what it
drops; moat.nft's output chain says the same (both from templates/firewall/egress*.j2). The
host's own bridges are not filtered on the way out: the VMs filter their input. A VM installed
by kickstart (firewalld) gets the same policy, from HOST to ANY, as
vms/<vm>/firewalld/policies/moat-egress.xml; an image VM has it in its cloud-init nftables.conf;
an ISO-installed VM gets no firewall from moat.
"""

from __future__ import annotations

import re
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path as FsPath
from typing import Iterator

import attrs

from ..derive import EgressPlan, Ingress, Plan, ResolvedNetwork
from ..diagnostics import Path
from ..verify import Validator
from . import Output, template

VERIFY_TOOLS = FsPath(__file__).resolve().parent.parent / "verify_tools"

# firewalld zone of the OpenVPN tunnel to the VPS (at most 17 characters: firewalld's limit)
TUNNEL_ZONE = "moat-tunnel"
EGRESS_POLICY = "moat-egress"  # firewalld policy of outbound connections (also at most 17 characters)
# outbound ICMP a filtered machine still sends: errors (path MTU), ping, IPv6 neighbour/router discovery
EGRESS_ICMP = ("destination-unreachable", "packet-too-big", "time-exceeded", "parameter-problem", "echo-request",
               "neighbour-solicitation", "neighbour-advertisement", "router-solicitation")

VALIDATORS = (
    # --check-config on a system-config directory laid out in a temp dir (zones/*.xml + firewalld.conf)
    Validator("host/firewalld/zones/*.xml", (str(VERIFY_TOOLS / "firewall-firewalld.sh"), "{file}"), "firewalld",
              needs="firewall-offline-cmd", batch=True),
    Validator("host/firewalld/firewalld.conf", (str(VERIFY_TOOLS / "firewall-firewalld.sh"), "{file}"), "firewalld",
              needs="firewall-offline-cmd", batch=True, reads=("zones/*.xml", "policies/*.xml")),
    # a policy beside the zones it names (../zones/*.xml)
    Validator("host/firewalld/policies/*.xml", (str(VERIFY_TOOLS / "firewall-firewalld.sh"), "{file}"), "firewalld",
              needs="firewall-offline-cmd", batch=True, reads=("../zones/*.xml",)),
    Validator("vms/*/firewalld/policies/*.xml", (str(VERIFY_TOOLS / "firewall-firewalld.sh"), "{file}"), "firewalld",
              needs="firewall-offline-cmd", batch=True),
    # nft -c -f in a fresh network namespace (CAP_NET_ADMIN there, nothing of this machine's ruleset)
    Validator("host/nftables/*.nft", (str(VERIFY_TOOLS / "firewall-nft.sh"), "{file}"), "nftables", needs="nft"),
)


@attrs.frozen
class HostOpening:
    """A port open on the host itself (sshd or firewall.allow). `at` is the blueprint mapping it
    came from, so provenance maps `port`, `proto` and `source` back to that line."""

    port: int
    proto: str
    why: str
    source: IPv4Network | None
    at: Path


@attrs.frozen
class ForwardRule:
    """A public port DNATed by the qemu hook to a VM; accepted in the forward chain."""

    port: int
    proto: str
    why: str
    address: IPv4Address  # the VM's address on its first nat network
    to_port: int
    at: Path              # the forward's mapping in the blueprint
    ingress: tuple[Ingress, ...] = ()  # the interfaces it arrives on (uplink first)


def comment_safe(text: str) -> str:
    """A one-line comment for XML and nft: no '--' (ends an XML comment early)."""
    return re.sub("-(?=-)", "- ", " ".join(text.split()))


def openings(plan: Plan) -> tuple[list[HostOpening], list[ForwardRule]]:
    """Split plan.openings into ports of the host and forwarded ports, each with its blueprint origin."""
    bp = plan.blueprint
    allow = {(a.proto, a.port): a for a in bp.firewall.allow}
    forwards = {(f.forward.proto, f.forward.port): f for f in plan.forwards}
    host: list[HostOpening] = []
    forwarded: list[ForwardRule] = []
    for o in plan.openings:
        key = (o.proto, o.port)
        why = comment_safe(o.why)
        if key in forwards:
            f = forwards[key]
            forwarded.append(ForwardRule(o.port, o.proto, why, f.address, f.to_port, f.forward.at, f.ingress))
        elif key in allow:
            host.append(HostOpening(o.port, o.proto, why, o.source, allow[key].at))
        else:
            assert key == ("tcp", bp.host.sshd.port), f"opening {key} of unknown origin"
            host.append(HostOpening(o.port, o.proto, why, o.source, bp.host.sshd.at))
    return host, forwarded


def egress_policy(path: str, egress: EgressPlan, who: str, zones: tuple[str, ...]) -> Output:
    """The firewalld policy of a machine's outbound connections (XML comments made safe)."""
    assert all(r.interface is None for r in egress.rules), "firewalld policies take no per-interface rule"
    rules = [attrs.evolve(r, why=comment_safe(r.why)) for r in egress.rules]
    return template(path, "firewall/egress-policy.xml.j2", egress=egress, rules=rules, who=who, zones=zones,
                    policy=EGRESS_POLICY, icmp_types=EGRESS_ICMP)


def nat_networks(plan: Plan) -> list[ResolvedNetwork]:
    return [n for n in plan.networks if n.network.mode == "nat"]


def render(plan: Plan, bundle: dict[str, Output]) -> Iterator[Output]:
    bp = plan.blueprint
    host, forwarded = openings(plan)
    tunnel = plan.tunnel
    context = dict(host=bp.host, uplink=bp.host.uplink, openings=host, forwards=forwarded, tunnel=tunnel)
    yield template("host/firewalld/zones/public.xml", "firewall/public.xml.j2", **context)
    if tunnel is not None:
        yield template(f"host/firewalld/zones/{TUNNEL_ZONE}.xml", "firewall/tunnel.xml.j2", zone=TUNNEL_ZONE,
                       vps=bp.vps, **context)
    yield egress_policy(f"host/firewalld/policies/{EGRESS_POLICY}.xml", plan.egress_of("host"),
                        f"the host {bp.host.name}", ("public",) + ((TUNNEL_ZONE,) if tunnel is not None else ()))
    for rv in plan.vms:
        if rv.vm.install.method == "kickstart":  # firewalld, configured by its kickstart
            yield egress_policy(f"vms/{rv.name}/firewalld/policies/{EGRESS_POLICY}.xml", plan.egress_of(rv.name),
                                f"VM {rv.name}", ("ANY",))
    yield template("host/firewalld/firewalld.conf", "firewall/firewalld.conf.j2")
    yield template("host/nftables/moat.nft", "firewall/moat.nft.j2", networks=nat_networks(plan),
                   egress=plan.egress_of("host"), **context)
