"""Host firewall: the firewalld zone and the nftables table are checked by their own tools, and
both are loaded for real in network namespaces, where probes show what gets through."""

from __future__ import annotations

import copy
import os
import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from compiler import schema
from compiler.diagnostics import MoatError, position_of
from compiler.pipeline import build_file, check_file
from compiler.render import firewall
from compiler.verify import run_validators

from .conftest import ROOT
from .netns import Namespaces, Pair

ZONE = "host/firewalld/zones/public.xml"
POLICY = "host/firewalld/policies/moat-egress.xml"
CONF = "host/firewalld/firewalld.conf"
NFT = "host/nftables/moat.nft"
FIREWALLD_CHECK = str(firewall.VERIFY_TOOLS / "firewall-firewalld.sh")
NFT_CHECK = str(firewall.VERIFY_TOOLS / "firewall-nft.sh")
EXAMPLE = ROOT / "blueprints" / "example.yaml"


def run(*cmd: str, check: bool = False, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stdout}{proc.stderr}")
    return proc


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# --- the tools accept what moat generates, and reject what they should ------------------------

def test_validators_pass_on_both_examples(example, tmp_path):
    _, stored = build_file(example, tmp_path)
    findings = [f for f in run_validators(stored.path) if f.path in (ZONE, CONF, NFT, POLICY)]
    assert sorted(f.path for f in findings) == sorted((ZONE, CONF, NFT, POLICY))
    assert {Path(f.validator.command[0]).name for f in findings} == {"firewall-firewalld.sh", "firewall-nft.sh"}
    bad = [f"{f.path}: {f.output}" for f in findings if not f.ok]
    assert not bad, "\n".join(bad)


@pytest.fixture(scope="module")
def example_files() -> dict[str, str]:
    compiled = check_file(EXAMPLE)
    return {path: compiled.files[path].content.decode() for path in (ZONE, CONF, NFT)}


def firewalld_layout(tmp_path: Path, zone: str, conf: str) -> tuple[Path, Path]:
    return write(tmp_path / "firewalld" / "zones" / "public.xml", zone), write(tmp_path / "firewalld" / "firewalld.conf", conf)


@pytest.mark.parametrize("old, new, says", [
    ('target="DROP"', 'target="DENY"', "INVALID_TARGET"),
    ('port="53201"', 'port="65536"', "INVALID_PORT"),
    ('protocol="tcp"', 'protocol="tcpx"', "INVALID_PROTOCOL"),
    ('<icmp-block name="packet-too-big"/>', '<icmp-block name="packet-too-large"/>', "INVALID_ICMPTYPE"),
    ("</zone>", "", "not a valid zone file"),
])
def test_firewalld_check_rejects_a_broken_zone(example_files, tmp_path, old, new, says):
    assert old in example_files[ZONE]
    zone, _ = firewalld_layout(tmp_path, example_files[ZONE].replace(old, new, 1), example_files[CONF])
    proc = run(FIREWALLD_CHECK, str(zone))
    assert proc.returncode != 0 and says in proc.stdout + proc.stderr


def test_firewalld_check_rejects_an_invalid_rich_rule_that_the_tool_only_warns_about(example_files, tmp_path):
    # firewall-offline-cmd drops a rich rule without action with a WARNING and exits 0:
    # the wrapper treats every ERROR/WARNING line as a rejection
    broken = example_files[ZONE].replace(
        '<port port="53201" protocol="tcp"/>',
        '<rule family="ipv4"><source address="192.0.2.0/24"/><port port="53201" protocol="tcp"/></rule>')
    zone, _ = firewalld_layout(tmp_path, broken, example_files[CONF])
    raw = run("firewall-offline-cmd", "--system-config", str(zone.parent.parent),
              "--default-config", "/usr/lib/firewalld", "--check-config")
    assert raw.returncode == 0 and "INVALID_RULE" in raw.stdout + raw.stderr
    proc = run(FIREWALLD_CHECK, str(zone))
    assert proc.returncode != 0 and "INVALID_RULE" in proc.stdout


@pytest.mark.parametrize("old, new, says", [
    ("DefaultZone=public", "DefaultZone=nosuchzone", "Default zone 'nosuchzone' is not valid"),
    ("CleanupOnExit=no", "CleanupOnExit=never", "CleanupOnExit 'never' is not valid"),
    ("IPv6_rpfilter=yes", "IPv6_rpfiltre=yes", "Invalid option"),
])
def test_firewalld_check_rejects_a_broken_conf(example_files, tmp_path, old, new, says):
    assert old in example_files[CONF]
    _, conf = firewalld_layout(tmp_path, example_files[ZONE], example_files[CONF].replace(old, new))
    proc = run(FIREWALLD_CHECK, str(conf))
    assert proc.returncode != 0 and says in proc.stdout
    # the message names the line of the conf that holds the rejected value
    line = next(n for n, text in enumerate(conf.read_text().splitlines(), 1) if new in text)
    assert f"{conf}:{line}:" in proc.stdout


@pytest.mark.parametrize("old, new", [
    ("policy drop;", "policy dropp;"),
    ("ct status dnat accept", "ct status dnatt accept"),
    ("ip saddr 192.168.122.0/24", "ip saddr 192.168.122.0/33"),
    ('iif "lo" accept', 'iif "nosuchif0" accept'),  # parses; the kernel-side check rejects it
])
def test_nft_check_rejects_a_broken_ruleset(example_files, tmp_path, old, new):
    assert old in example_files[NFT]
    path = write(tmp_path / "moat.nft", example_files[NFT].replace(old, new, 1))
    proc = run(NFT_CHECK, str(path))
    assert proc.returncode != 0
    line = next(n for n, text in enumerate(path.read_text().splitlines(), 1) if new in text)
    assert f"{path}:{line}:" in proc.stderr


def test_a_value_firewalld_rejects_points_at_its_blueprint_line(tmp_path, monkeypatch):
    # loosen the schema so an interface name with '/' (firewalld refuses it) reaches the tool
    loose = copy.deepcopy(schema.load_schema())
    loose["$defs"]["ifname"]["pattern"] = "^.+$"
    monkeypatch.setattr(schema, "validator", lambda: Draft202012Validator(loose, format_checker=schema.format_checker()))
    text = EXAMPLE.read_text().replace("interface: enp1s0f1", "interface: enp1s0/1")
    bp = write(tmp_path / "bp.yaml", text)
    line = next(n for n, t in enumerate(text.splitlines(), 1) if "enp1s0/1" in t)
    with pytest.raises(MoatError) as info:
        build_file(bp, tmp_path / "out")
    ours = [d for d in info.value.diagnostics if d.rule == "tool-rejected" and ZONE in d.message]
    assert ours and "INVALID_INTERFACE" in ours[0].message
    assert ours[0].path[-1] == "interface"
    assert position_of(ours[0], info.value.source)[0] == line


# --- what the files say ---------------------------------------------------------------------

def test_zone_denies_by_default_and_opens_only_the_host_ports(example_files):
    zone = ET.fromstring(example_files[ZONE].encode())
    assert zone.get("target") == "DROP"
    assert [i.get("name") for i in zone.iter("interface")] == ["enp1s0f1"]
    assert [(p.get("port"), p.get("protocol")) for p in zone.findall("port")] == [("53201", "tcp")]
    # no ssh, dhcpv6-client or cockpit service, no forwarding or masquerading on the uplink
    for absent in ("service", "forward", "masquerade", "forward-port", "rule"):
        assert zone.find(absent) is None, absent
    assert zone.find("icmp-block-inversion") is not None  # icmp-blocks below are the ICMP accepted
    accepted_icmp = {b.get("name") for b in zone.iter("icmp-block")}
    assert {"destination-unreachable", "packet-too-big"} <= accepted_icmp  # path MTU
    # forwarded ports are not opened on the host; the zone says why
    assert "ct status dnat" in example_files[ZONE]
    for fwd in ("80/tcp forwarded to nextcloud:80", "52439/udp forwarded to vpn:1194"):
        assert fwd in example_files[ZONE]
    assert "DefaultZone=public" in example_files[CONF].splitlines()


def test_nft_ruleset_leaves_the_dnat_to_the_hook(example_files):
    text = example_files[NFT]
    rules = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    assert "moat_forwards" not in "\n".join(rules)  # the qemu hook owns that table
    assert not any("dnat to" in r or r.startswith("table ip ") for r in rules)
    assert rules.count("type filter hook input priority filter; policy drop;") == 1
    assert rules.count("type filter hook forward priority filter; policy drop;") == 1
    assert 'iifname "enp1s0f1" tcp dport 53201 accept' in rules
    assert 'iifname "enp1s0f1" ip daddr 192.168.122.5 tcp dport 443 ct status dnat accept' in rules
    assert 'iifname "enp1s0f1" ip daddr 192.168.122.150 udp dport 1194 ct status dnat accept' in rules
    assert not any("dport 22 " in r for r in rules)


def test_an_allow_from_a_network_admits_only_that_source(tmp_path):
    compiled = check_file(lab_blueprint(tmp_path))
    zone = compiled.files[ZONE].content.decode()
    rule = ET.fromstring(zone.encode()).find("rule")
    assert rule.find("source").get("address") == "192.0.2.20/32"
    assert (rule.find("port").get("port"), rule.find("port").get("protocol")) == ("8443", "tcp")
    assert rule.find("accept") is not None
    assert "<!-- 8443/tcp: admin console from one address (only from 192.0.2.20/32) -->" in zone
    nft = compiled.files[NFT].content.decode()
    assert 'iifname "enp1s0f1" ip saddr 192.0.2.20/32 tcp dport 8443 accept' in nft
    assert 'iifname "enp1s0f1" udp dport 4500 accept' in nft


HOST_EGRESS = """  egress:
    allow:
      - { port: 5432, proto: tcp, to: 198.51.100.40, description: backups -- to the database <x> }
"""


def test_host_egress_is_one_policy_in_both_renderings(tmp_path):
    """The firewalld policy moat-egress (HOST to the uplink's zone, target DROP) and moat.nft's output
    chain carry the same destinations: the resolver, NTP, the mirrors, the Wazuh manager and the
    blueprint's egress.allow (comments made safe); the rest is logged with moat's prefix and dropped."""
    path = lab_blueprint(tmp_path)
    text = path.read_text()
    assert "  sshd:\n    port: 53201\n" in text
    path.write_text(text.replace("  sshd:\n    port: 53201\n", "  sshd:\n    port: 53201\n" + HOST_EGRESS, 1))
    compiled = check_file(path)
    policy = ET.fromstring(compiled.files[POLICY].content)
    assert policy.get("target") == "DROP"
    assert [z.get("name") for z in policy.iter("ingress-zone")] == ["HOST"]
    assert [z.get("name") for z in policy.iter("egress-zone")] == ["public"]
    accepted = {(r.find("destination").get("address") if r.find("destination") is not None else None,
                 r.find("port").get("port"), r.find("port").get("protocol"))
                for r in policy.iter("rule") if r.find("port") is not None}
    want = {("192.0.2.53/32", "53", "udp"), ("192.0.2.53/32", "53", "tcp"), (None, "123", "udp"), (None, "80", "tcp"),
            (None, "443", "tcp"), ("10.122.0.50/32", "1514", "tcp"), ("10.122.0.50/32", "1515", "tcp"),
            ("198.51.100.40/32", "5432", "tcp")}
    assert accepted == want
    last = list(policy.iter("rule"))[-1]
    assert last.find("log").get("prefix") == "moat egress drop: " and last.find("log/limit").get("value") == "5/m"
    assert last.find("drop") is not None
    assert b"backups - - to the database" in compiled.files[POLICY].content
    nft = compiled.files[NFT].content.decode()
    out = nft[nft.index("chain output"):]
    assert "policy drop;" in out and 'oifname "virbr0" accept' in out
    for a in sorted(want, key=str):
        assert (f"ip daddr {a[0]} " if a[0] else "\t\t") + f"{a[2]} dport {a[1]} accept" in out, a
    assert 'log prefix "moat egress drop: "' in out and out.rstrip().endswith("counter drop\n\t}\n}")


def test_egress_open_turns_the_filter_off(tmp_path):
    path = lab_blueprint(tmp_path)
    text = path.read_text().replace("  sshd:\n    port: 53201\n", "  sshd:\n    port: 53201\n  egress: { open: true }\n", 1)
    assert "      allow:\n        - { port: 587," in text
    text = text.replace("      allow:\n        - { port: 587,", "      open: true\n      allow:\n        - { port: 587,")
    path.write_text(text)
    with pytest.raises(MoatError) as info:  # open and allow together: the author must pick one
        check_file(path)
    assert [d.rule for d in info.value.diagnostics] == ["egress-contradiction"]
    path.write_text(text.replace("      open: true\n      allow:\n        - { port: 587,", "      open: true\n      allow: []\n        # { port: 587,"))
    compiled = check_file(path)
    assert ET.fromstring(compiled.files[POLICY].content).get("target") == "ACCEPT"
    for rel in (NFT, "vms/nextcloud/cloud-init/nftables.conf"):
        out = compiled.files[rel].content.decode().split("chain output", 1)[1]
        assert "policy accept;" in out and " dport " not in out, rel


def test_a_description_cannot_end_an_xml_comment(tmp_path):
    text = lab_blueprint(tmp_path).read_text().replace("IPsec NAT traversal", "IPsec -- NAT --> traversal <x>")
    bp = write(tmp_path / "bp2.yaml", text)
    _, stored = build_file(bp, tmp_path / "out")
    zone = (stored.path / ZONE).read_text()
    ET.fromstring(zone.encode())  # still well-formed
    assert "IPsec - - NAT - -&gt; traversal &lt;x&gt;" in zone


# --- behaviour: the rules loaded for real in network namespaces -------------------------------

LAB_ALLOW = """
firewall:
  allow:
    - { port: 8443, proto: tcp, from: 192.0.2.20/32, description: admin console from one address }
    - { port: 4500, proto: udp, description: IPsec NAT traversal }
"""
HOST, CLIENT, OTHER_CLIENT, GATEWAY = "192.0.2.10", "192.0.2.20", "192.0.2.21", "10.122.0.1"
RESOLVER = "192.0.2.53"  # the lab blueprint's host.uplink.dns, on the client side


def lab_blueprint(tmp_path: Path) -> Path:
    """Example A moved into test ranges (TEST-NET uplink, 10.122.0.0/24 for the VMs), plus two
    firewall.allow entries, one only from CLIENT."""
    text = EXAMPLE.read_text()
    for old, new in (("203.0.113.10/24", f"{HOST}/24"), ("gateway: 203.0.113.1", "gateway: 192.0.2.1"),
                     ("203.0.113.53", "192.0.2.53"), ("192.168.122.", "10.122.0.")):
        assert old in text
        text = text.replace(old, new)
    return write(tmp_path / "lab.yaml", text + LAB_ALLOW)


class Lab(Namespaces):
    """Three network namespaces: a client on the uplink side, the host, and 'VMs' behind a
    bridge-side interface. Interface names are the blueprint's, so its rules apply unchanged."""

    def __init__(self, tmp_path: Path, uplink: str, bridge: str):
        tag = os.getpid()
        self.tmp, self.uplink, self.bridge = tmp_path, uplink, bridge
        self.srv, self.cli, self.vm = f"fw-srv-{tag}", f"fw-cli-{tag}", f"fw-vm-{tag}"
        super().__init__()

    def __enter__(self) -> Lab:
        try:
            for ns in (self.srv, self.cli, self.vm):
                run("ip", "netns", "add", ns, check=True)
                run("ip", "-n", ns, "link", "set", "lo", "up", check=True)
            # created inside the namespaces, so the names never meet this machine's interfaces
            run("ip", "-n", self.srv, "link", "add", self.uplink, "type", "veth", "peer", "name", "eth0",
                "netns", self.cli, check=True)
            run("ip", "-n", self.srv, "link", "add", self.bridge, "type", "veth", "peer", "name", "eth0",
                "netns", self.vm, check=True)
            for ns, dev, addrs in ((self.srv, self.uplink, [f"{HOST}/24"]), (self.srv, self.bridge, [f"{GATEWAY}/24"]),
                                   (self.cli, "eth0", [f"{CLIENT}/24", f"{OTHER_CLIENT}/24", f"{RESOLVER}/24"]),
                                   (self.vm, "eth0", [])):
                for addr in addrs:
                    run("ip", "-n", ns, "addr", "add", addr, "dev", dev, check=True)
                run("ip", "-n", ns, "link", "set", dev, "up", check=True)
            run("ip", "netns", "exec", self.srv, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward", check=True)
            run("ip", "-n", self.cli, "route", "add", "10.122.0.0/24", "via", HOST, check=True)
        except BaseException:
            self.close()
            raise
        return self

    def vm_addresses(self, addresses) -> None:
        for addr in addresses:
            run("ip", "-n", self.vm, "addr", "add", f"{addr}/24", "dev", "eth0", check=True)
        run("ip", "-n", self.vm, "route", "add", "default", "via", GATEWAY, check=True)

    def namespaces(self) -> tuple[str, ...]:
        return (self.srv, self.cli, self.vm)


def start_firewalld_in(lab: Lab, ns: str, etc: Path, env: dict) -> subprocess.Popen:
    """The real firewalld in namespace `ns` of `lab`, on the private D-Bus of `env`, reading its
    configuration from `etc`; a private /run too: nothing of this machine's firewalld is touched."""
    daemon = lab.spawn(ns, "unshare", "--mount", "--propagation", "private", "sh", "-c",
                       "mount -t tmpfs moat-test /run && exec firewalld --nofork --nopid "
                       f"--system-config {etc} --default-config /usr/lib/firewalld --log-target console", env=env)
    deadline = time.monotonic() + 60
    while run("firewall-cmd", "--state", env=env).stdout.strip() != "running":
        assert daemon.poll() is None, f"firewalld exited: {daemon.stdout.read()}"
        assert time.monotonic() < deadline, "firewalld did not start"
        time.sleep(0.2)
    return daemon


def hook_dnat(compiled, uplink: str) -> str:
    """What the libvirt qemu hook adds while the VMs run (another family renders the real hook)."""
    rules = "\n".join(f'iifname "{uplink}" ip daddr {HOST} {f.forward.proto} dport {f.forward.port} '
                      f"dnat to {f.address}:{f.to_port}" for f in compiled.plan.forwards)
    return ("table ip moat_forwards {\n chain prerouting {\n  type nat hook prerouting priority dstnat; policy accept;\n"
            f"{rules}\n }}\n}}\n")


def probes_and_expectations(lab: Lab, compiled) -> tuple[list[dict], list[dict], list[dict], dict[str, set[str]]]:
    nextcloud = compiled.plan.vm("nextcloud").primary_address
    web = next(f for f in compiled.plan.forwards if f.forward.proto == "tcp")
    vpn = next(f for f in compiled.plan.forwards if f.forward.proto == "udp")
    sshd = compiled.plan.blueprint.host.sshd.port

    def p(id, proto, src, dst, port=0, **kw):
        return dict(id=id, proto=proto, src=src, dst=dst, port=port, **kw)

    outside = [
        p("sshd", "tcp", CLIENT, HOST, sshd),
        p("listening but not opened", "tcp", CLIENT, HOST, 8080),
        p("ssh on 22", "tcp", CLIENT, HOST, 22),
        p("allow from CLIENT, from CLIENT", "tcp", CLIENT, HOST, 8443),
        p("allow from CLIENT, from another address", "tcp", OTHER_CLIENT, HOST, 8443),
        p("allowed udp", "udp", CLIENT, HOST, 4500),
        p("udp not opened", "udp", CLIENT, HOST, 4501),
        p("forwarded tcp", "tcp", CLIENT, HOST, web.forward.port),
        p("forwarded udp", "udp", OTHER_CLIENT, HOST, vpn.forward.port),
        p("VM address directly", "tcp", CLIENT, str(nextcloud), web.to_port),
        p("ping", "icmp", CLIENT, HOST, type=8),
        p("icmp timestamp", "icmp", CLIENT, HOST, type=13),
    ]
    inside = [
        p("VM out through the uplink", "tcp", str(nextcloud), CLIENT, 7000),
        p("VM asks the host's DNS", "udp", str(nextcloud), GATEWAY, 53),
        p("VM to the host's sshd", "tcp", str(nextcloud), GATEWAY, sshd),
    ]
    # the host's own outbound connections (egress): its resolver, the mirrors' HTTPS, its VMs; not the rest
    host_out = [
        p("host asks its resolver", "udp", HOST, RESOLVER, 53),
        p("host to HTTPS", "tcp", HOST, CLIENT, 443),
        p("host to its VM", "tcp", GATEWAY, str(nextcloud), web.to_port),
        p("host asks another resolver", "udp", HOST, CLIENT, 53),
        p("host to an undeclared port", "tcp", HOST, CLIENT, 7000),
    ]
    out_blocked = {"dropped", "rejected:EPERM"}
    # the listener is there: a refusal (RST or ICMP port-unreachable) is the firewall's too
    blocked = {"dropped", "refused", "rejected:EHOSTUNREACH", "rejected:EACCES"}
    expect = {
        "sshd": {"open:host:hi"},
        "listening but not opened": {"dropped"},
        "ssh on 22": {"dropped"},
        "allow from CLIENT, from CLIENT": {"open:host:hi"},
        "allow from CLIENT, from another address": {"dropped"},
        "allowed udp": {"open:host:hi"},
        "udp not opened": {"dropped"},
        "forwarded tcp": {"open:vm:hi"},
        "forwarded udp": {"open:vm:hi"},
        "VM address directly": {"dropped"},
        "ping": {"open:icmp"},
        "icmp timestamp": {"dropped"},
        "VM out through the uplink": {"open:client:hi"},
        "VM asks the host's DNS": {"open:host:hi"},
        "VM to the host's sshd": blocked,
        "host asks its resolver": {"open:client:hi"},
        "host to HTTPS": {"open:client:hi"},
        "host to its VM": {"open:vm:hi"},
        "host asks another resolver": out_blocked,
        "host to an undeclared port": out_blocked,
    }
    return outside, inside, host_out, expect


def exercise(lab: Lab, compiled, load_rules) -> None:
    """Same listeners and probes whatever loads the rules: the results must be the expected ones."""
    forwards = compiled.plan.forwards
    lab.vm_addresses(sorted({str(f.address) for f in forwards}))
    sshd = compiled.plan.blueprint.host.sshd.port
    lab.serve(lab.srv, "host", [("tcp", sshd), ("tcp", 8080), ("tcp", 8443), ("udp", 4500), ("udp", 4501), ("udp", 53)])
    lab.serve(lab.vm, "vm", sorted({(f.forward.proto, f.to_port) for f in forwards}))
    lab.serve(lab.cli, "client", [("tcp", 7000), ("tcp", 443), ("udp", 53)])
    outside, inside, host_out, expect = probes_and_expectations(lab, compiled)
    # without rules, everything answers: the probes can tell open from closed
    unfiltered = {"listening but not opened": "open:host:hi", "ssh on 22": "refused", "udp not opened": "open:host:hi",
                  "allow from CLIENT, from another address": "open:host:hi", "VM address directly": "open:vm:hi",
                  "icmp timestamp": "open:icmp"}
    before = lab.probe(lab.cli, [p for p in outside if p["id"] in unfiltered])
    assert before == unfiltered, before
    before = lab.probe(lab.srv, [p for p in host_out if p["id"] != "host to its VM"])
    assert set(before.values()) == {"open:client:hi"}, before

    load_rules()
    run("ip", "netns", "exec", lab.srv, "nft", "-f", str(write(lab.tmp / "hook.nft", hook_dnat(compiled, lab.uplink))),
        check=True)
    got = {**lab.probe(lab.cli, outside), **lab.probe(lab.vm, inside), **lab.probe(lab.srv, host_out)}
    wrong = {k: v for k, v in got.items() if v not in expect[k]}
    assert not wrong, f"unexpected: {wrong}\nall: {got}"

    # path MTU: a 'fragmentation needed' for a flow the host answered gets through and lowers the MTU
    route = run("ip", "-n", lab.srv, "route", "get", CLIENT, check=True).stdout
    assert "mtu" not in route
    assert lab.probe(lab.cli, [dict(id="mtu", proto="mtu", src=CLIENT, dst=HOST, port=4500, mtu=1280)]) == {"mtu": "sent"}
    deadline = time.monotonic() + 5
    while "mtu 1280" not in (route := run("ip", "-n", lab.srv, "route", "get", CLIENT).stdout) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "mtu 1280" in route, route


@pytest.mark.slow
def test_nftables_ruleset_in_network_namespaces(tmp_path):
    compiled = check_file(lab_blueprint(tmp_path))
    uplink = compiled.plan.blueprint.host.uplink.interface
    ruleset = write(tmp_path / "moat.nft", compiled.files[NFT].content.decode())
    with Lab(tmp_path, uplink, "virbr0") as lab:
        exercise(lab, compiled, lambda: run("ip", "netns", "exec", lab.srv, "nft", "-f", str(ruleset), check=True))
        # the two blocked host connections reached the output chain's last rule (logged, rate-limited)
        assert lab.drops_counted(lab.srv) >= 2
        # loading it again replaces the table instead of doubling it
        run("ip", "netns", "exec", lab.srv, "nft", "-f", str(ruleset), check=True)
        tables = run("ip", "netns", "exec", lab.srv, "nft", "list", "tables", check=True).stdout.split("\n")
        assert sorted(t for t in tables if t) == ["table inet moat", "table ip moat_forwards"]


# libvirt puts its bridges in a zone of its own (it ships it); this stand-in does what that
# zone does for the test: VMs' traffic is forwarded, DNS/DHCP served, the rest to the host refused
LIBVIRT_ZONE = """<?xml version="1.0" encoding="utf-8"?>
<zone target="ACCEPT">
  <short>libvirt</short>
  <interface name="{bridge}"/>
  <service name="dhcp"/>
  <service name="dns"/>
  <rule priority="32767"><reject/></rule>
</zone>
"""

BUS = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/><allow own="*"/><allow send_destination="*"/><allow receive_sender="*"/>
  </policy>
</busconfig>
"""


@pytest.mark.slow
def test_firewalld_zone_in_network_namespaces(tmp_path):
    """The real firewalld daemon, on a private D-Bus, inside the host namespace, with the
    generated zone and firewalld.conf: the same probes give the same answers."""
    compiled = check_file(lab_blueprint(tmp_path))
    uplink = compiled.plan.blueprint.host.uplink.interface
    etc = tmp_path / "etc-firewalld"
    write(etc / "firewalld.conf", compiled.files[CONF].content.decode())
    write(etc / "zones" / "public.xml", compiled.files[ZONE].content.decode())
    write(etc / "zones" / "libvirt.xml", LIBVIRT_ZONE.format(bridge="virbr0"))
    write(etc / "policies" / "moat-egress.xml", compiled.files[POLICY].content.decode())
    socket_path = tmp_path / "bus"
    env = {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={socket_path}"}

    with Lab(tmp_path, uplink, "virbr0") as lab:
        bus = subprocess.Popen(["dbus-daemon", "--nofork", f"--config-file={write(tmp_path / 'bus.conf', BUS.format(socket=socket_path))}"],
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        lab.procs.insert(0, bus)  # stopped last

        def start_firewalld():
            start_firewalld_in(lab, lab.srv, etc, env)
            zones = run("firewall-cmd", "--get-active-zones", env=env, check=True).stdout
            assert "public" in zones and uplink in zones and "libvirt" in zones, zones

        exercise(lab, compiled, start_firewalld)


@pytest.mark.slow
def test_a_kickstart_vm_egress_policy_in_firewalld(tmp_path):
    """A kickstart VM's firewalld policy moat-egress (HOST to ANY), loaded by the real firewalld in
    the VM's namespace beside the stock public zone its kickstart configures: DNS to its gateway,
    HTTPS and Wazuh to the manager go out; another resolver and an undeclared port do not."""
    compiled = check_file(lab_blueprint(tmp_path))
    vpn = compiled.plan.vm("vpn")
    assert vpn.vm.install.method == "kickstart"
    etc = tmp_path / "etc-firewalld"
    write(etc / "firewalld.conf", "DefaultZone=public\nFirewallBackend=nftables\n")
    write(etc / "policies" / "moat-egress.xml", compiled.files["vms/vpn/firewalld/policies/moat-egress.xml"].content.decode())
    socket_path = tmp_path / "bus"
    env = {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={socket_path}"}
    manager = str(compiled.plan.wazuh.manager_address)
    internet = "198.51.100.7"
    with Pair("fw-ks", [("eth0", [f"{vpn.primary_address}/24"], "virbr0", [f"{GATEWAY}/24"])], GATEWAY) as lab:
        for addr in (manager, internet):
            run("ip", "-n", lab.outside, "addr", "add", f"{addr}/32", "dev", "lo", check=True)
        bus = subprocess.Popen(["dbus-daemon", "--nofork", f"--config-file={write(tmp_path / 'bus.conf', BUS.format(socket=socket_path))}"],
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        lab.procs.insert(0, bus)  # stopped last
        lab.serve(lab.outside, "out", [("udp", 53), ("tcp", 443), ("tcp", 1514), ("tcp", 7000)])
        src = str(vpn.primary_address)
        probes = [dict(id=id, proto=proto, src=src, dst=dst, port=port) for id, proto, dst, port in (
            ("DNS to the gateway", "udp", GATEWAY, 53), ("HTTPS", "tcp", internet, 443),
            ("Wazuh manager", "tcp", manager, 1514), ("another resolver", "udp", internet, 53),
            ("undeclared port", "tcp", internet, 7000))]
        blocked = {"another resolver", "undeclared port"}
        assert set(lab.probe(lab.inside, probes).values()) == {"open:out:hi"}
        start_firewalld_in(lab, lab.inside, etc, env)
        policies = run("firewall-cmd", "--get-active-policies", env=env, check=True).stdout
        assert "moat-egress" in policies, policies
        got = lab.probe(lab.inside, probes)
        wrong = {k: v for k, v in got.items() if v != "open:out:hi" and k not in blocked
                 or k in blocked and v not in {"dropped", "rejected:EPERM", "rejected:EACCES"}}
        assert not wrong, f"unexpected: {wrong}\nall: {got}"
