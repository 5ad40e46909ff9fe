"""Setup B, the home side of the tunnel: the VPS's requests for this host's sites, arriving on the
OpenVPN tunnel `tun-moat` at this host's tunnel address, reach the VM of the matching forward;
nothing else arriving on the tunnel does (no host port, no other forward, no other VM, nothing
onwards to the uplink). One place decides where each forward arrives (derive.ResolvedForward.ingress);
the qemu hook, the nftables policy and the firewalld zones follow it. Proved with the real hook
and the real rules (nft, and the firewalld daemon) in network namespaces made here, the tunnel
being a veth named tun-moat whose other end plays the VPS and can send any packet."""

from __future__ import annotations

import os
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from compiler.diagnostics import MoatError, position_of
from compiler.pipeline import build_file, check_file
from compiler.render import firewall, hooks
from compiler.render._trace import trace
from compiler.derive import TUN_DEV
from compiler.verify import run_validators

from .conftest import ROOT
from .netns import Namespaces
from .test_firewall import BUS, LIBVIRT_ZONE, start_firewalld_in

VPS_FRONT = ROOT / "blueprints" / "vps-front.yaml"
EXAMPLE = ROOT / "blueprints" / "example.yaml"
HOOK = "host/libvirt/hooks/qemu"
NFT = "host/nftables/moat.nft"
CONF = "host/firewalld/firewalld.conf"
PUBLIC_ZONE = "host/firewalld/zones/public.xml"
TUNNEL_ZONE = f"host/firewalld/zones/{firewall.TUNNEL_ZONE}.xml"
EGRESS_POLICY = "host/firewalld/policies/moat-egress.xml"
FIREWALLD_CHECK = str(firewall.VERIFY_TOOLS / "firewall-firewalld.sh")

# example B plus: a second forward that the VPS does not use, and a site of this host on another
# port with its forward (and one of home2 on a port that is forwarded here too: not tunnelled)
EXTRA_FORWARDS = """  - { port: 443, proto: tcp, to: nextcloud }
  - { port: 8080, proto: tcp, to: nextcloud, to_port: 80 }
  - { port: 8443, proto: tcp, to: nextcloud }
  - { port: 9443, proto: tcp, to: nextcloud }
"""
EXTRA_SITES = """    - { host: photos.example.org, client: home2 }
    - { host: files.example.org, client: home1, port: 8443 }
    - { host: other.example.org, client: home2, port: 9443 }
"""


def run(*cmd: str, check: bool = False, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stdout}{proc.stderr}")
    return proc


def variant(tmp_path: Path, *replacements: tuple[str, str], name: str = "bp.yaml") -> Path:
    text = VPS_FRONT.read_text()
    for old, new in replacements:
        assert old in text, old
        text = text.replace(old, new, 1)
    path = tmp_path / name
    path.write_text(text)
    return path


def lab_blueprint(tmp_path: Path) -> Path:
    return variant(tmp_path, ("  - { port: 443, proto: tcp, to: nextcloud }\n", EXTRA_FORWARDS),
                   ("    - { host: photos.example.org, client: home2 }\n", EXTRA_SITES), name="lab.yaml")


def text(compiled, path: str) -> str:
    return compiled.files[path].content.decode()


# --- where each forward arrives -------------------------------------------------------------

def test_forward_ingress_of_the_examples():
    plan = check_file(VPS_FRONT).plan
    [forward] = plan.forwards
    key, ingress = (forward.forward.proto, forward.forward.port), forward.ingress
    assert key == ("tcp", 443)
    assert [(i.interface, str(i.address), i.tunnel) for i in ingress] == [("eno1", "192.168.1.20", False),
                                                                         (TUN_DEV, "172.28.0.10", True)]
    assert [s.host for s in ingress[1].sites] == ["cloud.example.org"]  # photos is home2's
    # example A has no VPS: every forward arrives on the uplink only, and there is no tunnel zone
    compiled = check_file(EXAMPLE)
    assert compiled.plan.tunnel is None
    assert {tuple(i.interface for i in f.ingress) for f in compiled.plan.forwards} == {("enp1s0f1",)}
    assert TUNNEL_ZONE not in compiled.files
    assert TUN_DEV not in text(compiled, HOOK) + text(compiled, NFT)


def test_only_the_forwards_of_this_hosts_sites_are_tunnelled(tmp_path):
    compiled = check_file(lab_blueprint(tmp_path))
    hook = text(compiled, HOOK)
    table = [line.split() for line in hook.splitlines() if line.strip().startswith("forward ")]
    assert sorted(line[1:] for line in table) == sorted([
        ["tcp", "443", '"192.168.122.5"', "443", '"virbr0"', '"eno1"', '"192.168.1.20"'],
        ["tcp", "443", '"192.168.122.5"', "443", '"virbr0"', f'"{TUN_DEV}"', '"172.28.0.10"'],
        ["tcp", "8080", '"192.168.122.5"', "80", '"virbr0"', '"eno1"', '"192.168.1.20"'],
        ["tcp", "8443", '"192.168.122.5"', "8443", '"virbr0"', '"eno1"', '"192.168.1.20"'],
        ["tcp", "8443", '"192.168.122.5"', "8443", '"virbr0"', f'"{TUN_DEV}"', '"172.28.0.10"'],
        ["tcp", "9443", '"192.168.122.5"', "9443", '"virbr0"', '"eno1"', '"192.168.1.20"'],  # home2's site
    ])
    assert "# from the VPS through the tunnel, for files.example.org" in hook
    nft = [line.strip() for line in text(compiled, NFT).splitlines()]
    tunnel = [line for line in nft if TUN_DEV in line and not line.startswith("#")]
    assert tunnel == [f'iifname "{TUN_DEV}" ip daddr 192.168.122.5 tcp dport 443 ct status dnat accept',
                      f'iifname "{TUN_DEV}" ip daddr 192.168.122.5 tcp dport 8443 ct status dnat accept']
    # nothing of the host is opened on the tunnel
    assert not any(TUN_DEV in line for line in nft if "dport" in line and "ct status dnat" not in line)


def test_the_tunnel_has_a_drop_zone_of_its_own(tmp_path):
    compiled = check_file(lab_blueprint(tmp_path))
    zone = ET.fromstring(compiled.files[TUNNEL_ZONE].content)
    assert zone.get("target") == "DROP" and zone.findtext("short") == firewall.TUNNEL_ZONE
    assert [i.get("name") for i in zone.iter("interface")] == [TUN_DEV]
    for absent in ("port", "service", "rule", "forward", "masquerade", "forward-port", "source"):
        assert zone.find(absent) is None, absent
    public = ET.fromstring(compiled.files[PUBLIC_ZONE].content)
    assert [i.get("name") for i in public.iter("interface")] == ["eno1"]
    raw = text(compiled, TUNNEL_ZONE)
    assert "<!-- 443/tcp forwarded to nextcloud:443, for cloud.example.org -->" in raw
    assert "<!-- 8443/tcp forwarded to nextcloud:8443, for files.example.org -->" in raw
    assert "9443" not in raw and "8080" not in raw


@pytest.mark.slow
def test_validators_pass_on_both_examples_and_the_lab(example, tmp_path):
    for blueprint in (example, lab_blueprint(tmp_path)):
        _, stored = build_file(blueprint, tmp_path / blueprint.stem)
        mine = (HOOK, NFT, CONF, PUBLIC_ZONE, TUNNEL_ZONE)
        findings = [f for f in run_validators(stored.path) if f.path in mine]
        assert {f.path for f in findings} == {p for p in mine if (stored.path / p).exists()}
        assert (stored.path / TUNNEL_ZONE).exists() == (blueprint != EXAMPLE)
        bad = [f"{f.path}: {f.output}" for f in findings if not f.ok]
        assert not bad, "\n".join(bad)


@pytest.mark.parametrize("old, new, says", [
    (f'<interface name="{TUN_DEV}"/>', '<interface name="tun/moat"/>', "INVALID_INTERFACE"),
    ('<icmp-block name="echo-request"/>', '<icmp-block name="echo-requests"/>', "INVALID_ICMPTYPE"),
    ('target="DROP"', 'target="DROPPED"', "INVALID_TARGET"),
])
def test_firewalld_check_rejects_a_broken_tunnel_zone(tmp_path, old, new, says):
    raw = text(check_file(VPS_FRONT), TUNNEL_ZONE)
    assert old in raw
    zone = tmp_path / "firewalld" / "zones" / f"{firewall.TUNNEL_ZONE}.xml"
    zone.parent.mkdir(parents=True)
    zone.write_text(raw.replace(old, new, 1))
    proc = run(FIREWALLD_CHECK, str(zone))
    assert proc.returncode != 0 and says in proc.stdout + proc.stderr


def test_hook_check_rejects_a_broken_tunnel_rule(tmp_path):
    raw = text(check_file(VPS_FRONT), HOOK)
    old = f'"{TUN_DEV}" "172.28.0.10"'
    assert old in raw
    bad = tmp_path / "qemu"
    bad.write_text(raw.replace(old, f'"{TUN_DEV}" "172.28.0.300"'))
    bad.chmod(0o555)
    proc = run(*[part.replace("{file}", str(bad)) for part in hooks.VALIDATORS[1].command])
    assert proc.returncode != 0 and "172.28.0.300" in proc.stdout


def test_tunnel_lines_trace_back_to_the_blueprint():
    compiled = check_file(VPS_FRONT)
    vps = ("vps",)
    for path, needle in ((HOOK, f'"{TUN_DEV}" "172.28.0.10"'), (NFT, f'iifname "{TUN_DEV}"')):
        out = compiled.files[path]
        lines = out.content.decode().splitlines()
        traced = trace(out)
        n = next(n for n, line in enumerate(lines, 1) if needle in line)
        if path == HOOK:
            assert vps + ("openvpn", "clients", 0, "address") in traced[n]
            assert ("forwards", 0, "port") in traced[n]
        assert vps + ("openvpn", "clients", 0, "interface") in traced[n]  # the client entry's line
        comment = next(n for n, line in enumerate(lines, 1) if "for cloud.example.org" in line)
        assert traced[comment] == [vps + ("sites", 0, "host")]


# --- the check ------------------------------------------------------------------------------

def test_a_site_of_this_host_without_a_forward_is_an_error(tmp_path):
    bp = variant(tmp_path, ("forwards:\n  - { port: 443, proto: tcp, to: nextcloud }\n",
                            "forwards:\n  - { port: 443, proto: udp, to: nextcloud }\n"))
    with pytest.raises(MoatError) as info:
        check_file(bp)
    [diag] = [d for d in info.value.diagnostics if d.is_error]
    assert diag.rule == "site-unforwarded" and "cloud.example.org" in diag.message
    assert "{ port: 443, proto: tcp, to: nextcloud }" in diag.hint
    line = next(n for n, t in enumerate(bp.read_text().splitlines(), 1) if "cloud.example.org" in t)
    assert position_of(diag, info.value.source)[0] == line
    # the same site served by the other home needs no forward here
    bp = variant(tmp_path, ("forwards:\n  - { port: 443, proto: tcp, to: nextcloud }\n", "forwards: []\n"),
                 ("{ host: cloud.example.org, client: home1 }", "{ host: cloud.example.org, client: home2 }"),
                 name="other.yaml")
    compiled = check_file(bp)
    assert TUN_DEV not in text(compiled, NFT).replace(f"tunnel {TUN_DEV}", "")
    assert (TUNNEL_ZONE in compiled.files) and "forwarded" not in text(compiled, TUNNEL_ZONE)


# --- behaviour in network namespaces ---------------------------------------------------------

HOST, LAN_CLIENT, TUNNEL, VPS_TUNNEL = "192.168.1.20", "192.168.1.30", "172.28.0.10", "172.28.0.1"
VPS_PUBLIC = "198.51.100.20"  # the VPS's address in vps-front.yaml: the uplink side holds it too
NEXTCLOUD, OTHER_VM, GATEWAY = "192.168.122.5", "192.168.122.6", "192.168.122.1"
SSHD = 53201

# libvirt's nftables backend (libvirt >= 10): new connections into the bridge are rejected;
# the hook's accepts go on top of this chain
LIBVIRT_NFT = """table ip libvirt_network {
  chain forward {
    type filter hook forward priority filter; policy accept;
    oifname "virbr0" ip daddr 192.168.122.0/24 ct state related,established counter accept
    oifname "virbr0" counter reject
  }
}
"""


class Lab(Namespaces):
    """     lan 192.168.1.30 ---- eno1 192.168.1.20
                                  [home]  virbr0 192.168.122.1 (bridge) -- vm 192.168.122.5, .6
        vps 172.28.0.1 ---- tun-moat 172.28.0.10
    `home` holds the blueprint's interface names, so its rules apply unchanged. `vps` routes
    everything through the tunnel, so it can try any destination the tunnel could carry."""

    def __init__(self, tmp: Path):
        tag = os.getpid()
        self.tmp = tmp
        self.ns = {role: f"tun-{role}-{tag}" for role in ("home", "lan", "vps", "vm")}
        super().__init__()

    def ip(self, role: str, *args: str) -> None:
        run("ip", "-n", self.ns[role], *args, check=True)

    def __enter__(self) -> Lab:
        try:
            for name in self.ns.values():
                run("ip", "netns", "add", name, check=True)
                run("ip", "-n", name, "link", "set", "lo", "up", check=True)
            home = self.ns["home"]
            self.ip("home", "link", "add", "eno1", "type", "veth", "peer", "name", "eth0", "netns", self.ns["lan"])
            self.ip("home", "link", "add", TUN_DEV, "type", "veth", "peer", "name", "eth0", "netns", self.ns["vps"])
            self.ip("home", "link", "add", "virbr0", "type", "bridge")
            self.ip("home", "link", "add", "vnet0", "master", "virbr0", "type", "veth", "peer", "name", "eth0",
                    "netns", self.ns["vm"])
            for role, dev, addrs in (("home", "eno1", [f"{HOST}/24"]), ("home", TUN_DEV, [f"{TUNNEL}/24"]),
                                     ("home", "virbr0", [f"{GATEWAY}/24"]), ("home", "vnet0", []),
                                     ("lan", "eth0", [f"{LAN_CLIENT}/24", f"{VPS_PUBLIC}/32"]),
                                     ("vps", "eth0", [f"{VPS_TUNNEL}/24"]),
                                     ("vm", "eth0", [f"{NEXTCLOUD}/24", f"{OTHER_VM}/24"])):
                for addr in addrs:
                    self.ip(role, "addr", "add", addr, "dev", dev)
                self.ip(role, "link", "set", dev, "up")
            self.ip("vm", "route", "add", "default", "via", GATEWAY)
            self.ip("vps", "route", "add", "default", "via", TUNNEL)
            self.ip("lan", "route", "add", "default", "via", HOST)
            self.ip("home", "route", "add", VPS_PUBLIC, "via", LAN_CLIENT)  # the Internet, out on the uplink
            run("ip", "netns", "exec", home, "sysctl", "-qw", "net.ipv4.ip_forward=1", check=True)
        except BaseException:
            self.close()
            raise
        return self

    def namespaces(self) -> tuple[str, ...]:
        return tuple(self.ns.values())

    def where(self, role: str) -> str:
        return self.ns[role]

    def sh(self, role: str, *cmd: str, **kw) -> subprocess.CompletedProcess:
        return run("ip", "netns", "exec", self.ns[role], *cmd, **kw)


def p(id: str, proto: str, src: str, dst: str, port: int = 0, **kw) -> dict:
    return dict(id=id, proto=proto, src=src, dst=dst, port=port, **kw)


FROM_VPS = [
    p("site cloud (443)", "tcp", VPS_TUNNEL, TUNNEL, 443),
    p("site files (8443)", "tcp", VPS_TUNNEL, TUNNEL, 8443),
    p("forward of no site of this host (8080)", "tcp", VPS_TUNNEL, TUNNEL, 8080),
    p("home2's site port (9443)", "tcp", VPS_TUNNEL, TUNNEL, 9443),
    p("host sshd at the tunnel address", "tcp", VPS_TUNNEL, TUNNEL, SSHD),
    p("host at its uplink address", "tcp", VPS_TUNNEL, HOST, 443),
    p("host sshd at its uplink address", "tcp", VPS_TUNNEL, HOST, SSHD),
    p("VM address directly", "tcp", VPS_TUNNEL, NEXTCLOUD, 443),
    p("other VM", "tcp", VPS_TUNNEL, OTHER_VM, 443),
    p("onwards to the uplink side", "tcp", VPS_TUNNEL, LAN_CLIENT, 7000),
    p("udp to the tunnel address", "udp", VPS_TUNNEL, TUNNEL, 443),
    p("ping", "icmp", VPS_TUNNEL, TUNNEL, type=8),
]
FROM_LAN = [
    p("uplink forward 443", "tcp", LAN_CLIENT, HOST, 443),
    p("uplink forward 8080", "tcp", LAN_CLIENT, HOST, 8080),
    p("uplink sshd", "tcp", LAN_CLIENT, HOST, SSHD),
    p("tunnel address from the uplink", "tcp", LAN_CLIENT, TUNNEL, 443),
]
# libvirt's reject may see a packet to the bridge before the host firewall drops it
BLOCKED = {"dropped", "refused", "rejected:EHOSTUNREACH", "rejected:EACCES"}
EXPECT: dict[str, str | set[str]] = {
    "site cloud (443)": "open:vm:hi",
    "site files (8443)": "open:vm:hi",
    "forward of no site of this host (8080)": "dropped",
    "home2's site port (9443)": "dropped",
    "host sshd at the tunnel address": "dropped",
    "host at its uplink address": "dropped",
    "host sshd at its uplink address": "dropped",
    "VM address directly": BLOCKED,
    "other VM": BLOCKED,
    "onwards to the uplink side": "dropped",
    "udp to the tunnel address": "dropped",
    "ping": "open:icmp",
    "uplink forward 443": "open:vm:hi",
    "uplink forward 8080": "open:vm:hi",
    "uplink sshd": "open:host:hi",
    "tunnel address from the uplink": "dropped",
    "the host's own udp out on the uplink (OpenVPN)": "open:lan:hi",
    # egress: the host's OpenVPN goes to its VPS only (an output chain's drop is EPERM to the sender)
    "the host's own udp to another address (no VPS)": {"dropped", "rejected:EPERM"},
}
# without any rule loaded, these answer: the probes can tell open from closed
UNFILTERED = {
    "host sshd at the tunnel address": "open:host:hi",
    "host sshd at its uplink address": "open:host:hi",
    "VM address directly": "open:vm:hi",
    "other VM": "open:vm:hi",
    "onwards to the uplink side": "open:lan:hi",
    "udp to the tunnel address": "open:host:hi",
}


def exercise(lab: Lab, compiled, load_rules) -> None:
    bundle = lab.tmp / "bundle"
    for path in (HOOK, "host/libvirt/domains/nextcloud.xml"):
        file = bundle / path
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_bytes(compiled.files[path].content)
        file.chmod(compiled.files[path].mode)
    lab.serve("home", "host", [("tcp", SSHD), ("tcp", 8080), ("udp", 443)])
    lab.serve("vm", "vm", [("tcp", 443), ("tcp", 80), ("tcp", 8443), ("tcp", 9443)])
    lab.serve("lan", "lan", [("tcp", 7000), ("udp", 1194)])
    before = lab.probe("vps", [q for q in FROM_VPS if q["id"] in UNFILTERED])
    assert before == {k: v for k, v in UNFILTERED.items() if k in before}, before

    run("ip", "netns", "exec", lab.ns["home"], "nft", "-f", str(write(lab.tmp / "libvirt.nft", LIBVIRT_NFT)), check=True)
    load_rules()
    # the VM starts: libvirt runs the generated hook, domain XML on stdin
    proc = subprocess.run(["ip", "netns", "exec", lab.ns["home"], str(bundle / HOOK), "nextcloud", "start", "begin", "-"],
                          input=compiled.files["host/libvirt/domains/nextcloud.xml"].content.decode(),
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0 and proc.stdout == "", proc.stderr
    accepts = lab.sh("home", "nft", "list", "chain", "ip", "libvirt_network", "forward", check=True).stdout
    assert f'iifname "{TUN_DEV}" oifname "virbr0" ip daddr 192.168.122.5 tcp dport 443 ct status dnat' in accepts

    got = {**lab.probe("vps", FROM_VPS), **lab.probe("lan", FROM_LAN),
           # the OpenVPN client's own packets: out on the uplink to the VPS, replies back in
           **lab.probe("home", [p("the host's own udp out on the uplink (OpenVPN)", "udp", HOST, VPS_PUBLIC, 1194),
                                p("the host's own udp to another address (no VPS)", "udp", HOST, LAN_CLIENT, 1194)])}
    wrong = {k: v for k, v in got.items() if v not in (EXPECT[k] if isinstance(EXPECT[k], set) else {EXPECT[k]})}
    assert not wrong, f"unexpected: {wrong}\nall: {got}"

    # the VM stops: its DNAT is gone, the tunnel carries nothing to it any more
    proc = subprocess.run(["ip", "netns", "exec", lab.ns["home"], str(bundle / HOOK), "nextcloud", "stopped", "end", "-"],
                          input="<domain/>", capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert lab.probe("vps", FROM_VPS[:1]) == {"site cloud (443)": "dropped"}


def write(path: Path, content: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    return path


@pytest.mark.slow
def test_site_requests_from_the_tunnel_reach_the_vm_with_the_nftables_policy(tmp_path):
    compiled = check_file(lab_blueprint(tmp_path))
    ruleset = write(tmp_path / "moat.nft", text(compiled, NFT))
    with Lab(tmp_path) as lab:
        exercise(lab, compiled, lambda: lab.sh("home", "nft", "-f", str(ruleset), check=True))


@pytest.mark.slow
def test_site_requests_from_the_tunnel_reach_the_vm_with_firewalld(tmp_path):
    """The real firewalld daemon on a private D-Bus in the home namespace, with the generated
    firewalld.conf, zones (public, moat-tunnel) and egress policy, and a stand-in of libvirt's zone."""
    compiled = check_file(lab_blueprint(tmp_path))
    etc = tmp_path / "etc-firewalld"
    for path in (CONF, PUBLIC_ZONE, TUNNEL_ZONE, EGRESS_POLICY):
        write(etc / Path(path).relative_to("host/firewalld"), text(compiled, path))
    write(etc / "zones" / "libvirt.xml", LIBVIRT_ZONE.format(bridge="virbr0"))
    socket_path = tmp_path / "bus"
    env = {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={socket_path}"}

    with Lab(tmp_path) as lab:
        bus = subprocess.Popen(["dbus-daemon", "--nofork", f"--config-file={write(tmp_path / 'bus.conf', BUS.format(socket=socket_path))}"],
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        lab.procs.insert(0, bus)  # stopped last

        def start_firewalld():
            start_firewalld_in(lab, "home", etc, env)
            zone = run("firewall-cmd", f"--get-zone-of-interface={TUN_DEV}", env=env, check=True).stdout.strip()
            assert zone == firewall.TUNNEL_ZONE

        exercise(lab, compiled, start_firewalld)
