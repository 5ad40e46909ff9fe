"""vps family: the VPS front of setup B (HAProxy, certbot hook, OpenVPN, nftables) and the
home's OpenVPN client.

Checked by the real tools (haproxy -c with throwaway certificates, openvpn started in an empty
network namespace with throwaway PKI, shellcheck, nft -c), each shown to reject a
broken variant; the certbot deploy hook run against a fake lineage. HAProxy, OpenVPN and the
firewalls run for real, end to end, in tests/test_vps_tunnel.py.
"""

from __future__ import annotations

import os
import re
import subprocess
from fnmatch import fnmatch
from pathlib import Path

import pytest

from compiler.pipeline import check_file
from compiler.render import vps as family

from .conftest import ROOT
from .netns import Pair

EXAMPLE_A = ROOT / "blueprints" / "example.yaml"
EXAMPLE_B = ROOT / "blueprints" / "vps-front.yaml"
HAPROXY_CHECK = str(family.TOOLS / "vps-haproxy.sh")
OPENVPN_CHECK = str(family.TOOLS / "vps-openvpn.sh")
CFG = "vps/haproxy/haproxy.cfg"
HOOK = "vps/letsencrypt/renewal-hooks/deploy/moat-haproxy"
SERVER = "vps/openvpn/server.conf"
CLIENT = "host/openvpn/client.conf"
NFT = "vps/nftables/moat.nft"
SSHD = "vps/ssh/sshd_config"


def run(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, **kw)


@pytest.fixture(scope="module")
def bundle() -> dict:
    return check_file(EXAMPLE_B).files


@pytest.fixture(scope="module")
def files(bundle) -> dict[str, str]:
    return {p: o.content.decode() for p, o in bundle.items() if p.startswith(("vps/", "host/openvpn/"))}


@pytest.fixture
def written(files, tmp_path) -> Path:
    for p, text in files.items():
        (tmp_path / p).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / p).write_text(text)
    return tmp_path


def validate(path: Path, rel: str) -> subprocess.CompletedProcess:
    (v,) = [v for v in family.VALIDATORS if fnmatch(rel, v.pattern)]
    return run(*(str(path) if a == "{file}" else a for a in v.command))


def test_only_a_blueprint_with_a_vps_gets_vps_files():
    files = check_file(EXAMPLE_A).files
    assert not [p for p in files if p.startswith(("vps/", "host/openvpn/"))]


def test_the_bundle_has_the_vps_files(bundle, files):
    assert set(files) == {CFG, HOOK, SERVER, CLIENT, NFT, SSHD, "vps/letsencrypt/cli.ini",
                          "vps/openvpn/ccd/home1", "vps/openvpn/ccd/home2",
                          "vps/fail2ban/jail.d/moat-sshd.conf", "vps/moat-install",
                          "vps/apt/apt.conf.d/52moat-auto-upgrades", "vps/apt/apt.conf.d/52moat-unattended-upgrades"}
    assert bundle[HOOK].mode == 0o555
    # keys are named by path only, never carried
    assert not [p for p, t in files.items() if "PRIVATE KEY" in t or "BEGIN OpenVPN" in t]


def test_every_vps_file_passes_its_validator(written, files):
    checked = 0
    for rel in files:
        for v in family.VALIDATORS:
            if fnmatch(rel, v.pattern):
                proc = validate(written / rel, rel)
                assert proc.returncode == 0, (rel, proc.stdout, proc.stderr)
                checked += 1
    assert checked == 5


def test_haproxy_config_follows_the_blueprint(files):
    cfg = files[CFG]
    assert "bind 198.51.100.20:443 ssl crt /etc/haproxy/certs/ " in cfg
    assert "bind 198.51.100.20:80\n" in cfg
    assert "ssl-min-ver TLSv1.2 no-tls-tickets" in cfg
    assert 'Strict-Transport-Security "max-age=63072000"' in cfg
    assert "use_backend site_cloud_example_org if { var(txn.host) -m str cloud.example.org }" in cfg
    assert "server home1 172.28.0.10:443 ssl verify none" in cfg
    assert "server home2 172.28.0.11:443 ssl verify none" in cfg
    assert "server certbot 127.0.0.1:8888" in cfg
    assert "default_backend unknown_host" in cfg and "deny_status 404" in cfg
    # the log line never carries the request line or URI (query strings hold tokens)
    (fmt,) = re.findall(r"^\s*log-format (.*)$", cfg, re.M)
    assert not re.search(r"%(\{[^}]*\})?(r|HU|HQ)(?![A-Za-z])", fmt) and "var(txn.path)" in fmt
    assert "option httplog" not in cfg


def test_openvpn_configs_follow_the_blueprint(files):
    server, client = files[SERVER], files[CLIENT]
    for line in ("port 1194", "proto udp", "topology subnet", "server 172.28.0.0 255.255.255.0", "ccd-exclusive",
                 "client-config-dir /etc/openvpn/server/ccd", "dh none", "tls-crypt /etc/openvpn/server/tls-crypt.key"):
        assert f"\n{line}\n" in server
    assert not re.search(r"^\s*client-to-client", server, re.M)
    assert "\nremote 198.51.100.20 1194 udp\n" in client
    assert "\nverify-x509-name front name\n" in client and "\nremote-cert-tls server\n" in client
    assert "\nkey /etc/openvpn/client/home1.key\n" in client
    for conf in (server, client):
        assert "\ndata-ciphers AES-256-GCM:CHACHA20-POLY1305\n" in conf and "\ntls-version-min 1.2\n" in conf
    assert files["vps/openvpn/ccd/home1"].splitlines()[-1] == "ifconfig-push 172.28.0.10 255.255.255.0"
    assert files["vps/openvpn/ccd/home2"].splitlines()[-1] == "ifconfig-push 172.28.0.11 255.255.255.0"


def test_certbot_settings(files):
    ini = files["vps/letsencrypt/cli.ini"]
    for line in ("preferred-challenges = http", "http-01-port = 8888", "email = admin@example.org"):
        assert f"\n{line}\n" in ini


def test_firewall_and_sshd_follow_the_blueprint(files):
    nft = files[NFT]
    for rule in ("tcp dport 443 accept", "tcp dport 80 accept", "udp dport 1194 accept", "tcp dport 53202 accept",
                 'iifname "tun-moat" oifname "tun-moat" drop'):
        assert rule in nft
    assert nft.count("policy drop;") == 3  # input, forward, output
    out = nft[nft.index("chain output"):]
    # out: ACME (Let's Encrypt) and the mirrors on 80/443, HAProxy to each home through the tunnel only
    for rule in ("tcp dport 80 accept", "tcp dport 443 accept", "udp dport 53 accept", "udp dport 123 accept",
                 'oifname "tun-moat" ip daddr 172.28.0.10/32 tcp dport 443 accept',
                 'log prefix "moat egress drop: "', "counter drop"):
        assert rule in out, rule


def internet() -> Pair:
    """The VPS (198.51.100.20, its OpenVPN interface tun-moat at 172.28.0.1) and the rest of the
    world: a router with the Internet's services at 198.51.100.1, and the homes (172.28.0.10, .11)
    at the far end of a veth standing in for the tunnel."""
    return Pair("eg-vps", [("eth0", ["198.51.100.20/24"], "eth0", ["198.51.100.1/24"]),
                           ("tun-moat", ["172.28.0.1/24"], "homes", ["172.28.0.10/24", "172.28.0.11/24"])],
                "198.51.100.1")


@pytest.mark.slow
def test_vps_firewall_lets_out_acme_dns_and_the_sites_only(files, tmp_path):
    """The VPS's output chain: ACME (80, 443), DNS, DHCP renewals and NTP out, HAProxy to the homes' site port
    through the tunnel; SMTP and SSH to a home are not, and the drop rule counts them."""
    ruleset = tmp_path / "moat.nft"
    ruleset.write_text(files[NFT])
    with internet() as lab:
        lab.serve(lab.outside, "out", [("tcp", 80), ("tcp", 443), ("tcp", 25), ("tcp", 22), ("udp", 53), ("udp", 123),
                                       ("udp", 67)])
        probes = [dict(id=id, proto=proto, src=src, dst=dst, port=port) for id, proto, src, dst, port in (
            ("ACME http-01 / mirror", "tcp", "198.51.100.20", "198.51.100.1", 80),
            ("ACME API", "tcp", "198.51.100.20", "198.51.100.1", 443),
            ("DNS", "udp", "198.51.100.20", "198.51.100.1", 53),
            ("NTP", "udp", "198.51.100.20", "198.51.100.1", 123),
            ("DHCP renewal", "udp", "198.51.100.20", "198.51.100.1", 67),
            ("site of home1", "tcp", "172.28.0.1", "172.28.0.10", 443),
            ("site of home2", "tcp", "172.28.0.1", "172.28.0.11", 443),
            ("SMTP", "tcp", "198.51.100.20", "198.51.100.1", 25),
            ("SSH to a home", "tcp", "172.28.0.1", "172.28.0.10", 22))]
        blocked = {"SMTP", "SSH to a home"}
        before = lab.probe(lab.inside, probes)
        assert set(before.values()) == {"open:out:hi"}, before
        subprocess.run(["ip", "netns", "exec", lab.inside, "nft", "-f", str(ruleset)], check=True)
        after = lab.probe(lab.inside, probes)
        wrong = {k: v for k, v in after.items() if v != "open:out:hi" and k not in blocked
                 or k in blocked and v not in {"dropped", "rejected:EPERM"}}
        assert not wrong, f"unexpected: {wrong}\nall: {after}"
        assert lab.drops_counted(lab.inside) >= len(blocked)


@pytest.mark.parametrize("old, new, says", [
    ("alpn h2,http/1.1", "alpn h2,http/1.1 no-such-option", "unknown keyword 'no-such-option'"),
    ("ssl-min-ver TLSv1.2", "ssl-min-ver TLSv9", "unknown ssl/tls version"),
    ("default_backend unknown_host", "default_backend no_such_backend", "unable to find required default_backend"),
])
def test_haproxy_check_rejects_a_broken_config(files, tmp_path, old, new, says):
    assert old in files[CFG]
    path = tmp_path / "haproxy.cfg"
    path.write_text(files[CFG].replace(old, new, 1))
    proc = validate(path, CFG)
    assert proc.returncode != 0 and says in proc.stdout, proc.stdout
    if "default_backend" not in old:
        # the message names the line of the file (not of the wrapper's temporary copy)
        line = next(n for n, text in enumerate(path.read_text().splitlines(), 1) if new in text)
        assert f"[{path}:{line}]" in proc.stdout


@pytest.mark.parametrize("rel, old, new, says", [
    (SERVER, "data-ciphers AES-256-GCM", "data-ciphers NO-SUCH-CIPHER", "unsupported ciphers"),
    (SERVER, "topology subnet", "topology nosuch", "topology"),
    (SERVER, "keepalive 10 60", "keepalive 10", "Unrecognized option or missing or extra parameter"),
    (CLIENT, "remote-cert-tls server", "remote-cert-tls srv", "--remote-cert-tls must be"),
    (CLIENT, "tls-version-min 1.2", "tls-version-min 7.0", "tls-version-min"),
])
def test_openvpn_check_rejects_a_broken_config(files, tmp_path, rel, old, new, says):
    assert old in files[rel]
    path = tmp_path / Path(rel).name
    path.write_text(files[rel].replace(old, new, 1))
    proc = validate(path, rel)
    assert proc.returncode != 0 and says in proc.stdout, proc.stdout
    assert str(tmp_path / "moat-openvpn") not in proc.stdout


def test_openvpn_check_rejects_a_config_whose_key_file_is_not_a_key(files, tmp_path):
    # a server config naming its tls-crypt key as a static key (secret): loading it fails
    path = tmp_path / "server.conf"
    path.write_text(files[SERVER].replace("dh none", "dh /nonexistent/dh.pem", 1))
    proc = validate(path, SERVER)
    assert proc.returncode != 0 and "dh.pem" in proc.stdout


def test_shellcheck_and_nft_and_sshd_reject_broken_variants(files, tmp_path):
    hook = tmp_path / "moat-haproxy"
    hook.write_text(files[HOOK].replace("domain=${RENEWED_DOMAINS", "domain = ${RENEWED_DOMAINS"))
    assert validate(hook, HOOK).returncode != 0
    nft = tmp_path / "moat.nft"
    nft.write_text(files[NFT].replace("tcp dport 443 accept", "tcp dport 443 acept"))
    assert validate(nft, NFT).returncode != 0


def test_deploy_hook_writes_the_pem_atomically_and_reloads_haproxy(files, tmp_path):
    lineage = tmp_path / "live" / "cloud.example.org-0001"
    lineage.mkdir(parents=True)
    (lineage / "fullchain.pem").write_text("CHAIN\n")
    (lineage / "privkey.pem").write_text("KEY\n")
    certs = tmp_path / "certs"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    fake = bin_dir / "systemctl"
    fake.write_text(f'#!/bin/sh\necho "$*" >>{calls}\nexit 0\n')
    fake.chmod(0o755)
    hook = tmp_path / "hook"
    hook.write_text(files[HOOK].replace("/etc/haproxy/certs", str(certs)))
    hook.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "RENEWED_LINEAGE": str(lineage),
           "RENEWED_DOMAINS": "cloud.example.org www.cloud.example.org"}
    proc = run(str(hook), env=env)
    assert proc.returncode == 0, proc.stderr
    pem = certs / "cloud.example.org.pem"
    assert pem.read_text() == "CHAIN\nKEY\n"
    assert pem.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in certs.iterdir()) == ["cloud.example.org.pem"]  # no temp file left
    assert calls.read_text().splitlines() == ["is-active --quiet haproxy", "reload haproxy"]
    # not run by certbot, or a name that would write elsewhere: refuses
    assert run(str(hook), env={**env, "RENEWED_LINEAGE": ""}).returncode != 0
    assert run(str(hook), env={**env, "RENEWED_DOMAINS": "../../etc/x"}).returncode != 0
    assert sorted(p.name for p in certs.iterdir()) == ["cloud.example.org.pem"]


def test_generated_lines_trace_back_to_the_blueprint(bundle):
    from compiler.render._trace import trace

    def traced(rel: str, line: str) -> list:
        out = bundle[rel]
        return trace(out)[out.content.decode().splitlines().index(line) + 1]

    vps = ("vps",)
    assert vps + ("openvpn", "clients", 0, "address") in traced("vps/openvpn/ccd/home1", "ifconfig-push 172.28.0.10 255.255.255.0")
    assert vps + ("sites", 0, "host") in traced(CFG, "\tuse_backend site_cloud_example_org if { var(txn.host) -m str cloud.example.org }")
    backend = next(t for t in bundle[CFG].content.decode().splitlines() if t.startswith("\tserver home1 "))
    assert vps + ("openvpn", "clients", 0, "address") in traced(CFG, backend)
    assert vps + ("sites", 0, "port") in traced(CFG, backend)
    assert vps + ("acme", "port") in traced("vps/letsencrypt/cli.ini", "http-01-port = 8888")
    assert vps + ("openvpn", "port") in traced(SERVER, "port 1194")
    assert vps + ("address",) in traced(CLIENT, "remote 198.51.100.20 1194 udp")
    assert vps + ("sshd", "port") in traced(NFT, "\t\ttcp dport 53202 accept")


def test_openvpn_over_tcp_passes_the_validators(tmp_path):
    bp = tmp_path / "bp.yaml"
    bp.write_text(EXAMPLE_B.read_text().replace("proto: udp", "proto: tcp"))
    files = check_file(bp).files
    assert "\nproto tcp\n" in files[SERVER].content.decode()
    assert "explicit-exit-notify" not in files[SERVER].content.decode()
    assert "\nremote 198.51.100.20 1194 tcp\n" in files[CLIENT].content.decode()
    assert "tcp dport 1194 accept" in files[NFT].content.decode()
    for rel in (SERVER, CLIENT, NFT):
        path = tmp_path / Path(rel).name
        path.write_bytes(files[rel].content)
        proc = validate(path, rel)
        assert proc.returncode == 0, proc.stdout + proc.stderr


def test_site_names_are_matched_in_lower_case_and_list_order_changes_nothing(tmp_path, files):
    text = EXAMPLE_B.read_text()
    sites = ("    - { host: cloud.example.org, client: home1 }\n"
             "    - { host: photos.example.org, client: home2 }\n")
    assert sites in text
    bp = tmp_path / "bp.yaml"
    bp.write_text(text.replace(sites, "    - { host: Photos.Example.org., client: home2 }\n"
                                      "    - { host: cloud.example.org, client: home1 }\n"))
    cfg = check_file(bp).files[CFG].content.decode()
    assert cfg == files[CFG]
