"""vps_install family and `moat vps-archive`: the VPS front installed from one archive.

The script vps/moat-install is checked by shellcheck (which rejects a broken variant); a vps/
file without an entry in the install table fails the build; the archive has exactly the
expected members, modes and owners, carries no key but the server's, and is byte-identical for
the same inputs. Then the script runs for real on the unpacked archive with MOAT_ROOT (staging:
files only): every file lands at its path with its mode and content, a second run changes
nothing, and a tampered file stops it before anything is installed. The VPS ruleset, installed
as Debian's /etc/nftables.conf, is loaded twice in a network namespace created here: it
replaces its own table and leaves other tables alone. With vps.sshd.totp, the archive carries
each VPS user's TOTP secret from `moat secrets init` (and never a host user's), and moat-install
puts it in place as ~<user>/.google_authenticator 0400 owned by the user, leaves the same secret
alone on a rerun, keeps a different one (the user's own) with a warning, and warns about a
missing account.

And for real, as root on Debian 12: in a debootstrap root (tests/system/vps_chroot.sh), under
chroot and a network namespace with only loopback, the script refuses to lock everyone out,
apt-get installs the packages (offline, from the image's apt cache), sshd -t, nft -c and
fail2ban-client -t each stop a broken file (with a valid sha256) before anything is installed,
every file lands with its mode and owner, the units are enabled, certbot's failure stops it with
what to fix after everything else is done, pebble (a local ACME server) issues the certificates
after a real http-01 validation, and each rerun changes nothing.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import subprocess
import tarfile
from fnmatch import fnmatch
from pathlib import Path

import pytest

from compiler.pipeline import check_file
from compiler.render import vps_install as family
from compiler.vps_archive import vps_archive

from .conftest import ROOT, run_moat
from .debian_root import image, unpacked
from .test_vps_login import totp_variant

EXAMPLE_A = ROOT / "blueprints" / "example.yaml"
EXAMPLE_B = ROOT / "blueprints" / "vps-front.yaml"
SCRIPT = family.SCRIPT
EPOCH = "1700000000"


def run(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, **kw)


@pytest.fixture(scope="module")
def bundle() -> dict:
    return check_file(EXAMPLE_B).files


@pytest.fixture(scope="module")
def secrets_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("secrets") / "secrets"
    made = run_moat("secrets", "init", EXAMPLE_B, "--dir", d)
    assert made.returncode == 0, made.stderr
    crl = d / "openvpn" / "crl.pem"
    if not crl.exists():  # `moat secrets init` without CRL support yet: a stand-in, in this fixture only
        crl.write_text("-----BEGIN X509 CRL-----\nZmFrZQ==\n-----END X509 CRL-----\n")
        crl.chmod(0o600)
    return d


@pytest.fixture(scope="module")
def archive(tmp_path_factory, secrets_dir) -> tuple[Path, Path]:
    """(the archive, the store path it was made from)"""
    work = tmp_path_factory.mktemp("archive")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SOURCE_DATE_EPOCH", EPOCH)
        result = vps_archive(EXAMPLE_B, secrets_dir, work / "front.tar.gz", work / "out", tools=False)
    return result.path, result.store


def validate(path: Path) -> subprocess.CompletedProcess:
    (v,) = [v for v in family.VALIDATORS if fnmatch(SCRIPT, v.pattern)]
    return run(*(str(path) if a == "{file}" else a for a in v.command))


def unpack(archive: Path, into: Path) -> Path:
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="fully_trusted")
    return into / "moat-vps" / "moat-install"


def install(script: Path, root: Path, *args: str) -> subprocess.CompletedProcess:
    return run(str(script), *args, env={**os.environ, "MOAT_ROOT": str(root)})


def snapshot(root: Path) -> dict[str, tuple]:
    return {p.relative_to(root).as_posix(): (p.stat().st_ino, p.stat().st_mtime_ns, p.stat().st_mode, p.read_bytes())
            for p in sorted(root.rglob("*")) if p.is_file()}


# --- the script and its validator ---------------------------------------------------------------

def test_only_a_blueprint_with_a_vps_gets_the_script():
    assert SCRIPT not in check_file(EXAMPLE_A).files


def test_the_script_passes_shellcheck_and_a_broken_one_does_not(bundle, tmp_path):
    out = bundle[SCRIPT]
    assert out.mode == 0o555
    good = tmp_path / "moat-install"
    good.write_bytes(out.content)
    result = validate(good)
    assert result.returncode == 0, result.stdout + result.stderr
    # a `local` outside a function and an unquoted $here: shellcheck must refuse it
    broken = tmp_path / "broken"
    broken.write_text(out.content.decode().replace('here=$(cd "$(dirname "$0")" && pwd -P)',
                                                   'local here=$(cd $(dirname $0) && pwd -P)'))
    result = validate(broken)
    assert result.returncode != 0 and "SC2168" in result.stdout, result.stdout


def test_the_script_carries_the_sha256_of_every_file(bundle):
    text = bundle[SCRIPT].content.decode()
    for path, out in bundle.items():
        if path.startswith("vps/") and path != SCRIPT:
            rel = path[len("vps/"):]
            assert f"verify {rel} {hashlib.sha256(out.content).hexdigest()}" in text


def test_every_vps_file_is_in_the_table(bundle):
    files = family.copies(bundle)
    assert {"vps/" + c.source for c in files} == {p for p in bundle if p.startswith("vps/")} - {SCRIPT}
    dest = {c.source: c.dest for c in files}
    assert dest["nftables/moat.nft"] == "/etc/nftables.conf"
    assert dest["openvpn/ccd/home1"] == "/etc/openvpn/server/ccd/home1"
    assert dest["ssh/sshd_config"] == "/etc/ssh/sshd_config"
    assert dest["fail2ban/jail.d/moat-sshd.conf"] == "/etc/fail2ban/jail.d/moat-sshd.conf"


def test_a_bundle_file_without_a_table_entry_fails_the_build(monkeypatch):
    monkeypatch.setattr(family, "FILES", tuple(i for i in family.FILES if i.pattern != "openvpn/ccd/*"))
    with pytest.raises(AssertionError, match=r"vps/openvpn/ccd/home1.*add an entry"):
        check_file(EXAMPLE_B)


def test_a_new_file_of_another_family_fails_the_build(bundle):
    from compiler.render import Output

    plan = check_file(EXAMPLE_B).plan
    extra = {p: o for p, o in bundle.items() if p != SCRIPT}
    extra["vps/sysctl.d/moat.conf"] = Output("vps/sysctl.d/moat.conf", b"net.ipv4.ip_forward = 1\n")
    with pytest.raises(AssertionError, match="vps/sysctl.d/moat.conf"):
        list(family.render(plan, extra))


def test_server_conf_reads_only_files_the_script_installs(bundle):
    conf = bundle["vps/openvpn/server.conf"].content.decode()
    named = family._referenced(conf, "/etc/openvpn/server")
    assert {"/etc/openvpn/server/ca.crt", "/etc/openvpn/server/server.key", "/etc/openvpn/server/tls-crypt.key"} <= named
    installed = {c.dest for c in family.copies(bundle) + family.secret_copies()}
    assert named - installed == set()


def test_the_vps_ruleset_works_as_debians_nftables_conf(bundle, tmp_path):
    """nftables.service runs `nft -f /etc/nftables.conf` on start and reload: the file must load
    on a fresh and on a loaded ruleset, and leave tables it does not own (fail2ban's) alone."""
    conf = tmp_path / "nftables.conf"
    conf.write_bytes(bundle["vps/nftables/moat.nft"].content)
    result = run("unshare", "--net", "--map-root-user", "sh", "-ec",
                 f'nft add table inet f2b-table; nft -f "{conf}"; nft -f "{conf}"; nft list tables; '
                 'nft list chain inet moat input | grep -c "dport" ')
    assert result.returncode == 0, result.stderr
    lines = result.stdout.split()
    assert result.stdout.count("table inet moat") == 1 and "f2b-table" in result.stdout
    assert int(lines[-1]) == 4  # 443, 80, OpenVPN, sshd: defined once, not twice


def test_the_script_has_help():
    text = check_file(EXAMPLE_B).files[SCRIPT].content.decode()
    assert "MOAT_ROOT=DIR" in text and "no apt-get, no systemctl, no certbot" in text


# --- the archive -------------------------------------------------------------------------------

def members(archive: Path) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(archive) as tar:
        return {m.name.rstrip("/"): m for m in tar.getmembers()}


def test_the_archive_members_and_modes(archive):
    path, _ = archive
    assert path.stat().st_mode & 0o777 == 0o600
    found = members(path)
    files = {
        "moat-vps/manifest.json": 0o444, "moat-vps/moat-install": 0o555,
        "moat-vps/haproxy/haproxy.cfg": 0o444, "moat-vps/letsencrypt/cli.ini": 0o444,
        "moat-vps/letsencrypt/renewal-hooks/deploy/moat-haproxy": 0o555,
        "moat-vps/openvpn/server.conf": 0o444, "moat-vps/openvpn/ccd/home1": 0o444,
        "moat-vps/openvpn/ccd/home2": 0o444, "moat-vps/nftables/moat.nft": 0o444,
        "moat-vps/ssh/sshd_config": 0o444, "moat-vps/fail2ban/jail.d/moat-sshd.conf": 0o444,
        "moat-vps/apt/apt.conf.d/52moat-auto-upgrades": 0o444,
        "moat-vps/apt/apt.conf.d/52moat-unattended-upgrades": 0o444,
        **{f"moat-vps/secrets/openvpn/{f}": 0o600
           for f in ("ca.crt", "crl.pem", "server.crt", "server.key", "tls-crypt.key")},
    }
    if "moat-vps/pam.d/sshd" in found:  # vps.sshd.totp
        files["moat-vps/pam.d/sshd"] = 0o444
    dirs = {"moat-vps", "moat-vps/haproxy", "moat-vps/letsencrypt", "moat-vps/letsencrypt/renewal-hooks",
            "moat-vps/letsencrypt/renewal-hooks/deploy", "moat-vps/openvpn", "moat-vps/openvpn/ccd",
            "moat-vps/nftables", "moat-vps/ssh", "moat-vps/fail2ban", "moat-vps/fail2ban/jail.d",
            "moat-vps/secrets", "moat-vps/secrets/openvpn", "moat-vps/apt", "moat-vps/apt/apt.conf.d"} | ({"moat-vps/pam.d"} if "moat-vps/pam.d/sshd" in found else set())
    assert set(found) == set(files) | dirs
    with tarfile.open(path) as tar:
        assert [m.name.rstrip("/") for m in tar.getmembers()] == sorted(found)  # in name order
    for name, m in found.items():
        assert (m.uid, m.gid, m.uname, m.gname, m.mtime) == (0, 0, "root", "root", int(EPOCH)), name
        if name in dirs:
            assert m.isdir() and m.mode == (0o700 if name.startswith("moat-vps/secrets") else 0o755), name
        else:
            assert m.isfile() and m.mode == files[name], name


def test_the_archive_holds_the_bundle_files_and_their_manifest(archive):
    import json

    path, store = archive
    with tarfile.open(path) as tar:
        manifest = json.loads(tar.extractfile("moat-vps/manifest.json").read())
        stored = json.loads((store / "manifest.json").read_text())
        assert manifest["store_hash"] == stored["store_hash"]
        assert set(manifest["files"]) == {p[4:] for p in stored["files"] if p.startswith("vps/")}
        for rel, entry in manifest["files"].items():
            data = tar.extractfile(f"moat-vps/{rel}").read()
            assert data == (store / "vps" / rel).read_bytes()
            assert hashlib.sha256(data).hexdigest() == entry["sha256"] == stored["files"]["vps/" + rel]["sha256"]


def test_no_key_but_the_servers_is_in_the_archive(archive, secrets_dir):
    path, _ = archive
    raw = gunzipped(path)
    for secret in ["openvpn/ca.key", *(f"openvpn/clients/{c}.key" for c in ("home1", "home2"))]:
        body = (secrets_dir / secret).read_bytes()
        assert body and body not in raw, secret
    with tarfile.open(path) as tar:
        private = sorted(m.name for m in tar.getmembers() if m.isfile() and b"PRIVATE KEY" in tar.extractfile(m).read())
        static = sorted(m.name for m in tar.getmembers() if m.isfile() and b"OpenVPN Static key" in tar.extractfile(m).read())
    assert private == ["moat-vps/secrets/openvpn/server.key"]
    assert static == ["moat-vps/secrets/openvpn/tls-crypt.key"]
    assert not [m for m in members(path) if "clients" in m or m.endswith("ca.key")]
    # the host users' TOTP secrets (vps-front: host.sshd.totp) stay off the VPS
    host_secret = (secrets_dir / "totp/host/alice").read_bytes().split(b"\n")[0]
    assert host_secret and host_secret not in raw
    assert not [m for m in members(path) if "totp" in m]  # vps.sshd.totp is false here


def gunzipped(path: Path) -> bytes:
    import gzip

    return gzip.decompress(path.read_bytes())


def test_same_inputs_same_bytes(archive, secrets_dir, tmp_path, monkeypatch):
    path, _ = archive
    monkeypatch.setenv("SOURCE_DATE_EPOCH", EPOCH)
    again = vps_archive(EXAMPLE_B, secrets_dir, tmp_path / "again.tar.gz", tmp_path / "out", tools=False)
    assert again.path.read_bytes() == path.read_bytes()
    monkeypatch.delenv("SOURCE_DATE_EPOCH")  # the date then derives from the bundle
    one = vps_archive(EXAMPLE_B, secrets_dir, tmp_path / "one.tar.gz", tmp_path / "out", tools=False)
    two = vps_archive(EXAMPLE_B, secrets_dir, tmp_path / "two.tar.gz", tmp_path / "out2", tools=False)
    assert one.path.read_bytes() == two.path.read_bytes()
    assert not list(tmp_path.glob(".*.tar.gz.*"))  # no temporary file left


def test_archives_of_two_blueprints_never_overwrite_each_other(secrets_dir, tmp_path):
    other = tmp_path / "other.yaml"  # the same VPS name in another deployment
    other.write_text(EXAMPLE_B.read_text().replace("\nname: home\n", "\nname: cabin\n", 1))
    home = vps_archive(EXAMPLE_B, secrets_dir, None, tmp_path / "out", tools=False)
    cabin = vps_archive(other, secrets_dir, None, tmp_path / "out", tools=False)
    assert home.path == tmp_path / "out/vps/home" / f"{home.vps}.tar.gz"
    assert cabin.path == tmp_path / "out/vps/cabin" / f"{home.vps}.tar.gz"
    assert hashlib.sha256(home.path.read_bytes()).hexdigest() == home.sha256 != cabin.sha256


# --- the script, run -----------------------------------------------------------------------------

def test_moat_install_stages_every_file_idempotently(archive, bundle, tmp_path):
    path, _ = archive
    script = unpack(path, tmp_path / "x")
    root = tmp_path / "root"
    first = install(script, root)
    assert first.returncode == 0, first.stderr
    expected = family.copies(bundle) + family.secret_copies()
    here = script.parent
    for c in expected:
        target = root / c.dest.lstrip("/")
        assert target.is_file(), c.dest
        assert f"{target.stat().st_mode & 0o7777:04o}" == c.mode, c.dest
        assert target.read_bytes() == (here / c.source).read_bytes(), c.dest
        if os.geteuid() == 0:
            assert (target.stat().st_uid, target.stat().st_gid) == (0, 0)
    installed = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    assert installed == {c.dest.lstrip("/") for c in expected}  # nothing else, no temporary file left
    assert (root / "etc/openvpn/server/server.key").stat().st_mode & 0o077 == 0
    assert first.stdout.count("installed /") == len(expected)
    assert "no packages, services or certificates" in first.stdout

    before = snapshot(root)
    second = install(script, root)
    assert second.returncode == 0, second.stderr
    assert "installed /" not in second.stdout
    assert snapshot(root) == before  # same inodes, times, modes, bytes

    # one file changed on the machine: only it is put back
    (root / "etc/haproxy/haproxy.cfg").write_text("# edited by hand\n")
    (root / "etc/openvpn/server/server.key").chmod(0o644)
    third = install(script, root)
    assert third.returncode == 0, third.stderr
    assert sorted(re.findall(r"installed (/\S+)", third.stdout)) == ["/etc/haproxy/haproxy.cfg",
                                                                    "/etc/openvpn/server/server.key"]
    assert {k: v[2:] for k, v in snapshot(root).items()} == {k: v[2:] for k, v in before.items()}


def test_moat_install_refuses_a_tampered_file(archive, tmp_path):
    path, _ = archive
    script = unpack(path, tmp_path / "x")
    cfg = script.parent / "openvpn" / "server.conf"
    cfg.chmod(0o644)
    cfg.write_text(cfg.read_text().replace("ccd-exclusive\n", ""))
    root = tmp_path / "root"
    result = install(script, root)
    assert result.returncode == 1
    assert "openvpn/server.conf is not the file of this bundle (sha256 differs)" in result.stderr
    assert not root.exists() or not any(root.rglob("*"))  # nothing installed


def test_moat_install_refuses_a_missing_secret(archive, tmp_path):
    path, _ = archive
    script = unpack(path, tmp_path / "x")
    (script.parent / "secrets" / "openvpn" / "crl.pem").unlink()
    result = install(script, tmp_path / "root")
    assert result.returncode == 1 and "secrets/openvpn/crl.pem is missing" in result.stderr


def test_moat_install_help_and_usage(archive, tmp_path):
    path, _ = archive
    script = unpack(path, tmp_path / "x")
    shown = run(str(script), "--help")
    assert shown.returncode == 0
    assert "tar xzf" in shown.stdout and "MOAT_ROOT=DIR" in shown.stdout
    assert "no apt-get, no systemctl, no certbot" in shown.stdout
    wrong = run(str(script), "--frobnicate")
    assert wrong.returncode == 2 and "usage:" in wrong.stderr


# --- the command ---------------------------------------------------------------------------------

def test_cli_writes_the_archive_and_teaches_how_to_install(secrets_dir, tmp_path):
    out = tmp_path / "front.tar.gz"
    result = run_moat("vps-archive", EXAMPLE_B, "--secrets", secrets_dir, "-o", out, "--out", tmp_path / "out",
                      "--no-tools", env={"SOURCE_DATE_EPOCH": EPOCH})
    assert result.returncode == 0, result.stderr
    assert "tar xzf front.tar.gz && sudo moat-vps/moat-install" in result.stdout
    assert out.stat().st_mode & 0o777 == 0o600
    helped = run_moat("vps-archive", "--help")
    assert helped.returncode == 0
    assert "tar xzf front.tar.gz && sudo moat-vps/moat-install" in helped.stdout
    assert "MOAT_ROOT" in helped.stdout


def test_cli_names_the_command_that_makes_missing_secrets(secrets_dir, tmp_path):
    partial = tmp_path / "partial"
    shutil.copytree(secrets_dir, partial)
    (partial / "openvpn" / "server.key").unlink()
    out = tmp_path / "front.tar.gz"
    result = run_moat("vps-archive", EXAMPLE_B, "--secrets", partial, "-o", out, "--out", tmp_path / "out",
                      "--no-tools")
    assert result.returncode == 1
    assert f"error[vps-secret-missing]: {partial}/openvpn/server.key does not exist" in result.stderr
    assert f"moat secrets init {EXAMPLE_B} --dir {partial}" in result.stderr
    assert "nothing written" in result.stderr and not out.exists()


def test_cli_refuses_a_blueprint_without_a_vps(secrets_dir, tmp_path):
    result = run_moat("vps-archive", EXAMPLE_A, "--secrets", secrets_dir, "-o", tmp_path / "a.tar.gz",
                      "--out", tmp_path / "out", "--no-tools")
    assert result.returncode == 1
    assert "error[vps-archive-no-vps]" in result.stderr and "has no vps" in result.stderr
    assert not (tmp_path / "out").exists()


# --- the script, run for real on a Debian 12 root ------------------------------------------------
# tests/system/vps_chroot.sh (make system-deps) builds the root once per machine with debootstrap:
# a provider's minimal Debian 12 (systemd, openssh-server) without the packages moat-install adds,
# whose .debs and package lists are in its apt cache. The script runs in it under chroot, in
# private mount and pid namespaces (every mount and process ends with the run) and a network
# namespace holding only loopback: apt installs from the cache, nothing leaves the machine.

IMAGE_SCRIPT = ROOT / "tests" / "system" / "vps_chroot.sh"
VPS_ADDRESS = "198.51.100.20"  # blueprints/vps-front.yaml vps.address, on the namespace's loopback
UNITS = ("nftables", "openvpn-server@server", "haproxy", "fail2ban", "ssh")

# in the namespaces: loopback (+ the VPS's address), /dev, /proc, a fresh /run (no systemd runs
# there), optionally pebble (Debian's ACME test server) answering for the sites, then the chroot
IN_VPS = r'''
set -eu
root=$1 acme=$2
shift 2
ip link set lo up
ip addr add "$VPS_ADDRESS/32" dev lo
mount --rbind /dev "$root/dev"
mount -t proc proc "$root/proc"
mount -t tmpfs -o mode=0755 tmpfs "$root/run"
if [ -n "$acme" ]; then
    # DNS: every name is the VPS's address; pebble validates http-01 on its port 80 for real
    pebble-challtestsrv -defaultIPv4 "$VPS_ADDRESS" -defaultIPv6 "" -dns01 127.0.0.1:8053 -http01 "" \
        -https01 "" -tlsalpn01 "" -management 127.0.0.1:8055 >"$acme/dns.log" 2>&1 &
    PEBBLE_VA_NOSLEEP=1 PEBBLE_WFE_NONCEREJECT=0 pebble -config "$acme/pebble.json" -dnsserver 127.0.0.1:8053 \
        >"$acme/pebble.log" 2>&1 &
    for port in 8053 14000; do
        for _ in $(seq 100); do
            if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
            sleep 0.1
        done
    done
fi
status=0
chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 "$@" || status=$?
exit "$status"
'''


def in_vps(root: Path, *command: str, acme: Path | None = None) -> subprocess.CompletedProcess:
    """Run `command` in the VPS root (see IN_VPS)."""
    return subprocess.run(["unshare", "--mount", "--pid", "--fork", "--net", "bash", "-c", IN_VPS, "in-vps",
                           str(root), str(acme or ""), *command],
                          capture_output=True, text=True, timeout=600, env={**os.environ, "VPS_ADDRESS": VPS_ADDRESS})


@pytest.fixture
def vps_root(tmp_path) -> Path:
    """A fresh copy of the Debian 12 root, removed afterwards."""
    with unpacked(image(IMAGE_SCRIPT.name, "bookworm-vps"), tmp_path / "vps") as root:
        yield root


@pytest.fixture
def acme(tmp_path, vps_root) -> Path:
    """pebble's configuration, its TLS key and certificate (the CA certbot trusts, in the VPS)."""
    d = tmp_path / "acme"
    d.mkdir()
    made = run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
               "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem"), "-days", "2", "-subj", "/CN=127.0.0.1",
               "-addext", "subjectAltName=IP:127.0.0.1")
    assert made.returncode == 0, made.stderr
    (d / "pebble.json").write_text(
        '{"pebble": {"listenAddress": "127.0.0.1:14000", "managementListenAddress": "127.0.0.1:15000", '
        f'"certificate": "{d}/cert.pem", "privateKey": "{d}/key.pem", "httpPort": 80, "tlsPort": 443, '
        '"ocspResponderURL": "", "externalAccountBindingRequired": false}}\n')
    shutil.copy(d / "cert.pem", vps_root / "root" / "acme-ca.pem")
    return d


def dpkg_installed(root: Path, packages: list[str]) -> set[str]:
    shown = in_vps(root, "dpkg-query", "-W", "-f", "${Package} ${Status}\\n", *packages)
    return {line.split()[0] for line in shown.stdout.splitlines() if line.endswith(" install ok installed")}


def script_packages(text: str) -> list[str]:
    (line,) = re.findall(r"^    for p in (.*); do$", text, re.MULTILINE)
    return line.split()


def states(root: Path, paths: list[str]) -> dict[str, tuple]:
    found = {}
    for p in paths:
        st = (root / p.lstrip("/")).stat()
        found[p] = (st.st_ino, st.st_mtime_ns, st.st_mode, st.st_uid, st.st_gid)
    return found


def test_the_chroot_image_caches_every_package_the_script_installs(bundle):
    listed = re.search(r'^VPS="([^"]*)"', IMAGE_SCRIPT.read_text(), re.MULTILINE).group(1).split()
    assert set(script_packages(bundle[SCRIPT].content.decode())) - {"openssh-server"} <= set(listed)
    assert "libpam-google-authenticator" in listed  # vps.sshd.totp


def tampered(vps: Path, rel: str, edit, name: str) -> str:
    """A copy of moat-vps/ (in the VPS's /root) with `rel` edited and the script carrying its new
    sha256: only the tool check can stop it. Returns the copy's script path inside the VPS."""
    copy = vps / "root" / name
    shutil.copytree(vps / "root" / "moat-vps", copy, symlinks=True)
    target = copy / rel
    old = hashlib.sha256(target.read_bytes()).hexdigest()
    target.chmod(0o644)
    target.write_text(edit(target.read_text()))
    new = hashlib.sha256(target.read_bytes()).hexdigest()
    script = copy / "moat-install"
    script.chmod(0o755)
    script.write_text(script.read_text().replace(f"verify {rel} {old}", f"verify {rel} {new}"))
    return f"/root/{name}/moat-install"


@pytest.mark.slow
def test_moat_install_for_real_in_a_debian_12_root(archive, bundle, vps_root, acme):
    """The real path: root on Debian 12, apt-get, the tool checks, install, systemctl enable, certbot."""
    path, _ = archive
    root = vps_root
    with tarfile.open(path) as tar:
        tar.extractall(root / "root", filter="fully_trusted")
    script = "/root/moat-vps/moat-install"
    packages = script_packages(bundle[SCRIPT].content.decode())
    expected = family.copies(bundle) + family.secret_copies()
    debian_sshd = (root / "etc/ssh/sshd_config").read_bytes()
    assert dpkg_installed(root, packages) == {"openssh-server"}  # a provider's image: the rest is apt's job

    # nobody could log in with the new sshd_config: refused before apt or any file
    alone = in_vps(root, script)
    assert alone.returncode == 1, alone.stdout + alone.stderr
    assert "none of the users sshd will allow (alice) exists with ~/.ssh/authorized_keys" in alone.stderr
    assert "would lock everyone out" in alone.stderr and "installing" not in alone.stdout
    assert dpkg_installed(root, packages) == {"openssh-server"}
    # as a provider's image has it: a user with a key
    made = in_vps(root, "sh", "-ec", "useradd -m -s /bin/bash alice; mkdir -m 700 ~alice/.ssh; "
                  "echo 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C7okWi0dh2l9GKJl alice@laptop'"
                  " >~alice/.ssh/authorized_keys; chown -R alice: ~alice/.ssh")
    assert made.returncode == 0, made.stderr

    # each tool really checks the new file before anything is installed (the first run installs the packages)
    broken = [
        ("ssh/sshd_config", lambda t: t + "NoSuchKeyword yes\n", "sshd rejects ssh/sshd_config", "NoSuchKeyword"),
        ("nftables/moat.nft", lambda t: t.replace("accept", "acept", 1), "nft rejects nftables/moat.nft", "acept"),
        ("fail2ban/jail.d/moat-sshd.conf", lambda t: t.replace("backend = systemd", "backend = systemd\nfilter = no-such-filter"),
         "fail2ban rejects the jail", "no-such-filter"),
    ]
    for i, (rel, edit, message, detail) in enumerate(broken):
        result = in_vps(root, tampered(root, rel, edit, f"bad{i}"))
        assert result.returncode == 1, result.stdout + result.stderr
        assert f"{message}: nothing was installed" in result.stderr, result.stderr
        assert detail in result.stderr, result.stderr
        assert "installed /" not in result.stdout
        if i == 0:  # apt-get ran for real, offline, from the image's cache
            assert "installing nftables openvpn haproxy certbot fail2ban python3-systemd" in result.stdout
            assert dpkg_installed(root, packages) == set(packages)
        else:
            assert "installing" not in result.stdout
    assert (root / "etc/ssh/sshd_config").read_bytes() == debian_sshd
    assert not (root / "etc/openvpn/server/server.conf").exists()
    assert not (root / "etc/fail2ban/jail.d/moat-sshd.conf").exists()
    assert b"table inet moat" not in (root / "etc/nftables.conf").read_bytes()

    # Let's Encrypt cannot be reached: everything but HAProxy is done, then a clear stop
    first = in_vps(root, script)
    assert first.returncode == 1, first.stdout + first.stderr
    assert "installing" not in first.stdout
    assert first.stdout.count("installed /") == len(expected)
    assert (f"no certificate for cloud.example.org photos.example.org (certbot's log: "
            f"/var/log/letsencrypt/letsencrypt.log). Let's Encrypt must reach this VPS for each site: its DNS name "
            f"must point at {VPS_ADDRESS} (an A record) and port 80 of {VPS_ADDRESS} be reachable") in first.stderr
    assert ("Everything else is done (the files, nftables, openvpn-server@server, fail2ban, ssh, apt-daily.timer, "
            "apt-daily-upgrade.timer); HAProxy waits") in first.stderr
    assert "systemd is not running here" in first.stdout
    for unit in ("nftables", "openvpn-server@server", "fail2ban", "ssh"):
        assert re.search(rf"^moat-install: would (restart|reload-or-restart) {re.escape(unit)} ", first.stdout, re.M), unit
    assert "SSH is on port 53202" in first.stdout
    for c in expected:
        target = root / c.dest.lstrip("/")
        st = target.stat()
        assert (f"{st.st_mode & 0o7777:04o}", st.st_uid, st.st_gid) == (c.mode, 0, 0), c.dest
        assert target.read_bytes() == (root / "root/moat-vps" / c.source).read_bytes(), c.dest
    enabled = in_vps(root, "systemctl", "is-enabled", *UNITS)
    assert enabled.stdout.split() == ["enabled"] * len(UNITS), enabled.stdout + enabled.stderr
    assert dpkg_installed(root, packages) == set(packages)
    # the installed files pass the tools the script checked them with
    checked = in_vps(root, "sh", "-ec", "mkdir -p /run/sshd; sshd -t; nft -c -f /etc/nftables.conf; "
                     "fail2ban-client -t >/dev/null 2>&1")
    assert checked.returncode == 0, checked.stderr

    # again: nothing changes, same stop
    installed = [c.dest for c in expected]
    before = states(root, installed)
    again = in_vps(root, script)
    assert again.returncode == 1 and "installed /" not in again.stdout and "installing" not in again.stdout
    assert "no certificate for cloud.example.org photos.example.org" in again.stderr
    assert states(root, installed) == before

    # with an ACME server that reaches the VPS (pebble, MOAT_ACME_SERVER): certificates, HAProxy, done
    issued = in_vps(root, "env", "MOAT_ACME_SERVER=https://127.0.0.1:14000/dir", "REQUESTS_CA_BUNDLE=/root/acme-ca.pem",
                    script, acme=acme)
    assert issued.returncode == 0, issued.stdout + issued.stderr
    assert "installed /" not in issued.stdout
    pems = [f"/etc/haproxy/certs/{site}.pem" for site in ("cloud.example.org", "photos.example.org")]
    for pem in pems:
        assert f"certificate for {pem.rsplit('/', 1)[1][:-4]} in {pem}" in issued.stdout
        st = (root / pem.lstrip("/")).stat()
        assert (st.st_mode & 0o777, st.st_uid) == (0o600, 0)
        subject = run("openssl", "x509", "-noout", "-subject", "-issuer", "-in", str(root / pem.lstrip("/")))
        assert pem.rsplit("/", 1)[1][:-4] in subject.stdout and "Pebble" in subject.stdout, subject.stdout
    validated = (acme / "pebble.log").read_text()
    assert "Attempting to validate w/ HTTP: http://cloud.example.org:80/.well-known/acme-challenge/" in validated
    assert "would start haproxy" in issued.stdout
    assert "done: the VPS front is installed; without systemd, not started: nftables openvpn-server@server " \
           "fail2ban ssh apt-daily.timer apt-daily-upgrade.timer haproxy" in issued.stdout

    # and again, without any network: certificates there, nothing to do
    before = states(root, installed + pems)
    last = in_vps(root, script)
    assert last.returncode == 0, last.stdout + last.stderr
    assert "installed /" not in last.stdout and "requesting" not in last.stdout and "installing" not in last.stdout
    assert states(root, installed + pems) == before


# --- TOTP (vps.sshd.totp): each VPS user's secret from the archive ------------------------------


@pytest.fixture(scope="module")
def totp_archive(tmp_path_factory) -> tuple[Path, Path]:
    """(the archive of vps-front with vps.sshd.totp, its secrets directory)"""
    work = tmp_path_factory.mktemp("totp-archive")
    blueprint = totp_variant(work)
    d = work / "secrets"
    made = run_moat("secrets", "init", blueprint, "--dir", d)
    assert made.returncode == 0, made.stderr
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SOURCE_DATE_EPOCH", EPOCH)
        result = vps_archive(blueprint, d, work / "front.tar.gz", work / "out", tools=False)
    return result.path, d


def test_the_archive_carries_the_vps_users_totp_secrets_only(totp_archive):
    path, d = totp_archive
    found = members(path)
    assert sorted(m for m in found if "totp" in m) == ["moat-vps/secrets/totp", "moat-vps/secrets/totp/vps",
                                                      "moat-vps/secrets/totp/vps/alice"]
    assert found["moat-vps/secrets/totp/vps/alice"].mode == 0o600
    assert found["moat-vps/secrets/totp/vps"].mode == 0o700
    with tarfile.open(path) as tar:
        assert tar.extractfile("moat-vps/secrets/totp/vps/alice").read() == (d / "totp/vps/alice").read_bytes()
    host_secret = (d / "totp/host/alice").read_bytes().split(b"\n")[0]
    assert host_secret not in gunzipped(path)


def test_the_archive_needs_the_totp_secrets(totp_archive, tmp_path):
    _, d = totp_archive
    copy = tmp_path / "secrets"
    shutil.copytree(d, copy)
    (copy / "totp/vps/alice").unlink()
    blueprint = totp_variant(tmp_path)
    made = run_moat("vps-archive", blueprint, "--secrets", copy, "-o", tmp_path / "f.tar.gz", "--out", tmp_path / "out")
    assert made.returncode == 1 and "vps-secret-missing" in made.stderr and "alice's TOTP secret" in made.stderr
    assert "moat secrets init" in made.stderr


def _staged_root(tmp: Path, uid: int = 61234) -> Path:
    root = tmp / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").write_text(f"root:x:0:0:root:/root:/bin/bash\nalice:x:{uid}:{uid}::/home/alice:/bin/bash\n")
    (root / "home/alice").mkdir(parents=True)
    return root


def test_moat_install_puts_the_totp_secret_in_place_and_never_overwrites_another(totp_archive, tmp_path):
    path, d = totp_archive
    script = unpack(path, tmp_path / "x")
    assert "install_totp alice secrets/totp/vps/alice" in script.read_text()
    root = _staged_root(tmp_path)
    first = install(script, root)
    assert first.returncode == 0, first.stderr
    ga = root / "home/alice/.google_authenticator"
    assert ga.read_bytes() == (d / "totp/vps/alice").read_bytes()
    st = ga.stat()
    assert stat.S_IMODE(st.st_mode) == 0o400
    if os.geteuid() == 0:
        assert (st.st_uid, st.st_gid) == (61234, 61234)
    assert "installed /home/alice/.google_authenticator (0400, alice) from secrets/totp/vps/alice" in first.stdout
    assert [p.name for p in (root / "home/alice").iterdir()] == [".google_authenticator"]  # no temporary file

    # pam_google_authenticator keeps state in the option lines: the same secret is left as it is
    ga.chmod(0o600)
    ga.write_text(ga.read_text().replace('" DISALLOW_REUSE\n', '" DISALLOW_REUSE 58000001\n'))
    ga.chmod(0o400)
    kept = ga.read_bytes()
    second = install(script, root)
    assert second.returncode == 0, second.stderr
    assert ga.read_bytes() == kept and ".google_authenticator" not in second.stdout

    # another secret (alice ran google-authenticator herself): kept, with a warning
    ga.chmod(0o600)
    ga.write_text('JBSWY3DPEHPK3PXPJBSWY3DPEH\n" TOTP_AUTH\n')
    ga.chmod(0o400)
    third = install(script, root)
    assert third.returncode == 0, third.stderr
    assert ga.read_text() == 'JBSWY3DPEHPK3PXPJBSWY3DPEH\n" TOTP_AUTH\n'
    warning = "warning: /home/alice/.google_authenticator exists with another TOTP secret than moat's: kept"
    assert warning in third.stdout

    # no such account: nothing installed, said so
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    ga.unlink()
    fourth = install(script, root)
    assert fourth.returncode == 0, fourth.stderr
    assert "warning: no account alice: its TOTP secret is not installed" in fourth.stdout and not ga.exists()


def test_moat_install_refuses_an_archive_without_a_totp_secret(totp_archive, tmp_path):
    path, _ = totp_archive
    script = unpack(path, tmp_path / "x")
    (script.parent / "secrets/totp/vps/alice").unlink()
    root = _staged_root(tmp_path)
    result = install(script, root)
    assert result.returncode == 1 and "secrets/totp/vps/alice (alice's TOTP secret) is missing" in result.stderr
    assert not (root / "home/alice/.google_authenticator").exists()


def test_the_totp_script_passes_shellcheck(totp_archive, tmp_path):
    path, _ = totp_archive
    script = unpack(path, tmp_path / "x")
    checked = validate(script)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    text = script.read_text()
    assert "moat secrets totp BLUEPRINT USER" in text  # --help: how users enroll
    broken = tmp_path / "broken"
    broken.write_text(text.replace('IFS=: read -r uid gid home <<<"$entry"', 'IFS=: read uid gid home <<<$entry'))
    assert validate(broken).returncode != 0
