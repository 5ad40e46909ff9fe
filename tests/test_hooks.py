"""The libvirt qemu hook: checked by shellcheck and by nft (dry run), and run as libvirt runs it
in network namespaces made here: its DNAT rules follow each VM's start and stop, and packets
from a client on the uplink side reach listeners at the VMs' addresses behind a bridge."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from compiler.pipeline import check_file
from compiler.render import hooks
from compiler.render._trace import trace
from compiler.verify import check_bundle

from .conftest import ROOT
from .libvirt_sandbox import PROBE, SERVE

EXAMPLE = ROOT / "blueprints" / "example.yaml"
HOOK = "host/libvirt/hooks/qemu"


def write_bundle(blueprint: Path, dest: Path) -> Path:
    """The compiled files of a blueprint, written under dest with their modes."""
    for path, out in check_file(blueprint).files.items():
        file = dest / path
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_bytes(out.content)
        file.chmod(out.mode)
    return dest


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return write_bundle(EXAMPLE, tmp_path_factory.mktemp("bundle"))


def validate(file: Path) -> list[subprocess.CompletedProcess]:
    """Run this family's validators on a file as a build does."""
    return [subprocess.run([part.replace("{file}", str(file)) for part in v.command], capture_output=True,
                           text=True, timeout=60, stdin=subprocess.DEVNULL) for v in hooks.VALIDATORS]


def broken(bundle: Path, tmp_path: Path, old: str, new: str) -> Path:
    text = (bundle / HOOK).read_text()
    assert old in text
    file = tmp_path / "qemu"
    file.write_text(text.replace(old, new, 1))
    file.chmod(0o555)
    return file


# -- rendering and validators -------------------------------------------------------------


def test_hook_is_rendered_for_each_example_and_passes_its_validators(example, tmp_path):
    compiled = check_file(example)
    out = compiled.files[HOOK]
    assert out.mode == 0o555 and out.content.startswith(b"#!/bin/sh\n")
    write_bundle(example, tmp_path)
    for proc in validate(tmp_path / HOOK):
        assert proc.returncode == 0, proc.args + [proc.stdout + proc.stderr]
    listed = subprocess.run([tmp_path / HOOK, "--list"], capture_output=True, text=True, check=True).stdout.split()
    assert listed == sorted({f.forward.to for f in compiled.plan.forwards})


def test_example_a_hook_holds_the_reference_forwards(bundle):
    text = (bundle / HOOK).read_text()
    table = re.findall(r'^ +forward (\w+) (\d+) "([\d.]+)" (\d+) "(\w+)" "([\w-]+)" "([\d.]+)"$', text, re.M)
    # no VPS: every forward arrives on the uplink, at its address, only
    uplink = ("enp1s0f1", "203.0.113.10")
    assert table == [("tcp", "80", "192.168.122.5", "80", "virbr0", *uplink),
                     ("tcp", "443", "192.168.122.5", "443", "virbr0", *uplink),
                     ("udp", "52439", "192.168.122.150", "1194", "virbr0", *uplink)]


def test_shellcheck_rejects_a_broken_hook(bundle, tmp_path):
    # `==` in [ ] is not POSIX sh (the host runs it with /bin/sh)
    bad = broken(bundle, tmp_path, 'if [ "$DRY_RUN" = 1 ]; then', 'if [ "$DRY_RUN" == 1 ]; then')
    proc = validate(bad)[0]
    assert proc.returncode != 0 and "SC3014" in proc.stdout and re.search(r"\bline \d+\b", proc.stdout)


def test_dry_run_validator_rejects_rules_nft_refuses(bundle, tmp_path):
    bad = broken(bundle, tmp_path, '"192.168.122.150"', '"192.168.122.256"')
    proc = validate(bad)[1]
    assert proc.returncode != 0
    vpn_line = next(n for n, line in enumerate(bad.read_text().splitlines(), 1) if line.strip() == "vpn)")
    # nft's own message, and the hook line that provenance maps to the blueprint
    assert "Error" in proc.stdout and "192.168.122.256" in proc.stdout
    assert f"{bad}:{vpn_line}:" in proc.stdout
    # a chain nft refuses by its syntax is caught as well
    bad = broken(bundle, tmp_path, "priority dstnat;", "priority nowhere;")
    assert validate(bad)[1].returncode != 0


def test_a_rejection_is_reported_at_the_blueprint_line(bundle, tmp_path, monkeypatch):
    monkeypatch.setenv("MOAT_CACHE_DIR", str(tmp_path / "cache"))
    out = check_file(EXAMPLE).files[HOOK]
    root = tmp_path / "tree"
    (root / HOOK).parent.mkdir(parents=True)
    (root / HOOK).write_text(out.content.decode().replace('"192.168.122.150"', '"192.168.122.256"'))
    (root / HOOK).chmod(0o555)
    [diag] = [d for d in check_bundle(root, {HOOK: out}) if d.rule == "tool-rejected"]
    assert diag.path == ("vms", 2, "name") and "192.168.122.256" in diag.message


def test_dry_run_validator_needs_no_privileges_beyond_a_user_namespace(bundle):
    # what a non-root build does: unshare --map-root-user (works for root too)
    proc = subprocess.run(["unshare", "--map-root-user", "--net", "sh", "-c",
                           f'MOAT_HOOK_DRY_RUN=1 "{bundle / HOOK}" nextcloud start begin - </dev/null'],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "dnat to 192.168.122.5:443" in proc.stdout


def test_generated_lines_trace_back_to_the_blueprint():
    out = check_file(EXAMPLE).files[HOOK]
    lines = out.content.decode().splitlines()
    traced = trace(out)
    forward_80 = next(n for n, line in enumerate(lines, 1) if line.strip().startswith("forward tcp 80 "))
    assert ("forwards", 0, "port") in traced[forward_80] and ("vms", 0, "nics", 0, "address") in traced[forward_80]
    label = next(n for n, line in enumerate(lines, 1) if line.strip() == "vpn)")
    assert traced[label] == [("vms", 2, "name")]
    # where it arrives: the uplink's interface and address
    assert {("host", "uplink", "interface"), ("host", "uplink", "address")} <= set(traced[forward_80])


# -- behaviour in network namespaces --------------------------------------------------------


@pytest.fixture
def netns():
    """make(role) -> the name of a new network namespace; all deleted afterwards."""
    made: list[str] = []

    def make(role: str) -> str:
        name = f"hook-{os.getpid()}-{role}"
        subprocess.run(["ip", "netns", "add", name], check=True)
        made.append(name)
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        return name

    yield make
    for name in made:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


class Host:
    """The hook installed in a network namespace, called the way libvirt calls it."""

    def __init__(self, ns: str, bundle: Path):
        self.ns, self.bundle = ns, bundle

    def sh(self, *cmd: str, check: bool = True, env: dict | None = None, input: str | None = None):
        proc = subprocess.run(["ip", "netns", "exec", self.ns, *cmd], capture_output=True, text=True, timeout=30,
                              input=input, stdin=None if input is not None else subprocess.DEVNULL,
                              env={**os.environ, **(env or {})})
        if check:
            assert proc.returncode == 0, f"{cmd}: {proc.stdout}{proc.stderr}"
        return proc

    def hook(self, vm: str, operation: str, sub: str, extra: str = "-", env: dict | None = None):
        # argv and the domain XML on stdin, as libvirt passes them
        xml = self.bundle / f"host/libvirt/domains/{vm}.xml"
        proc = self.sh(str(self.bundle / HOOK), vm, operation, sub, extra, check=False, env=env,
                       input=xml.read_text() if xml.exists() else "<domain/>")
        return proc

    def ruleset(self) -> str:
        return self.sh("nft", "list", "ruleset").stdout

    def dnat(self) -> list[tuple[str, str, str, str]]:
        """(chain, proto, public port, target) of every DNAT rule in the hook's table."""
        found, chain = [], None
        for line in self.ruleset().splitlines():
            if m := re.match(r"\s*chain (\S+) \{", line):
                chain = m.group(1)
            elif m := re.search(r"(tcp|udp) dport (\d+) dnat to (\S+)", line):
                found.append((chain, *m.groups()))
        return sorted(found)


NEXTCLOUD = [(chain, "tcp", port, f"192.168.122.5:{port}") for chain in ("nextcloud_output", "nextcloud_prerouting")
             for port in ("443", "80")]
VPN = [(chain, "udp", "52439", "192.168.122.150:1194") for chain in ("vpn_output", "vpn_prerouting")]


def test_forwards_follow_the_vm_lifecycle(bundle, netns):
    host = Host(netns("host"), bundle)
    for op in ("prepare begin", "start begin", "started begin"):
        proc = host.hook("nextcloud", *op.split())
        assert proc.returncode == 0 and proc.stdout == "", proc.stderr  # libvirt reads stdout of some hooks
    assert host.dnat() == sorted(NEXTCLOUD)
    ruleset = host.ruleset()
    assert 'iifname "enp1s0f1" ip daddr 203.0.113.10 tcp dport 443 dnat to 192.168.122.5:443' in ruleset
    assert "type nat hook prerouting priority dstnat" in ruleset

    assert host.hook("vpn", "start", "begin").returncode == 0
    assert host.dnat() == sorted(NEXTCLOUD + VPN)

    # repeating a start (or a reconnect after a libvirtd restart) never duplicates rules
    for op in ("start begin", "reconnect begin", "attach begin"):
        assert host.hook("nextcloud", *op.split()).returncode == 0
    assert host.dnat() == sorted(NEXTCLOUD + VPN)

    # stopping removes this VM's rules only, and stopping twice is fine
    for op in ("stopped end", "release end", "stopped end"):
        proc = host.hook("nextcloud", *op.split())
        assert proc.returncode == 0 and proc.stdout == "" and proc.stderr == ""
    assert host.dnat() == sorted(VPN)
    assert "nextcloud" not in host.ruleset()

    # a VM without forwards: nothing added, nothing printed
    assert host.hook("onion", "start", "begin").returncode == 0
    assert host.dnat() == sorted(VPN)
    assert host.hook("vpn", "stopped", "end").returncode == 0
    assert host.dnat() == []


def test_operations_without_forwards_do_nothing(bundle, netns):
    host = Host(netns("host"), bundle)
    for op in ("migrate begin", "restore begin", "prepare begin", "started begin", "stopped begin"):
        proc = host.hook("nextcloud", *op.split())
        assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")
    assert host.ruleset() == ""
    assert host.sh(str(bundle / HOOK), check=False).returncode == 2  # usage


def test_dry_run_prints_and_checks_but_changes_nothing(bundle, netns):
    host = Host(netns("host"), bundle)
    proc = host.hook("nextcloud", "start", "begin", env={"MOAT_HOOK_DRY_RUN": "1"})
    assert proc.returncode == 0, proc.stderr
    assert "add rule ip moat_forwards nextcloud_prerouting iifname \"enp1s0f1\"" in proc.stdout
    assert host.ruleset() == ""


def test_accepts_in_libvirt_filter_are_added_and_removed_per_vm(bundle, netns):
    """libvirt's NAT network rejects new connections into its bridge; the hook's accepts sit at
    the top of libvirt's forward chain, for both of libvirt's firewall backends."""
    host = Host(netns("host"), bundle)
    # what libvirt's iptables backend (iptables-nft) and nftables backend create
    host.sh("iptables", "-N", "LIBVIRT_FWI")
    host.sh("iptables", "-A", "LIBVIRT_FWI", "-o", "virbr0", "-j", "REJECT")
    host.sh("iptables", "-A", "FORWARD", "-j", "LIBVIRT_FWI")
    host.sh("nft", "add table ip libvirt_network; add chain ip libvirt_network forward "
            "{ type filter hook forward priority 0; policy accept; }; add rule ip libvirt_network forward counter")

    def accepts():
        ipt = [line for line in host.sh("iptables", "-S", "FORWARD").stdout.splitlines() if "moat forward" in line]
        nft = [line.strip() for line in host.sh("nft", "list", "chain", "ip", "libvirt_network", "forward").stdout.splitlines()
               if "moat forward" in line]
        return ipt, nft

    for vm in ("nextcloud", "vpn", "nextcloud"):
        assert host.hook(vm, "start", "begin").returncode == 0
    ipt, nft = accepts()
    assert len(ipt) == 3 and len(nft) == 3
    assert ('-A FORWARD -d 192.168.122.5/32 -i enp1s0f1 -o virbr0 -p tcp -m tcp --dport 443 -m conntrack --ctstate DNAT '
            '-m comment --comment "moat forward nextcloud" -j ACCEPT') in ipt
    assert 'iifname "enp1s0f1" oifname "virbr0" ip daddr 192.168.122.150 udp dport 1194' in " ".join(nft)
    assert all("ct status dnat" in line for line in nft)
    # ours come before libvirt's jump and rules
    forward = host.sh("iptables", "-S", "FORWARD").stdout.splitlines()
    assert forward[-1] == "-A FORWARD -j LIBVIRT_FWI"
    chain = host.sh("nft", "list", "chain", "ip", "libvirt_network", "forward").stdout
    rules = [line.strip() for line in chain.splitlines() if "counter" in line]
    assert ["moat forward" in rule for rule in rules] == [True, True, True, False]

    assert host.hook("nextcloud", "stopped", "end").returncode == 0
    ipt, nft = accepts()
    assert [bool("vpn" in line) for line in ipt + nft] == [True, True]
    assert host.hook("vpn", "release", "end").returncode == 0
    assert accepts() == ([], [])


def _serve(ns: str, *specs: str) -> subprocess.Popen:
    proc = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", SERVE, *specs],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "listening", proc.stderr.read()
    return proc


def _probe(ns: str, target: str, timeout: float = 2) -> str:
    return subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", PROBE, target, str(timeout)],
                          capture_output=True, text=True, timeout=30).stdout.strip()


def test_forwarded_packets_reach_the_vm(bundle, netns):
    """client --veth-- [host: enp1s0f1 203.0.113.10, virbr0 192.168.122.1] --bridge-- VMs"""
    host_ns, client, vms = netns("host"), netns("client"), netns("vms")
    host = Host(host_ns, bundle)
    ip = ["ip", "-n"]

    def run(*cmd: str) -> None:
        subprocess.run(cmd, check=True, capture_output=True)

    run(*ip, host_ns, "link", "add", "enp1s0f1", "type", "veth", "peer", "name", "eth0", "netns", client)
    run(*ip, host_ns, "addr", "add", "203.0.113.10/24", "dev", "enp1s0f1")
    run(*ip, client, "addr", "add", "203.0.113.20/24", "dev", "eth0")
    run(*ip, host_ns, "link", "add", "virbr0", "type", "bridge")
    run(*ip, host_ns, "addr", "add", "192.168.122.1/24", "dev", "virbr0")
    run(*ip, host_ns, "link", "add", "vnet0", "master", "virbr0", "type", "veth", "peer", "name", "eth0", "netns", vms)
    run(*ip, vms, "addr", "add", "192.168.122.5/24", "dev", "eth0")
    run(*ip, vms, "addr", "add", "192.168.122.150/24", "dev", "eth0")
    for ns, dev in ((host_ns, "enp1s0f1"), (host_ns, "virbr0"), (host_ns, "vnet0"), (client, "eth0"), (vms, "eth0")):
        run(*ip, ns, "link", "set", dev, "up")
    run(*ip, vms, "route", "add", "default", "via", "192.168.122.1")
    host.sh("sysctl", "-qw", "net.ipv4.ip_forward=1")

    server = _serve(vms, "tcp:192.168.122.5:443", "tcp:192.168.122.5:80", "udp:192.168.122.150:1194")
    try:
        # nothing forwarded before the VMs start
        assert _probe(client, "tcp:203.0.113.10:443").startswith("failed")
        assert host.hook("nextcloud", "start", "begin").returncode == 0
        assert host.hook("vpn", "start", "begin").returncode == 0
        assert _probe(client, "tcp:203.0.113.10:443") == "tcp 192.168.122.5:443"
        assert _probe(client, "tcp:203.0.113.10:80") == "tcp 192.168.122.5:80"
        assert _probe(client, "udp:203.0.113.10:52439") == "udp 192.168.122.150:1194"
        # the host itself reaches the forward at its public address (nat output chain)
        assert _probe(host_ns, "tcp:203.0.113.10:443") == "tcp 192.168.122.5:443"
        # only the public ports: the VM's port itself is not forwarded
        assert _probe(client, "udp:203.0.113.10:1194", 0.5).startswith("failed")

        assert host.hook("nextcloud", "stopped", "end").returncode == 0
        assert _probe(client, "tcp:203.0.113.10:443").startswith("failed")
        assert _probe(client, "udp:203.0.113.10:52439") == "udp 192.168.122.150:1194"
    finally:
        server.kill()
        server.wait()
        for stream in (server.stdout, server.stderr):
            stream.close()
