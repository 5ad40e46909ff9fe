"""The bundle of blueprints/example.yaml in a real libvirtd (private namespaces, see
tests/libvirt_sandbox.py): its networks, pools, volumes and domains are accepted, and libvirt
itself runs the generated qemu hook when a domain starts and stops. A stand-in for the VM
(a network namespace holding its address, plugged into libvirt's own bridge) proves that a
connection to the public port crosses libvirt's firewall and reaches the VM's address."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from .conftest import ROOT
from .libvirt_sandbox import PROBE, SERVE, LibvirtSandbox, host_definitions, small_copy, tcg_copy, tiny_golden
from .test_hooks import HOOK, write_bundle

pytestmark = pytest.mark.slow

# logs every call libvirt makes to its qemu hooks (libvirt runs hooks/qemu.d/* after hooks/qemu)
CALL_LOG = """#!/bin/sh
echo "$*" >>/var/log/libvirt/hook-calls
cat >/dev/null
"""


@pytest.fixture
def sandbox(tmp_path):
    """(sandbox with the generated hook and the call logger, bundle of example.yaml, temp dir)"""
    bundle = write_bundle(ROOT / "blueprints" / "example.yaml", tmp_path / "bundle")
    with LibvirtSandbox(tmp_path / "sandbox", bundle / HOOK, {"zz-log": CALL_LOG}) as sb:
        yield sb, bundle, tmp_path


def hook_calls(sb: LibvirtSandbox) -> list[str]:
    path = sb.root / "log" / "hook-calls"
    return path.read_text().splitlines() if path.exists() else []


def moat_rules(sb: LibvirtSandbox) -> dict[str, list[str]]:
    """The hook's DNAT rules (per chain) and its accepts in libvirt's iptables FORWARD chain."""
    out = sb.run("nft", "list", "table", "ip", "moat_forwards", check=False)
    rules: dict[str, list[str]] = {}
    chain = None
    for line in out.stdout.splitlines():
        if m := re.match(r"\s*chain (\S+) \{", line):
            chain = m.group(1)
        elif "dnat to" in line:
            rules.setdefault(chain, []).append(re.sub(r".*?((tcp|udp) dport \d+ dnat to \S+).*", r"\1", line))
    accepts = [line for line in sb.run("iptables", "-w", "-S", "FORWARD").stdout.splitlines() if "moat forward" in line]
    if accepts:
        rules["FORWARD"] = accepts
    return rules


def restart_libvirtd(sb: LibvirtSandbox) -> None:
    sb.sh("kill $(cat /run/libvirtd.pid); while [ -e /run/libvirtd.pid ] || [ -S /run/libvirt/libvirt-sock ]; do sleep 0.1; done")
    sb.sh("libvirtd --daemon </dev/null >/dev/null 2>&1; i=0; until virsh -c qemu:///system version >/dev/null 2>&1; "
          "do i=$((i+1)); [ $i -lt 300 ] || exit 1; sleep 0.1; done")


def test_bundle_defines_in_libvirt_and_libvirt_runs_the_hook(sandbox):
    sb, bundle, tmp = sandbox
    # networks: the NAT network and the mirror bridge (a bridged network needs br1 to exist)
    sb.run("ip", "link", "add", "br1", "type", "bridge")
    for net in sorted((bundle / "host/libvirt/networks").glob("*.xml")):
        sb.virsh("net-define", str(net))
        sb.virsh("net-start", net.stem)
    assert sb.virsh("net-list", "--name").stdout.split() == ["default", "mirror"]
    assert "192.168.122.1/24" in sb.run("ip", "-br", "addr", "show", "virbr0").stdout

    # the uplink (veth to a client namespace) and a stand-in for nextcloud: a namespace with
    # its address on a port of libvirt's own bridge (QEMU runs no guest OS here). Made early:
    # libvirt's bridge runs STP, so a new port forwards only after its listening/learning delay
    sb.sh("""
        set -e
        ip netns add client
        ip netns add vm
        ip link add enp1s0f1 type veth peer name eth0 netns client
        ip addr add 203.0.113.10/24 dev enp1s0f1
        ip link set enp1s0f1 up
        ip -n client addr add 203.0.113.20/24 dev eth0
        ip -n client link set eth0 up
        ip link add vm-standin master virbr0 type veth peer name eth0 netns vm
        ip link set vm-standin up
        ip -n vm addr add 192.168.122.5/24 dev eth0
        ip -n vm link set eth0 up
        ip -n vm route add default via 192.168.122.1
    """)

    # pools: the logical one is defined (its volume group does not exist here); the ISOs
    # directory pool is started at a temp path (/ISOs would be created on this machine's disk)
    sb.virsh("pool-define", str(bundle / "host/libvirt/pools/images.xml"))
    isos = tmp / "ISOs"
    isos.mkdir()
    copy = tmp / "ISOs.xml"
    copy.write_text((bundle / "host/libvirt/pools/ISOs.xml").read_text().replace("<path>/ISOs</path>", f"<path>{isos}</path>"))
    sb.virsh("pool-define", str(copy))
    sb.virsh("pool-start", "ISOs")
    # the seeds of the domains started below (the host's kickstart copies the real ones there;
    # their content does not matter to this test, see test_seeds_in_the_pool below)
    for seed in ("nextcloud-cidata.iso", "vpn-oemdrv.iso"):
        (isos / seed).write_bytes(bytes(32 * 2048))
    sb.virsh("pool-refresh", "ISOs")
    pools = dict(line.split()[:2] for line in sb.virsh("pool-list", "--all").stdout.splitlines())
    assert pools == {"ISOs": "active", "images": "inactive"}

    # every domain as generated; libvirt keeps the blueprint's MACs and networks
    for dom in sorted((bundle / "host/libvirt/domains").glob("*.xml")):
        sb.virsh("define", str(dom))
    nics = {}
    for vm in ("nextcloud", "onion", "vpn"):
        xml = ET.fromstring(sb.virsh("dumpxml", vm).stdout)
        assert xml.get("type") == "kvm"
        nics[vm] = [(i.find("mac").get("address"), i.find("source").get("network")) for i in xml.iter("interface")]
    assert nics == {"nextcloud": [("52:54:00:50:28:a7", "default")],
                    "onion": [("52:54:00:af:a2:d7", "default"), (nics["onion"][1][0], "mirror")],
                    "vpn": [("52:54:00:18:17:c1", "default")]}

    # to start domains here: the images pool becomes a directory pool holding the bundle's
    # volumes (16 MiB each), and the domains run under TCG
    sb.virsh("pool-undefine", "images")
    images = tmp / "images"
    images.mkdir()
    (tmp / "images.xml").write_text(f"<pool type='dir'><name>images</name><target><path>{images}</path></target></pool>")
    sb.virsh("pool-define", str(tmp / "images.xml"))
    sb.virsh("pool-start", "images")
    for vol in sorted((bundle / "host/libvirt/volumes/images").glob("*.xml")):
        (tmp / vol.name).write_text(small_copy(vol.read_text()))
        sb.virsh("vol-create", "images", str(tmp / vol.name))
    assert sb.virsh("vol-list", "images", "--details").stdout.count(" file ") == 4
    for vm in ("nextcloud", "vpn"):
        (tmp / f"{vm}.xml").write_text(tcg_copy((bundle / f"host/libvirt/domains/{vm}.xml").read_text()))
        sb.virsh("define", str(tmp / f"{vm}.xml"))

    server = subprocess.Popen(["nsenter", "--target", str(sb.init_pid), "--mount", "--net", "--pid", "--",
                               "ip", "netns", "exec", "vm", sys.executable, "-c", SERVE, "tcp:192.168.122.5:443"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert server.stdout.readline().strip() == "listening", server.stderr.read()
        sb.sh('i=0; until bridge link show dev vm-standin | grep -q "state forwarding"; do '
              'i=$((i + 1)); [ $i -lt 100 ] || exit 1; sleep 0.1; done')

        def probe() -> str:
            return sb.run("ip", "netns", "exec", "client", sys.executable, "-c", PROBE, "tcp:203.0.113.10:443").stdout.strip()

        assert probe().startswith("failed")
        assert moat_rules(sb) == {}

        # libvirt runs the hook: start begin adds nextcloud's forwards before QEMU runs
        sb.virsh("start", "nextcloud")
        assert [c for c in hook_calls(sb) if c.startswith("nextcloud")] == [
            "nextcloud prepare begin -", "nextcloud start begin -", "nextcloud started begin -"]
        rules = moat_rules(sb)
        assert rules["nextcloud_prerouting"] == ["tcp dport 80 dnat to 192.168.122.5:80", "tcp dport 443 dnat to 192.168.122.5:443"]
        assert rules["nextcloud_output"] == rules["nextcloud_prerouting"] and len(rules["FORWARD"]) == 2
        assert probe() == "tcp 192.168.122.5:443"

        # without the hook's accept, libvirt's own filter (LIBVIRT_FWI) rejects the DNATed
        # connection: the DNAT alone is not a working forward on a libvirt NAT network
        for accept in rules["FORWARD"]:
            sb.run("sh", "-c", "iptables -w " + accept.replace("-A FORWARD", "-D FORWARD", 1))
        # (and one of its DNAT chains is emptied, for the reconnect below to restore)
        sb.run("nft", "flush", "chain", "ip", "moat_forwards", "nextcloud_output")
        assert probe() == "failed: ConnectionRefusedError"

        # after a libvirtd restart, libvirt reconnects to the running domain and the hook
        # (reconnect begin) puts everything back
        restart_libvirtd(sb)
        assert "nextcloud reconnect begin -" in hook_calls(sb)
        assert moat_rules(sb) == rules
        assert probe() == "tcp 192.168.122.5:443"

        sb.virsh("start", "vpn")
        rules = moat_rules(sb)
        assert rules["vpn_prerouting"] == ["udp dport 52439 dnat to 192.168.122.150:1194"] and len(rules["FORWARD"]) == 3
        assert sb.virsh("list", "--name").stdout.split() == ["nextcloud", "vpn"]

        # destroy: stopped end and release end remove nextcloud's rules; vpn's stay
        sb.virsh("destroy", "nextcloud")
        assert hook_calls(sb)[-2:] == ["nextcloud stopped end -", "nextcloud release end -"]
        rules = moat_rules(sb)
        assert sorted(rules) == ["FORWARD", "vpn_output", "vpn_prerouting"] and len(rules["FORWARD"]) == 1
        assert "vpn" in rules["FORWARD"][0]
        assert probe().startswith("failed")

        sb.virsh("destroy", "vpn")
        assert moat_rules(sb) == {}
    finally:
        server.kill()
        server.wait()
        for stream in (server.stdout, server.stderr):
            stream.close()


def test_apply_script_defines_everything_with_autostart_idempotently(sandbox):
    """moat-libvirt-apply (run at boot by its unit) defines the bundle's objects in a real
    libvirtd and sets autostart from the blueprint; a second run changes nothing."""
    sb, bundle, tmp = sandbox
    sb.run("ip", "link", "add", "br1", "type", "bridge")
    defs = host_definitions(bundle, tmp / "defs", tmp / "pools")
    (tmp / "pools/ISOs").mkdir(parents=True)
    for seed in ("nextcloud-cidata.iso", "vpn-oemdrv.iso"):  # as the host's kickstart leaves them
        (tmp / "pools/ISOs" / seed).write_bytes(bytes(32 * 2048))
    tiny_golden(tmp / "golden", bundle, "nextcloud", 0x6d)  # as the host's kickstart leaves it
    env = ["env", f"MOAT_LIBVIRT_DIR={defs}", f"MOAT_IMAGES_DIR={tmp / 'golden'}", f"MOAT_STATE_DIR={tmp / 'state'}"]
    script = bundle / "host/libvirt/moat-libvirt-apply"
    for _ in range(2):
        out = sb.run(*env, "sh", str(script))
        assert "are defined" in out.stdout
    assert sb.virsh("net-list", "--autostart", "--name").stdout.split() == ["default", "mirror"]
    assert sorted(sb.virsh("pool-list", "--autostart", "--name").stdout.split()) == ["ISOs", "images"]
    vols = sb.virsh("vol-list", "--pool", "images").stdout
    assert all(v in vols for v in ("nextcloud-os", "nextcloud-data", "onion-os", "vpn-os"))
    assert sb.virsh("list", "--all", "--autostart", "--name").stdout.split() == ["nextcloud", "onion", "vpn"]
    # a VM whose blueprint says autostart: false loses it on the next run
    text = script.read_text().replace('AUTOSTART="nextcloud onion vpn"', 'AUTOSTART="nextcloud onion"')
    edited = tmp / "apply-edited"
    edited.write_text(text)
    sb.run(*env, "sh", str(edited))
    assert sb.virsh("list", "--all", "--autostart", "--name").stdout.split() == ["nextcloud", "onion"]
    assert "vpn" in sb.virsh("list", "--all", "--name").stdout.split()


def test_seeds_in_the_pool_reach_the_domains(sandbox):
    """The seeds `moat iso` writes, in the pool ISOs: moat-libvirt-apply defines every domain
    either way, but without the seeds it fails and names them, and libvirt refuses to start a
    domain whose seed volume is missing; once the seeds are in the pool's directory (as the
    host's kickstart copies them), the apply script's pool-refresh makes them volumes and the
    domains start with exactly those files as their read-only SATA cdrom. The installer of a
    kickstart VM is optional: vpn starts without the Rocky DVD in the pool."""
    from compiler import seeds
    from compiler.media.build import build_media

    from . import iso_standin

    sb, bundle, tmp = sandbox
    sb.run("ip", "link", "add", "br1", "type", "bridge")
    # the seeds, written by moat iso from the same blueprint's bundle (the same files)
    store = iso_standin.build_bundle(ROOT / "blueprints" / "example.yaml", tmp / "out")
    for name in ("host/libvirt/domains/vpn.xml", "host/libvirt/moat-libvirt-apply"):
        assert (store / name).read_bytes() == (bundle / name).read_bytes()
    iso_standin.write_test_secrets(store, tmp / "secrets")
    media = build_media(store, tmp / "media" / "host.iso", secrets=tmp / "secrets", environ={})
    written = {m.vm: m.path for m in media.media if m.vm}
    assert {vm: p.name for vm, p in written.items()} == {vm: seeds.seed_name(vm, kind) for vm, kind in
                                                        (("nextcloud", "cidata"), ("vpn", "oemdrv"))}

    defs = host_definitions(bundle, tmp / "defs", tmp / "pools", tcg=True)
    pool_dir = tmp / "pools/ISOs"
    tiny_golden(tmp / "golden", bundle, "nextcloud", 0x6d)
    env = ["env", f"MOAT_LIBVIRT_DIR={defs}", f"MOAT_IMAGES_DIR={tmp / 'golden'}", f"MOAT_STATE_DIR={tmp / 'state'}"]
    script = bundle / "host/libvirt/moat-libvirt-apply"

    # no seeds in the pool: every domain is defined, the script fails naming what is missing
    out = sb.run(*env, "sh", str(script), check=False)
    assert out.returncode == 1
    assert "pool ISOs has no nextcloud-cidata.iso vpn-oemdrv.iso: the VMs that need them cannot start" in out.stderr
    assert sb.virsh("list", "--all", "--name").stdout.split() == ["nextcloud", "onion", "vpn"]
    # libvirt accepts the definition (a volume is looked up when the domain starts) but refuses to start it
    refused = sb.virsh("start", "nextcloud", check=False)
    assert refused.returncode != 0 and "nextcloud-cidata.iso" in refused.stderr, refused.stderr
    assert "no storage vol with matching name" in refused.stderr, refused.stderr

    # the seeds arrive in the pool's directory (the host's kickstart: 0600 with secrets, else 0644)
    for vm, path in written.items():
        shutil.copyfile(path, pool_dir / path.name)
    out = sb.run(*env, "sh", str(script))
    assert "are defined" in out.stdout
    assert {"nextcloud-cidata.iso", "vpn-oemdrv.iso"} <= {line.split()[0] for line in sb.virsh("vol-list", "ISOs").stdout.splitlines()}
    for vm in ("nextcloud", "vpn"):
        sb.virsh("start", vm)
        disks = [line.split() for line in sb.virsh("domblklist", vm, "--details").stdout.splitlines()]
        cdroms = {d[2]: d[3] for d in disks if d[1] == "cdrom"}
        seed = written[vm]
        assert cdroms[{"nextcloud": "sda", "vpn": "sdb"}[vm]] == seed.name
        assert sb.virsh("vol-path", "--pool", "ISOs", seed.name).stdout.strip() == str(pool_dir / seed.name)
        # QEMU has that file open as the cdrom: its size, as the running domain reports it
        info = dict(line.split(":", 1) for line in sb.virsh("domblkinfo", vm, {"nextcloud": "sda", "vpn": "sdb"}[vm]).stdout.splitlines())
        assert int(info["Capacity"]) == seed.stat().st_size
        live = ET.fromstring(sb.virsh("dumpxml", vm).stdout)
        [attached] = [d for d in live.iter("disk") if d.find("source") is not None
                      and d.find("source").get("volume") == seed.name]
        assert attached.find("readonly") is not None and attached.find("target").get("bus") == "sata"
        assert attached.find("boot") is None
    # vpn: the OS disk boots first, then the installer, which is not in the pool (optional: dropped)
    live = ET.fromstring(sb.virsh("dumpxml", "vpn").stdout)
    boots = {d.find("target").get("dev"): d.find("boot").get("order") for d in live.iter("disk") if d.find("boot") is not None}
    assert boots == {"vda": "1", "sda": "2"}
    assert cdroms["sda"] == "-"  # the Rocky DVD is not in the pool: started without it
    sb.virsh("destroy", "nextcloud")
    sb.virsh("destroy", "vpn")
