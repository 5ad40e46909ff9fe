"""Rule site-unforwarded: every site this host serves through the VPS has a tcp forward to a VM.

The VPS's HAProxy sends a site's requests to `<vps.client's tunnel address>:<site.port>`; on this
host they arrive on the tunnel interface and are DNATed by the forward with proto tcp and
port == site.port (the same DNAT as on the uplink). A site without such a forward would reach
nothing, so it is an error. `served_sites` and `site_forward` are also what the renderers use
to decide which forwards the tunnel carries (compiler/derive.py, ResolvedForward.ingress).
"""

from __future__ import annotations

from typing import Iterator

from ..diagnostics import Diagnostic
from ..model import Blueprint, Forward, Site
from . import Context


def served_sites(bp: Blueprint) -> tuple[Site, ...]:
    """The VPS sites served by the host of this blueprint (site.client == vps.client)."""
    if bp.vps is None:
        return ()
    return tuple(s for s in bp.vps.sites if s.client == bp.vps.client)


def site_forward(bp: Blueprint, site: Site) -> Forward | None:
    """The forward that carries a site's requests into a VM: proto tcp, port == site.port."""
    return next((f for f in bp.forwards if f.proto == "tcp" and f.port == site.port), None)


def check(ctx: Context) -> Iterator[Diagnostic]:
    bp = ctx.bp
    if bp.vps is None or bp.vps.client not in {c.name for c in bp.vps.openvpn.clients}:
        return  # no tunnel, or an unknown vps.client (unknown-reference says so)
    for site in served_sites(bp):
        if site_forward(bp, site) is not None:
            continue
        # at the site's port when it is written down, else at its client (the port is the default)
        written = ctx.source is not None and site.at + ("port",) in ctx.source.value_positions
        path = site.at + (("port",) if written else ("client",))
        vms = sorted(v.name for v in bp.vms)
        example = vms[0] if vms else "VM"
        yield Diagnostic(
            "site-unforwarded",
            f"site '{site.host}' is served by this host ('{site.client}', vps.client) on port {site.port}/tcp, "
            f"but no forward with port {site.port} and proto tcp takes its requests to a VM",
            path,
            hint=f"add a forward such as {{ port: {site.port}, proto: tcp, to: {example} }} (the VM serving "
                 f"{site.host}), or serve the site from another client")
