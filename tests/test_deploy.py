"""Day two, for real: `moat deploy` to a running host over SSH, only what changed, data kept,
`moat rollback`, and the switch killed at every step (tests/deploy_lab.py: the host is a real
sshd, sudo, libvirtd and QEMU in namespaces of the test).

The VMs are defined and started from the generated domains (TCG: the blueprint's host.accelerator)
with stand-in golden images (a few MiB of known bytes: the bytes are what this test follows; a
real image boots in tests/test_image_boot.py), so a VM "running" is a real QEMU process whose
domain ID changes only when it is restarted.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from .deploy_lab import DeployLab, Workspace

pytestmark = pytest.mark.slow

KILL_POINTS = ("journal", "files", "installed", "reloaded", "shut-down", "forgotten", "applied", "done", "recorded")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def lab(tmp_path):
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "moat-deploy-test", "-f", str(key)], check=True)
    with DeployLab(tmp_path, key) as lab:
        yield lab, Workspace(tmp_path, key)


def deploy(lab: DeployLab, ws: Workspace, *extra: str, expect: int = 0) -> str:
    proc = lab.moat("deploy", str(ws.blueprint), "--yes", "--out", str(ws.dir / "out"), *extra, cwd=ws.dir)
    out = proc.stdout + proc.stderr
    assert proc.returncode == expect, f"moat deploy exited {proc.returncode}, not {expect}:\n{out}"
    return out


def installed_matches(lab: DeployLab) -> list[str]:
    """Host files that differ from the current generation's (empty: the host is on one whole generation)."""
    store = lab.current_store()
    table = json.loads((store / "host/moat/switch.json").read_text())
    return [f["dest"] for f in table["files"]
            if lab.host_file(f["dest"]).read_bytes() != (store / f["source"]).read_bytes()]


def test_deploy_reinstall_only_what_changed_refuse_data_loss_and_roll_back(lab):
    lab, ws = lab
    assert "built" in ws.run("build", str(ws.blueprint), "--out", str(ws.dir / "out"))
    lab.install_sshd(ws.dir / "out" / "current")

    # first deploy: generation 1, both VMs defined and running, sshd still answering
    out = deploy(lab, ws)
    assert lab.current() == 1, out
    assert "running" in lab.virsh("domstate", "web") and "running" in lab.virsh("domstate", "db")
    ids = {vm: lab.domid(vm) for vm in ("web", "db")}
    data = ws.pools / "images" / "web-data"
    data_sha = sha256(data)
    os_sha = sha256(ws.pools / "images" / "web-os")
    assert "dport 8080 dnat to 192.168.77.10:80" in lab.forwards()
    assert installed_matches(lab) == []
    lab.systemctl_calls()

    # no change: nothing sent, nothing restarted, still generation 1
    out = deploy(lab, ws)
    assert "0 store file(s), 0 image(s), 0 seed(s)" in out, out
    assert "nothing to change" in out and lab.current() == 1
    assert {vm: lab.domid(vm) for vm in ids} == ids
    assert lab.systemctl_calls() == []

    # a new public port onto a port the VM already serves: the host's firewall reloaded and the
    # forwards set up again, no VM restarted (its own firewall and seed are unchanged)
    ws.write(ws.edit("forwards:\n", "forwards:\n  - {port: 8443, proto: tcp, to: web, to_port: 80}\n"))
    out = deploy(lab, ws)
    assert lab.current() == 2, out
    assert "dport 8443 dnat to 192.168.77.10:80" in lab.forwards()
    assert {vm: lab.domid(vm) for vm in ids} == ids, f"a forward-only change restarted a VM:\n{out}"
    assert lab.systemctl_calls() == ["reload-or-restart firewalld.service"]
    assert "will reinstall" not in out and "will restart" not in out

    # rollback: generation 1 again, the new port closed again
    proc = lab.moat("rollback", str(ws.blueprint), "--yes", cwd=ws.dir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert lab.current() == 1
    assert "8443" not in lab.forwards() and "dport 8080" in lab.forwards()
    assert installed_matches(lab) == []
    proc = lab.moat("generations", str(ws.blueprint), cwd=ws.dir)
    assert re.search(r"^\*\s+1\s", proc.stdout, re.M) and re.search(r"^ \s+2\s", proc.stdout, re.M), proc.stdout

    # the web image changes: web alone is reinstalled, its data volume untouched, its OS volume new
    ws.write(ws.edit("  - name: web\n    distribution: debian\n    release: bookworm\n    packages: []",
                     "  - name: web\n    distribution: debian\n    release: bookworm\n    packages: [tree]"))
    out = deploy(lab, ws)
    assert lab.current() == 3, out
    assert "will reinstall VM web" in out and "VM db" not in out
    assert out.count("will reinstall VM web") == 1 and "moat-switch: carrying out plan " in out, out  # shown once
    assert lab.domid("db") == ids["db"] and lab.domid("web") != ids["web"]
    assert sha256(data) == data_sha, "the reinstall wrote to the data volume"
    assert sha256(ws.pools / "images" / "web-os") != os_sha, "the OS volume was not made again"
    marker = (lab.state_dir() / "volumes/images/web-os").read_text().strip()
    assert marker == json.loads((lab.current_store() / "host/images.json").read_text())["images"][1]["file"][:-6]

    # a data disk grown: the volume grows in place (live, its VM runs), its bytes kept
    image_changed = ws.edit("packages: []\n  - name: db", "packages: [tree]\n  - name: db")
    ws.write(image_changed.replace("size: 32MiB, pool: images, mount", "size: 48MiB, pool: images, mount"))
    out = deploy(lab, ws)
    assert lab.current() == 4 and "data volume images/web-data grown to 50331648 bytes" in out, out
    assert re.search(r"Capacity:\s+48\.00 MiB", lab.virsh("vol-info", "--pool", "images", "web-data"))
    assert lab.domid("db") == ids["db"]

    # a data disk shrunk: refused on the host, nothing changed
    before = (lab.current(), {vm: lab.domid(vm) for vm in ids}, sha256(data))
    ws.write(image_changed.replace("size: 32MiB, pool: images, mount", "size: 16MiB, pool: images, mount"))
    out = deploy(lab, ws, expect=3)
    assert "would shrink" in out and "--allow-data-loss web" in out
    assert (lab.current(), {vm: lab.domid(vm) for vm in ids}, sha256(data)) == before
    assert installed_matches(lab) == []

    # a file the host's own tool rejects (its sshd has no ed25519 host key): nothing applied
    ws.write(image_changed.replace("size: 32MiB, pool: images, mount", "size: 48MiB, pool: images, mount").replace(
        "forwards:\n", "forwards:\n  - {port: 9000, proto: tcp, to: db, to_port: 9000}\n"))
    lab.sandbox.sh("mv /etc/ssh/ssh_host_ed25519_key /etc/ssh/hidden")
    try:
        out = deploy(lab, ws, expect=3)
    finally:
        lab.sandbox.sh("mv /etc/ssh/hidden /etc/ssh/ssh_host_ed25519_key")
    assert "the host's own tools reject" in out and "sshd" in out
    assert lab.current() == 4 and "9000" not in lab.forwards() and installed_matches(lab) == []

    # garbage, hours later: the generations before the current one and what only they used (the
    # image web had before its update, the store paths, the seeds); the current one whole
    state = lab.state_dir()
    then = time.time() - 7200
    for path in [state, *state.rglob("*")]:
        os.utime(path, (then, then), follow_symlinks=False)
    used = {i["file"] for i in json.loads((lab.current_store() / "host/images.json").read_text())["images"]}
    old_images = {p.name for p in (state / "images").iterdir()} - used
    assert old_images, "web's image before its update is not on the host"
    running = {vm: lab.domid(vm) for vm in ids}
    proc = lab.moat("gc", str(ws.blueprint), "--keep", "1", "--yes", cwd=ws.dir)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert all(out.count(f"will remove image {name}") == 1 and f"removed image {name}" in out for name in old_images), out
    assert {p.name for p in (state / "images").iterdir()} == used
    assert sorted(p.name for p in (state / "generations").iterdir()) == ["4", "4.json"]
    assert [p.name for p in (state / "store").iterdir()] == [lab.current_store().name]
    assert lab.current() == 4 and installed_matches(lab) == []
    assert {vm: lab.domid(vm) for vm in ids} == running  # no VM touched
    proc = lab.moat("rollback", str(ws.blueprint), "--yes", cwd=ws.dir)
    assert proc.returncode == 3 and "no generation" in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    out = deploy(lab, ws)  # and takes the next deploy (the last blueprint, its sshd host key back)
    assert lab.current() == 5 and "9000" in lab.forwards() and installed_matches(lab) == [], out


def test_a_switch_killed_at_any_step_leaves_one_generation_and_the_next_deploy_converges(lab):
    lab, ws = lab
    ws.run("build", str(ws.blueprint), "--out", str(ws.dir / "out"))
    lab.install_sshd(ws.dir / "out" / "current")
    deploy(lab, ws)
    # two blueprints the host goes back and forth between: the web image and a forward differ
    a = ws.text
    b = ws.edit("forwards:\n", "forwards:\n  - {port: 8443, proto: tcp, to: web, to_port: 80}\n").replace(
        "  - name: web\n    distribution: debian\n    release: bookworm\n    packages: []",
        "  - name: web\n    distribution: debian\n    release: bookworm\n    packages: [tree]")
    for point in KILL_POINTS:
        was = lab.current()
        target = b if ws.blueprint.read_text() == a else a
        ws.write(target)
        lab.kill_switch_at(point)
        out = deploy(lab, ws, expect=1)
        lab.kill_switch_at("")
        assert lab.current() == was, f"killed at {point}: current moved\n{out}"
        assert (lab.state_dir() / "switch.journal").exists(), f"killed at {point}: no journal left"
        out = deploy(lab, ws)
        assert lab.current() != was, f"after {point}: the next deploy did not switch\n{out}"
        assert not (lab.state_dir() / "switch.journal").exists()
        assert installed_matches(lab) == [], f"after {point}: the host is a mix of generations"
        want = "dport 8443" in lab.forwards()
        assert want == (target == b), f"after {point}: forwards are not the generation's"
        assert "running" in lab.virsh("domstate", "web"), f"after {point}: web is not running"
        marker = (lab.state_dir() / "volumes/images/web-os").read_text().strip()
        images = json.loads((lab.current_store() / "host/images.json").read_text())["images"]
        assert marker + ".qcow2" in {i["file"] for i in images}, f"after {point}: web's OS volume is not the generation's image"
