"""A rotation of an OpenVPN client's certificate stopped at any point (SIGKILL) is finished by the
next `moat secrets init` or `rotate` (compiler/pki_rotation.py): the old certificate ends revoked
(openssl verify -crl_check), the new one valid, crl.pem agrees with index.txt, and no journal,
scratch directory (which may hold a private key) or temporary file is left."""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from compiler import secrets
from compiler.pki_rotation import KILL_POINTS

from .conftest import ROOT, run_moat

VPS = ROOT / "blueprints" / "vps-front.yaml"
CLIENT = "openvpn-client-home1"


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("rotation") / "s"
    r = run_moat("secrets", "init", VPS, "--dir", d)
    assert r.returncode == 0, r.stderr
    return d


def _openssl(*args) -> subprocess.CompletedProcess:
    return subprocess.run(["openssl", *map(str, args)], capture_output=True, text=True)


def _norm(serial: str) -> str:
    return serial.upper().lstrip("0")


def problems(d: Path, original: set[str], rotated: dict[str, str]) -> list[str]:
    """What is wrong with `d` after rotations of the clients `rotated` (name -> old serial),
    `original` being the files init made."""
    found = []
    pki, ca, crl = d / "openvpn", d / "openvpn/ca.crt", d / "openvpn/crl.pem"
    files = {p.relative_to(d).as_posix() for p in d.rglob("*") if not p.is_dir()}
    want = original | {f"openvpn/clients/{c}.{x}.old" for c in rotated for x in ("crt", "key")}
    if files != want:
        found.append(f"files: extra {sorted(files - want)}, missing {sorted(want - files)}")
    for p in d.rglob("*"):
        mode = stat.S_IMODE(p.lstat().st_mode)
        if mode != (0o700 if p.is_dir() else 0o600):
            found.append(f"{p} mode {mode:o}")
    if _openssl("crl", "-in", crl, "-CAfile", ca, "-noout", "-verify").returncode != 0:
        return found + ["crl.pem does not verify with the CA"]
    in_crl = {_norm(s) for s in re.findall(r"Serial Number: ([0-9A-F]+)",
                                           _openssl("crl", "-in", crl, "-noout", "-text").stdout)}
    in_index = {_norm(line.split("\t")[3]) for line in (pki / "index.txt").read_text().splitlines()
                if line.startswith("R\t")}
    if in_crl != in_index:
        found.append(f"crl.pem revokes {sorted(in_crl)}, index.txt {sorted(in_index)}")
    for client, old in rotated.items():
        if _norm(old) not in in_crl:
            found.append(f"the old certificate of {client} ({old}) is not in the CRL")
        old_crt = pki / f"clients/{client}.crt.old"
        if old_crt.exists():
            v = _openssl("verify", "-crl_check", "-CRLfile", crl, "-CAfile", ca, old_crt)
            if v.returncode == 0 or "certificate revoked" not in v.stdout + v.stderr:
                found.append(f"the old certificate of {client} still verifies: {v.stdout}{v.stderr}")
        new = pki / f"clients/{client}.crt"
        if not new.exists():
            found.append(f"{client} has no certificate")
        elif _openssl("verify", "-crl_check", "-CRLfile", crl, "-CAfile", ca, new).returncode != 0:
            found.append(f"the new certificate of {client} does not verify")
    return found


def _start(d: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "compiler.cli", "secrets", "rotate", str(VPS), CLIENT, "--dir",
                             str(d)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **env})


def _original(pki: Path) -> set[str]:
    return {p.relative_to(pki).as_posix() for p in pki.rglob("*") if not p.is_dir()}


@pytest.mark.parametrize("then", ["init", "rotate-home2", "rotate-again"])
@pytest.mark.parametrize("step", KILL_POINTS)
def test_a_rotation_killed_at_each_step_is_finished_by_the_next_run(pki, tmp_path, step, then):
    d = tmp_path / "s"
    shutil.copytree(pki, d)
    old = {"home1": secrets.serial(d / "openvpn/clients/home1.crt")}
    proc = _start(d, {"MOAT_TEST_KILL_AT": step})
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL, f"not killed at {step}: {proc.returncode} {err}"
    if then == "init":
        r = run_moat("secrets", "init", VPS, "--dir", d)
    elif then == "rotate-again":  # the stopped rotation is the one asked for: finished, not done twice
        r = run_moat("secrets", "rotate", VPS, CLIENT, "--dir", d)
    else:
        old["home2"] = secrets.serial(d / "openvpn/clients/home2.crt")
        r = run_moat("secrets", "rotate", VPS, "openvpn-client-home2", "--dir", d)
    assert r.returncode == 0, r.stderr
    assert problems(d, _original(pki), old) == []


def _names(d: Path) -> set[str]:
    return {p.name for sub in (d, d / "openvpn", d / "openvpn/clients") for p in sub.iterdir()}


def _rotating(d: Path, proc: subprocess.Popen) -> float:
    """Wait until the rotation touches the directory (its first new file: compiling the blueprint
    comes before); when that was (monotonic)."""
    before = _names(d)
    while proc.poll() is None and _names(d) == before:
        time.sleep(0.001)
    return time.monotonic()


@pytest.mark.slow
def test_a_rotation_killed_at_random_moments_is_finished_by_the_next_init(pki, tmp_path):
    """RUNS rotations, each SIGKILLed after a random delay once it has started to change the
    directory (within the time a whole rotation takes from there), each followed by init: no run
    may leave a broken PKI."""
    runs, rng = 20, random.Random(13)
    probe = tmp_path / "probe"
    shutil.copytree(pki, probe)
    proc = _start(probe, {})
    began = _rotating(probe, proc)
    assert proc.wait(timeout=120) == 0
    window = time.monotonic() - began
    broken = []
    for i in range(runs):
        d = tmp_path / f"s{i}"
        shutil.copytree(pki, d)
        old = {"home1": secrets.serial(d / "openvpn/clients/home1.crt")}
        proc = _start(d, {})
        _rotating(d, proc)
        time.sleep(rng.uniform(0, window))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=120)
        r = run_moat("secrets", "init", VPS, "--dir", d)
        if r.returncode != 0:
            broken.append((i, r.stderr.strip()))
            continue
        started = (d / "openvpn/clients/home1.crt.old").exists()
        found = problems(d, _original(pki), old if started else {})
        if found:
            broken.append((i, found))
    assert not broken, f"{len(broken)} of {runs} killed rotations left a broken PKI: {broken}"
