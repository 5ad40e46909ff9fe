"""VPS front (setup B): the public VPS that runs only HAProxy and OpenVPN, and the home's VPN client.

Only when the blueprint has `vps`. Files for the VPS under `vps/`:
- `haproxy/haproxy.cfg`: TLS on :443 with one Let's Encrypt PEM per site (SNI picks), Mozilla
  "intermediate" settings (versions, ciphers, key-exchange groups), HSTS, routing by Host header
  to the site's home over the tunnel; unknown hosts get 404; :80 redirects to https except ACME
  http-01 challenges, which go to certbot's standalone server on 127.0.0.1. Logs carry the path
  only, never the query string (URLs can carry access tokens).
- `letsencrypt/cli.ini` and `letsencrypt/renewal-hooks/deploy/moat-haproxy`: certbot answers
  challenges behind HAProxy, and each renewal rebuilds the site's PEM and reloads HAProxy.
- `openvpn/server.conf` and `openvpn/ccd/<client>`: each home has its own certificate and a
  fixed address (ccd-exclusive: no certificate without a ccd file connects); no client-to-client.
- `nftables/moat.nft`: 443, 80, OpenVPN and sshd in; tunnel clients cannot reach each other; out
  only the VPS's egress plan (derive.egress_plans: DNS, NTP, 80/443 for ACME and the mirrors,
  HAProxy to each site's home through the tunnel, vps.egress.allow), the rest logged and dropped.
And for the home host of this blueprint (vps.client): `host/openvpn/client.conf`.
Private keys are never in the bundle: configs name key files by path only.
"""

from __future__ import annotations

from pathlib import Path as FsPath
from typing import Iterator

import attrs

from ..derive import TUN_DEV, Plan
from ..diagnostics import Path
from ..model import Site, VpnClient
from ..verify import Validator
from . import Output, template

TOOLS = FsPath(__file__).resolve().parent.parent / "verify_tools"

VALIDATORS = (
    # haproxy -c on a copy whose /etc/haproxy/certs/ points at throwaway self-signed PEMs
    Validator("vps/haproxy/haproxy.cfg", (str(TOOLS / "vps-haproxy.sh"), "{file}"), "haproxy", needs="haproxy"),
    # openvpn started in an empty network namespace with throwaway PKI until it is past option
    # parsing and key loading (server: tun up, client: first packet attempt)
    Validator("vps/openvpn/server.conf", (str(TOOLS / "vps-openvpn.sh"), "{file}"), "openvpn", needs="openvpn",
              reads=("ccd/*",)),
    Validator("host/openvpn/client.conf", (str(TOOLS / "vps-openvpn.sh"), "{file}"), "openvpn", needs="openvpn",
              reads=("ccd/*",)),
    Validator("vps/letsencrypt/renewal-hooks/deploy/*", ("shellcheck", "-S", "warning", "{file}"), "shellcheck"),
    Validator("vps/nftables/*.nft", (str(TOOLS / "firewall-nft.sh"), "{file}"), "nftables", needs="nft"),
)

CERT_DIR = "/etc/haproxy/certs"
SERVER_DIR = "/etc/openvpn/server"
CLIENT_DIR = "/etc/openvpn/client"

# Mozilla server-side TLS "intermediate" (guidelines 5.7): TLS 1.2 + 1.3, AEAD ciphers with
# forward secrecy. The DHE-RSA suites of that list are left out (ECDHE only), so no DH
# parameter file is needed; every client of the intermediate profile speaks ECDHE.
TLS12_CIPHERS = ("ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
                 "ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305")
TLS13_CIPHERSUITES = ("TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256")
# The key-exchange groups of that profile, most preferred first (OpenSSL names: prime256v1 is
# P-256). Without this list OpenSSL 3 (Debian 12's HAProxy 2.6) also accepts X448 and secp521r1,
# and a scan against the profile (tests/test_vps_tls.py, sslyze) finds the server not compliant.
# ECDHE only, so these are all the groups a connection can use; every intermediate client has
# P-256, and the certificates' keys (Let's Encrypt: P-256 or RSA) are not limited by this list.
TLS_CURVES = ("X25519", "prime256v1", "secp384r1")
HSTS_MAX_AGE = 63072000  # two years, as Mozilla's server-side TLS guidelines recommend

# OpenVPN data channel and control channel
DATA_CIPHERS = ("AES-256-GCM", "CHACHA20-POLY1305")
HOST_GROUP = {"rocky9": "nobody", "alma9": "nobody"}  # the unprivileged group on the home host's OS


@attrs.frozen
class Route:
    """One site: its Host name (lower case, no trailing dot: what the request's Host header is
    compared with), the OpenVPN client (home) serving it and the HAProxy backend name. `at` is
    the site's blueprint mapping, so `host` traces to vps.sites[].host."""

    site: Site
    client: VpnClient
    host: str
    backend: str
    at: Path


def routes(plan: Plan) -> list[Route]:
    """The sites in host-name order (the blueprint's list order changes nothing)."""
    vps = plan.blueprint.vps
    assert vps is not None
    clients = {c.name: c for c in vps.openvpn.clients}
    out = []
    for s in vps.sites:
        host = s.host.lower().rstrip(".")
        out.append(Route(s, clients[s.client], host, "site_" + host.replace(".", "_").replace("-", "_"), s.at))
    return sorted(out, key=lambda r: r.host)


def render(plan: Plan, bundle: dict[str, Output]) -> Iterator[Output]:
    vps = plan.blueprint.vps
    if vps is None:
        return
    host = plan.blueprint.host
    ovpn = vps.openvpn
    netmask = ovpn.subnet.netmask
    me = next(c for c in ovpn.clients if c.name == vps.client)

    yield template("vps/haproxy/haproxy.cfg", "vps/haproxy.cfg.j2", vps=vps, routes=routes(plan),
                   cert_dir=CERT_DIR, ciphers=":".join(TLS12_CIPHERS), ciphersuites=":".join(TLS13_CIPHERSUITES),
                   curves=":".join(TLS_CURVES), hsts_max_age=HSTS_MAX_AGE)
    yield template("vps/letsencrypt/cli.ini", "vps/cli.ini.j2", vps=vps)
    yield template("vps/letsencrypt/renewal-hooks/deploy/moat-haproxy", "vps/deploy-hook.sh.j2", mode=0o555,
                   cert_dir=CERT_DIR)
    yield template("vps/openvpn/server.conf", "vps/server.conf.j2", vps=vps, ovpn=ovpn, network=ovpn.subnet.network_address,
                   netmask=netmask, dir=SERVER_DIR, data_ciphers=":".join(DATA_CIPHERS), dev=TUN_DEV)
    for c in sorted(ovpn.clients, key=lambda c: c.name):
        yield template(f"vps/openvpn/ccd/{c.name}", "vps/ccd.j2", client=c, netmask=netmask)
    yield template("host/openvpn/client.conf", "vps/client.conf.j2", vps=vps, ovpn=ovpn, me=me, host=host,
                  dir=CLIENT_DIR, data_ciphers=":".join(DATA_CIPHERS), group=HOST_GROUP.get(host.os, "nobody"), dev=TUN_DEV)
    yield template("vps/nftables/moat.nft", "vps/moat.nft.j2", vps=vps, ovpn=ovpn, dev=TUN_DEV, egress=plan.egress_of("vps"))
