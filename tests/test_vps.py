"""vps family: the VPS front of setup B (HAProxy, certbot hook, OpenVPN, nftables) and the
home's OpenVPN client.

Checked by the real tools (haproxy -c with throwaway certificates, openvpn started in an empty
network namespace with throwaway PKI, shellcheck, nft -c), each shown to reject a
broken variant; the certbot deploy hook run against a fake lineage; and HAProxy for real in
network namespaces created here: a client, the VPS (haproxy on the blueprint's public address,
certbot's place taken by a small HTTP server) and home1 (an HTTPS backend at its tunnel address).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from fnmatch import fnmatch
from pathlib import Path

import pytest

from compiler.pipeline import check_file
from compiler.render import vps as family

from .conftest import ROOT

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
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: network namespaces")


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
                          "vps/fail2ban/jail.d/moat-sshd.conf", "vps/moat-install"}
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
    assert 'Strict-Transport-Security "max-age=31536000"' in cfg
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
    assert nft.count("policy drop;") == 2


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


# ---------------------------------------------------------------- live HAProxy in namespaces

BACKEND = textwrap.dedent("""
    import http.server, ssl, sys
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = ("%s %s proto=%s xff=%s" % (sys.argv[1], self.path, self.headers.get("X-Forwarded-Proto"),
                                                ",".join(self.headers.get_all("X-Forwarded-For") or []))).encode()
            self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
            self.wfile.write(body)
        def log_message(self, *a): pass
    srv = http.server.HTTPServer((sys.argv[2], int(sys.argv[3])), H)
    if len(sys.argv) > 4:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); ctx.load_cert_chain(sys.argv[4])
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    srv.serve_forever()
""")


def openssl_cert(d: Path, name: str, ca: tuple[Path, Path] | None = None) -> Path:
    key, crt = d / f"{name}.key", d / f"{name}.crt"
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key)]
    if ca is None:
        subprocess.run(["openssl", "req", "-x509", *ec, "-days", "2", "-subj", f"/CN={name}", "-out", str(crt),
                        "-addext", f"subjectAltName=DNS:{name}"], check=True, capture_output=True)
    else:
        csr = d / f"{name}.csr"
        subprocess.run(["openssl", "req", *ec, "-subj", f"/CN={name}", "-out", str(csr)], check=True, capture_output=True)
        ext = d / f"{name}.ext"
        ext.write_text(f"subjectAltName=DNS:{name}\n")
        subprocess.run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca[1]), "-CAkey", str(ca[0]),
                        "-CAcreateserial", "-days", "2", "-extfile", str(ext), "-out", str(crt)],
                       check=True, capture_output=True)
    pem = d / f"{name}.pem"
    pem.write_text(crt.read_text() + key.read_text())
    return pem


@pytest.fixture
def live_front(files, tmp_path):
    """haproxy with the generated config in a VPS namespace; a client and home1 beside it."""
    pid = os.getpid()
    ns = {role: f"moat-{role}-{pid}" for role in ("cli", "vps", "home")}
    procs: list[subprocess.Popen] = []
    log = tmp_path / "haproxy.log"

    def ip(*args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True)

    def in_ns(role: str, *args: str, **kw) -> subprocess.Popen:
        p = subprocess.Popen(["ip", "netns", "exec", ns[role], *args], **kw)
        procs.append(p)
        return p

    try:
        for name in ns.values():
            ip("netns", "add", name)
        for role in ns:
            ip("-n", ns[role], "link", "set", "lo", "up")
        ip("link", "add", f"mc{pid}"[:15], "netns", ns["cli"], "type", "veth", "peer", "name", "eth0", "netns", ns["vps"])
        ip("link", "add", f"mh{pid}"[:15], "netns", ns["home"], "type", "veth", "peer", "name", "tun-moat", "netns", ns["vps"])
        ip("-n", ns["cli"], "addr", "add", "198.51.100.2/24", "dev", f"mc{pid}"[:15])
        ip("-n", ns["vps"], "addr", "add", "198.51.100.20/24", "dev", "eth0")
        ip("-n", ns["vps"], "addr", "add", "172.28.0.1/24", "dev", "tun-moat")
        ip("-n", ns["home"], "addr", "add", "172.28.0.10/24", "dev", f"mh{pid}"[:15])
        # home2's address answers, but nothing listens there (connection refused at once)
        ip("-n", ns["home"], "addr", "add", "172.28.0.11/24", "dev", f"mh{pid}"[:15])
        for role, dev in (("cli", f"mc{pid}"[:15]), ("vps", "eth0"), ("vps", "tun-moat"), ("home", f"mh{pid}"[:15])):
            ip("-n", ns[role], "link", "set", dev, "up")
        certs = tmp_path / "certs"
        certs.mkdir()
        openssl_cert(tmp_path, "moat-test-ca")
        ca = (tmp_path / "moat-test-ca.key", tmp_path / "moat-test-ca.crt")
        for site in ("cloud.example.org", "photos.example.org"):
            shutil.move(openssl_cert(tmp_path, site, ca), certs / f"{site}.pem")
        home_pem = openssl_cert(tmp_path, "home1")
        backend = tmp_path / "backend.py"
        backend.write_text(BACKEND)
        in_ns("home", sys.executable, str(backend), "home1", "172.28.0.10", "443", str(home_pem))
        in_ns("vps", sys.executable, str(backend), "certbot", "127.0.0.1", "8888")
        # the home serves before haproxy starts: its first failed health check would mark it down
        deadline = time.monotonic() + 10
        while run("ip", "netns", "exec", ns["vps"], "curl", "-sk", "-o", "/dev/null", "--max-time", "1",
                  "https://172.28.0.10/").returncode != 0:
            assert time.monotonic() < deadline, "the test backend did not start"
            time.sleep(0.1)
        # the generated config; only the certificate directory and the log target differ
        # (stdout of this foreground haproxy instead of syslog)
        cfg = tmp_path / "haproxy.cfg"
        cfg.write_text(files[CFG].replace("/etc/haproxy/certs", str(certs))
                       .replace("log /dev/log local0", "log stdout format raw local0"))
        haproxy = in_ns("vps", shutil.which("haproxy") or "/usr/sbin/haproxy", "-db", "-f", str(cfg),
                        stdout=open(log, "w"), stderr=subprocess.STDOUT)

        def curl(*args: str) -> subprocess.CompletedProcess:
            return run("ip", "netns", "exec", ns["cli"], "curl", "-sS", "--max-time", "5", "--cacert", str(ca[1]), *args)

        deadline = time.monotonic() + 10
        while run("ip", "netns", "exec", ns["cli"], "curl", "-s", "-o", "/dev/null", "--max-time", "1",
                  "http://198.51.100.20/").returncode != 0:
            assert haproxy.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        yield curl, log, ns
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for name in ns.values():
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


@needs_root
@pytest.mark.slow
def test_live_haproxy_routes_by_host_and_hides_query_strings(live_front):
    curl, log, ns = live_front
    r = "--resolve", "{}:{}:198.51.100.20"
    # a known site reaches its home through the tunnel address, over TLS with the site's certificate
    ok = curl(*r[:1], r[1].format("cloud.example.org", 443), "-D", "-", "-H", "X-Forwarded-For: 192.0.2.66",
              "https://cloud.example.org/index.php?token=SECRET123")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("HTTP/2 200") and "home1 /index.php?token=SECRET123 proto=https xff=198.51.100.2" in ok.stdout
    assert re.search(r"^strict-transport-security: max-age=31536000\r?$", ok.stdout, re.M | re.I)
    # the Host header decides, with a port and in upper case too
    upper = curl(*r[:1], r[1].format("cloud.example.org", 443), "-H", "Host: CLOUD.example.org:443",
                 "https://cloud.example.org/x")
    assert "home1 /x" in upper.stdout
    # an unknown name: 404, no default site
    unknown = curl("-k", *r[:1], r[1].format("other.example.org", 443), "-o", "/dev/null", "-w", "%{http_code}",
                   "https://other.example.org/")
    assert unknown.stdout == "404"
    # a known site whose home does not serve (home2): 503, never another home
    down = curl(*r[:1], r[1].format("photos.example.org", 443), "-o", "/dev/null", "-w", "%{http_code}",
                "https://photos.example.org/")
    assert down.stdout == "503"
    # port 80: redirect to https, except ACME challenges, which reach certbot's port
    redirect = curl(*r[:1], r[1].format("cloud.example.org", 80), "-D", "-", "-o", "/dev/null",
                    "http://cloud.example.org/a?b=c")
    assert redirect.stdout.startswith("HTTP/1.1 301")
    assert re.search(r"^location: https://cloud.example.org/a\?b=c\r?$", redirect.stdout, re.M | re.I)
    acme = curl(*r[:1], r[1].format("cloud.example.org", 80), "http://cloud.example.org/.well-known/acme-challenge/tok")
    assert acme.stdout.startswith("certbot /.well-known/acme-challenge/tok ")
    # TLS: 1.2 and 1.3 only
    s = lambda *a: run("ip", "netns", "exec", ns["cli"], "openssl", "s_client", "-connect", "198.51.100.20:443",  # noqa: E731
                       "-servername", "cloud.example.org", *a, stdin=subprocess.DEVNULL)
    assert s("-tls1_2").returncode == 0 and s("-tls1_3").returncode == 0
    assert s("-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0").returncode != 0
    assert s("-tls1_2", "-cipher", "AES128-SHA").returncode != 0  # no non-forward-secret CBC
    time.sleep(0.3)
    text = log.read_text()
    assert "/index.php" in text and "SECRET123" not in text and "b=c" not in text


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
