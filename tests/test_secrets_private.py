"""One privacy check for the secrets directory (compiler/private.py): `moat secrets`, `moat iso`
and `moat vps-archive` refuse the same directories, files and owners with the same error
(rule, message, hint), exit 1 and no traceback, and write nothing."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from .conftest import ROOT, run_moat

VPS = ROOT / "blueprints" / "vps-front.yaml"
OTHER_UID = 65534  # nobody

# each case: (what is made unsafe, how); the path is relative to the secrets directory
CASES = {
    "dir-0755": ("", lambda p: os.chmod(p, 0o755)),
    "dir-0750": ("", lambda p: os.chmod(p, 0o750)),
    "subdir-0755": ("openvpn", lambda p: os.chmod(p, 0o755)),
    "file-0644": (None, lambda p: os.chmod(p, 0o644)),
    "file-0640": (None, lambda p: os.chmod(p, 0o640)),
    "dir-owner": ("", lambda p: os.chown(p, OTHER_UID, -1)),
    "file-owner": (None, lambda p: os.chown(p, OTHER_UID, -1)),
}
# a file each command reads: init checks every one; the host medium carries the OpenVPN CA
# certificate for the home hosts, the VPS archive the server's certificate
FILE = {"secrets": "openvpn/ca.crt", "iso": "openvpn/ca.crt", "vps-archive": "openvpn/ca.crt"}
COMMANDS = ("secrets", "iso", "vps-archive")


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> tuple[Path, Path]:
    """(a complete secrets directory of vps-front, the build output of vps-front)"""
    tmp = tmp_path_factory.mktemp("private")
    d, out = tmp / "secrets", tmp / "out"
    r = run_moat("secrets", "init", VPS, "--dir", d)
    assert r.returncode == 0, r.stderr
    r = run_moat("build", VPS, "--out", out, "--no-tools")
    assert r.returncode == 0, r.stderr
    return d, out


def _run(command: str, d: Path, out: Path, tmp: Path):
    target = tmp / "written"
    if command == "secrets":
        return run_moat("secrets", "init", VPS, "--dir", d), None
    if command == "iso":
        return run_moat("iso", "--out", out, "--secrets", d, "--output", target / "host.iso"), target
    return run_moat("vps-archive", VPS, "--secrets", d, "-o", target / "front.tar.gz", "--out", out,
                    "--no-tools"), target


def test_a_private_directory_is_accepted_by_every_command(made, tmp_path):
    d, out = made
    copy = tmp_path / "s"
    shutil.copytree(d, copy)
    for command in COMMANDS:
        r, _ = _run(command, copy, out, tmp_path / command)
        assert r.returncode == 0, (command, r.stderr)


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")
@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_every_command_refuses_what_moat_secrets_refuses(made, tmp_path, case, command):
    d, out = made
    copy = tmp_path / "s"
    shutil.copytree(d, copy)
    rel, spoil = CASES[case]
    path = copy / (FILE[command] if rel is None else rel)
    spoil(path)
    r, target = _run(command, copy, out, tmp_path)
    assert r.returncode == 1, f"{command} accepted a secrets directory with {case}: {r.stdout}{r.stderr}"
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr
    if "owner" in case:
        line = (f"error[secrets-owner]: {path}: owned by nobody (uid {OTHER_UID}), not by root who runs moat: "
                "that user can read or replace the secrets\n  hint: chown root " + str(path))
    else:
        mode = "0755" if "0755" in case else ("0750" if "0750" in case else ("0644" if "0644" in case else "0640"))
        want = "600" if rel is None else "700"
        line = (f"error[secrets-mode]: {path}: mode {mode} lets group/others in (want {want})\n"
                f"  hint: chmod {want} {path}")
    assert line in r.stderr, r.stderr
    assert target is None or not target.exists()
