"""Kickstarts of the host and of kickstart VMs: ksvalidator (RHEL9), shellcheck on their scripts,
content read back with pykickstart, and their %pre/%post scripts run for real.

The scripts run in a private mount namespace (tmpfs over /run and /tmp) with a fake install
medium bind-mounted where Anaconda's dracut mounts the DVD (/run/install/repo) or on a loop
device labelled OEMDRV; the target system is a directory (ANA_INSTALL_PATH). With a vps, the
home host's OpenVPN client config and its keys (a real PKI from `moat secrets init`, exactly the
files the kickstart names, as `moat iso` copies them) land in /etc/openvpn/client/ 0600 root,
and a medium without them stops %pre before the disk is touched. With host.sshd.totp, each host
user's TOTP secret from `moat secrets init` lands as /home/<user>/.google_authenticator 0400 (the
chroot %post gives it to the user and restorecon labels it), a medium without one stops %pre, and
the installed file gets the user in through the real sshd + pam_google_authenticator with a code
computed from the secrets directory (RFC 6238).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from pykickstart.parser import KickstartParser
from pykickstart.version import makeVersion

from compiler.pipeline import build_file, check_file
from compiler.render import kickstart
from compiler.verify import validators_for

from .conftest import FIXTURES, ROOT
from .test_wazuh import validate

EXAMPLE = ROOT / "blueprints" / "example.yaml"
VPS_FRONT = ROOT / "blueprints" / "vps-front.yaml"
HOST_KS = "host/kickstart/ks.cfg"
VPN_KS = "vms/vpn/kickstart/ks.cfg"
# a passphrase with everything the kickstart parser or the shell could trip over
NASTY = 'pa ss"w\\or#d $HOME `id` \'q\' &amp; ;'
FAST_PBKDF = "--pbkdf pbkdf2 --pbkdf-force-iterations 1000"


def parse(text: str):
    handler = makeVersion("RHEL9")
    KickstartParser(handler, followIncludes=False).readKickstartFromString(text)
    return handler


def sections(text: str) -> list[tuple[str, str]]:
    """(header, body) of every %pre/%post section."""
    found, header, body = [], None, []
    for line in text.splitlines(keepends=True):
        if header is None and line.startswith(("%pre", "%post")):
            header, body = line.strip(), []
        elif header is not None and line.strip() == "%end":
            found.append((header, "".join(body)))
            header = None
        elif header is not None:
            body.append(line)
    return found


def section(text: str, prefix: str) -> str:
    [body] = [b for h, b in sections(text) if h.split()[0] == prefix.split()[0] and
              ("--nochroot" in h) == ("--nochroot" in prefix)]
    return body


def variant(tmp_path: Path, base: Path, old: str, new: str, name: str = "variant.yaml") -> Path:
    text = base.read_text()
    assert old in text
    path = tmp_path / name
    path.write_text(text.replace(old, new))
    return path


def run_isolated(work: Path, script: str, medium: Path | None = None, env: dict | None = None,
                 sysroot: Path | None = None, keep_tmp: Path | None = None) -> subprocess.CompletedProcess:
    """Run `script` with bash as an installer would: private /run and /tmp (tmpfs), `work`
    visible at /run/test, `medium` mounted at /run/install/repo, ANA_INSTALL_PATH=`sysroot`
    (in `work`); the script's /tmp is copied to `keep_tmp` (in `work`) at the end."""
    (work / "script.sh").write_text(script)
    setup = ["set -e", "mount -t tmpfs tmpfs /run", "mkdir -p /run/test", f"mount --bind {work} /run/test"]
    if medium is not None:
        setup += ["mkdir -p /run/install/repo", f"mount --bind {medium} /run/install/repo"]
    # last: the paths above may be under /tmp
    setup += ["mount -t tmpfs tmpfs /tmp", "set +e", "bash /run/test/script.sh", "rc=$?"]
    if keep_tmp is not None:
        setup += [f"cp -a /tmp/. /run/test/{keep_tmp.relative_to(work)}/"]
    setup += ["exit $rc"]
    environment = {**os.environ, **(env or {})}
    if sysroot is not None:  # under `work`, seen at /run/test
        environment["ANA_INSTALL_PATH"] = f"/run/test/{sysroot.relative_to(work)}"
    return subprocess.run(["unshare", "--mount", "bash", "-c", "\n".join(setup)], capture_output=True, text=True,
                          env=environment, timeout=120)


def make_medium(root: Path, bundle: Path, secrets: dict[str, str]) -> Path:
    """moat/bundle (a copy of the store directory) and moat/secrets/NAME, as the media step lays them out."""
    shutil.copytree(bundle, root / kickstart.MEDIUM_BUNDLE)
    (root / kickstart.MEDIUM_SECRETS).mkdir(parents=True)
    for name, value in secrets.items():  # a name may have directories: openvpn/clients/home1.key
        (root / kickstart.MEDIUM_SECRETS / name).parent.mkdir(parents=True, exist_ok=True)
        (root / kickstart.MEDIUM_SECRETS / name).write_text(value + "\n")
    return root


# --- the real tools -----------------------------------------------------------------------------


@pytest.mark.slow
def test_every_kickstart_passes_ksvalidator_and_shellcheck(example, tmp_path):
    findings = validate(example, tmp_path, lambda path: "/kickstart/" in path)
    expected = {HOST_KS} | ({VPN_KS} if example.stem == "example" else set())
    assert {f.path for f in findings} == expected
    assert all(Path(f.validator.tool).name == "ksvalidator" for f in findings)
    bad = [f"{f.path}: {f.output}" for f in findings if not f.ok]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("old, new, message", [
    ("selinux --enforcing", "selinux --enforcingg", "unrecognized arguments: --enforcingg"),
    ("logvol swap --vgname=system --name=swap --size=7987", "logvol swap --vgname=system --name=swap --size=7.8G",
     "invalid int value"),
    # scripts: a syntax error (bash -n), then a shellcheck warning
    ("visudo -c -q -f /etc/sudoers.d/90-moat-admins\n", "if visudo -c -q -f /etc/sudoers.d/90-moat-admins; then\n",
     "syntax error"),
    ('medium=$(cat /tmp/moat-medium)\n', 'medium=$(cat /tmp/moat-medium)\nmoat_unused=1\n', "SC2034"),
])
def test_the_validator_rejects_a_broken_kickstart(tmp_path, old, new, message):
    text = check_file(EXAMPLE).files[HOST_KS].content.decode()
    assert old in text
    broken = tmp_path / "ks.cfg"
    broken.write_text(text.replace(old, new, 1))
    [validator] = validators_for(HOST_KS)
    proc = subprocess.run([p.replace("{file}", str(broken)) for p in validator.command], capture_output=True, text=True)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0 and message in output, output
    # the message names the line of ks.cfg (scripts are checked with their own line numbers)
    line = text[:text.index(old)].count("\n") + 1
    assert f"line {line}" in output or f"{broken}:{line}:" in output or f"{broken}:{line + 1}:" in output, output


# --- what the host kickstart says ---------------------------------------------------------------


def test_host_kickstart_example():
    compiled = check_file(EXAMPLE)
    text = compiled.files[HOST_KS].content.decode()
    ks = parse(text)
    assert ks.rootpw.lock is True and not ks.rootpw.password
    [alice] = ks.user.userList
    assert (alice.name, alice.groups, alice.lock, alice.password) == ("alice", ["wheel"], True, "")
    assert [(k.username, k.key) for k in ks.sshkey.sshUserList] == [
        ("alice", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGGYoGgelGlvc01Uok42rUekwV8r3Hc+IOAJ5gKyQNKh alice@laptop")]
    [net] = ks.network.network
    assert (net.device, net.bootProto, net.ip, net.netmask, net.gateway, net.nameserver, net.hostname, net.activate) == (
        "enp1s0f1", "static", "203.0.113.10", "255.255.255.0", "203.0.113.1", "203.0.113.53", "kvm1.example.com", True)
    assert ks.selinux.selinux == 1  # SELINUX_ENFORCING
    assert ks.firewall.enabled and ks.firewall.ports == ["53201:tcp"] and "ssh" in ks.firewall.remove_services
    assert {"sshd", "firewalld", "virtqemud", "virtnetworkd", "virtstoraged", "wazuh-agent", "fail2ban"} <= set(ks.services.enabled)
    assert ks.timezone.timezone == "Etc/UTC" and ks.timezone.isUtc
    # disk: sda only, wiped, EFI + /boot, then LVM
    assert ks.ignoredisk.onlyuse == ["sda"] and ks.clearpart.drives == ["sda"] and ks.zerombr.zerombr
    parts = {p.mountpoint: p for p in ks.partition.partitions}
    assert (parts["/boot/efi"].fstype, parts["/boot/efi"].size) == ("efi", 200)
    assert (parts["/boot"].fstype, parts["/boot"].size) == ("xfs", 1024)
    assert "pv.01" not in parts  # encrypted: the PV lines come from %pre through %include
    assert "%include /tmp/moat-luks-parts.ks" in text
    assert {v.vgname: v.physvols for v in ks.volgroup.vgList} == {"system": ["pv.01"], "images": ["pv.02"]}
    assert {(lv.mountpoint, lv.name, lv.size) for lv in ks.logvol.lvList} == {("/", "root", 30720), ("swap", "swap", 7987)}
    # remote unlock: network in the initramfs, dracut-sshd from EPEL on the unlock port
    assert ks.bootloader.appendLine == "rd.neednet=1 ip=203.0.113.10::203.0.113.1:255.255.255.0:kvm1.example.com:enp1s0f1:none"
    assert {r.name for r in ks.repo.repoList} == {"epel", "wazuh"}
    assert {"dracut-sshd", "dracut-network", "qemu-kvm", "libvirt", "virt-install", "wazuh-agent"} <= set(ks.packages.packageList)
    assert "@^minimal-environment" in text.split("%packages", 1)[1]
    # no vps: no OpenVPN client
    assert "openvpn" not in ks.packages.packageList and "openvpn" not in text
    chroot = section(text, "%post")
    assert 'SSHD_OPTS="-p 2222"' in chroot and "dracut --force --regenerate-all" in chroot
    assert "semanage port -a -t ssh_port_t -p tcp 53201" in chroot
    assert "alice ALL=(ALL) NOPASSWD: ALL" in chroot
    # the host's medium: its install DVD first, then an OEMDRV volume
    assert 'MEDIUM_SEARCH="/run/install/repo LABEL=OEMDRV"' in section(text, "%pre")


def test_host_kickstart_vps_front(tmp_path):
    ks = parse(check_file(VPS_FRONT).files[HOST_KS].content.decode())
    # host.users: [alice]; bob exists only in VMs
    assert [u.name for u in ks.user.userList] == ["alice"]
    [net] = ks.network.network
    # no host.uplink.dns: the gateway (the home router) resolves
    assert (net.device, net.ip, net.gateway, net.nameserver, net.hostname) == (
        "eno1", "192.168.1.20", "192.168.1.1", "192.168.1.1", "homeserver.home.example.net")
    assert ks.ignoredisk.onlyuse == ["nvme0n1"]
    assert {v.vgname for v in ks.volgroup.vgList} == {"system", "vms"}
    # TOTP (host.sshd.totp): pam_google_authenticator from EPEL; no Wazuh here
    assert "google-authenticator" in ks.packages.packageList and "wazuh-agent" not in ks.packages.packageList
    assert {r.name for r in ks.repo.repoList} == {"epel"}
    # the OpenVPN client of vps.client (home1): EPEL's openvpn, its config, its unit, its keys from the medium
    text = check_file(VPS_FRONT).files[HOST_KS].content.decode()
    assert "openvpn" in ks.packages.packageList and "epel-release" in ks.packages.packageList
    assert "# EPEL for" in text and "openvpn (the tunnel to the VPS)" in text
    nochroot = section(text, "%post --nochroot")
    assert "install_file host/openvpn/client.conf /etc/openvpn/client/home1.conf 0600 " in nochroot
    for name, dest in (("openvpn/ca.crt", "ca.crt"), ("openvpn/clients/home1.crt", "home1.crt"),
                       ("openvpn/clients/home1.key", "home1.key"), ("openvpn/tls-crypt.key", "tls-crypt.key")):
        assert f"install_secret moat/secrets/{name} /etc/openvpn/client/{dest} 0600\n" in nochroot
        assert f"moat/secrets/{name}" in section(text, "%pre")  # checked before the disk is touched
    assert "systemctl enable openvpn-client@home1.service\n" in section(text, "%post")
    # what the media step copies: exactly these four of the PKI (and the LUKS passphrase, and
    # alice's TOTP secret), all of them files `moat secrets init` makes
    from compiler import secrets
    from compiler.media.layout import secrets_read_by

    assert secrets_read_by(text.encode()) == ["host-luks", "openvpn/ca.crt", "openvpn/clients/home1.crt",
                                              "openvpn/clients/home1.key", "openvpn/tls-crypt.key",
                                              "totp/host/alice"]
    made = {f for s in secrets.needed(VPS_FRONT)[1] for f in s.files}
    assert set(secrets_read_by(text.encode())) <= made


def test_host_kickstart_without_encryption(tmp_path):
    plain = variant(tmp_path, EXAMPLE, "    encryption:\n      passphrase: secret:host-luks\n      unlock_port: 2222\n", "")
    text = check_file(plain).files[HOST_KS].content.decode()
    ks = parse(text)
    parts = {p.mountpoint: p for p in ks.partition.partitions}
    assert parts["pv.01"].size == 30720 + 7987 + kickstart.PV_SLACK_MIB and not parts["pv.01"].encrypted
    assert parts["pv.02"].grow and not parts["pv.02"].encrypted
    assert "%include" not in text and "dracut-sshd" not in text and ks.bootloader.appendLine == ""
    assert "luks" not in section(text, "%post --nochroot")


def test_root_volume_group_never_takes_the_vm_volume_group_name(tmp_path):
    clash = variant(tmp_path, EXAMPLE, "volume_group: images", "volume_group: system")
    ks = parse(check_file(clash).files[HOST_KS].content.decode())
    assert {v.vgname: v.physvols for v in ks.volgroup.vgList} == {"system0": ["pv.01"], "system": ["pv.02"]}


def test_host_post_installs_the_other_families_files():
    compiled = check_file(EXAMPLE)
    copies = {c.source: c for c in kickstart.copies(compiled.files, "host/", kickstart.HOST_FILES)}
    wanted = {"host/ssh/sshd_config": ("/etc/ssh/sshd_config", "0600"),
              "host/firewalld/zones/public.xml": ("/etc/firewalld/zones/public.xml", "0644"),
              "host/libvirt/hooks/qemu": ("/etc/libvirt/hooks/qemu", "0555"),
              "host/systemd/moat-mirror.service": ("/etc/systemd/system/moat-mirror.service", "0644"),
              "host/NetworkManager/system-connections/br1.nmconnection":
                  ("/etc/NetworkManager/system-connections/br1.nmconnection", "0600"),
              "host/wazuh/ossec.conf": ("/var/ossec/etc/ossec.conf", "0640"),
              "host/libvirt/volumes/images/vpn-os.xml": ("/etc/moat/libvirt/volumes/images/vpn-os.xml", "0644")}
    for source, (dest, mode) in wanted.items():
        assert (copies[source].dest, copies[source].mode) == (dest, mode)
        assert copies[source].sha256 == hashlib.sha256(compiled.files[source].content).hexdigest()
    text = compiled.files[HOST_KS].content.decode()
    for c in copies.values():
        assert f"install_file {c.source} {c.dest} {c.mode} {c.sha256}\n" in section(text, "%post --nochroot")
    chroot = section(text, "%post")
    assert "systemctl enable moat-mirror.service" in chroot and "chown root:wazuh /var/ossec/etc/ossec.conf" in chroot
    # every family whose files are copied renders first
    assert {"sshd", "firewall", "hooks", "mirror", "wazuh", "libvirt"} <= set(kickstart.AFTER)


# --- what the VM kickstart says -----------------------------------------------------------------


def test_vm_kickstart_matches_the_dhcp_lease():
    files = check_file(EXAMPLE).files
    ks = parse(files[VPN_KS].content.decode())
    network = ET.fromstring(files["host/libvirt/networks/default.xml"].content)
    lease = network.find("ip/dhcp/host[@name='vpn']")
    [net] = ks.network.network
    assert (net.device, net.ip) == (lease.get("mac"), lease.get("ip"))
    assert (net.bootProto, net.netmask, net.gateway, net.nameserver, net.hostname) == (
        "static", "255.255.255.0", network.find("ip").get("address"), "192.168.122.1", "vpn")
    assert ks.rootpw.lock and [u.name for u in ks.user.userList] == ["alice"]
    assert ks.selinux.selinux == 1
    # sshd inside the VM and the forward 52439/udp -> vpn:1194
    assert ks.firewall.ports == ["22:tcp", "1194:udp"]
    assert ks.ignoredisk.onlyuse == ["vda"] and ks.clearpart.drives == ["vda"]
    assert ks.reqpart.reqpart and ks.reqpart.addBoot
    assert [p.mountpoint for p in ks.partition.partitions] == ["/"]
    copied = section(files[VPN_KS].content.decode(), "%post --nochroot")
    assert "install_file vms/vpn/ssh/sshd_config /etc/ssh/sshd_config 0600 " in copied
    assert "install_file vms/vpn/wazuh/ossec.conf /var/ossec/etc/ossec.conf 0640 " in copied
    # a VM's medium: its own OEMDRV seed first (it carries the VM's secrets)
    assert 'MEDIUM_SEARCH="LABEL=OEMDRV /run/install/repo"' in section(files[VPN_KS].content.decode(), "%pre")


def test_only_kickstart_vms_get_a_kickstart():
    files = check_file(EXAMPLE).files
    assert sorted(p for p in files if p.endswith("/kickstart/ks.cfg")) == [HOST_KS, VPN_KS]
    assert not any(p.endswith("/kickstart/ks.cfg") for p in check_file(VPS_FRONT).files if p.startswith("vms/"))


def test_no_secret_value_in_any_kickstart(example):
    compiled = check_file(example)
    for path, out in compiled.files.items():
        if path.endswith("ks.cfg"):
            text = out.content.decode()
            # the passphrase is only ever a shell variable filled from the medium at install time
            assert "secret:" not in text
            for line in text.splitlines():
                if line.startswith(("part ", "logvol ", "raid ")) and "--passphrase" in line:
                    assert '--passphrase="$quoted"' in line, line
            # outside the scripts, no passphrase at all
            main = text
            for _, body in sections(text):
                main = main.replace(body, "")
            assert "--passphrase" not in main


# --- the scripts, run -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def example_bundle(tmp_path_factory) -> Path:
    _, stored = build_file(EXAMPLE, tmp_path_factory.mktemp("store"), tools=False)
    return stored.path


def test_pre_writes_the_encrypted_partitions_from_the_medium_secret(example_bundle, tmp_path):
    ks_text = (example_bundle / HOST_KS).read_text()
    medium = make_medium(tmp_path / "medium", example_bundle, {"host-luks": NASTY})
    keep = tmp_path / "tmp-out"
    keep.mkdir()
    proc = run_isolated(tmp_path, section(ks_text, "%pre"), medium=medium, keep_tmp=keep)
    assert proc.returncode == 0, proc.stderr
    include = keep / "moat-luks-parts.ks"
    assert stat.S_IMODE(include.stat().st_mode) == 0o600
    assert (keep / "moat-medium").read_text() == "/run/install/repo\n"
    # the kickstart as Anaconda reads it after %pre: still valid, with the exact passphrase
    flat = ks_text.replace("%include /tmp/moat-luks-parts.ks\n", include.read_text())
    (tmp_path / "flat.ks").write_text(flat)
    proc = subprocess.run([kickstart.ksvalidator(), "-v", "RHEL9", str(tmp_path / "flat.ks")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    parts = {p.mountpoint: p for p in parse(flat).partition.partitions}
    for pv in ("pv.01", "pv.02"):
        assert parts[pv].encrypted and parts[pv].luks_version == "luks2" and parts[pv].passphrase == NASTY
        assert parts[pv].disk == "sda"
    assert parts["pv.01"].size == 30720 + 7987 + kickstart.PV_SLACK_MIB and parts["pv.02"].grow
    # the secret is in the installer's RAM only, never in the bundle's kickstart
    assert NASTY not in ks_text and "pa ss" not in ks_text


def test_pre_refuses_a_medium_without_the_secret(example_bundle, tmp_path):
    medium = make_medium(tmp_path / "medium", example_bundle, {})
    proc = run_isolated(tmp_path, section((example_bundle / HOST_KS).read_text(), "%pre"), medium=medium)
    assert proc.returncode != 0 and "the medium has no moat/secrets/host-luks" in proc.stderr


@pytest.mark.slow
def test_pre_finds_an_oemdrv_volume(example_bundle, tmp_path):
    image = tmp_path / "oemdrv.img"
    subprocess.run(["truncate", "-s", "64M", str(image)], check=True)
    content = make_medium(tmp_path / "content", example_bundle, {"host-luks": NASTY})
    subprocess.run(["mkfs.ext4", "-q", "-L", kickstart.MEDIUM_LABEL, "-d", str(content), str(image)], check=True)
    loop = subprocess.run(["losetup", "-f", "--show", str(image)], capture_output=True, text=True, check=True).stdout.strip()
    try:
        keep = tmp_path / "tmp-out"
        keep.mkdir()
        proc = run_isolated(tmp_path, section((example_bundle / HOST_KS).read_text(), "%pre"), keep_tmp=keep)
        assert proc.returncode == 0, proc.stderr
        assert (keep / "moat-medium").read_text() == kickstart.MEDIUM_MOUNT + "\n"
        assert parse((keep / "moat-luks-parts.ks").read_text()).partition.partitions[0].passphrase == NASTY
    finally:
        subprocess.run(["losetup", "-d", loop], check=True)


def test_post_installs_checked_files_into_the_new_system(example_bundle, tmp_path):
    ks_text = (example_bundle / VPN_KS).read_text()
    medium = make_medium(tmp_path / "medium", example_bundle, {})
    sysroot = tmp_path / "sysroot"
    sysroot.mkdir()
    script = section(ks_text, "%pre") + section(ks_text, "%post --nochroot")
    proc = run_isolated(tmp_path, script, medium=medium, sysroot=sysroot)
    assert proc.returncode == 0, proc.stderr
    for source, dest, mode in (("vms/vpn/ssh/sshd_config", "etc/ssh/sshd_config", 0o600),
                               ("vms/vpn/wazuh/ossec.conf", "var/ossec/etc/ossec.conf", 0o640)):
        installed = sysroot / dest
        assert installed.read_bytes() == (example_bundle / source).read_bytes()
        assert stat.S_IMODE(installed.stat().st_mode) == mode and installed.stat().st_uid == 0
    # a medium whose files differ from the bundle the kickstart was rendered from is refused
    target = medium / kickstart.MEDIUM_BUNDLE / "vms/vpn/ssh/sshd_config"
    target.chmod(0o644)
    target.write_text(target.read_text() + "PermitRootLogin yes\n")
    proc = run_isolated(tmp_path, script, medium=medium, sysroot=tmp_path / "sysroot2")
    assert proc.returncode != 0 and "is not the file of this bundle" in proc.stderr


@pytest.mark.slow
def test_vm_post_encrypts_the_data_disk_with_the_medium_passphrase(tmp_path):
    # the vpn VM with a small encrypted data disk
    blueprint = variant(tmp_path, EXAMPLE, "    os_disk: { size: 5GiB, pool: images }\n",
                        "    os_disk: { size: 5GiB, pool: images }\n"
                        "    data_disks:\n      - { name: logs, size: 32MiB, pool: images, mount: /var/log/openvpn }\n")
    _, stored = build_file(blueprint, tmp_path / "store", tools=False)
    ks_text = (stored.path / VPN_KS).read_text()
    packages = parse(ks_text).packages.packageList
    assert {"cryptsetup", "e2fsprogs"} <= set(packages)
    medium = make_medium(tmp_path / "medium", stored.path, {kickstart.vm_luks_secret("vpn"): NASTY})
    disk = tmp_path / "vdb.img"
    subprocess.run(["truncate", "-s", "32M", str(disk)], check=True)
    loop = subprocess.run(["losetup", "-f", "--show", str(disk)], capture_output=True, text=True, check=True).stdout.strip()
    try:
        sysroot = tmp_path / "sysroot"
        (sysroot / "dev").mkdir(parents=True)
        (sysroot / "dev/vdb").symlink_to(loop)  # the installer sees the VM's second disk as vdb
        (sysroot / "etc").mkdir()
        script = section(ks_text, "%pre") + section(ks_text, "%post --nochroot")
        proc = run_isolated(tmp_path, script, medium=medium, sysroot=sysroot, env={"MOAT_LUKS_PBKDF_ARGS": FAST_PBKDF})
        assert proc.returncode == 0, proc.stderr
        uuid = subprocess.run(["cryptsetup", "luksUUID", loop], capture_output=True, text=True, check=True).stdout.strip()
        assert (sysroot / "etc/crypttab").read_text() == f"logs_crypt UUID={uuid} /etc/luks-keys/logs.key luks,discard\n"
        key = sysroot / "etc/luks-keys/logs.key"
        assert stat.S_IMODE(key.stat().st_mode) == 0o400 and key.stat().st_size == 4096
        for unlock in (["--key-file", str(key)], ["--key-file", "-"]):
            check = subprocess.run(["cryptsetup", "open", "--test-passphrase", *unlock, loop],
                                   input=NASTY.encode(), capture_output=True)
            assert check.returncode == 0, check.stderr
    finally:
        subprocess.run(["losetup", "-d", loop], check=True)


def test_vm_kickstart_with_several_nics(tmp_path):
    from .test_cloudinit import multi_nic

    files = check_file(multi_nic(tmp_path)).files
    nets = parse(files[VPN_KS].content.decode()).network.network
    # backend is vpn's first NAT network: default route, DNS and host name there
    assert [(n.ip, n.gateway, n.nodefroute, n.noipv4) for n in nets] == [
        ("10.9.0.150", "10.9.0.1", False, False), ("192.168.122.150", "", True, False), ("", "", False, True)]
    assert nets[0].hostname == "vpn" and nets[2].activate is False
    domain = ET.fromstring(files["host/libvirt/domains/vpn.xml"].content)
    assert [n.device for n in nets] == [m.get("address") for m in domain.iter("mac")]
    [validator] = validators_for(VPN_KS)
    ks = tmp_path / "ks.cfg"
    ks.write_bytes(files[VPN_KS].content)
    proc = subprocess.run([p.replace("{file}", str(ks)) for p in validator.command], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_rejection_points_at_the_blueprint_line(tmp_path):
    from compiler.verify import check_bundle

    files = check_file(EXAMPLE).files
    broken = tmp_path / HOST_KS
    broken.parent.mkdir(parents=True)
    broken.write_text(files[HOST_KS].content.decode().replace("selinux --enforcing", "selinux --enforcingg"))
    [diagnostic] = [d for d in check_bundle(tmp_path, files) if d.rule == "tool-rejected"]
    assert diagnostic.path == ("host", "selinux")


def test_the_initramfs_sshd_config_passes_sshd_t(tmp_path):
    chroot = section(check_file(EXAMPLE).files[HOST_KS].content.decode(), "%post")
    config = chroot.split("cat >/etc/dracut-sshd/sshd_config <<'MOAT_EOF'\n", 1)[1].split("MOAT_EOF\n", 1)[0]
    assert "Port 2222\n" in config and "AuthenticationMethods publickey\n" in config
    path = tmp_path / "sshd_config"
    path.write_text(config)
    checker = ROOT / "compiler/verify_tools/sshd.sh"  # the sshd family's wrapper: sshd -t with a throwaway host key
    proc = subprocess.run([str(checker), str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    # and sshd -t rejects a broken one
    path.write_text(config.replace("Port 2222", "Port 2222x"))
    assert subprocess.run([str(checker), str(path)], capture_output=True).returncode != 0


def test_no_remote_unlock_without_an_administrator(tmp_path):
    # alice is vps-front's only host user: without sudo, nobody may hold root in the initramfs
    blueprint = variant(tmp_path, VPS_FRONT, "  - name: alice\n    ssh_keys:", "  - name: alice\n    sudo: false\n    ssh_keys:")
    text = check_file(blueprint).files[HOST_KS].content.decode()
    ks = parse(text)
    assert "dracut-sshd" not in ks.packages.packageList and ks.bootloader.appendLine == ""
    assert "%include /tmp/moat-luks-parts.ks" in text  # still encrypted: the console asks
    assert "/etc/dracut-sshd" not in text and "sudoers" not in text


def test_traced_renders_keep_every_line_in_place(tmp_path):
    """Provenance re-renders templates with traced values: for the kickstart, cloud-init and
    Wazuh files the traced render must be the real file, line for line."""
    from compiler.render import environment
    from compiler.render._trace import _MARK, Traced, _Registry

    from .test_cloudinit import multi_nic

    for blueprint in (EXAMPLE, VPS_FRONT, multi_nic(tmp_path)):
        for path, out in check_file(blueprint).files.items():
            if not any(part in path for part in ("/kickstart/", "/cloud-init/", "/wazuh/")):
                continue
            registry = _Registry()
            context = {k: Traced(v, getattr(v, "at", ()) or (), registry) for k, v in out.context.items()}
            traced = environment().get_template(out.template).render(**context)
            assert _MARK.sub("", traced) == out.content.decode(), path


# --- the home host's OpenVPN client (vps) ---------------------------------------------------------


@pytest.fixture(scope="module")
def vps_install(tmp_path_factory):
    """vps-front without disk encryption (the LUKS part of %post needs a real installer), built,
    with a real PKI from `moat secrets init`: (tmp, blueprint, store path, secrets directory)."""
    from compiler import secrets

    tmp = tmp_path_factory.mktemp("vps-ks")
    blueprint = variant(tmp, VPS_FRONT, "    encryption:\n      passphrase: secret:host-luks\n", "")
    _, stored = build_file(blueprint, tmp / "store", tools=False)
    secrets.init(blueprint, tmp / "secrets")
    return tmp, blueprint, stored.path, tmp / "secrets"


def add_seeds(medium: Path, bundle: Path, secrets_dir: Path | None) -> dict[str, Path]:
    """The VMs' seeds and moat/seeds/SHA256SUMS on `medium`, as `moat iso` writes them (really
    written by it, beside a host ISO under medium/../iso): seed file name -> the seed `moat iso` wrote."""
    from compiler.media import layout
    from compiler.media.build import build_media
    from compiler.media.seed_iso import seed_sums

    out = medium.parent / "iso"
    result = build_media(bundle, out / "host.iso", secrets=secrets_dir)
    written = [m for m in result.media if m.vm]
    target = medium / layout.SEED_DIR
    target.mkdir(parents=True)
    for m in written:
        shutil.copyfile(m.path, target / m.path.name)
        (target / m.path.name).chmod(0o400 if m.secrets else 0o444)  # as on the ISO
    (target / layout.SUMS).write_bytes(seed_sums(written))
    return {m.path.name: m.path for m in written}


def add_images(medium: Path, bundle: Path) -> None:
    """The golden images the bundle lists and their SHA256SUMS, as moat iso writes them (from
    the run's image cache: stand-ins, tests/conftest.py)."""
    from compiler.media.bundle import load_bundle
    from compiler.media.images import baked_images, image_files

    for f in image_files(baked_images(load_bundle(bundle))):
        target = medium / f.path
        target.parent.mkdir(parents=True, exist_ok=True)
        if f.source is not None:
            shutil.copyfile(f.source, target)
        else:
            target.write_bytes(f.content)
        target.chmod(0o444)


def _medium_like_moat_iso(root: Path, bundle: Path, secrets_dir: Path, leave_out: tuple[str, ...] = ()) -> Path:
    """The medium `moat iso --secrets` makes: the bundle, exactly the secrets the kickstart names,
    and the VMs' seeds with their SHA256SUMS."""
    from compiler.media.layout import secrets_read_by

    medium = make_medium(root, bundle, {})
    add_seeds(medium, bundle, secrets_dir)
    add_images(medium, bundle)
    for name in secrets_read_by((bundle / HOST_KS).read_bytes()):
        if name not in leave_out:
            target = medium / kickstart.MEDIUM_SECRETS / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(secrets_dir / name, target)
            target.chmod(0o400)  # as on the ISO
    return medium


def test_post_installs_the_openvpn_client_with_its_keys(vps_install):
    tmp, _, bundle, secrets_dir = vps_install
    work = tmp / "post"
    work.mkdir()
    medium = _medium_like_moat_iso(work / "medium", bundle, secrets_dir)
    sysroot = work / "sysroot"
    sysroot.mkdir()
    ks_text = (bundle / HOST_KS).read_text()
    proc = run_isolated(work, section(ks_text, "%pre") + section(ks_text, "%post --nochroot"), medium=medium,
                        sysroot=sysroot)
    assert proc.returncode == 0, proc.stderr
    client_dir = sysroot / "etc/openvpn/client"
    expected = {"home1.conf": bundle / "host/openvpn/client.conf", "ca.crt": secrets_dir / "openvpn/ca.crt",
                "home1.crt": secrets_dir / "openvpn/clients/home1.crt",
                "home1.key": secrets_dir / "openvpn/clients/home1.key",
                "tls-crypt.key": secrets_dir / "openvpn/tls-crypt.key"}
    assert {p.name for p in client_dir.iterdir()} == set(expected)
    for name, source in expected.items():
        installed = client_dir / name
        assert installed.read_bytes() == source.read_bytes(), name
        st = installed.stat()
        assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o600, 0, 0), name
    # client.conf names exactly the files installed beside it
    conf = (client_dir / "home1.conf").read_text()
    named = dict(line.split() for line in conf.splitlines() if line.split()[:1] in (["ca"], ["cert"], ["key"], ["tls-crypt"]))
    assert named == {"ca": "/etc/openvpn/client/ca.crt", "cert": "/etc/openvpn/client/home1.crt",
                     "key": "/etc/openvpn/client/home1.key", "tls-crypt": "/etc/openvpn/client/tls-crypt.key"}
    # nothing else of the PKI reached the new system: not the CA key, the server's or home2's key
    others = [(secrets_dir / f).read_bytes() for f in ("openvpn/ca.key", "openvpn/server.key", "openvpn/clients/home2.key")]
    for path in sysroot.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert not any(key in data for key in others), path
    assert "moat: installed /etc/openvpn/client/home1.key (0600) from moat/secrets/openvpn/clients/home1.key" in proc.stdout


def _install_from_a_medium_without(vps_install, name: str, leave_out: tuple[str, ...]):
    """The host kickstart's %pre and %post --nochroot, isolated, from a medium like `moat iso`'s
    without the secrets `leave_out`: (the process, the sysroot it would install into)."""
    tmp, _, bundle, secrets_dir = vps_install
    work = tmp / name
    work.mkdir()
    medium = _medium_like_moat_iso(work / "medium", bundle, secrets_dir, leave_out)
    sysroot = work / "sysroot"
    sysroot.mkdir()
    ks_text = (bundle / HOST_KS).read_text()
    proc = run_isolated(work, section(ks_text, "%pre") + section(ks_text, "%post --nochroot"), medium=medium,
                        sysroot=sysroot)
    return proc, sysroot


@pytest.mark.parametrize("leave_out", [
    ("openvpn/ca.crt", "openvpn/clients/home1.crt", "openvpn/clients/home1.key", "openvpn/tls-crypt.key"),
    ("openvpn/clients/home1.key",),
])
def test_pre_refuses_a_medium_without_the_openvpn_keys(vps_install, leave_out):
    proc, sysroot = _install_from_a_medium_without(vps_install, "pre-" + str(len(leave_out)), leave_out)
    assert proc.returncode != 0
    missing = " ".join(f"moat/secrets/{name}" for name in leave_out)
    assert f"moat: the medium has no {missing}: make them with moat secrets init" in proc.stderr, proc.stderr
    assert not any(sysroot.iterdir())  # %pre stopped it: nothing installed


def test_post_refuses_an_empty_openvpn_key(vps_install):
    tmp, _, bundle, secrets_dir = vps_install
    work = tmp / "empty-key"
    work.mkdir()
    medium = _medium_like_moat_iso(work / "medium", bundle, secrets_dir)
    key = medium / kickstart.MEDIUM_SECRETS / "openvpn/clients/home1.key"
    key.chmod(0o600)
    key.write_bytes(b"")
    sysroot = work / "sysroot"
    sysroot.mkdir()
    ks_text = (bundle / HOST_KS).read_text()
    # %post on its own (as if %pre had passed): its own check refuses the empty key too
    post = section(ks_text, "%post --nochroot").replace("medium=$(cat /tmp/moat-medium)", "medium=/run/install/repo")
    proc = run_isolated(work, post, medium=medium, sysroot=sysroot)
    assert proc.returncode != 0 and "the medium has no moat/secrets/openvpn/clients/home1.key" in proc.stderr


# --- the VMs' seeds (compiler/seeds.py): %post copies them into the pool ISOs -------------------------


def test_host_post_copies_every_vm_seed_with_its_mode():
    from compiler import seeds

    text = check_file(EXAMPLE).files[HOST_KS].content.decode()
    nochroot = section(text, "%post --nochroot")
    # the names are the seeds' (one function), the modes follow what each seed's consumer reads:
    # nextcloud's user-data reads nextcloud-luks (its encrypted data disk), vpn's kickstart nothing
    assert seeds.seed_name("nextcloud", "cidata") == "nextcloud-cidata.iso"
    assert "install_seed nextcloud-cidata.iso 0600\n" in nochroot and "install_seed vpn-oemdrv.iso 0644\n" in nochroot
    assert "install_seed onion" not in nochroot  # installed by hand from its ISO: no seed
    assert 'install -d -m 0755 -o 0 -g 0 "$SYSROOT/ISOs"' in nochroot
    # SELinux: the pool's directory is read-only VM media, a rule a relabel keeps, then restorecon
    chroot = section(text, "%post")
    assert "semanage fcontext -a -t virt_content_t '/ISOs(/.*)?'" in chroot
    assert "restorecon -R -F /ISOs\n" in chroot
    assert re.fullmatch(seeds.selinux_spec("/ISOs"), "/ISOs/vpn-oemdrv.iso")
    assert re.fullmatch(seeds.selinux_spec("/srv/iso.d"), "/srv/iso.d") and not re.fullmatch(seeds.selinux_spec("/srv/iso.d"), "/srv/isoxd")
    # vps-front declares no pool ISOs: the default one, same directory
    front = check_file(VPS_FRONT).files[HOST_KS].content.decode()
    assert "install_seed nextcloud-cidata.iso 0600\n" in section(front, "%post --nochroot")
    assert "restorecon -R -F /ISOs\n" in section(front, "%post")


def test_no_seed_pool_without_a_vm_that_needs_it(tmp_path):
    # only a VM installed by hand from an ISO: the pool's directory and label, no seed to copy
    text = (FIXTURES / "base.yaml").read_text().replace("    install: {method: image, image: debian}\n", "    install: {method: iso, iso: x.iso}\n")
    text = text.replace("    - {name: images, type: logical}\n", "    - {name: images, type: logical}\n    - {name: ISOs, type: dir, path: /srv/isos}\n")
    (tmp_path / "bp.yaml").write_text(text)
    files = check_file(tmp_path / "bp.yaml").files
    post = section(files[HOST_KS].content.decode(), "%post --nochroot")
    assert "install_seed" not in post and 'install -d -m 0755 -o 0 -g 0 "$SYSROOT/srv/isos"' in post
    assert "semanage fcontext -a -t virt_content_t '/srv/isos(/.*)?'" in section(files[HOST_KS].content.decode(), "%post")


def _run_post(vps_install, name: str, tamper=None, ks_text: str | None = None, prepare=None):
    """The host kickstart's %pre and %post --nochroot (the bundle's, or `ks_text`), run against a
    medium like `moat iso`'s (`prepare(medium)` adds to it) whose seeds `tamper` may change."""
    tmp, _, bundle, secrets_dir = vps_install
    work = tmp / name
    work.mkdir()
    medium = _medium_like_moat_iso(work / "medium", bundle, secrets_dir)
    if prepare:
        prepare(medium)
    if tamper:
        tamper(medium / "moat/seeds")
    sysroot = work / "sysroot"
    sysroot.mkdir()
    ks_text = ks_text or (bundle / HOST_KS).read_text()
    (work / "ks.cfg").write_text(ks_text)
    proc = run_isolated(work, section(ks_text, "%pre") + section(ks_text, "%post --nochroot"), medium=medium,
                        sysroot=sysroot)
    return proc, sysroot, work


def test_post_copies_the_seeds_moat_iso_wrote_into_the_pool(vps_install):
    proc, sysroot, work = _run_post(vps_install, "seeds")
    assert proc.returncode == 0, proc.stderr
    pool = sysroot / "ISOs"
    assert {p.name for p in pool.iterdir()} == {"nextcloud-cidata.iso"}
    seed = pool / "nextcloud-cidata.iso"
    assert seed.read_bytes() == (work / "iso/nextcloud-cidata.iso").read_bytes()
    st = seed.stat()
    # it holds nextcloud-luks (0400 on the medium): root only in the pool
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o600, 0, 0)
    assert stat.S_IMODE(pool.stat().st_mode) == 0o755
    assert "moat: installed /ISOs/nextcloud-cidata.iso (0600) from moat/seeds/nextcloud-cidata.iso" in proc.stdout


def _flip_a_byte(seeds_dir: Path) -> None:
    seed = seeds_dir / "nextcloud-cidata.iso"
    seed.chmod(0o600)
    data = bytearray(seed.read_bytes())
    data[40000] ^= 1
    seed.write_bytes(bytes(data))


def _drop(name: str):
    return lambda seeds_dir: (seeds_dir / name).unlink()


def _unlist(seeds_dir: Path) -> None:
    sums = seeds_dir / "SHA256SUMS"
    sums.write_text("".join(line for line in sums.read_text().splitlines(True) if "nextcloud" not in line))


@pytest.mark.parametrize("tamper, message", [
    (_flip_a_byte, "moat/seeds/nextcloud-cidata.iso on the medium is not the seed SHA256SUMS lists"),
    (_drop("nextcloud-cidata.iso"), "the medium has no moat/seeds/nextcloud-cidata.iso"),
    (_drop("SHA256SUMS"), "the medium has no moat/seeds/SHA256SUMS: write the install media with moat iso"),
    (_unlist, "moat/seeds/SHA256SUMS on the medium does not list nextcloud-cidata.iso"),
], ids=["tampered", "missing", "no-sums", "unlisted"])
def test_post_refuses_a_seed_that_is_not_the_one_moat_iso_wrote(vps_install, tamper, message, request):
    proc, sysroot, _ = _run_post(vps_install, "bad-" + request.node.callspec.id, tamper)
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr
    assert not (sysroot / "ISOs/nextcloud-cidata.iso").exists()


# --- the golden images: %post copies them from the medium to /var/lib/moat/images -------------------

GOLDEN = ("nextcloud-0123456789abcdef0123456789abcdef.qcow2", "web-fedcba9876543210fedcba9876543210.qcow2")


def _images_post(vps_install, name: str, tamper=None):
    """%pre and %post --nochroot of the host kickstart rendered with a host/images.json listing
    GOLDEN, run against a medium like `moat iso`'s with those images (real qcow2 files) and their
    SHA256SUMS: (process, sysroot, {file: its bytes})."""
    import json

    from compiler.media.layout import HOST_IMAGES, IMAGES_DIR, SUMS, sums_text
    from compiler.render import Output

    compiled = check_file(vps_install[1])
    listing = {"images": [{"name": f.split("-")[0], "key": f.split("-")[1][:-6], "file": f, "inputs": {}} for f in GOLDEN]}
    files = {**compiled.files, HOST_IMAGES: Output(HOST_IMAGES, json.dumps(listing).encode())}
    content = {}

    def add_images(medium: Path) -> None:
        images = medium / IMAGES_DIR
        shutil.rmtree(images, ignore_errors=True)  # the bundle's own images: this test lists GOLDEN instead
        images.mkdir(parents=True)
        for i, file in enumerate(GOLDEN):
            subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(images / file), f"{i + 1}G"], check=True)
            content[file] = (images / file).read_bytes()
        (images / SUMS).write_bytes(sums_text({f: hashlib.sha256(b).hexdigest() for f, b in content.items()}))
        if tamper:
            tamper(images)

    proc, sysroot, _ = _run_post(vps_install, name, ks_text=kickstart.host_kickstart(compiled.plan, files).content.decode(),
                                 prepare=add_images)
    return proc, sysroot, content


def test_post_copies_the_golden_images_checked_to_the_host(vps_install):
    proc, sysroot, content = _images_post(vps_install, "images")
    assert proc.returncode == 0, proc.stderr
    # the kickstart it ran passes ksvalidator, bash -n and shellcheck
    ks = sysroot.parent / "ks.cfg"
    v = validators_for(HOST_KS)[0]
    checked = subprocess.run([part.replace("{file}", str(ks)) for part in v.command], capture_output=True, text=True,
                             timeout=120, stdin=subprocess.DEVNULL)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    target = sysroot / "var/lib/moat/images"
    assert sorted(p.name for p in target.iterdir()) == sorted(GOLDEN)  # no temporary file left
    assert (stat.S_IMODE(target.stat().st_mode), target.stat().st_uid) == (0o700, 0)
    for file, data in content.items():
        st = (target / file).stat()
        assert (target / file).read_bytes() == data
        assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o600, 0, 0)
        assert f"moat: installed /var/lib/moat/images/{file} from moat/images/{file}" in proc.stdout


def _corrupt(images: Path) -> None:
    path = images / GOLDEN[1]
    path.write_bytes(path.read_bytes()[:-1] + b"x")


@pytest.mark.parametrize("tamper, message", [
    (_corrupt, f"moat/images/{GOLDEN[1]} on the medium is not the image SHA256SUMS lists"),
    (lambda images: (images / GOLDEN[0]).unlink(), f"the medium has no moat/images/{GOLDEN[0]}"),
    (lambda images: (images / "SHA256SUMS").unlink(), "the medium has no moat/images/SHA256SUMS"),
    (lambda images: (images / "SHA256SUMS").write_text(""), f"moat/images/SHA256SUMS on the medium does not list {GOLDEN[0]}"),
], ids=["corrupt", "missing", "no-sums", "unlisted"])
def test_post_refuses_an_image_that_is_not_the_one_moat_iso_wrote(vps_install, tamper, message, request):
    proc, sysroot, _ = _images_post(vps_install, "bad-images-" + request.node.callspec.id, tamper)
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr
    target = sysroot / "var/lib/moat/images"
    assert not target.exists() or not (target / GOLDEN[1]).exists()  # never under its own name
    assert not target.exists() or not any(p.name.endswith(".tmp") for p in target.iterdir())


def test_no_image_block_without_images(tmp_path):
    """A bundle whose VMs use no golden image: %post does not look for moat/images."""
    from .conftest import without_images

    files = check_file(without_images(ROOT / "blueprints" / "vps-front.yaml", tmp_path)).files
    assert "moat/images" not in files[HOST_KS].content.decode()
    assert "moat/images" in check_file(ROOT / "blueprints" / "vps-front.yaml").files[HOST_KS].content.decode()


# --- TOTP (host.sshd.totp): each host user's secret from the medium ------------------------------


def test_totp_secrets_only_for_the_host_users_of_a_totp_host(vps_install):
    _, blueprint, bundle, _ = vps_install
    ks_text = (bundle / HOST_KS).read_text()
    from compiler.media.layout import secrets_read_by

    assert [n for n in secrets_read_by(ks_text.encode()) if n.startswith("totp/")] == ["totp/host/alice"]
    chroot_post = section(ks_text, "%post")
    assert "chown alice: /home/alice/.google_authenticator" in chroot_post
    assert "restorecon -R -F /home/alice/.google_authenticator" in chroot_post
    # example.yaml's host asks for no code: no TOTP secret on its medium
    example = check_file(EXAMPLE).files[HOST_KS].content
    assert b"totp" not in example and b"google_authenticator" not in example


def test_pre_refuses_a_medium_without_a_users_totp_secret(vps_install):
    proc, sysroot = _install_from_a_medium_without(vps_install, "pre-totp", ("totp/host/alice",))
    assert proc.returncode != 0
    assert "moat: the medium has no moat/secrets/totp/host/alice (the users' TOTP secrets)" in proc.stderr, proc.stderr
    assert not any(sysroot.iterdir())  # %pre stopped it: nothing installed


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: sshd runs in a private mount namespace")
def test_the_installed_totp_secret_lets_the_user_in_with_a_code(vps_install):
    """%pre + %post install alice's secret from the medium (as `moat iso` lays it out); with the
    owner the chroot %post sets, the real sshd and pam_google_authenticator (the bundle's
    sshd_config and PAM stack) let alice in with the key and a code computed from the secrets
    directory's file; the same code again is refused (DISALLOW_REUSE is read)."""
    from .test_sshd import LoopbackSshd, totp

    tmp, _, bundle, secrets_dir = vps_install
    work = tmp / "post-totp"
    work.mkdir()
    medium = _medium_like_moat_iso(work / "medium", bundle, secrets_dir)
    sysroot = work / "sysroot"
    (sysroot / "home/alice").mkdir(parents=True)  # Anaconda's `user` made it
    ks_text = (bundle / HOST_KS).read_text()
    proc = run_isolated(work, section(ks_text, "%pre") + section(ks_text, "%post --nochroot"), medium=medium,
                        sysroot=sysroot)
    assert proc.returncode == 0, proc.stderr
    installed = sysroot / "home/alice/.google_authenticator"
    assert installed.read_bytes() == (secrets_dir / "totp/host/alice").read_bytes()
    st = installed.stat()
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o400, 0, 0)
    assert ("moat: installed /home/alice/.google_authenticator (0400) from moat/secrets/totp/host/alice"
            in proc.stdout)
    assert [p.relative_to(sysroot).as_posix() for p in (sysroot / "home").rglob("*") if p.is_file()] == \
        ["home/alice/.google_authenticator"]

    secret = (secrets_dir / "totp/host/alice").read_text().split("\n")[0]
    config = (bundle / "host/ssh/sshd_config").read_text()
    with LoopbackSshd(config, ["alice"], pam_sshd=(bundle / "host/pam.d/sshd").read_text()) as server:
        home = server.homes["alice"]
        target = home / ".google_authenticator"
        shutil.copy2(installed, target)
        os.chown(target, home.stat().st_uid, home.stat().st_gid)  # chown alice: (the chroot %post)
        code = totp(secret)
        ok = server.ssh("alice", code=code)
        assert ok.returncode == 0 and ok.stdout.strip() == "moat-ok alice", ok.stderr
        again = server.ssh("alice", code=code)
        assert again.returncode == 255
        log = server.log.read_text()
    assert log.count("Accepted keyboard-interactive/pam for alice") == 1


def test_post_records_the_bundle_as_the_hosts_generation_1(vps_install):
    """What `moat deploy` finds on a freshly installed host: the bundle in its store, checked,
    as generation 1 with the seeds moat iso wrote, and the bundle's own switch reading it so."""
    proc, sysroot, work = _run_post(vps_install, "generation")
    assert proc.returncode == 0, proc.stderr
    bundle = vps_install[2]
    state = sysroot / "var/lib/moat"
    assert os.readlink(state / "current") == "generations/1"
    assert os.readlink(state / "generations/1") == f"../store/{bundle.name}"
    stored = state / "store" / bundle.name
    listed = {p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()}
    assert {p.relative_to(stored).as_posix() for p in stored.rglob("*") if p.is_file()} == listed
    for rel in listed:
        assert (stored / rel).read_bytes() == (bundle / rel).read_bytes()
        assert stat.S_IMODE((stored / rel).stat().st_mode) == stat.S_IMODE((bundle / rel).stat().st_mode)
    assert not list((state / "store").glob(".tmp-*"))
    meta = json.loads((state / "generations/1.json").read_text())
    seed = (work / "iso/nextcloud-cidata.iso").read_bytes()
    assert meta["store"] == bundle.name and meta["seeds"] == {"nextcloud": hashlib.sha256(seed).hexdigest()}
    kept = state / "seeds" / f"{meta['seeds']['nextcloud']}.iso"
    assert kept.read_bytes() == seed and stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert f"moat: the bundle is generation 1 of this host: /var/lib/moat/store/{bundle.name}" in proc.stdout
    listing = subprocess.run([sys.executable, str(stored / "host/moat/switch"), "generations"], capture_output=True,
                             text=True, env={**os.environ, "MOAT_ROOT": str(sysroot)}, timeout=60)
    assert listing.returncode == 0, listing.stderr
    answer = json.loads(listing.stdout)
    assert answer["current"] == 1 and [g["store"] for g in answer["generations"]] == [bundle.name]


def test_post_refuses_a_bundle_that_is_not_its_manifest(vps_install):
    def tamper(medium: Path) -> None:
        path = medium / kickstart.MEDIUM_BUNDLE / "topology.json"
        path.chmod(0o644)
        path.write_text("{}")
    proc, sysroot, _ = _run_post(vps_install, "generation-tampered", prepare=tamper)
    assert proc.returncode != 0
    assert "moat: topology.json on the medium is not the file its manifest lists" in proc.stderr
    assert not (sysroot / "var/lib/moat/current").exists()
    assert not list((sysroot / "var/lib/moat/store").glob("*"))  # nor a half-copied store path
