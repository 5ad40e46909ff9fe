"""The topology picture of the bundle: `topology.json` (what it shows) and `topology.svg` (drawn from it).

`topology.json` is the deployment at a glance, resolved: the host with its uplink and the ports
open on it from the Internet (sshd, the initramfs's LUKS unlock sshd, firewall.allow, and the
public side of every forward), the networks, the VMs with their address on each network and how
each is installed, the traffic mirror and the VM(s) listening on its network (the IDS), the
forwards (public port/proto -> VM address:port, and the interfaces they arrive on), and the VPS
when there is one: its own ports, its sites, and the OpenVPN tunnel to each home.

`topology.svg` is drawn from that JSON alone by compiler/render/_topology_svg.py (plain Python,
no layout engine), so the picture never shows what the JSON does not say. Both are sorted and
hold no time: the same blueprint gives the same bytes.

Checks: xmllint --noout (well-formed XML) and rsvg-convert (librsvg, what GNOME and most
converters render SVG with) drawing it to a PNG.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

from ..derive import Plan
from ..verify import Validator
from . import Output
from ._topology_svg import svg

TOOLS = Path(__file__).resolve().parent.parent / "verify_tools"
JSON = "topology.json"
SVG = "topology.svg"

# topology.json is not checked by a tool: json.dumps of plain data (as host/images.json), and the
# SVG drawn from it is
VALIDATORS = (
    Validator(SVG, ("xmllint", "--noout", "{file}"), "libxml2-utils"),
    Validator(SVG, (str(TOOLS / "topology-svg.sh"), "{file}"), "librsvg2-bin", needs="rsvg-convert"),
)

# the VPS's own ports (compiler/render/templates/vps/moat.nft.j2)
VPS_HTTPS, VPS_HTTP = 443, 80


def _port(port: int, proto: str, why: str, source: Any = None) -> dict:
    return {"port": port, "proto": proto, "why": why, "from": str(source) if source is not None else None}


def _key(p: dict) -> tuple:
    return (p["proto"], p["port"])


def topology(plan: Plan) -> dict:
    """The picture's source: plain data, lists sorted, no value that changes between builds."""
    bp = plan.blueprint
    host = bp.host
    ports = [_port(o.port, o.proto, o.why, o.source) for o in plan.openings]
    enc = host.disk.encryption
    if enc is not None and enc.unlock_port != host.sshd.port:
        ports.append(_port(enc.unlock_port, "tcp", "LUKS unlock (initramfs)"))
    mirror = None
    if plan.mirror is not None and bp.mirror is not None:
        listeners = sorted(rv.name for rv in plan.vms if any(n.network.name == bp.mirror.network for n in rv.nics))
        mirror = {"interface": plan.mirror.interface, "bridge": plan.mirror.bridge, "network": bp.mirror.network,
                  "listeners": listeners}
    return {
        "name": bp.name,
        "description": bp.description,
        "host": {
            "name": host.name,
            "domain": host.domain,
            "os": host.os,
            "uplink": {"interface": host.uplink.interface, "address": str(host.uplink.address),
                       "gateway": str(host.uplink.gateway)},
            "public_ports": sorted(ports, key=_key),
        },
        "networks": [{"name": n.network.name, "mode": n.network.mode, "bridge": n.network.bridge,
                      "subnet": str(n.subnet) if n.subnet else None,
                      "gateway": str(n.gateway) if n.gateway else None} for n in plan.networks],
        "vms": [{"name": rv.name, "description": rv.vm.description,
                 "install": _install(rv.vm.install),
                 "nics": sorted(({"network": n.network.name, "address": str(n.address) if n.address else None,
                                  "mac": n.mac} for n in rv.nics), key=lambda n: n["network"])}
                for rv in plan.vms],
        "mirror": mirror,
        "forwards": [{"port": f.forward.port, "proto": f.forward.proto, "to": f.forward.to,
                      "address": str(f.address), "to_port": f.to_port,
                      "ingress": [{"interface": i.interface, "address": str(i.address),
                                   "sites": [s.host for s in i.sites]} for i in f.ingress]}
                     for f in plan.forwards],
        "vps": _vps(plan),
    }


def _install(install: Any) -> dict:
    what = {"image": install.image, "kickstart": install.os, "iso": install.iso}[install.method]
    return {"method": install.method, "from": what}


def _vps(plan: Plan) -> dict | None:
    vps = plan.blueprint.vps
    if vps is None:
        return None
    ovpn = vps.openvpn
    forwards = {(f.forward.proto, f.forward.port): f for f in plan.forwards}
    sites = []
    for s in sorted(vps.sites, key=lambda s: (s.host.lower(), s.client)):
        here = s.client == vps.client
        fwd = forwards.get(("tcp", s.port)) if here else None
        sites.append({"host": s.host, "client": s.client, "port": s.port, "this_host": here,
                      "to": {"vm": fwd.forward.to, "address": str(fwd.address), "port": fwd.to_port} if fwd else None})
    return {
        "name": vps.name,
        "address": str(vps.address),
        "public_ports": sorted([_port(VPS_HTTPS, "tcp", "HAProxy: the sites"),
                                _port(VPS_HTTP, "tcp", "HAProxy: redirect to https, ACME"),
                                _port(ovpn.port, ovpn.proto, "OpenVPN"),
                                _port(vps.sshd.port, "tcp", "sshd")], key=_key),
        "openvpn": {"port": ovpn.port, "proto": ovpn.proto, "subnet": str(ovpn.subnet)},
        "sites": sites,
        "tunnels": [{"client": c.name, "address": str(c.address), "this_host": c.name == vps.client,
                     "interface": plan.tunnel.interface if c.name == vps.client and plan.tunnel else None}
                    for c in sorted(ovpn.clients, key=lambda c: c.name)],
    }


def render(plan: Plan, bundle: dict[str, Output]) -> Iterator[Output]:
    data = topology(plan)
    yield Output(JSON, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())
    yield Output(SVG, svg(data).encode())
