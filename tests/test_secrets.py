"""`moat secrets`: the secrets directory (passphrases and the OpenVPN PKI) with real openssl and openvpn.

Proves: init makes every secret both examples need with modes 0700/0600 and is idempotent;
the certificates chain to the CA with the right CNs and EKUs (and a wrong purpose is refused);
the generated PKI and tls-crypt key (OpenVPN's and moat's own format) carry a real OpenVPN
handshake between the generated server.conf and client.conf (in a private network namespace);
the CRL made by init verifies against the CA; rotating a client revokes its old certificate, and
the real server (crl-verify) then refuses the old certificate and key and accepts the new ones
(a running server too, once the new crl.pem is in place: no restart), while an expired CRL makes
it refuse every client; rotate keeps the old value; list flags unsafe
modes; no secret reaches the store; `moat iso` accepts the directory. TOTP: one secret per
(machine, user) whose sshd asks for a code, in the ~/.google_authenticator format, its otpauth
URI parsed back to the same secret and a matching RFC 6238 code, rotation, enrollment output.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from compiler import secrets
from compiler.pki import CA_CONFIG
from compiler.pipeline import build_file
from compiler.render.vps import CLIENT_DIR, SERVER_DIR

from .conftest import EXAMPLES, ROOT, run_moat
from .test_vps_login import totp_variant

VPS = ROOT / "blueprints" / "vps-front.yaml"
EXAMPLE = ROOT / "blueprints" / "example.yaml"
OPENVPN = shutil.which("openvpn") or shutil.which("openvpn", path="/usr/sbin:/sbin")

VPS_FILES = {"host-luks", "nextcloud-luks", "openvpn/ca.crt", "openvpn/ca.key", "openvpn/server.crt",
             "openvpn/server.key", "openvpn/tls-crypt.key", "openvpn/clients/home1.crt", "openvpn/clients/home1.key",
             "openvpn/clients/home2.crt", "openvpn/clients/home2.key", "openvpn/crl.pem", "openvpn/index.txt",
             "openvpn/crlnumber", "totp/host/alice"}


def _tree(d: Path) -> dict[str, tuple[int, int, bytes | None]]:
    """relative path -> (mode, mtime_ns, content)"""
    out = {}
    for p in sorted(d.rglob("*")):
        st = p.lstat()
        out[p.relative_to(d).as_posix()] = (stat.S_IMODE(st.st_mode), st.st_mtime_ns,
                                            p.read_bytes() if p.is_file() else None)
    return out


@pytest.fixture(scope="module")
def vps_secrets(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("secrets") / "s"
    r = run_moat("secrets", "init", VPS, "--dir", d)
    assert r.returncode == 0, r.stderr
    assert f"{len(VPS_FILES)} created, 0 already there" in r.stdout
    return d


def test_init_creates_everything_with_private_modes(vps_secrets):
    tree = _tree(vps_secrets)
    files = {k for k, v in tree.items() if v[2] is not None}
    assert files == VPS_FILES
    assert stat.S_IMODE(vps_secrets.stat().st_mode) == 0o700
    for rel, (mode, _, content) in tree.items():
        assert mode == (0o600 if content is not None else 0o700), rel
    for name in ("host-luks", "nextcloud-luks"):
        value = (vps_secrets / name).read_text()
        assert re.fullmatch(r"[A-Za-z0-9_-]{32}\n", value), value
    assert (vps_secrets / "host-luks").read_text() != (vps_secrets / "nextcloud-luks").read_text()


def test_second_init_changes_nothing(vps_secrets):
    before = _tree(vps_secrets)
    r = run_moat("secrets", "init", VPS, "--dir", vps_secrets)
    assert r.returncode == 0, r.stderr
    assert f"0 created, {len(VPS_FILES)} already there" in r.stdout and "created  " not in r.stdout
    assert _tree(vps_secrets) == before


def _openssl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["openssl", *args], capture_output=True, text=True)


def test_certificates_chain_to_the_ca_with_right_names_and_usages(vps_secrets):
    pki = vps_secrets / "openvpn"
    ca = str(pki / "ca.crt")
    leaves = {"server": (pki / "server.crt", "front", "TLS Web Server Authentication", "sslserver"),
              "home1": (pki / "clients/home1.crt", "home1", "TLS Web Client Authentication", "sslclient"),
              "home2": (pki / "clients/home2.crt", "home2", "TLS Web Client Authentication", "sslclient")}
    for crt, cn, eku, purpose in leaves.values():
        ok = _openssl("verify", "-CAfile", ca, "-purpose", purpose, str(crt))
        assert ok.returncode == 0, ok.stdout + ok.stderr
        wrong = "sslclient" if purpose == "sslserver" else "sslserver"
        assert _openssl("verify", "-CAfile", ca, "-purpose", wrong, str(crt)).returncode != 0  # the check can fail
        text = _openssl("x509", "-in", str(crt), "-noout", "-subject", "-ext", "extendedKeyUsage,basicConstraints")
        assert f"CN = {cn}\n" in text.stdout and eku in text.stdout and "CA:FALSE" in text.stdout, text.stdout
    # every key matches its certificate, and keys are EC P-256
    for crt, key in ((pki / "server.crt", pki / "server.key"), (pki / "clients/home1.crt", pki / "clients/home1.key")):
        pub_c = _openssl("x509", "-in", str(crt), "-noout", "-pubkey").stdout
        pub_k = _openssl("pkey", "-in", str(key), "-pubout").stdout
        assert pub_c == pub_k and pub_c
        assert "prime256v1" in _openssl("pkey", "-in", str(key), "-noout", "-text").stdout
    # a certificate from another CA does not verify
    other = vps_secrets.parent / "other"
    other.mkdir()
    secrets.make_ca(other, "other")
    assert _openssl("verify", "-CAfile", str(other / "ca.crt"), str(pki / "server.crt")).returncode != 0


def test_tls_crypt_key_format(vps_secrets):
    for text in ((vps_secrets / "openvpn/tls-crypt.key").read_text(), secrets.tls_crypt_key_text().decode()):
        body = text.split(secrets.TLS_CRYPT_HEADER + "\n")[1].split(secrets.TLS_CRYPT_FOOTER)[0].split()
        assert len(body) == 16 and all(re.fullmatch(r"[0-9a-f]{32}", line) for line in body)


def _date(text: str) -> datetime:
    """An openssl date (notAfter=Nov 20 04:32:20 2036 GMT) as a datetime."""
    return datetime.strptime(text.strip().split("=", 1)[1], "%b %d %H:%M:%S %Y %Z")


def test_init_makes_a_crl_signed_by_the_ca_that_outlives_it(vps_secrets, tmp_path):
    pki = vps_secrets / "openvpn"
    crl, ca = pki / "crl.pem", pki / "ca.crt"
    ok = _openssl("crl", "-in", str(crl), "-CAfile", str(ca), "-noout", "-verify")
    assert ok.returncode == 0 and "verify OK" in ok.stdout + ok.stderr, ok.stdout + ok.stderr
    # the check can fail: the same CRL does not verify against another CA
    other = tmp_path / "other"
    other.mkdir()
    secrets.make_ca(other, "other")
    assert _openssl("crl", "-in", str(crl), "-CAfile", str(other / "ca.crt"), "-noout", "-verify").returncode != 0
    text = _openssl("crl", "-in", str(crl), "-noout", "-text").stdout
    assert "No Revoked Certificates" in text and "CRL Number" in text, text
    # OpenVPN refuses every client once nextUpdate has passed: the CRL lasts as long as the CA
    next_update = _date(_openssl("crl", "-in", str(crl), "-noout", "-nextupdate").stdout)
    ca_end = _date(_openssl("x509", "-in", str(ca), "-noout", "-enddate").stdout)
    assert next_update >= ca_end
    assert (pki / "index.txt").read_bytes() == b"" and (pki / "crlnumber").read_text() == "02\n"
    # an empty database is not an "empty secret" for list
    r = run_moat("secrets", "list", VPS, "--dir", vps_secrets)
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.search(r"(?m)^present +openvpn-crl +\S+/openvpn/index\.txt$", r.stdout), r.stdout
    # the PKI's files a kickstart reads (openvpn/...) are not taken for passphrases
    _, items = secrets.needed(VPS)
    assert [s.name for s in items if s.kind == "passphrase"] == ["host-luks", "nextcloud-luks"]


def _configs(tmp: Path, pki: Path) -> tuple[Path, Path]:
    """The generated server.conf and client.conf of vps-front with the real PKI paths rewritten in,
    the client pointed at the server on loopback, user/group dropped (a user namespace)."""
    compiled, stored = build_file(VPS, tmp / "out", tools=False)
    bundle = stored.path
    shutil.copytree(bundle / "vps/openvpn/ccd", tmp / "ccd")
    server = (bundle / "vps/openvpn/server.conf").read_text()
    client = (bundle / "host/openvpn/client.conf").read_text()
    server = (server.replace(SERVER_DIR + "/ccd", str(tmp / "ccd")).replace(SERVER_DIR + "/server.", f"{pki}/server.")
              .replace(SERVER_DIR + "/", f"{pki}/"))
    client = client.replace(CLIENT_DIR + "/home1.", f"{pki}/clients/home1.").replace(CLIENT_DIR + "/", f"{pki}/")
    client = re.sub(r"(?m)^remote \S+ (\d+) udp$", r"remote 127.0.0.1 \1 udp", client)
    server = re.sub(r"(?m)^local \S+$", "local 127.0.0.1", server)  # the VPS's public address, if bound
    # both ends share one namespace here: the client's tun device needs a name of its own
    client = re.sub(r"(?m)^dev \S+$", "dev tun-moat-c", client)
    assert SERVER_DIR not in server and CLIENT_DIR not in client and "127.0.0.1" in client
    assert f"\ncrl-verify {pki}/crl.pem\n" in server
    strip = re.compile(r"(?m)^(user|group) ")
    (tmp / "server.conf").write_text(strip.sub(r"# \1 ", server))
    (tmp / "client.conf").write_text(strip.sub(r"# \1 ", client) + "connect-retry 1\n")
    return tmp / "server.conf", tmp / "client.conf"


def _kill_group(proc: subprocess.Popen) -> None:
    """Stop a namespace started with start_new_session and everything in it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def _handshake(tmp: Path, server: Path, client: Path, timeout: float = 15) -> tuple[bool, str]:
    """Server and client in one fresh user+network namespace (loopback only): did the client come up?"""
    script = (f"ip link set lo up && {OPENVPN} --config {server} --log {tmp}/server.log & "
              f"sleep 0.3; exec {OPENVPN} --config {client} --log {tmp}/client.log")
    for log in (tmp / "client.log", tmp / "server.log"):  # nothing of an earlier run is read
        log.unlink(missing_ok=True)
    proc = subprocess.Popen(["unshare", "--map-root-user", "--net", "--fork", "sh", "-c", script],
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = tmp / "client.log"
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = log.read_text() if log.exists() else ""
            if "Initialization Sequence Completed" in text:
                return True, text
            server_log = tmp / "server.log"
            if proc.poll() is not None or (server_log.exists() and "VERIFY ERROR" in server_log.read_text()):
                break  # the server refused the client: it would only retry
            time.sleep(0.1)
        return False, text + "\n--- server ---\n" + ((tmp / "server.log").read_text() if (tmp / "server.log").exists() else "")
    finally:
        _kill_group(proc)


@pytest.mark.slow
def test_real_openvpn_handshake_with_the_generated_pki(vps_secrets, tmp_path):
    pki = tmp_path / "pki"
    shutil.copytree(vps_secrets / "openvpn", pki)
    server, client = _configs(tmp_path, pki)
    ok, log = _handshake(tmp_path, server, client)
    assert ok, log
    assert "VERIFY OK" in log and "CN=front" in log
    # moat's own tls-crypt format (used when openvpn is not installed) works the same
    (pki / "tls-crypt.key").write_bytes(secrets.tls_crypt_key_text())
    ok, log = _handshake(tmp_path, server, client)
    assert ok, log
    # the handshake test can fail: a client certificate from another CA is refused
    other = tmp_path / "other"
    other.mkdir()
    secrets.make_ca(other, "intruder CA")
    crt, key = secrets.make_leaf(other, other / "ca.crt", other / "ca.key", "home1", "clientAuth")
    (pki / "clients/home1.crt").write_bytes(crt)
    (pki / "clients/home1.key").write_bytes(key)
    ok, log = _handshake(tmp_path, server, client, timeout=6)
    assert not ok and "VERIFY ERROR" in log, log


def test_rotate_passphrase_keeps_old(tmp_path):
    d = tmp_path / "s"
    assert run_moat("secrets", "init", EXAMPLE, "--dir", d).returncode == 0
    old = (d / "host-luks").read_bytes()
    r = run_moat("secrets", "rotate", EXAMPLE, "host-luks", "--dir", d)
    assert r.returncode == 0, r.stderr
    assert "cryptsetup luksChangeKey" in r.stdout
    assert (d / "host-luks.old").read_bytes() == old
    new = (d / "host-luks").read_bytes()
    assert new != old and re.fullmatch(rb"[A-Za-z0-9_-]{32}\n", new)
    assert stat.S_IMODE((d / "host-luks").stat().st_mode) == 0o600
    # a second rotation before the first is finished is refused, nothing changes
    r = run_moat("secrets", "rotate", EXAMPLE, "host-luks", "--dir", d)
    assert r.returncode == 1 and "secrets-rotate-pending" in r.stderr
    assert (d / "host-luks").read_bytes() == new
    r = run_moat("secrets", "rotate", EXAMPLE, "nope", "--dir", d)
    assert r.returncode == 1 and "secrets-unknown" in r.stderr and "host-luks" in r.stderr


@pytest.mark.parametrize(("name", "secret"), [("host-luks", "host-luks"), ("totp-host-alice", "totp/host/alice")])
def test_a_rotation_killed_after_keeping_the_old_value_is_done_by_the_next(tmp_path, name, secret):
    d = tmp_path / "s"
    assert run_moat("secrets", "init", VPS, "--dir", d).returncode == 0
    old = (d / secret).read_bytes()
    killed = subprocess.run([sys.executable, "-m", "compiler.cli", "secrets", "rotate", str(VPS), name,
                             "--dir", str(d)], cwd=ROOT, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "MOAT_TEST_KILL_AT": "kept-old"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert (d / secret).read_bytes() == old  # never without a value
    r = run_moat("secrets", "rotate", VPS, name, "--dir", d)
    assert r.returncode == 0, r.stderr
    assert (d / f"{secret}.old").read_bytes() == old != (d / secret).read_bytes()


def test_rotate_openvpn_client_reissues_its_certificate(vps_secrets, tmp_path):
    d = tmp_path / "s"
    shutil.copytree(vps_secrets, d)
    old_crt = (d / "openvpn/clients/home1.crt").read_bytes()
    home2 = (d / "openvpn/clients/home2.crt").read_bytes()
    r = run_moat("secrets", "rotate", VPS, "openvpn-client-home1", "--dir", d)
    assert r.returncode == 0, r.stderr
    assert (d / "openvpn/clients/home1.crt.old").read_bytes() == old_crt
    new = d / "openvpn/clients/home1.crt"
    assert new.read_bytes() != old_crt and (d / "openvpn/clients/home2.crt").read_bytes() == home2
    assert _openssl("verify", "-CAfile", str(d / "openvpn/ca.crt"), "-purpose", "sslclient", str(new)).returncode == 0
    assert "CN = home1" in _openssl("x509", "-in", str(new), "-noout", "-subject").stdout


def _crl_serials(crl: Path) -> list[str]:
    return re.findall(r"Serial Number: ([0-9A-F]+)", _openssl("crl", "-in", str(crl), "-noout", "-text").stdout)


def test_rotate_revokes_the_old_client_certificate_in_the_crl(vps_secrets, tmp_path):
    d = tmp_path / "s"
    shutil.copytree(vps_secrets, d)
    pki = d / "openvpn"
    ca, crl = str(pki / "ca.crt"), pki / "crl.pem"
    first = secrets.serial(pki / "clients/home1.crt")
    r = run_moat("secrets", "rotate", VPS, "openvpn-client-home1", "--dir", d)
    assert r.returncode == 0, r.stderr
    assert first in r.stdout and "/etc/openvpn/server/crl.pem" in r.stdout and "stays valid" not in r.stdout
    second = secrets.serial(pki / "clients/home1.crt")
    assert _crl_serials(crl) == [first] and second != first
    assert "Superseded" in _openssl("crl", "-in", str(crl), "-noout", "-text").stdout
    assert _openssl("crl", "-in", str(crl), "-CAfile", ca, "-noout", "-verify").returncode == 0
    # openssl's verifier with the CRL: the old certificate is revoked, the new one and home2 are fine
    def verify(crt: Path) -> subprocess.CompletedProcess:
        return _openssl("verify", "-crl_check", "-CRLfile", str(crl), "-CAfile", ca, str(crt))
    refused = verify(pki / "clients/home1.crt.old")
    assert refused.returncode != 0 and "certificate revoked" in refused.stdout + refused.stderr
    assert verify(pki / "clients/home1.crt").returncode == 0 and verify(pki / "clients/home2.crt").returncode == 0
    assert (pki / "crlnumber").read_text() == "03\n"
    # everything still 0600, no scratch or temporary files left behind
    tree = _tree(d)
    assert all(mode == (0o600 if content is not None else 0o700) for mode, _, content in tree.values())
    dirs = {"openvpn", "openvpn/clients", "totp", "totp/host"}
    assert set(tree) - dirs == VPS_FILES | {"openvpn/clients/home1.crt.old", "openvpn/clients/home1.key.old"}
    # a second rotation (once the first is done) adds the next certificate to the same list
    for old in ("home1.crt.old", "home1.key.old"):
        (pki / "clients" / old).unlink()
    assert run_moat("secrets", "rotate", VPS, "openvpn-client-home1", "--dir", d).returncode == 0
    assert sorted(_crl_serials(crl)) == sorted([first, second])
    assert (pki / "crlnumber").read_text() == "04\n"


def test_rotate_needs_the_crl_and_init_makes_it_for_an_older_pki(vps_secrets, tmp_path):
    d = tmp_path / "s"
    shutil.copytree(vps_secrets, d)
    pki = d / "openvpn"
    # a PKI from before the CRL: a rotation already done (home1.crt.old), no crl.pem/index.txt/crlnumber
    old = secrets.serial(pki / "clients/home1.crt")
    for f in ("crt", "key"):
        os.rename(pki / f"clients/home1.{f}", pki / f"clients/home1.{f}.old")
    crt, key = secrets.make_leaf(tmp_path, pki / "ca.crt", pki / "ca.key", "home1", "clientAuth")
    (pki / "clients/home1.crt").write_bytes(crt)
    (pki / "clients/home1.key").write_bytes(key)
    os.chmod(pki / "clients/home1.crt", 0o600)
    os.chmod(pki / "clients/home1.key", 0o600)
    for f in secrets.CRL_FILES:
        (d / f).unlink()
    before = _tree(d)
    r = run_moat("secrets", "rotate", VPS, "openvpn-client-home2", "--dir", d)
    assert r.returncode == 1 and "secrets-missing" in r.stderr and "moat secrets init" in r.stderr, r.stderr
    assert _tree(d) == before  # refused: nothing changed
    r = run_moat("secrets", "init", VPS, "--dir", d)
    assert r.returncode == 0, r.stderr
    assert sorted(line.split()[-1] for line in r.stdout.splitlines() if line.startswith("created")) == sorted(
        str(d / f) for f in secrets.CRL_FILES)
    assert _crl_serials(pki / "crl.pem") == [old]  # the certificate replaced earlier is revoked at once


@pytest.mark.slow
def test_the_real_server_refuses_the_rotated_out_certificate(vps_secrets, tmp_path):
    d = tmp_path / "s"
    shutil.copytree(vps_secrets, d)
    crl_before = (d / "openvpn/crl.pem").read_bytes()
    assert run_moat("secrets", "rotate", VPS, "openvpn-client-home1", "--dir", d).returncode == 0
    pki = tmp_path / "pki"
    shutil.copytree(d / "openvpn", pki)
    server, client = _configs(tmp_path, pki)
    # the new certificate and key connect through the server with the new CRL
    ok, log = _handshake(tmp_path, server, client)
    assert ok, log
    # the old ones are refused: revoked
    (pki / "clients/home1.crt").write_bytes((pki / "clients/home1.crt.old").read_bytes())
    (pki / "clients/home1.key").write_bytes((pki / "clients/home1.key.old").read_bytes())
    ok, log = _handshake(tmp_path, server, client, timeout=8)
    assert not ok and "certificate revoked" in log, log
    # and the CRL is what refuses them: with the CRL from before the rotation they still connect
    (pki / "crl.pem").write_bytes(crl_before)
    ok, log = _handshake(tmp_path, server, client)
    assert ok, log


@pytest.mark.slow
def test_an_expired_crl_makes_the_real_server_refuse_every_client(vps_secrets, tmp_path):
    """Why the CRL lasts as long as the CA: OpenVPN 2.6 with OpenSSL checks its nextUpdate."""
    pki = tmp_path / "pki"
    shutil.copytree(vps_secrets / "openvpn", pki)
    work = tmp_path / "ca"
    work.mkdir()
    (work / "ca.cnf").write_text(CA_CONFIG.format(days=1))
    (work / "index.txt").write_text("")
    (work / "crlnumber").write_text("01\n")
    subprocess.run(["openssl", "ca", "-batch", "-config", "ca.cnf", "-gencrl", "-cert", str(pki / "ca.crt"),
                    "-keyfile", str(pki / "ca.key"), "-crl_lastupdate", "20200101000000Z",
                    "-crl_nextupdate", "20200102000000Z", "-out", str(pki / "crl.pem")],
                   cwd=work, check=True, capture_output=True)
    server, client = _configs(tmp_path, pki)
    ok, log = _handshake(tmp_path, server, client, timeout=8)
    assert not ok and "CRL has expired" in log, log


def test_list_reports_missing_present_and_unsafe_modes(tmp_path):
    d = tmp_path / "s"
    r = run_moat("secrets", "list", VPS, "--dir", d)
    assert r.returncode == 0 and r.stdout.count("missing ") == len(VPS_FILES)
    assert run_moat("secrets", "init", VPS, "--dir", d).returncode == 0
    (d / "openvpn/clients/home2.key").unlink()
    os.chmod(d / "host-luks", 0o644)
    r = run_moat("secrets", "list", VPS, "--dir", d)
    assert r.returncode == 1
    lines = {line.split()[-1] if "(" not in line else line.split("(")[0].split()[-1]: line for line in r.stdout.splitlines()}
    assert lines[str(d / "openvpn/clients/home2.key")].startswith("missing")
    assert lines[str(d / "openvpn/ca.key")].startswith("present")
    assert "0644" in lines[str(d / "host-luks")]
    assert "error[secrets-mode]" in r.stderr and f"chmod 600 {d / 'host-luks'}" in r.stderr
    # init refuses to work in a directory with unsafe modes, and creates nothing
    r = run_moat("secrets", "init", VPS, "--dir", d)
    assert r.returncode == 1 and "secrets-mode" in r.stderr
    assert not (d / "openvpn/clients/home2.key").exists()


def test_refuses_unsafe_directories(tmp_path):
    out = tmp_path / "out"
    build_file(EXAMPLE, out, tools=False)
    r = run_moat("secrets", "init", EXAMPLE, "--dir", out / "store" / "secrets")
    assert r.returncode == 1 and "secrets-dir-unsafe" in r.stderr
    assert not (out / "store" / "secrets").exists()
    # inside a git work tree, not ignored
    subprocess.run(["git", "init", "-q", str(tmp_path / "repo")], check=True)
    r = run_moat("secrets", "init", EXAMPLE, "--dir", tmp_path / "repo" / "keys")
    assert r.returncode == 1 and "secrets-dir-unsafe" in r.stderr and ".gitignore" in r.stderr
    (tmp_path / "repo" / ".gitignore").write_text("/keys/\n")
    assert run_moat("secrets", "init", EXAMPLE, "--dir", tmp_path / "repo" / "keys").returncode == 0
    # a directory we cannot write to
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        r = run_moat("secrets", "init", EXAMPLE, "--dir", locked)
        assert r.returncode == 1 and "secrets-dir-permission" in r.stderr
    # openssl missing
    env = {"PATH": str(tmp_path / "empty-bin")}
    (tmp_path / "empty-bin").mkdir()
    r = subprocess.run([str(ROOT / ".venv/bin/python"), "-m", "compiler.cli", "secrets", "init", str(VPS),
                        "--dir", str(tmp_path / "nossl")], cwd=ROOT, capture_output=True, text=True, env=env)
    assert r.returncode == 1 and "secrets-openssl-missing" in r.stderr and "apt-get install openssl" in r.stderr


def test_no_secret_reaches_the_store(tmp_path):
    d = tmp_path / "s"
    values = []
    out = tmp_path / "out"
    for bp in EXAMPLES:
        assert run_moat("secrets", "init", bp, "--dir", d).returncode == 0
        build_file(bp, out, tools=False)
    public = {d / f for f in secrets.CRL_FILES}  # the CRL and its database: no secret (and index.txt is empty)
    for p in d.rglob("*"):
        if p.is_file() and p not in public:
            text = p.read_bytes()
            if p.parent.parent.name == secrets.TOTP_DIR:
                values.append(text.split(b"\n")[0])  # the TOTP secret line
            elif p.name.endswith(".key") and b"Static key" in text:
                values += [line for line in text.split(b"\n") if re.fullmatch(rb"[0-9a-f]{32}", line)]
            elif b"BEGIN" in text:
                values.append(b"".join(text.split(b"\n")[1:3]))  # start of the base64 body
            else:
                values.append(text.strip())
    assert len(values) > 10
    stored = [p for p in (out / "store").rglob("*") if p.is_file()]
    assert stored
    for p in stored:
        data = p.read_bytes()
        assert b"PRIVATE KEY" not in data, p
        assert b"Static key V1-----\n" not in data or b"-----BEGIN OpenVPN" not in data, p
        for v in values:
            assert v not in data, p


def test_iso_accepts_the_directory(tmp_path):
    d, out = tmp_path / "s", tmp_path / "out"
    assert run_moat("build", EXAMPLE, "--out", out, "--no-tools").returncode == 0
    r = run_moat("iso", "--out", out, "--secrets", d)
    assert r.returncode == 1 and "iso-secret-missing" in r.stderr  # without the directory: refused
    assert run_moat("secrets", "init", EXAMPLE, "--dir", d).returncode == 0
    r = run_moat("iso", "--out", out, "--secrets", d, "--output", tmp_path / "media" / "host.iso")
    assert r.returncode == 0, r.stderr
    assert "secrets: host-luks" in r.stdout and "nextcloud-luks" in r.stdout


def test_help_has_examples():
    r = run_moat("secrets", "--help")
    assert r.returncode == 0 and "examples:" in r.stdout and "luksChangeKey" in r.stdout
    # each action has its own usage, help and examples; a wrong command line is a usage error (2)
    r = run_moat("secrets", "rotate", EXAMPLE)
    assert r.returncode == 2 and "usage: moat secrets rotate [-h] [--dir DIR] BLUEPRINT NAME" in r.stderr
    assert "required: NAME" in r.stderr
    for action, example in (("init", "moat secrets init blueprints/"), ("list", "moat secrets list blueprints/"),
                            ("rotate", "moat secrets rotate blueprints/example.yaml host-luks"),
                            ("totp", "moat secrets totp blueprints/vps-front.yaml alice")):
        r = run_moat("secrets", action, "--help")
        assert r.returncode == 0 and r.stdout.startswith(f"usage: moat secrets {action} ")
        examples = [line for line in r.stdout.splitlines() if line.startswith("  moat ")]
        assert examples and all(line.startswith(f"  moat secrets {action} ") for line in examples)
        assert any(line.startswith(f"  {example}") for line in examples)
    assert "luksChangeKey" in run_moat("secrets", "rotate", "--help").stdout
    assert "--machine" in run_moat("secrets", "totp", "--help").stdout


@pytest.mark.slow
def test_a_running_server_refuses_the_old_certificate_once_the_new_crl_is_in_place(vps_secrets, tmp_path):
    """What rotate's note says: copy crl.pem to the VPS, no restart: the server reads it at the next connection."""
    d = tmp_path / "s"
    shutil.copytree(vps_secrets, d)
    pki = tmp_path / "pki"
    shutil.copytree(d / "openvpn", pki)  # the VPS and the home host as they were before the rotation
    server, client = _configs(tmp_path, pki)
    assert run_moat("secrets", "rotate", VPS, "openvpn-client-home1", "--dir", d).returncode == 0
    new_crl = d / "openvpn/crl.pem"
    # one server; a client before and a client after the CRL is replaced (atomically, as an install would)
    script = (f"ip link set lo up && {{ {OPENVPN} --config {server} --log {tmp_path}/server.log & }}; sleep 0.5; "
              f"timeout 3 {OPENVPN} --config {client} --log {tmp_path}/before.log; "
              f"cp {new_crl} {pki}/crl.pem.new && mv {pki}/crl.pem.new {pki}/crl.pem; "
              f"timeout 3 {OPENVPN} --config {client} --log {tmp_path}/after.log; kill %1")
    proc = subprocess.Popen(["unshare", "--map-root-user", "--net", "--fork", "sh", "-c", script],
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        proc.wait(timeout=30)
    finally:
        _kill_group(proc)
    before, after = ((tmp_path / f).read_text() for f in ("before.log", "after.log"))
    server_log = (tmp_path / "server.log").read_text()
    assert "Initialization Sequence Completed" in before, before + server_log
    assert "Initialization Sequence Completed" not in after and "certificate revoked" in server_log, after + server_log
    assert server_log.count("Initialization Sequence Completed") == 1  # the same server all along


# --- TOTP ------------------------------------------------------------------------------------


def totp_code(secret: str, at: float) -> str:
    """RFC 6238 (HMAC-SHA1, 30 s, 6 digits), independent of compiler/secrets.py."""
    import base64
    import hashlib
    import hmac
    import struct

    key = base64.b32decode(secret + "=" * (-len(secret) % 8))
    digest = hmac.new(key, struct.pack(">Q", int(at) // 30), hashlib.sha1).digest()
    offset = digest[-1] & 15
    return f"{(struct.unpack('>I', digest[offset:offset + 4])[0] & 0x7FFFFFFF) % 1000000:06d}"


def test_totp_secret_file_is_what_pam_google_authenticator_reads(vps_secrets):
    lines = (vps_secrets / "totp/host/alice").read_text().split("\n")
    # google-authenticator's FILEFORMAT: base32 secret, then '" OPTION' lines; no scratch codes
    assert re.fullmatch(r"[A-Z2-7]{32}", lines[0]), lines[0]
    assert lines[1:] == ['" RATE_LIMIT 3 30', '" WINDOW_SIZE 3', '" DISALLOW_REUSE', '" TOTP_AUTH', ""]
    import base64

    assert len(base64.b32decode(lines[0])) == 20  # 160 bits
    # the example's VPS asks for no code: no secret for it; example.yaml's host neither
    assert not (vps_secrets / "totp/vps").exists()
    _, items = secrets.needed(EXAMPLE)
    assert not [s for s in items if s.kind == "totp"]


def test_one_totp_secret_per_machine_and_user(tmp_path):
    bp = totp_variant(tmp_path)
    d = tmp_path / "s"
    r = run_moat("secrets", "init", bp, "--dir", d)
    assert r.returncode == 0, r.stderr
    assert {p.relative_to(d).as_posix() for p in (d / "totp").rglob("*") if p.is_file()} == \
        {"totp/host/alice", "totp/vps/alice"}
    for rel in ("totp", "totp/host", "totp/vps"):
        assert stat.S_IMODE((d / rel).stat().st_mode) == 0o700
    for rel in ("totp/host/alice", "totp/vps/alice"):
        assert stat.S_IMODE((d / rel).stat().st_mode) == 0o600
    assert (d / "totp/host/alice").read_text() != (d / "totp/vps/alice").read_text()
    r = run_moat("secrets", "list", bp, "--dir", d)
    assert r.returncode == 0, r.stderr
    assert re.search(r"^present\s+totp-host-alice\s+" + re.escape(str(d / "totp/host/alice")) + "$", r.stdout, re.M)
    assert re.search(r"^present\s+totp-vps-alice\s+" + re.escape(str(d / "totp/vps/alice")) + "$", r.stdout, re.M)
    os.chmod(d / "totp/vps/alice", 0o640)
    r = run_moat("secrets", "list", bp, "--dir", d)
    assert r.returncode == 1 and f"chmod 600 {d / 'totp/vps/alice'}" in r.stderr


def _uris(stdout: str) -> dict[str, str]:
    return {urlsplit(u).path: u for u in re.findall(r"^otpauth://\S+$", stdout, re.M)}


def test_enrollment_prints_the_otpauth_uri_of_the_secret(tmp_path):
    bp = totp_variant(tmp_path)
    d = tmp_path / "s"
    assert run_moat("secrets", "init", bp, "--dir", d).returncode == 0
    nothing = {"PATH": str(tmp_path / "no-qrencode")}  # no qrencode: the URI only, and a hint
    (tmp_path / "no-qrencode").mkdir()
    r = run_moat("secrets", "totp", bp, "alice", "--machine", "host", "--dir", d, env=nothing)
    assert r.returncode == 0, r.stderr
    assert "install qrencode" in r.stderr
    [(path, uri)] = _uris(r.stdout).items()
    parts = urlsplit(uri)
    assert (parts.scheme, parts.netloc) == ("otpauth", "totp")
    assert unquote(parts.path) == "/moat:alice@homeserver.home.example.net"
    query = {k: v[0] for k, v in parse_qs(parts.query, strict_parsing=True).items()}
    secret = (d / "totp/host/alice").read_text().split("\n")[0]
    assert query == {"secret": secret, "issuer": "moat", "algorithm": "SHA1", "digits": "6", "period": "30"}
    # an authenticator app's code from the URI is the code of the file's secret
    now = time.time()
    assert totp_code(query["secret"], now) == totp_code(secret, now)
    # without --machine: every machine that asks alice for a code
    r = run_moat("secrets", "totp", bp, "alice", "--dir", d, env=nothing)
    uris = _uris(r.stdout)
    assert r.returncode == 0 and set(uris) == {"/moat:alice@homeserver.home.example.net", "/moat:alice@front"}
    vps_secret = parse_qs(urlsplit(uris["/moat:alice@front"]).query)["secret"][0]
    assert vps_secret == (d / "totp/vps/alice").read_text().split("\n")[0] != secret
    # with qrencode (tests/system/secrets.debs): a QR code in the terminal, then the URI
    r = run_moat("secrets", "totp", bp, "alice", "--machine", "vps", "--dir", d)
    assert r.returncode == 0 and "\u2588" in r.stdout and list(_uris(r.stdout)) == ["/moat:alice@front"]
    assert shutil.which("qrencode"), "tests/system/secrets.debs installs qrencode"


def _on_a_terminal(*args, env: dict) -> str:
    """stdout of `moat ARGS` when stdout is a terminal (a pty), as a person at the keyboard sees it."""
    import pty
    import sys

    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "compiler.cli", *map(str, args)], cwd=ROOT, stdout=follower,
                            stderr=subprocess.DEVNULL, env={**os.environ, **env})
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    assert proc.wait(timeout=60) == 0
    return b"".join(chunks).decode()


def test_qr_code_colours_only_on_a_terminal_without_no_color(tmp_path):
    assert shutil.which("qrencode"), "tests/system/secrets.debs installs qrencode"
    bp = totp_variant(tmp_path)
    d = tmp_path / "s"
    assert run_moat("secrets", "init", bp, "--dir", d).returncode == 0
    args = ("secrets", "totp", bp, "alice", "--machine", "host", "--dir", d)
    plain = {"NO_COLOR": ""}  # empty: not set, per no-color.org
    assert "\x1b[" in _on_a_terminal(*args, env=plain)
    for text in (_on_a_terminal(*args, env={"NO_COLOR": "1"}), run_moat(*args, env=plain).stdout):
        assert "\x1b" not in text and "\u2588" in text  # the code is still drawn, in plain UTF-8 blocks
        assert re.search(r"^otpauth://totp/", text, re.M)


def test_enrollment_refuses_unknown_users_and_missing_secrets(tmp_path):
    d = tmp_path / "s"
    r = run_moat("secrets", "totp", VPS, "alice", "--dir", d)
    assert r.returncode == 1 and "secrets-missing" in r.stderr and "moat secrets init" in r.stderr
    assert run_moat("secrets", "init", VPS, "--dir", d).returncode == 0
    r = run_moat("secrets", "totp", VPS, "alice", "--machine", "vps", "--dir", d)  # vps.sshd.totp is false
    assert r.returncode == 1 and "secrets-unknown" in r.stderr and "alice (host)" in r.stderr
    r = run_moat("secrets", "totp", VPS, "mallory", "--dir", d)
    assert r.returncode == 1 and "secrets-unknown" in r.stderr
    r = run_moat("secrets", "totp", EXAMPLE, "alice", "--dir", d)
    assert r.returncode == 1 and "host.sshd.totp" in r.stderr
    r = run_moat("secrets", "totp", VPS, "--dir", d)
    assert r.returncode == 2 and "usage: moat secrets totp" in r.stderr and "required: USER" in r.stderr
    r = run_moat("secrets", "list", VPS, "--machine", "host", "--dir", d)
    assert r.returncode == 2 and "unrecognized arguments: --machine" in r.stderr


def test_rotate_totp_makes_a_new_secret_and_says_to_enroll_again(vps_secrets, tmp_path):
    d = tmp_path / "s"
    shutil.copytree(vps_secrets, d)
    old = (d / "totp/host/alice").read_bytes()
    r = run_moat("secrets", "rotate", VPS, "totp-host-alice", "--dir", d)
    assert r.returncode == 0, r.stderr
    assert (d / "totp/host/alice.old").read_bytes() == old
    new = (d / "totp/host/alice").read_bytes()
    assert new != old and new.split(b"\n")[1:] == old.split(b"\n")[1:]
    assert stat.S_IMODE((d / "totp/host/alice").stat().st_mode) == 0o600
    assert "enrolled again" in r.stdout and "moat secrets totp" in r.stdout and ".google_authenticator" in r.stdout
    r = run_moat("secrets", "rotate", VPS, "totp-host-alice", "--dir", d)
    assert r.returncode == 1 and "secrets-rotate-pending" in r.stderr
    r = run_moat("secrets", "rotate", VPS, "nope", "--dir", d)
    assert r.returncode == 1 and "totp-host-alice" in r.stderr


def test_help_says_how_a_user_enrolls():
    r = run_moat("secrets", "--help")
    assert r.returncode == 0
    text = " ".join(r.stdout.split())
    assert "moat secrets totp BLUEPRINT USER [--machine host|vps]" in text
    assert "Before the first login, each user enrolls" in text and "qrencode" in text
