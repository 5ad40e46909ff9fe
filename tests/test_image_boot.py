"""A VM really boots from what moat generates: its golden image (baked by `moat images`), its seed
(written by `moat iso`) and its domain (the bundle's XML, defined by the bundle's own apply
script in a real libvirtd; tests/libvirt_sandbox.py). Then, over the generated NAT network, as
the blueprint's user with its key, the test checks what the blueprint promised, and redeploys
the VM immutably: a new image, the same data disk.

What the test changes in the generated files, and why (everything else is as generated):
- pools: a `dir` pool stands in for the logical pool (this kernel has no device-mapper), and
  every pool's directory lies under the test's temp directory;
- the domain: TCG instead of the /dev/kvm shim (so no host CPU passthrough), 1 vCPU and 1 GiB
  instead of the blueprint's sizes, and a log file on its serial console (the test reads it).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import MACHINE_IMAGES, ROOT
from .libvirt_sandbox import LibvirtSandbox
from .vm_driver import Machine

pytestmark = pytest.mark.slow

MOAT = [sys.executable, "-m", "compiler.cli"]
TEMPLATE = ROOT / "tests" / "boot" / "web.yaml"
VM, USER, ADDRESS, MOUNT = "web", "ops", "192.168.77.10", "/srv/data"


def moat(*args: str, cwd: Path | None = None) -> str:
    """The real CLI, with the machine's image cache (real bakes, kept by key), not the run's stand-ins."""
    out = subprocess.run([*MOAT, *args], capture_output=True, text=True, cwd=cwd or ROOT, timeout=3600,
                         stdin=subprocess.DEVNULL, env={**os.environ, "MOAT_IMAGES_DIR": str(MACHINE_IMAGES)})
    assert out.returncode == 0, f"moat {' '.join(args)} failed ({out.returncode}):\n{out.stdout}{out.stderr}"
    return out.stdout


def blueprint(dest: Path, key: Path, packages: list[str]) -> Path:
    text = TEMPLATE.read_text().replace("@KEY@", key.with_suffix(".pub").read_text().strip())
    path = dest / "web.yaml"
    path.write_text(text.replace("@PACKAGES@", json.dumps(packages)))
    return path


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class Host:
    """The host's side, as its boot-time apply sees it: the bundle's libvirt definitions (pools
    and domain adapted, see the module's docstring), golden images and seeds from the media."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.defs = root / "libvirt"
        self.images = root / "images"     # /var/lib/moat/images on a real host
        self.state = root / "state"       # /var/lib/moat
        self.pools = root / "pools"
        self.console = root / "console.log"
        for d in (self.images, self.state, self.pools):
            d.mkdir(parents=True, exist_ok=True)

    def install(self, release: Path, media: Path) -> None:
        """Put a release (bundle + media) where the host's apply reads it."""
        if self.defs.exists():
            shutil.rmtree(self.defs)
        shutil.copytree(release / "host" / "libvirt", self.defs)
        for pool in (self.defs / "pools").glob("*.xml"):
            name = pool.stem
            (self.pools / name).mkdir(exist_ok=True)
            uuid = re.search(r"<uuid>([^<]+)</uuid>", pool.read_text())  # kept: a redefinition must match
            pool.write_text(f'<pool type="dir"><name>{name}</name>{f"<uuid>{uuid.group(1)}</uuid>" if uuid else ""}'
                            f'<target><path>{self.pools / name}</path></target></pool>\n')
        domain = self.defs / "domains" / f"{VM}.xml"
        xml = domain.read_text()
        xml = xml.replace('<domain type="kvm">', '<domain type="qemu">', 1)
        xml = xml.replace('<cpu mode="host-passthrough" check="none"/>', "", 1)
        xml = re.sub(r'<(memory|currentMemory) unit="MiB">\d+<', r'<\1 unit="MiB">1024<', xml)
        xml = re.sub(r'<vcpu placement="static">\d+<', '<vcpu placement="static">1<', xml)
        xml, n = re.subn(r'(<serial type="pty">)', rf'\1\n      <log file="{self.console}" append="on"/>', xml)
        assert n == 1, "the generated domain has no serial console"
        domain.write_text(xml)
        # what the host's kickstart copies from the medium: golden images, seeds into the seed pool
        for image in (media / "moat" / "images").glob("*.qcow2"):
            shutil.copyfile(image, self.images / image.name)
        (self.pools / "ISOs").mkdir(exist_ok=True)
        for seed in media.parent.glob("*-cidata.iso"):
            shutil.copyfile(seed, self.pools / "ISOs" / seed.name)

    def apply(self, sb: LibvirtSandbox, release: Path) -> str:
        env = {"MOAT_LIBVIRT_DIR": str(self.defs), "MOAT_IMAGES_DIR": str(self.images),
               "MOAT_STATE_DIR": str(self.state)}
        script = release / "host" / "libvirt" / "moat-libvirt-apply"
        out = sb.run("env", *(f"{k}={v}" for k, v in env.items()), "sh", str(script), timeout=600)
        return out.stdout + out.stderr


def release(tmp: Path, key: Path, packages: list[str], secrets: Path, name: str) -> tuple[Path, Path, dict]:
    """Build the blueprint, bake its image, write its media: (bundle, medium tree, image record)."""
    work = tmp / name
    work.mkdir()
    bp = blueprint(work, key, packages)
    moat("images", str(bp))
    moat("build", str(bp), "--out", str(work / "out"))
    bundle = (work / "out" / "current").resolve()
    iso = work / "media" / "host.iso"
    moat("iso", "--out", str(work / "out"), "--secrets", str(secrets), "--output", str(iso))
    medium = work / "medium"
    extract(iso, medium)
    images = json.loads((bundle / "host" / "images.json").read_text())["images"]
    assert [i["name"] for i in images] == ["base"]
    return bundle, medium, images[0]


def extract(iso: Path, dest: Path) -> None:
    """The files under moat/ of the host medium, read back with pycdlib (what the host's kickstart copies)."""
    import pycdlib
    medium = pycdlib.PyCdlib()
    medium.open(str(iso))
    try:
        for top, _, files in medium.walk(rr_path="/moat"):
            for f in files:
                target = dest / top.lstrip("/") / f
                target.parent.mkdir(parents=True, exist_ok=True)
                with open(target, "wb") as out:
                    medium.get_file_from_iso_fp(out, rr_path=f"{top}/{f}")
    finally:
        medium.close()
    # the seeds are written beside the host ISO
    for seed in iso.parent.glob("*.iso"):
        if seed != iso:
            shutil.copyfile(seed, dest.parent / seed.name)


def test_vm_boots_from_its_image_seed_and_domain_and_is_reinstalled_keeping_its_data(tmp_path):
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "moat-test", "-f", str(key)], check=True)
    secrets = tmp_path / "secrets"
    first_bp = blueprint(tmp_path, key, [])
    moat("secrets", "init", str(first_bp), "--dir", str(secrets))

    bundle1, medium1, image1 = release(tmp_path, key, [], secrets, "first")
    host = Host(tmp_path / "host")
    host.install(bundle1, medium1)
    with LibvirtSandbox(tmp_path / "sandbox") as sb:
        print(host.apply(sb, bundle1))
        vm = Machine(sb, VM, host.console, ADDRESS, USER, key)
        os_volume, data_volume = host.pools / "images" / f"{VM}-os", host.pools / "images" / f"{VM}-data"
        assert data_volume.stat().st_size == 64 << 20

        started = time.monotonic()
        vm.start()
        vm.wait_for_console_text(r"moat-firstboot: luks: done", timeout=900)
        vm.wait_for_ssh(timeout=300)
        print(f"boot to SSH: {time.monotonic() - started:.0f} s")

        # the blueprint's identity and user: key only, no password, sudo
        assert vm.succeed("hostname").strip() == VM
        assert vm.root("getent shadow ops | cut -d: -f2") .strip() in ("!", "*", "!*")
        assert key.with_suffix(".pub").read_text().split()[1] in vm.succeed("cat ~/.ssh/authorized_keys")
        # sshd runs the bundle's configuration
        effective = vm.root("sshd -T")
        for line in (bundle1 / "vms" / VM / "ssh" / "sshd_config").read_text().splitlines():
            words = line.split()
            if words and not line.startswith("#") and words[0].lower() in (
                    "port", "passwordauthentication", "permitrootlogin", "kbdinteractiveauthentication",
                    "pubkeyauthentication", "x11forwarding", "maxauthtries"):
                assert f"{words[0].lower()} {words[1].lower()}" in effective.lower(), line
        # the VM's firewall is the bundle's, loaded
        generated = (bundle1 / "vms" / VM / "cloud-init" / "nftables.conf").read_bytes()
        assert vm.root("sha256sum /etc/nftables.conf").split()[0] == hashlib.sha256(generated).hexdigest()
        ruleset = vm.root("nft list ruleset")
        for table in re.findall(rb"^table (\w+ \w+)", generated, re.M):
            assert f"table {table.decode()}" in ruleset
        assert "policy drop" in ruleset
        # the data disk: LUKS2, unlocked at boot through crypttab and the keyfile, mounted
        assert re.search(r"^Version:\s*2$", vm.root("cryptsetup luksDump /dev/vdb"), re.M)
        crypttab = vm.root("cat /etc/crypttab")
        assert re.search(r"^data_crypt UUID=\S+ /etc/luks-keys/data.key luks", crypttab, re.M), crypttab
        assert vm.succeed(f"findmnt -n -o SOURCE {MOUNT}").strip() == "/dev/mapper/data_crypt"
        # the golden image it runs
        info = json.loads(vm.succeed("cat /etc/moat/image.json"))
        assert info["key"] == image1["key"]

        # immutable redeploy: data written, VM shut down, OS volume recreated from a new image
        vm.root(f"echo kept-across-reinstall > {MOUNT}/marker && sync")
        vm.shutdown()
        data_before, os_before = sha256(data_volume), sha256(os_volume)

        bundle2, medium2, image2 = release(tmp_path, key, ["tree"], secrets, "second")
        assert image2["key"] != image1["key"]
        host.install(bundle2, medium2)
        print(host.apply(sb, bundle2))
        assert sha256(data_volume) == data_before, "the reinstall wrote to the data volume"
        assert sha256(os_volume) != os_before, "the OS volume was not recreated"

        started = time.monotonic()
        vm.start()
        vm.wait_for_console_text(r"moat-firstboot: luks: done", timeout=900)
        vm.wait_for_ssh(timeout=300)
        print(f"reinstall to SSH: {time.monotonic() - started:.0f} s")
        assert json.loads(vm.succeed("cat /etc/moat/image.json"))["key"] == image2["key"]
        assert vm.succeed("command -v tree").strip() == "/usr/bin/tree"
        assert vm.succeed(f"cat {MOUNT}/marker").strip() == "kept-across-reinstall"
        assert vm.succeed(f"findmnt -n -o SOURCE {MOUNT}").strip() == "/dev/mapper/data_crypt"
        vm.shutdown()
