"""`moat secrets`: the secrets directory (passphrases and the OpenVPN PKI) with real openssl and openvpn.

Proves: init makes every secret both examples need with modes 0700/0600 and is idempotent;
the certificates chain to the CA with the right CNs and EKUs (and a wrong purpose is refused);
the generated PKI and tls-crypt key (OpenVPN's and moat's own format) carry a real OpenVPN
handshake between the generated server.conf and client.conf (in a private network namespace);
rotate keeps the old value; list flags unsafe modes; no secret reaches the store; `moat iso`
accepts the directory.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest

from compiler import secrets
from compiler.pipeline import build_file
from compiler.render.vps import CLIENT_DIR, SERVER_DIR

from .conftest import EXAMPLES, ROOT, run_moat

VPS = ROOT / "blueprints" / "vps-front.yaml"
EXAMPLE = ROOT / "blueprints" / "example.yaml"
OPENVPN = shutil.which("openvpn") or shutil.which("openvpn", path="/usr/sbin:/sbin")

VPS_FILES = {"host-luks", "nextcloud-luks", "openvpn/ca.crt", "openvpn/ca.key", "openvpn/server.crt",
             "openvpn/server.key", "openvpn/tls-crypt.key", "openvpn/clients/home1.crt", "openvpn/clients/home1.key",
             "openvpn/clients/home2.crt", "openvpn/clients/home2.key"}


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
    assert "11 created, 0 already there" in r.stdout
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
    assert "0 created, 11 already there" in r.stdout and "created  " not in r.stdout
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
    assert SERVER_DIR not in server and CLIENT_DIR not in client and "127.0.0.1" in client
    strip = re.compile(r"(?m)^(user|group) ")
    (tmp / "server.conf").write_text(strip.sub(r"# \1 ", server))
    (tmp / "client.conf").write_text(strip.sub(r"# \1 ", client) + "connect-retry 1\n")
    return tmp / "server.conf", tmp / "client.conf"


def _handshake(tmp: Path, server: Path, client: Path, timeout: float = 15) -> tuple[bool, str]:
    """Server and client in one fresh user+network namespace (loopback only): did the client come up?"""
    script = (f"ip link set lo up && {OPENVPN} --config {server} --log {tmp}/server.log & "
              f"sleep 0.3; exec {OPENVPN} --config {client} --log {tmp}/client.log")
    proc = subprocess.Popen(["unshare", "--map-root-user", "--net", "--fork", "sh", "-c", script],
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = tmp / "client.log"
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = log.read_text() if log.exists() else ""
            if "Initialization Sequence Completed" in text:
                return True, text
            if proc.poll() is not None:
                break
            time.sleep(0.1)
        return False, text + "\n--- server ---\n" + ((tmp / "server.log").read_text() if (tmp / "server.log").exists() else "")
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


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
    (tmp_path / "client.log").unlink()
    ok, log = _handshake(tmp_path, server, client)
    assert ok, log
    # the handshake test can fail: a client certificate from another CA is refused
    other = tmp_path / "other"
    other.mkdir()
    secrets.make_ca(other, "intruder CA")
    crt, key = secrets.make_leaf(other, other / "ca.crt", other / "ca.key", "home1", "clientAuth")
    (pki / "clients/home1.crt").write_bytes(crt)
    (pki / "clients/home1.key").write_bytes(key)
    (tmp_path / "client.log").unlink()
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
    for p in d.rglob("*"):
        if p.is_file():
            text = p.read_bytes()
            if p.name.endswith(".key") and b"Static key" in text:
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
    r = run_moat("secrets", "rotate", EXAMPLE)
    assert r.returncode == 1 and "rotate takes BLUEPRINT NAME" in r.stderr
