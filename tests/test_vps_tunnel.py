"""Setup B end to end: the VPS front and two homes joined by the real OpenVPN tunnel.

Four network namespaces made here, joined by veth pairs:

    client 198.51.100.2 ---- 198.51.100.20 vps 10.1.0.1 ---- 10.1.0.2 home1 virbr0 192.168.122.1 ---- .5 nextcloud
                                               10.2.0.1 ---- 10.2.0.2 home2

In `vps`: the generated nftables firewall, the OpenVPN server and HAProxy with their generated
configs. In `home1` and `home2`: the OpenVPN client each home's own blueprint generates (home2's
is vps-front.yaml with `vps.client: home2`). home1 is the home host of vps-front.yaml: its
generated nftables policy, the libvirt qemu hook run as libvirt runs it when the VM starts (on a
stand-in of libvirt's own forward chain), and the Nextcloud VM's HTTPS server in a namespace
behind the bridge, so a request goes client -> HAProxy -> tunnel -> DNAT on home1 -> VM.
home2 (another home, whose host is not modelled) serves on its tunnel address.
Every key is made by `moat secrets init`. The OpenVPN configs run unchanged at their install
paths (/etc/openvpn/{server,client}, bind-mounted in a private mount namespace); the only edit is
the home's `group nobody` (Rocky's unprivileged group) -> `nogroup` (Debian's, this machine).
HAProxy reads the site certificates (made by a test CA here: no ACME) from a test directory and
logs to stdout; certbot's standalone server is a small HTTP server on its port.

Everything started is stopped and every namespace removed, also when an assertion fails.
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
from pathlib import Path

import pytest

from compiler.pipeline import check_file
from compiler.derive import TUN_DEV
from compiler.render.vps import CLIENT_DIR, SERVER_DIR

from .conftest import ROOT, run_moat
from .test_tunnel_ingress import LIBVIRT_NFT
from .test_vps import CFG, CLIENT, NFT, SERVER

pytestmark = [pytest.mark.skipif(os.geteuid() != 0, reason="needs root: network namespaces"), pytest.mark.slow]

BLUEPRINT = ROOT / "blueprints" / "vps-front.yaml"
VPS_ADDRESS = "198.51.100.20"
CLIENT_ADDRESS = "198.51.100.2"
TUNNEL = {"home1": "172.28.0.10", "home2": "172.28.0.11"}
VPS_TUNNEL = "172.28.0.1"
ROLES = ("client", "vps", "home1", "home2", "nextcloud")
SITES = ("cloud.example.org", "photos.example.org")  # vps-front.yaml's vps.sites
LINKS = {"home1": ("10.1.0.1", "10.1.0.2"), "home2": ("10.2.0.1", "10.2.0.2")}
GATEWAY, NEXTCLOUD = "192.168.122.1", "192.168.122.5"  # vps-front.yaml: network default, VM nextcloud
HOOK, DOMAIN, HOST_NFT = "host/libvirt/hooks/qemu", "host/libvirt/domains/nextcloud.xml", "host/nftables/moat.nft"
OPENVPN = shutil.which("openvpn") or shutil.which("openvpn", path="/usr/sbin:/sbin") or "openvpn"
HAPROXY = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/sbin") or "haproxy"


def run(*args: str, timeout: float = 30, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, **kw)


# an HTTPS (or, without a PEM, HTTP) server answering with its name, the path and the forwarded headers
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


def make_ca(d: Path) -> tuple[Path, Path]:
    """A throwaway CA (key, certificate) for the sites' certificates. An issuer is marked as one
    (basicConstraints CA:TRUE, keyUsage keyCertSign and cRLSign): strict verifiers, such as the
    cryptography library sslyze validates chains with, refuse a chain whose root lacks them."""
    key, crt = d / "moat-test-ca.key", d / "moat-test-ca.crt"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", str(key), "-days", "2", "-subj", "/CN=moat-test-ca", "-out", str(crt),
                    "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
                   check=True, capture_output=True)
    return key, crt


def start_haproxy(lab: "Lab", cfg_text: str, sites: tuple[str, ...], log: Path) -> Path:
    """HAProxy in the VPS namespace with the generated config `cfg_text`: the sites' certificates
    (from a test CA: no ACME) in a test directory instead of /etc/haproxy/certs, the log on
    stdout. Returns the CA certificate once HAProxy answers on :80."""
    certs = lab.tmp / "certs"
    certs.mkdir()
    ca = make_ca(lab.tmp)
    for site in sites:
        shutil.move(openssl_cert(lab.tmp, site, ca), certs / f"{site}.pem")
    cfg = lab.tmp / "haproxy.cfg"
    cfg.write_text(cfg_text.replace("/etc/haproxy/certs", str(certs))
                   .replace("log /dev/log local0", "log stdout format raw local0"))
    lab.start("vps", HAPROXY, "-db", "-f", str(cfg), log=log)
    wait_for("haproxy listening", lambda: lab.run("client", "curl", "-s", "-o", "/dev/null", "--max-time", "1",
                                                  f"http://{VPS_ADDRESS}/").returncode == 0, [log])
    return ca[1]


class Lab:
    """Namespaces, links and processes of one test; `close()` removes all of it."""

    def __init__(self, tmp: Path, roles: tuple[str, ...] = ROLES):
        """`roles`: every namespace of the picture above, or ("client", "vps") for the front alone."""
        self.tmp = tmp
        self.ns = {role: f"moat-{role}-{os.getpid()}" for role in roles}
        self.procs: list[subprocess.Popen] = []

    def ip(self, *args: str) -> None:
        r = run("ip", *args)
        assert r.returncode == 0, f"ip {' '.join(args)}: {r.stderr}"

    def run(self, role: str, *args: str, **kw) -> subprocess.CompletedProcess:
        return run("ip", "netns", "exec", self.ns[role], *args, **kw)

    def start(self, role: str, *args: str, log: Path, mounts: dict[str, Path] | None = None) -> subprocess.Popen:
        """A process in `role`'s namespace; `mounts` bind-mounts directories over install paths in a
        mount namespace of its own (the paths stay untouched for everything else)."""
        argv = ["ip", "netns", "exec", self.ns[role]]
        if mounts:
            binds = " && ".join(f"mount --bind {src} {dst}" for dst, src in mounts.items())
            argv += ["unshare", "--mount", "--propagation", "private", "sh", "-c", f'{binds} && exec "$@"', "sh"]
        p = subprocess.Popen([*argv, *args], stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(p)
        return p

    def wire(self) -> None:
        for name in self.ns.values():
            self.ip("netns", "add", name)
        for name in self.ns.values():
            self.ip("-n", name, "link", "set", "lo", "up")
        pid = os.getpid()
        self.veth("client", f"c{pid}", CLIENT_ADDRESS, "vps", "eth0", VPS_ADDRESS, 24)
        if "home1" not in self.ns:  # the front alone: a client and the VPS
            return
        for home, (vps_side, home_side) in LINKS.items():
            self.veth(home, f"{home}-{pid}"[:15], home_side, "vps", home, vps_side, 24)
            # the home is behind NAT somewhere: it only knows its way to the VPS's public address
            self.ip("-n", self.ns[home], "route", "add", f"{VPS_ADDRESS}/32", "via", vps_side)
        # home1's libvirt network: the bridge and the VM on it
        self.ip("-n", self.ns["home1"], "link", "add", "virbr0", "type", "bridge")
        self.ip("-n", self.ns["home1"], "addr", "add", f"{GATEWAY}/24", "dev", "virbr0")
        self.ip("-n", self.ns["home1"], "link", "set", "virbr0", "up")
        self.veth("home1", "vnet0", None, "nextcloud", "eth0", NEXTCLOUD, 24)
        self.ip("-n", self.ns["home1"], "link", "set", "vnet0", "master", "virbr0")
        self.ip("-n", self.ns["nextcloud"], "route", "add", "default", "via", GATEWAY)
        # routers: the VPS (without the firewall, a tunnel client's packet to another client would
        # be forwarded) and the home host (to its VMs)
        for role in ("vps", "home1"):
            assert self.run(role, "sysctl", "-qw", "net.ipv4.ip_forward=1").returncode == 0

    def veth(self, a: str, a_dev: str, a_addr: str | None, b: str, b_dev: str, b_addr: str, prefix: int) -> None:
        self.ip("link", "add", a_dev[:15], "netns", self.ns[a], "type", "veth", "peer", "name", b_dev, "netns", self.ns[b])
        if a_addr:
            self.ip("-n", self.ns[a], "addr", "add", f"{a_addr}/{prefix}", "dev", a_dev[:15])
        self.ip("-n", self.ns[b], "addr", "add", f"{b_addr}/{prefix}", "dev", b_dev)
        self.ip("-n", self.ns[a], "link", "set", a_dev[:15], "up")
        self.ip("-n", self.ns[b], "link", "set", b_dev, "up")

    def close(self) -> None:
        for p in self.procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in self.procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        for name in self.ns.values():
            run("ip", "netns", "del", name)


def wait_for(what: str, ok, logs: list[Path], timeout: float = 20) -> float:
    """Poll `ok()` until true; the seconds it took. On timeout, fail with the logs."""
    start = time.monotonic()
    while not ok():
        if time.monotonic() - start > timeout:
            pytest.fail(f"{what} within {timeout} s\n" + "\n".join(f"--- {p.name}\n{p.read_text()}" for p in logs
                                                                   if p.exists()))
        time.sleep(0.1)
    return time.monotonic() - start


def private_dir(path: Path) -> Path:
    """A directory to bind over /etc/openvpn/*: 0755 like the real one, so OpenVPN, after it
    drops to nobody, still reads ccd/ (and the CRL) on each connection."""
    path.mkdir(parents=True)
    path.chmod(0o755)
    return path


@pytest.fixture
def lab(tmp_path):
    # what the bundle and the secrets directory hold, made the way a user makes them
    secrets = tmp_path / "secrets"
    r = run_moat("secrets", "init", BLUEPRINT, "--dir", secrets)
    assert r.returncode == 0, r.stderr
    pki = secrets / "openvpn"
    files = {p: o.content.decode() for p, o in check_file(BLUEPRINT).files.items()}
    other = tmp_path / "home2.yaml"
    other.write_text(re.sub(r"(?m)^  client: home1$", "  client: home2", BLUEPRINT.read_text()))
    client_conf = {"home1": files[CLIENT], "home2": check_file(other).files[CLIENT].content.decode()}
    assert "home2.key" in client_conf["home2"]

    # /etc/openvpn/server of the VPS: server.conf, ccd/, and the secrets it names
    server = private_dir(tmp_path / "vps-openvpn")
    (server / "server.conf").write_text(files[SERVER])
    (server / "ccd").mkdir(mode=0o755)
    for rel, text in files.items():
        if rel.startswith("vps/openvpn/ccd/"):
            (server / "ccd" / Path(rel).name).write_text(text)
    named = re.findall(rf"^\S+ {re.escape(SERVER_DIR)}/(\S+)$", files[SERVER], re.M)
    for name in named:
        if name != "ccd":
            shutil.copy(pki / name, server / name)
    # /etc/openvpn/client of each home: its config and its own key only
    homes = {}
    for home, conf in client_conf.items():
        d = homes[home] = private_dir(tmp_path / f"{home}-openvpn")
        (d / f"{home}.conf").write_text(conf.replace("\ngroup nobody\n", "\ngroup nogroup\n"))
        for name in re.findall(rf"^\S+ {re.escape(CLIENT_DIR)}/(\S+)$", conf, re.M):
            src = pki / "clients" / name if name.startswith(home + ".") else pki / name
            shutil.copy(src, d / name)

    lab = Lab(tmp_path)
    try:
        lab.wire()
        nft = tmp_path / "vps.nft"
        nft.write_text(files[NFT])
        loaded = lab.run("vps", "nft", "-f", str(nft))
        assert loaded.returncode == 0, loaded.stderr
        logs = {name: tmp_path / f"{name}.log" for name in ("openvpn-server", "home1", "home2", "haproxy")}
        lab.start("vps", OPENVPN, "--config", f"{SERVER_DIR}/server.conf", "--cd", SERVER_DIR,
                  log=logs["openvpn-server"], mounts={SERVER_DIR: server})
        wait_for("the OpenVPN server up", lambda: "Initialization Sequence Completed" in
                 logs["openvpn-server"].read_text(), [logs["openvpn-server"]])
        t0 = time.monotonic()
        for home in homes:
            lab.start(home, OPENVPN, "--config", f"{CLIENT_DIR}/{home}.conf", "--cd", CLIENT_DIR,
                      log=logs[home], mounts={CLIENT_DIR: homes[home]})
        for home in homes:
            wait_for(f"{home}'s tunnel up", lambda h=home: "Initialization Sequence Completed" in logs[h].read_text(),
                     list(logs.values()))
        tunnel_up = time.monotonic() - t0

        # home1 is the home host: its firewall, then the hook as libvirt runs it when the VM starts
        host_nft = tmp_path / "home1.nft"
        host_nft.write_text(LIBVIRT_NFT + files[HOST_NFT])
        loaded = lab.run("home1", "nft", "-f", str(host_nft))
        assert loaded.returncode == 0, loaded.stderr
        hook = tmp_path / "qemu"
        hook.write_text(files[HOOK])
        hook.chmod(0o755)
        started = lab.run("home1", str(hook), "nextcloud", "start", "begin", "-", input=files[DOMAIN])
        assert started.returncode == 0, started.stderr
        # the sites' HTTPS servers: home1's in its Nextcloud VM, home2's on its tunnel address
        backend = tmp_path / "backend.py"
        backend.write_text(BACKEND)
        lab.backends = {}
        for home, where, address in (("home1", "nextcloud", NEXTCLOUD), ("home2", "home2", TUNNEL["home2"])):
            pem = openssl_cert(tmp_path, home)
            lab.backends[home] = lab.start(where, sys.executable, str(backend), home, address, "443", str(pem),
                                           log=tmp_path / f"backend-{home}.log")
        # certbot's standalone server, where HAProxy sends ACME challenges (blueprint vps.acme.port)
        acme_port = re.search(r"^\tserver certbot 127\.0\.0\.1:(\d+)$", files[CFG], re.M).group(1)
        lab.start("vps", sys.executable, str(backend), "certbot", "127.0.0.1", acme_port, log=tmp_path / "certbot.log")
        for home in homes:
            wait_for(f"{home}'s backend over the tunnel", lambda h=home: lab.run(
                "vps", "curl", "-sk", "-o", "/dev/null", "--max-time", "1", f"https://{TUNNEL[h]}/").returncode == 0,
                [tmp_path / f"backend-{home}.log", logs[home]])

        # HAProxy with the generated config
        lab.ca = start_haproxy(lab, files[CFG], SITES, logs["haproxy"])
        lab.logs = logs
        lab.tunnel_up = tunnel_up
        yield lab
    finally:
        lab.close()


def curl(lab: Lab, role: str, *args: str) -> subprocess.CompletedProcess:
    return lab.run(role, "curl", "-sS", "--max-time", "5", "--cacert", str(lab.ca), *args)


def resolve(host: str, port: int) -> tuple[str, str]:
    return "--resolve", f"{host}:{port}:{VPS_ADDRESS}"


def test_sites_reach_their_home_through_haproxy_and_the_tunnel(lab):
    print(f"\nboth tunnels up {lab.tunnel_up:.2f} s after the OpenVPN server was ready")
    # each site reaches the backend of its own home, through HAProxy and the tunnel
    for host, home in (("cloud.example.org", "home1"), ("photos.example.org", "home2")):
        r = curl(lab, "client", *resolve(host, 443), "-D", "-", f"https://{host}/index.php?x=1")
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith("HTTP/2 200"), r.stdout
        assert f"{home} /index.php?x=1 proto=https xff={CLIENT_ADDRESS}" in r.stdout
        assert re.search(r"^strict-transport-security: max-age=63072000\r?$", r.stdout, re.M | re.I)
    # an unknown Host is not served by any home
    unknown = curl(lab, "client", "-k", *resolve("other.example.org", 443), "-o", "/dev/null", "-w", "%{http_code}",
                   "https://other.example.org/")
    assert unknown.stdout == "404"
    # a known name in the Host header of a request for another SNI still routes by Host
    by_host = curl(lab, "client", *resolve("cloud.example.org", 443), "-H", "Host: nowhere.example.org",
                   "-o", "/dev/null", "-w", "%{http_code}", "https://cloud.example.org/")
    assert by_host.stdout == "404"
    # the Host header decides, in upper case and with a port too; a client's X-Forwarded-For is
    # replaced by the address HAProxy saw
    upper = curl(lab, "client", *resolve("cloud.example.org", 443), "-H", "Host: CLOUD.example.org:443",
                 "-H", "X-Forwarded-For: 192.0.2.66", "https://cloud.example.org/x")
    assert upper.stdout == f"home1 /x proto=https xff={CLIENT_ADDRESS}", upper.stdout + upper.stderr
    # HTTP redirects to HTTPS (query kept); the HTTPS answer carries HSTS (above)
    redirect = curl(lab, "client", *resolve("cloud.example.org", 80), "-D", "-", "-o", "/dev/null",
                    "http://cloud.example.org/a?b=c")
    assert redirect.stdout.startswith("HTTP/1.1 301")
    assert re.search(r"^location: https://cloud.example.org/a\?b=c\r?$", redirect.stdout, re.M | re.I)
    # except ACME http-01 challenges: they reach certbot on the VPS
    acme = curl(lab, "client", *resolve("cloud.example.org", 80), "http://cloud.example.org/.well-known/acme-challenge/tok")
    assert acme.stdout.startswith("certbot /.well-known/acme-challenge/tok "), acme.stdout + acme.stderr
    # TLS 1.2 and 1.3 only, forward-secret AEAD only (bench/vps_front.py lists all that is offered)
    s_client = lambda *a: lab.run("client", "openssl", "s_client", "-connect", f"{VPS_ADDRESS}:443",  # noqa: E731
                                  "-servername", "cloud.example.org", *a, stdin=subprocess.DEVNULL)
    assert s_client("-tls1_2").returncode == 0 and s_client("-tls1_3").returncode == 0
    assert s_client("-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0").returncode != 0
    assert s_client("-tls1_2", "-cipher", "AES128-SHA").returncode != 0
    # a home that does not answer: 503, never another home's site
    lab.backends["home2"].terminate()
    lab.backends["home2"].wait()
    down = curl(lab, "client", *resolve("photos.example.org", 443), "-o", "/dev/null", "-w", "%{http_code}",
                "https://photos.example.org/")
    assert down.stdout == "503"
    # the log has the paths, never a query string (URLs can carry access tokens)
    secret = curl(lab, "client", *resolve("cloud.example.org", 443), "https://cloud.example.org/s.php?token=SECRET123")
    assert secret.returncode == 0
    time.sleep(0.3)
    log = lab.logs["haproxy"].read_text()
    assert "/s.php" in log and "/index.php" in log
    assert "SECRET123" not in log and "x=1" not in log and "b=c" not in log


def test_homes_cannot_reach_each_other_over_the_tunnel(lab):
    # the VPS's tunnel address answers both homes: the tunnel itself works
    for home in ("home1", "home2"):
        assert lab.run(home, "ping", "-c1", "-W2", VPS_TUNNEL).returncode == 0
    probe = lambda: curl(lab, "home2", "-k", "-o", "/dev/null", "--max-time", "3",  # noqa: E731
                         f"https://{TUNNEL['home1']}/")
    assert probe().returncode == 28  # dropped: times out
    assert lab.run("home2", "ping", "-c1", "-W2", TUNNEL["home1"]).returncode != 0
    # it is the firewall's forward drop that stops it: the VPS routes between tunnel clients
    # (ip_forward on, OpenVPN hands the packet to the kernel); without the rule home2 gets through
    handle = re.search(rf'iifname "{TUN_DEV}" oifname "{TUN_DEV}" drop # handle (\d+)',
                       lab.run("vps", "nft", "-a", "list", "chain", "inet", "moat", "forward").stdout)
    assert handle, "the forward drop between tunnel clients is not in the loaded ruleset"
    assert lab.run("vps", "nft", "delete", "rule", "inet", "moat", "forward", "handle", handle.group(1)).returncode == 0
    lab.run("vps", "nft", "add", "rule", "inet", "moat", "forward", "accept")
    assert probe().returncode == 0


def test_the_vps_firewall_drops_ports_it_does_not_open(lab):
    # something listens on the VPS's public address, on a port the blueprint does not open
    lab.start("vps", sys.executable, "-m", "http.server", "--bind", VPS_ADDRESS, "8080", log=lab.tmp / "8080.log")
    wait_for("the stray listener", lambda: lab.run("vps", "curl", "-s", "-o", "/dev/null", "--max-time", "1",
                                                   f"http://{VPS_ADDRESS}:8080/").returncode == 0, [lab.tmp / "8080.log"])
    stray = lab.run("client", "curl", "-s", "-o", "/dev/null", "--max-time", "2", f"http://{VPS_ADDRESS}:8080/")
    assert stray.returncode == 28  # dropped silently, not refused
    # from a home over the tunnel neither: the tunnel is not a way around the firewall
    assert lab.run("home1", "curl", "-s", "-o", "/dev/null", "--max-time", "2",
                   f"http://{VPS_TUNNEL}:8080/").returncode == 28
    # the opened ports answer
    assert lab.run("client", "curl", "-s", "-o", "/dev/null", "--max-time", "2", f"http://{VPS_ADDRESS}/").returncode == 0
