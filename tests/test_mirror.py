"""Traffic mirror: the tc script, its systemd unit and the bridge keyfile, checked by real tools,
and the script run for real in network namespaces: an IDS on the bridge sees every packet of the
uplink, once, while the mirror is on, and nothing after it is stopped."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import time
from configparser import ConfigParser
from contextlib import contextmanager
from pathlib import Path

import attrs
import pytest

from compiler import load, schema, verify
from compiler.derive import Plan, derive
from compiler.model import structure
from compiler.pipeline import build_file, check_file
from compiler.render import Output, mirror
from compiler.verify import check_bundle, run_validators

from .conftest import ROOT

EXAMPLE = ROOT / "blueprints" / "example.yaml"
VPS_FRONT = ROOT / "blueprints" / "vps-front.yaml"
SCRIPT, UNIT = mirror.SCRIPT, mirror.UNIT
KEYFILE = f"{mirror.NM_CONNECTIONS}/br1.nmconnection"
TOOLS = ROOT / "compiler" / "verify_tools"


def plan_of(text: str) -> Plan:
    """The plan of a blueprint text (schema defaults filled; the checks are other tests' business)."""
    return derive(structure(schema.with_defaults(load.load_text(text, "bp.yaml").data)))


def render(text: str, root: Path) -> dict[str, Output]:
    """Only this family's files, written under `root` with their bundle modes."""
    outputs = {out.path: out for out in mirror.render(plan_of(text), {})}
    for out in outputs.values():
        path = root / out.path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(out.content)
        path.chmod(out.mode)
    return outputs


@pytest.fixture
def only_mirror_validators(monkeypatch):
    """Run this family's validators alone, as a build would (the registry itself: test below)."""
    monkeypatch.setattr(verify, "validators", lambda: mirror.VALIDATORS)


def rejections(root: Path) -> dict[str, str]:
    return {f.path: f.output for f in run_validators(root) if not f.ok}


# --- what is generated --------------------------------------------------------------------------

def test_the_mirror_files_exist_only_with_a_mirror():
    files = check_file(EXAMPLE).files
    assert {SCRIPT, UNIT, KEYFILE} <= set(files)
    assert files[SCRIPT].mode == 0o555 and files[UNIT].mode == 0o444 and files[KEYFILE].mode == 0o444
    front = check_file(VPS_FRONT).files
    assert not [p for p in front if "mirror" in p or "NetworkManager" in p]
    assert list(mirror.render(plan_of(VPS_FRONT.read_text()), {})) == []


def test_script_and_unit_carry_the_blueprint_values(tmp_path):
    out = render(EXAMPLE.read_text(), tmp_path)
    script = out[SCRIPT].content.decode()
    assert "IFACE='enp1s0f1'" in script and "BRIDGE='br1'" in script
    assert "# from host.uplink.interface (mirror.interface is not set)" in script
    assert script.startswith("#!/bin/sh\n") and "\nset -eu\n" in script
    unit = ConfigParser(strict=False, interpolation=None)
    unit.read_string(out[UNIT].content.decode())
    service = unit["Service"]
    assert (service["Type"], service["RemainAfterExit"]) == ("oneshot", "yes")
    assert service["ExecStart"] == f"{mirror.SCRIPT_INSTALLED} start"
    assert service["ExecStop"] == f"{mirror.SCRIPT_INSTALLED} stop"
    assert "Restart" not in service  # the seed restarted a oneshot forever
    text = out[UNIT].content.decode()
    for device in ("sys-subsystem-net-devices-enp1s0f1.device", "sys-subsystem-net-devices-br1.device"):
        assert f"BindsTo={device}\nAfter={device}\n" in text and f"WantedBy={device}\n" in text
    assert "After=network-online.target" in text and "Wants=network-online.target" in text


def test_mirror_interface_overrides_the_uplink_and_names_are_escaped_like_systemd(tmp_path, only_mirror_validators):
    text = EXAMPLE.read_text().replace("bridge: br1", "bridge: br-ids.0").replace(
        "  network: mirror ", "  interface: en-p2\n  network: mirror ")
    out = render(text, tmp_path)
    assert f"{mirror.NM_CONNECTIONS}/br-ids.0.nmconnection" in out
    script = out[SCRIPT].content.decode()
    assert "IFACE='en-p2'" in script and "# from mirror.interface\n" in script
    for name in ("en-p2", "br-ids.0"):
        escaped = subprocess.run(["systemd-escape", "--path", "--suffix=device",
                                  f"/sys/subsystem/net/devices/{name}"], capture_output=True, text=True, check=True)
        escaped = escaped.stdout.strip()
        assert mirror.device_unit(name) == escaped
        assert f"BindsTo={escaped}\n" in out[UNIT].content.decode()
    assert rejections(tmp_path) == {}


def test_networkmanager_reads_the_bridge_as_intended(tmp_path):
    render(EXAMPLE.read_text(), tmp_path)
    shown = subprocess.run([str(TOOLS / "mirror-nmconnection.sh"), "--show", str(tmp_path / KEYFILE)],
                           capture_output=True, text=True, check=True).stdout
    nm = ConfigParser(interpolation=None)
    nm.read_string(shown)  # libnm's own rendering: defaults (autoconnect=true) are left out
    connection = dict(nm["connection"])
    assert connection.pop("uuid") and connection == {"id": "br1", "type": "bridge", "interface-name": "br1"}
    assert dict(nm["bridge"]) == {"stp": "false", "multicast-snooping": "false"}
    assert nm["ipv4"]["method"] == nm["ipv6"]["method"] == "disabled"
    # the uuid is derived from names, never random
    again = render(EXAMPLE.read_text(), tmp_path / "again")
    assert again[KEYFILE].content == (tmp_path / KEYFILE).read_bytes()


# The daemon's part of the script below runs as PID 1 of new pid, mount and network namespaces:
# /run, /var/lib/NetworkManager and /etc/NetworkManager are private there, D-Bus is its own, and
# every process it started dies with it.
NM_ALONE = """
set -eu
mount -t tmpfs tmpfs /run
mkdir -p /run/dbus
mount -t tmpfs tmpfs /var/lib/NetworkManager
mount --bind "$1" /etc/NetworkManager
dbus-daemon --system --fork --nopidfile
NetworkManager --no-daemon >"$1/NetworkManager.log" 2>&1 &
i=0
until [ "$(nmcli -t -g GENERAL.STATE connection show br1 2>/dev/null)" = activated ]; do
    i=$((i + 1)); [ $i -lt 200 ] || { echo "br1 not activated"; exit 1; }
    sleep 0.2
done
nmcli -t -f NAME,TYPE,DEVICE connection show
ip -d -j address show
"""


@pytest.mark.slow
def test_networkmanager_brings_the_bridge_up_from_the_keyfile(tmp_path):
    """The real daemon (NetworkManager 1.42, alone in its own namespaces) loads the keyfile
    installed as its comment says (root, mode 0600) and activates the bridge: up, no STP, no
    multicast snooping, no address. A copy installed readable by others is ignored."""
    render(EXAMPLE.read_text(), tmp_path / "bundle")
    keyfile = (tmp_path / "bundle" / KEYFILE).read_text()
    etc = tmp_path / "etc-NetworkManager"
    (etc / "system-connections").mkdir(parents=True)
    (etc / "NetworkManager.conf").write_text(
        "[main]\nplugins=keyfile\ndns=none\nrc-manager=unmanaged\nsystemd-resolved=false\nauth-polkit=false\n")
    installed = etc / "system-connections" / "br1.nmconnection"
    installed.write_text(keyfile)
    installed.chmod(0o600)
    readable = etc / "system-connections" / "br9.nmconnection"
    readable.write_text(re.sub(r"(?m)^uuid=.*$", "uuid=00000000-0000-4000-8000-000000000009",
                               keyfile.replace("=br1", "=br9")))
    readable.chmod(0o644)
    proc = subprocess.run(["unshare", "--pid", "--fork", "--kill-child", "--mount-proc", "--mount", "--net",
                           "--propagation", "private", "sh", "-c", NM_ALONE, "sh", str(etc)],
                          capture_output=True, text=True, timeout=90)
    log = (etc / "NetworkManager.log").read_text() if (etc / "NetworkManager.log").exists() else ""
    assert proc.returncode == 0, proc.stdout + proc.stderr + log
    connections, links = proc.stdout.split("\n", 1)[0], json.loads(proc.stdout.split("\n", 1)[1])
    assert connections == "br1:bridge:br1"  # br9, readable by others, was not loaded
    (bridge,) = [link for link in links if link["ifname"] == "br1"]
    assert "UP" in bridge["flags"] and bridge["addr_info"] == []
    data = bridge["linkinfo"]["info_data"]
    assert (data["stp_state"], data["mcast_snooping"]) == (0, 0)


# --- validators ---------------------------------------------------------------------------------

def test_each_mirror_file_has_its_validator():
    tools = {path: [os.path.basename(v.command[0]) for v in verify.validators_for(path)]
             for path in (SCRIPT, UNIT, KEYFILE)}
    assert tools == {SCRIPT: ["shellcheck"], UNIT: ["systemd-unit.sh"], KEYFILE: ["mirror-nmconnection.sh"]}


@pytest.mark.parametrize("blueprint", [EXAMPLE, VPS_FRONT], ids=["example", "vps-front"])
def test_generated_files_pass_their_validators(blueprint, tmp_path, only_mirror_validators):
    out = render(blueprint.read_text(), tmp_path)
    findings = run_validators(tmp_path)
    assert {f.path for f in findings} == set(out)
    assert [f"{f.path}: {f.output}" for f in findings if not f.ok] == []


@pytest.mark.slow
def test_a_build_vets_the_mirror_files(tmp_path):
    # a build runs every validator on the tree and stores nothing if one rejects a file
    _, stored = build_file(EXAMPLE, tmp_path)
    modes = {path: (stored.path / path).stat().st_mode & 0o777 for path in (SCRIPT, UNIT, KEYFILE)}
    assert modes == {SCRIPT: 0o555, UNIT: 0o444, KEYFILE: 0o444}


BROKEN = {
    # shellcheck -S warning: a bashism in a /bin/sh script, and a syntax error
    "script-bashism": (SCRIPT, "    if ! has_clsact; then", "    if [[ ! -e /sys ]]; then", r"SC3010"),
    "script-syntax": (SCRIPT, "    start) start ;;", "    start) start ;", r"error"),
    # systemd-analyze verify: the seed's restarting oneshot, a program not at its install path,
    # values systemd cannot parse
    "unit-restart": (UNIT, "RemainAfterExit=yes\n", "RemainAfterExit=yes\nRestart=always\n", r"Restart= .*oneshot"),
    "unit-execstart": (UNIT, "ExecStart=/usr/local/libexec/moat/moat-mirror ",
                       "ExecStart=/usr/local/libexec/moat-mirror ", r"not executable"),
    "unit-value": (UNIT, "RemainAfterExit=yes", "RemainAfterExit=perhaps",
                   r"moat-mirror.service:\d+: Failed to parse boolean"),
    "unit-type": (UNIT, "Type=oneshot", "Type=one-shot", r"moat-mirror.service:\d+: Failed to parse service type"),
    # NetworkManager's keyfile reader: a value it cannot read, a misspelt key, an invalid method
    "nm-value": (KEYFILE, "stp=false", "stp=nope", r"br1.nmconnection:\d+: .*stp"),
    "nm-key": (KEYFILE, "multicast-snooping=false", "multicast_snooping=false", r"ignores key 'multicast_snooping'"),
    "nm-method": (KEYFILE, "[ipv4]\n# no address: the host never talks on the mirror\nmethod=disabled",
                  "[ipv4]\nmethod=off", r"ipv4.method: property is invalid"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_validators_reject_a_broken_file(case, tmp_path, only_mirror_validators):
    path, old, new, message = BROKEN[case]
    render(EXAMPLE.read_text(), tmp_path)
    file = tmp_path / path
    text = file.read_text()
    assert old in text
    file.chmod(0o644)
    file.write_text(text.replace(old, new, 1))
    file.chmod(0o555 if path == SCRIPT else 0o444)
    rejected = rejections(tmp_path)
    assert list(rejected) == [path]
    assert re.search(message, rejected[path]), rejected[path]


def test_a_rejected_bridge_name_points_at_its_blueprint_line(tmp_path, only_mirror_validators):
    # a name the schema refuses (a space), forced through to the tools: both the unit and the
    # keyfile are rejected, and provenance names networks[1].bridge
    text = EXAMPLE.read_text().replace("bridge: br1", "bridge: br 1")
    outputs = render(text, tmp_path)
    errors = [d for d in check_bundle(tmp_path, outputs) if d.is_error]
    rejected = {re.search(r"rejected (.+?\.(?:service|nmconnection)):", d.message).group(1): d.path for d in errors}
    bridge = ("networks", 1, "bridge")
    assert rejected == {UNIT: bridge, f"{mirror.NM_CONNECTIONS}/br 1.nmconnection": bridge}


# --- the script, for real, in network namespaces ------------------------------------------------

def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


def in_ns(ns: str, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", ns, *cmd], capture_output=True, text=True, check=check, timeout=30)


@attrs.frozen
class Lab:
    """host: the server (uplink + bridge), peer: the Internet at the other end of the uplink,
    ids: the IDS, whose NIC is the bridge's only port."""

    host: str
    peer: str
    ids: str
    script: Path
    iface: str
    bridge: str
    address: str  # the host's uplink address
    tmp: Path

    def mirror(self, action: str, check: bool = True) -> subprocess.CompletedProcess:
        return in_ns(self.host, str(self.script), action, check=check)

    def ping(self) -> None:
        """Three echo requests from the peer to the host: the mirror never gets in their way."""
        in_ns(self.peer, "ping", "-n", "-q", "-c", "3", "-i", "0.2", "-W", "2", self.address)

    def mirror_filters(self, direction: str) -> list[dict]:
        shown = json.loads(in_ns(self.host, "tc", "-j", "filter", "show", "dev", self.iface, direction).stdout)
        return [a for f in shown for a in f.get("options", {}).get("actions", []) if a.get("kind") == "mirred"]

    def qdiscs(self) -> str:
        return in_ns(self.host, "tc", "qdisc", "show", "dev", self.iface).stdout

    @contextmanager
    def capture(self, name: str):
        """tcpdump on the IDS's NIC while the block runs; yields the list of packets seen (as text)."""
        pcap = self.tmp / f"{name}.pcap"
        tcpdump = ["tcpdump", "-i", "eth0", "-n", "--immediate-mode", "-U", "-w", str(pcap)]
        proc = subprocess.Popen(["ip", "netns", "exec", self.ids, *tcpdump], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        seen: list[str] = []
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:  # tcpdump says "listening on" once it captures
                if select.select([proc.stderr], [], [], 0.1)[0] and "listening on" in proc.stderr.readline():
                    break
                assert proc.poll() is None, "tcpdump exited"
            else:
                raise AssertionError("tcpdump did not start")
            yield seen
            time.sleep(0.3)
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=10)
        seen.extend(subprocess.run(["tcpdump", "-n", "-r", str(pcap)], capture_output=True, text=True,
                                   check=True).stdout.splitlines())


def echoes(packets: list[str]) -> tuple[int, int]:
    return (sum("ICMP echo request" in p for p in packets), sum("ICMP echo reply" in p for p in packets))


@pytest.fixture
def lab(tmp_path):
    plan = plan_of(EXAMPLE.read_text())
    assert plan.mirror is not None
    render(EXAMPLE.read_text(), tmp_path / "bundle")
    uplink = plan.blueprint.host.uplink
    tag = f"{os.getpid()}-{time.monotonic_ns() % 100000}"
    lab = Lab(f"moat-mirror-host-{tag}", f"moat-mirror-peer-{tag}", f"moat-mirror-ids-{tag}",
              tmp_path / "bundle" / SCRIPT, plan.mirror.interface, plan.mirror.bridge, str(uplink.address.ip),
              tmp_path)
    created = []
    try:
        for ns in (lab.host, lab.peer, lab.ids):
            ip("netns", "add", ns)
            created.append(ns)
            # no IPv6 chatter (router solicitations, MLD): the IDS sees only what the test sends
            in_ns(ns, "sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
            ip("-n", ns, "link", "set", "lo", "up")
        # the uplink, named as in the blueprint, to the peer (the gateway's address)
        ip("-n", lab.host, "link", "add", lab.iface, "type", "veth", "peer", "name", "eth0", "netns", lab.peer)
        ip("-n", lab.host, "address", "add", str(uplink.address), "dev", lab.iface)
        ip("-n", lab.peer, "address", "add", f"{uplink.gateway}/{uplink.address.network.prefixlen}", "dev", "eth0")
        # the mirror bridge as NetworkManager makes it (no address, no STP, no snooping) and the IDS port
        ip("-n", lab.host, "link", "add", lab.bridge, "type", "bridge", "stp_state", "0", "mcast_snooping", "0")
        ip("-n", lab.host, "link", "add", "ids0", "type", "veth", "peer", "name", "eth0", "netns", lab.ids)
        ip("-n", lab.host, "link", "set", "ids0", "master", lab.bridge)
        for ns, dev in ((lab.host, lab.iface), (lab.host, lab.bridge), (lab.host, "ids0"), (lab.peer, "eth0"),
                        (lab.ids, "eth0")):
            ip("-n", ns, "link", "set", dev, "up")
        deadline = time.monotonic() + 10  # carrier up and the peer's ARP entry in place
        while in_ns(lab.peer, "ping", "-n", "-q", "-c", "1", "-W", "1", lab.address, check=False).returncode:
            assert time.monotonic() < deadline, "the uplink does not come up"
        yield lab
    finally:
        for ns in created:  # deleting a namespace deletes its veths and bridge; captures end in their block
            ip("netns", "del", ns, check=False)


@pytest.mark.slow
def test_the_ids_sees_every_packet_once_while_mirrored_and_none_after_stop(lab):
    with lab.capture("before") as seen:
        lab.ping()
    assert echoes(seen) == (0, 0)
    assert lab.mirror("status", check=False).returncode == 3

    started = lab.mirror("start")
    assert "mirroring enp1s0f1 (ingress and egress) to br1" in started.stdout
    with lab.capture("started") as seen:
        lab.ping()
    assert echoes(seen) == (3, 3)  # requests came in (ingress), replies went out (egress)

    lab.mirror("start")  # idempotent: still one filter per direction, every packet copied once
    for direction in ("ingress", "egress"):
        (action,) = lab.mirror_filters(direction)
        what = (action["mirred_action"], action["to_dev"], action["control_action"]["type"])
        assert what == ("mirror", "br1", "continue")
    with lab.capture("started-twice") as seen:
        lab.ping()
    assert echoes(seen) == (3, 3)
    assert lab.mirror("status").stdout.splitlines() == ["enp1s0f1 ingress: mirrored to br1",
                                                        "enp1s0f1 egress: mirrored to br1"]

    lab.mirror("stop")
    assert "clsact" not in lab.qdiscs()
    assert lab.mirror_filters("ingress") == lab.mirror_filters("egress") == []
    with lab.capture("stopped") as seen:
        lab.ping()
    assert seen == []  # nothing at all reaches the IDS
    lab.mirror("stop")  # stopping twice is fine
    assert lab.mirror("status", check=False).returncode == 3


@pytest.mark.slow
def test_other_filters_keep_working_and_are_left_alone(lab):
    # someone else's filter on the same clsact: it counts every IPv4 packet by mirroring to a spare veth
    ip("-n", lab.host, "link", "add", "spare0", "type", "veth", "peer", "name", "spare1")
    ip("-n", lab.host, "link", "set", "spare0", "up")
    ip("-n", lab.host, "link", "set", "spare1", "up")
    in_ns(lab.host, "tc", "qdisc", "add", "dev", lab.iface, "clsact")
    in_ns(lab.host, "tc", "filter", "add", "dev", lab.iface, "ingress", "pref", "100", "protocol", "ip",
          "u32", "match", "u32", "0", "0", "action", "mirred", "egress", "mirror", "dev", "spare0")

    def foreign_packets() -> int:
        shown = in_ns(lab.host, "tc", "-s", "-j", "filter", "show", "dev", lab.iface, "ingress", "pref", "100").stdout
        shown = json.loads(shown)
        return sum(a["stats"]["packets"] for f in shown for a in f.get("options", {}).get("actions", []))

    lab.mirror("start")
    before = foreign_packets()
    with lab.capture("shared") as seen:
        lab.ping()
    assert echoes(seen) == (3, 3)
    assert foreign_packets() - before >= 3  # ours says `continue`: the packet still reaches their filter

    lab.mirror("stop")
    assert "qdisc clsact" in lab.qdiscs()  # still in use: kept
    assert [a["to_dev"] for a in lab.mirror_filters("ingress")] == ["spare0"]

    # a filter of someone else at our pref: start refuses and touches nothing
    in_ns(lab.host, "tc", "filter", "add", "dev", lab.iface, "egress", "pref", str(mirror.FILTER_PREFS["egress"]),
          "protocol", "ip", "u32", "match", "u32", "0", "0", "action", "mirred", "egress", "mirror", "dev", "spare0")
    refused = lab.mirror("start", check=False)
    assert refused.returncode == 1 and "another filter uses pref 2 on enp1s0f1 egress" in refused.stderr
    assert [a["to_dev"] for a in lab.mirror_filters("egress")] == ["spare0"]
    lab.mirror("stop")
    assert [a["to_dev"] for a in lab.mirror_filters("egress")] == ["spare0"]


def test_a_blueprint_with_another_bridge_moves_the_mirror(lab):
    # the script of a blueprint whose mirror bridge is br2 replaces our filters, never adds to them
    ip("-n", lab.host, "link", "add", "br2", "type", "bridge")
    ip("-n", lab.host, "link", "set", "br2", "up")
    moved = lab.tmp / "moat-mirror-br2"
    moved.write_text(lab.script.read_text().replace("BRIDGE='br1'", "BRIDGE='br2'"))
    moved.chmod(0o555)
    lab.mirror("start")
    in_ns(lab.host, str(moved), "start")
    for direction in ("ingress", "egress"):
        assert [a["to_dev"] for a in lab.mirror_filters(direction)] == ["br2"]
    assert lab.mirror("status", check=False).returncode == 3
    lab.mirror("start")
    for direction in ("ingress", "egress"):
        assert [a["to_dev"] for a in lab.mirror_filters(direction)] == ["br1"]
    lab.mirror("stop")
    assert "clsact" not in lab.qdiscs()


def test_start_fails_without_the_bridge_and_stop_succeeds_without_either(lab):
    # the bridge goes away under a running mirror (systemd then stops the unit): stop cleans up
    lab.mirror("start")
    ip("-n", lab.host, "link", "del", lab.bridge)
    lab.mirror("stop")
    assert lab.mirror_filters("ingress") == lab.mirror_filters("egress") == [] and "clsact" not in lab.qdiscs()
    # without the bridge, start refuses
    failed = lab.mirror("start", check=False)
    assert failed.returncode == 1
    assert "bridge br1 does not exist (NetworkManager connection br1)" in failed.stderr
    assert lab.mirror_filters("ingress") == []
    # the interface gone as well: stop still succeeds
    ip("-n", lab.host, "link", "del", lab.iface)
    assert lab.mirror("stop").returncode == 0
    assert lab.mirror("status", check=False).returncode == 3
