"""Rule port-collision: one public port/protocol has one owner, on the host (its initramfs included)
and on the VPS."""

from __future__ import annotations

from typing import Iterator

from ..diagnostics import Diagnostic
from . import Context, first_claims


def host_claims(ctx: Context) -> list[tuple]:
    bp = ctx.bp
    claims = [((bp.host.sshd.port, "tcp"), "the host's sshd", bp.host.sshd.at + ("port",))]
    enc = bp.host.disk.encryption
    if enc is not None and enc.unlock_port != bp.host.sshd.port:
        # the initramfs's sshd owns the port while the disk waits to be unlocked; the same port as
        # the host's sshd is fine (one SSH service after the other, the same users)
        claims.append(((enc.unlock_port, "tcp"), "the initramfs's unlock sshd", enc.at + ("unlock_port",)))
    for fwd in bp.forwards:
        claims.append(((fwd.port, fwd.proto), f"the forward to '{fwd.to}'", fwd.at + ("port",)))
    for opening in bp.firewall.allow:
        claims.append(((opening.port, opening.proto), "a firewall opening", opening.at + ("port",)))
    return claims


def vps_claims(ctx: Context) -> list[tuple]:
    vps = ctx.bp.vps
    if vps is None:
        return []
    return [
        ((80, "tcp"), "HAProxy (HTTP)", vps.at + ("sites",)),
        ((443, "tcp"), "HAProxy (HTTPS)", vps.at + ("sites",)),
        ((vps.sshd.port, "tcp"), "the VPS's sshd", vps.sshd.at + ("port",)),
        ((vps.openvpn.port, vps.openvpn.proto), "OpenVPN", vps.openvpn.at + ("port",)),
        ((vps.acme.port, "tcp"), "certbot's challenge listener", vps.acme.at + ("port",)),
    ]


def check(ctx: Context) -> Iterator[Diagnostic]:
    yield from first_claims(ctx, host_claims(ctx), "port-collision", "host port",
                            "a public port reaches one service: pick another port for one of them")
    yield from first_claims(ctx, vps_claims(ctx), "port-collision", "VPS port",
                            "HAProxy owns 80 and 443 on the VPS; move the other service to a free port")
