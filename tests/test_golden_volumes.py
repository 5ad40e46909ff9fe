"""moat-libvirt-apply makes the OS volume of an image VM a copy of its golden image, in a real
libvirtd (tests/libvirt_sandbox.py), with stand-in golden images (tiny qcow2 files of known
bytes: what is copied matters here, not what boots; the boot test bakes a real one).

The bundles are blueprints/example.yaml's (nextcloud: image; onion: iso; vpn: kickstart) and
the same with a changed package list (a new image key). Every volume lives in a directory pool
(this kernel has no device-mapper for the logical pool), in the format generated (raw for the
example's logical pool, qcow2 for a dir pool). Checked: the copy, a second run changing
nothing, a new key recreating the volume, a missing image and a running VM refused with
nothing deleted, SIGKILL at every step of a copy converging on the next run, and the data
volume's bytes never changing.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import attrs
import pytest

from .conftest import ROOT
from .libvirt_sandbox import LibvirtSandbox, host_definitions, tiny_golden
from .test_hooks import write_bundle

pytestmark = pytest.mark.slow

EXAMPLE = ROOT / "blueprints" / "example.yaml"
ELEMENTS = "    elements: [moat-nextcloud]\n"
SEEDS = ("nextcloud-cidata.iso", "vpn-oemdrv.iso")

# MOAT_VIRSH stand-in: the real virsh, which then stops after the subcommand $KILL_AFTER
# (the test kills the apply script there)
VIRSH_STOPPING = """#!/bin/sh
virsh -c qemu:///system "$@"
rc=$?
if [ "$1" = "$KILL_AFTER" ]; then
    touch "$REACHED"
    sleep 600
fi
exit $rc
"""
# MOAT_QEMU_IMG stand-ins: one stops mid-copy (a part of the volume written with other bytes),
# one after the complete copy (before the marker is written)
QEMU_IMG_MID_COPY = """#!/bin/sh
# convert -n -f qcow2 -O FORMAT GOLDEN TARGET
qemu-io -f "$5" -c "write -q -P 0x5a 0 2M" "$7" >/dev/null
touch "$REACHED"
sleep 600
"""
QEMU_IMG_AFTER_COPY = """#!/bin/sh
qemu-img "$@" || exit
touch "$REACHED"
sleep 600
"""


@attrs.frozen
class Host:
    """The sandbox as a host: its libvirtd, the test's directories, two bundles (two image keys)."""

    sb: LibvirtSandbox
    tmp: Path
    bundles: dict[str, Path]  # "old", "new": the example and the example with a new image key
    goldens: dict[str, Path]  # the golden image of each bundle, in `images`

    @property
    def images(self) -> Path:
        return self.tmp / "images"

    @property
    def state(self) -> Path:
        return self.tmp / "state"

    def apply_command(self, which: str, *extra_env: str) -> list[str]:
        bundle = self.bundles[which]
        return ["env", f"MOAT_LIBVIRT_DIR={self.tmp / ('defs-' + which)}", f"MOAT_IMAGES_DIR={self.images}",
                f"MOAT_STATE_DIR={self.state}", *extra_env, "sh", str(bundle / "host/libvirt/moat-libvirt-apply")]

    def apply(self, which: str, ok: bool = True) -> subprocess.CompletedProcess:
        out = self.sb.run(*self.apply_command(which), check=False, timeout=120)
        assert (out.returncode == 0) == ok, f"apply {which}: {out.returncode}\n{out.stdout}{out.stderr}"
        return out

    def volume(self, name: str) -> Path:
        return self.tmp / "pools/images" / name

    def marker(self, name: str = "nextcloud-os") -> str | None:
        path = self.state / "volumes/images" / name
        return path.read_text().strip() if path.exists() else None

    def holds(self, which: str, name: str = "nextcloud-os", fmt: str = "raw") -> bool:
        """Does the volume hold exactly the golden image of bundle `which` (and zeros after it)?"""
        compare = subprocess.run(["qemu-img", "compare", "-q", "-f", "qcow2", "-F", fmt, str(self.goldens[which]),
                                  str(self.volume(name))], capture_output=True, text=True)
        assert compare.returncode in (0, 1), compare.stderr
        return compare.returncode == 0


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def stamp(path: Path) -> tuple:
    st = path.stat()
    return st.st_ino, st.st_mtime_ns, st.st_ctime_ns, sha256(path)


def image_ref(bundle: Path) -> str:
    """NAME-KEY of the bundle's one image."""
    [image] = json.loads((bundle / "host/images.json").read_text())["images"]
    return f"{image['name']}-{image['key']}"


@pytest.fixture
def host(tmp_path):
    new_blueprint = tmp_path / "example-new.yaml"
    text = EXAMPLE.read_text()
    assert text.count(ELEMENTS) == 1
    new_blueprint.write_text(text.replace(ELEMENTS, ELEMENTS + "    packages: [htop]\n"))
    bundles = {"old": write_bundle(EXAMPLE, tmp_path / "bundle-old"), "new": write_bundle(new_blueprint, tmp_path / "bundle-new")}
    for which, bundle in bundles.items():
        host_definitions(bundle, tmp_path / f"defs-{which}", tmp_path / "pools", tcg=True)
    (tmp_path / "pools/ISOs").mkdir(parents=True)
    for seed in SEEDS:  # as the host's kickstart leaves them (content irrelevant here)
        (tmp_path / "pools/ISOs" / seed).write_bytes(bytes(32 * 2048))
    goldens = {which: tiny_golden(tmp_path / "images", bundles[which], "nextcloud", fill)
               for which, fill in (("old", 0x11), ("new", 0x22))}
    assert goldens["old"].name != goldens["new"].name  # a changed package list is a new key
    with LibvirtSandbox(tmp_path / "sandbox") as sb:
        sb.run("ip", "link", "add", "br1", "type", "bridge")  # the mirror network's bridge
        yield Host(sb, tmp_path, bundles, goldens)


def write_data(host: Host) -> str:
    """Known bytes on nextcloud's data volume (its first 4 MiB); their sha256 over the whole volume."""
    data = host.volume("nextcloud-data")
    with data.open("r+b") as f:
        f.write(os.urandom(4 << 20))
    return sha256(data)


def test_os_volume_is_a_copy_of_the_golden_image_and_follows_its_key(host):
    old, new = (image_ref(host.bundles[w]) for w in ("old", "new"))

    out = host.apply("old")
    assert f"OS volume images/nextcloud-os of VM nextcloud made from image {old}" in out.stdout
    assert host.holds("old") and host.marker() == old
    # the capacity is the volume's (the blueprint's size), not the image's: growpart grows into it
    assert host.volume("nextcloud-os").stat().st_size == 16 << 20
    head = host.volume("nextcloud-os").read_bytes()[: 1 << 20]
    assert head == bytes([0x11]) * (1 << 20)
    # kickstart and iso VMs keep blank OS volumes; the data volume is blank, created once
    for blank in ("vpn-os", "onion-os", "nextcloud-data"):
        assert host.volume(blank).read_bytes() == bytes(16 << 20), blank
    data = write_data(host)
    blanks = {v: stamp(host.volume(v)) for v in ("vpn-os", "onion-os")}

    # a second run changes nothing
    before = stamp(host.volume("nextcloud-os"))
    marker_before = (host.state / "volumes/images/nextcloud-os").stat().st_mtime_ns
    out = host.apply("old")
    assert "made from image" not in out.stdout and "are defined" in out.stdout
    assert stamp(host.volume("nextcloud-os")) == before
    assert (host.state / "volumes/images/nextcloud-os").stat().st_mtime_ns == marker_before

    # the new bundle, its image not on this host yet: refused, naming the file and how it gets
    # there; nothing deleted, and every domain still defined
    host.goldens["new"].rename(host.tmp / "new.qcow2")
    out = host.apply("new", ok=False)
    assert f"golden image {host.images / (new + '.qcow2')} is missing: VM nextcloud cannot be installed" in out.stderr
    assert "moat iso" in out.stderr and f"copies them to {host.images}" in out.stderr
    assert stamp(host.volume("nextcloud-os")) == before and host.marker() == old
    assert host.sb.virsh("list", "--all", "--name").stdout.split() == ["nextcloud", "onion", "vpn"]
    (host.tmp / "new.qcow2").rename(host.goldens["new"])

    # the new image: the volume is made again from it
    out = host.apply("new")
    assert f"made from image {new}" in out.stdout
    assert host.holds("new") and host.marker() == new
    assert sha256(host.volume("nextcloud-data")) == data
    assert {v: stamp(host.volume(v)) for v in blanks} == blanks

    # the VM runs: going back to the old image is refused, nothing deleted, the rest applied
    host.sb.virsh("start", "nextcloud")
    running = stamp(host.volume("nextcloud-os"))
    host.sb.virsh("autostart", "--disable", "vpn")
    out = host.apply("old", ok=False)
    assert "VM nextcloud is running, and its OS volume images/nextcloud-os does not hold image " + old in out.stderr
    assert "shut the VM down (virsh shutdown nextcloud) and run moat-libvirt-apply again" in out.stderr
    assert stamp(host.volume("nextcloud-os")) == running and host.marker() == new
    assert "vpn" in host.sb.virsh("list", "--all", "--autostart", "--name").stdout.split()  # applied anyway
    assert host.sb.virsh("domstate", "nextcloud").stdout.strip() == "running"
    assert sha256(host.volume("nextcloud-data")) == data

    # shut down: reinstalled from the old image; the data volume's bytes never changed
    host.sb.virsh("destroy", "nextcloud")
    out = host.apply("old")
    assert host.holds("old") and host.marker() == old
    assert sha256(host.volume("nextcloud-data")) == data
    assert {v: stamp(host.volume(v)) for v in blanks} == blanks


# where a run is killed: (what stops, the stand-in's text, the subcommand it stops after)
KILL_POINTS = {
    "after vol-delete": ("MOAT_VIRSH", VIRSH_STOPPING, "vol-delete"),
    "after vol-create": ("MOAT_VIRSH", VIRSH_STOPPING, "vol-create"),
    "mid-copy": ("MOAT_QEMU_IMG", QEMU_IMG_MID_COPY, ""),
    "after the copy, before the marker": ("MOAT_QEMU_IMG", QEMU_IMG_AFTER_COPY, ""),
}


def killed_apply(host: Host, which: str, point: str) -> None:
    """Run the apply script of bundle `which` with the stand-in of `point`, SIGKILL it (and
    everything it started) once the stand-in says it got there."""
    variable, text, after = KILL_POINTS[point]
    stand_in = host.tmp / "stand-in"
    stand_in.write_text(text)
    reached = host.tmp / "reached"
    reached.unlink(missing_ok=True)
    command = host.apply_command(which, f"{variable}=sh {stand_in}", f"KILL_AFTER={after}", f"REACHED={reached}")
    proc = subprocess.Popen(["nsenter", "--target", str(host.sb.init_pid), "--mount", "--net", "--pid", "--", *command],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not reached.exists():
            assert proc.poll() is None, f"{point}: the apply script ended first: {proc.communicate()}"
            assert time.monotonic() < deadline, f"{point}: not reached"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_a_copy_killed_at_any_step_is_made_again(host, point):
    """SIGKILL while the OS volume is being made from a new image: the marker is gone before the
    volume changes, so the next run, whichever image it wants (back to the old one, or the new
    one), deletes what is left and makes a complete copy; the data volume is never touched."""
    old, new = (image_ref(host.bundles[w]) for w in ("old", "new"))
    host.apply("old")
    data = write_data(host)
    for then in ("old", "new"):
        killed_apply(host, "new", point)
        assert host.marker() is None, point  # whatever the volume holds now, nothing vouches for it
        if point == "mid-copy":  # the volume exists, partly written
            assert not host.holds("new") and not host.holds("old")
        out = host.apply(then)
        assert f"made from image {dict(old=old, new=new)[then]}" in out.stdout
        assert host.holds(then) and host.marker() == dict(old=old, new=new)[then]
        assert sha256(host.volume("nextcloud-data")) == data


def test_in_a_dir_pool_the_copy_is_qcow2(tmp_path):
    """A dir pool's volumes are qcow2 (sparse): the golden image is converted into the volume as
    created, at the blueprint's capacity."""
    blueprint = tmp_path / "dir-pool.yaml"
    text = EXAMPLE.read_text()
    logical = "    - name: images\n      type: logical\n"
    assert logical in text
    blueprint.write_text(text.replace(logical, "    - name: images\n      type: dir\n      path: /var/lib/libvirt/images\n"))
    bundle = write_bundle(blueprint, tmp_path / "bundle")
    assert "golden_volume images nextcloud-os nextcloud nextcloud-" in (bundle / "host/libvirt/moat-libvirt-apply").read_text()
    host_definitions(bundle, tmp_path / "defs-old", tmp_path / "pools", tcg=True)
    (tmp_path / "pools/ISOs").mkdir(parents=True)
    for seed in SEEDS:
        (tmp_path / "pools/ISOs" / seed).write_bytes(bytes(32 * 2048))
    golden = tiny_golden(tmp_path / "images", bundle, "nextcloud", 0x33)
    with LibvirtSandbox(tmp_path / "sandbox") as sb:
        sb.run("ip", "link", "add", "br1", "type", "bridge")
        h = Host(sb, tmp_path, {"old": bundle}, {"old": golden})
        h.apply("old")
        info = subprocess.run(["qemu-img", "info", "--output=json", str(h.volume("nextcloud-os"))],
                              capture_output=True, text=True, check=True).stdout
        assert '"format": "qcow2"' in info and f'"virtual-size": {16 << 20}' in info
        assert h.holds("old", fmt="qcow2") and h.marker() == image_ref(bundle)
