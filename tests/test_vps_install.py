"""vps_install family and `moat vps-archive`: the VPS front installed from one archive.

The script vps/moat-install is checked by shellcheck (which rejects a broken variant); a vps/
file without an entry in the install table fails the build; the archive has exactly the
expected members, modes and owners, carries no key but the server's, and is byte-identical for
the same inputs. Then the script runs for real on the unpacked archive with MOAT_ROOT (staging:
files only): every file lands at its path with its mode and content, a second run changes
nothing, and a tampered file stops it before anything is installed. The VPS ruleset, installed
as Debian's /etc/nftables.conf, is loaded twice in a network namespace created here: it
replaces its own table and leaves other tables alone.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tarfile
from fnmatch import fnmatch
from pathlib import Path

import pytest

from compiler.pipeline import check_file
from compiler.render import vps_install as family
from compiler.vps_archive import vps_archive

from .conftest import ROOT, run_moat

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
        **{f"moat-vps/secrets/openvpn/{f}": 0o600
           for f in ("ca.crt", "crl.pem", "server.crt", "server.key", "tls-crypt.key")},
    }
    if "moat-vps/pam.d/sshd" in found:  # vps.sshd.totp
        files["moat-vps/pam.d/sshd"] = 0o444
    dirs = {"moat-vps", "moat-vps/haproxy", "moat-vps/letsencrypt", "moat-vps/letsencrypt/renewal-hooks",
            "moat-vps/letsencrypt/renewal-hooks/deploy", "moat-vps/openvpn", "moat-vps/openvpn/ccd",
            "moat-vps/nftables", "moat-vps/ssh", "moat-vps/fail2ban", "moat-vps/fail2ban/jail.d",
            "moat-vps/secrets", "moat-vps/secrets/openvpn"} | ({"moat-vps/pam.d"} if "moat-vps/pam.d/sshd" in found else set())
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
