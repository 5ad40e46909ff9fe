"""cloud-init NoCloud seeds of image VMs: checked by cloud-init, netplan, nft and shellcheck.

Behaviour: the VM's nftables ruleset is loaded in a network namespace and probed with real
TCP connections; netplan renders the network-config into systemd-networkd files.
"""

from __future__ import annotations

import os
import subprocess
import xml.etree.ElementTree as ET
from contextlib import contextmanager
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from compiler.pipeline import check_file
from compiler.render import cloudinit
from compiler.render.luks import INSTALL_PATH as LUKS_INSTALL_PATH
from compiler.render.luks import script_path
from compiler.verify import validators_for, which

from .conftest import ROOT
from .netns import Namespaces
from .test_wazuh import validate

EXAMPLE = ROOT / "blueprints" / "example.yaml"
VPS_FRONT = ROOT / "blueprints" / "vps-front.yaml"
SEED = "vms/nextcloud/cloud-init/"


def load(text: str):
    return YAML(typ="safe", pure=True).load(text)


def seed(files: dict, name: str) -> str:
    return files[SEED + name].content.decode()


def run_validator(path: str, file: Path) -> list[subprocess.CompletedProcess]:
    return [subprocess.run([p.replace("{file}", str(file)) for p in v.command], capture_output=True, text=True,
                           stdin=subprocess.DEVNULL) for v in validators_for(path)]


# --- the real tools -----------------------------------------------------------------------


@pytest.mark.slow
def test_every_seed_file_passes_its_validators(example, tmp_path):
    findings = validate(example, tmp_path, lambda path: "/cloud-init/" in path)
    tools = {(f.path.rsplit("/", 1)[1], Path(f.validator.command[0]).name) for f in findings}
    assert tools == {("user-data", "cloudinit.sh"), ("network-config", "cloudinit.sh"),
                     ("network-config", "cloudinit-netplan.sh"), ("nftables.conf", "cloudinit-nft.sh"),
                     ("moat-firstboot", "shellcheck")}
    bad = [f"{f.path} ({f.validator.command[0]}): {f.output}" for f in findings if not f.ok]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("name, good, bad, message", [
    # a boolean that is not one: cloud-init's schema rejects the user
    ("user-data", "lock_passwd: true", "lock_passwd: maybe", "is not valid under any of the given schemas"),
    # cloud-init 22.4 cannot render "default" as a route destination for networkd or ENI
    ("network-config", "to: 0.0.0.0/0", "to: default", "cannot render it for networkd"),
    ("network-config", "/24", "/33", "invalid prefix length"),
    ("nftables.conf", "policy drop;", "policy dorp;", "Error"),
    ("moat-firstboot", '[ "$rc" -eq 0 ]', '[ "$rc" == 0 ]', "SC3014"),
])
def test_validators_reject_a_broken_seed(tmp_path, name, good, bad, message):
    text = seed(check_file(EXAMPLE).files, name)
    assert good in text
    broken = tmp_path / name
    broken.write_text(text.replace(good, bad, 1))
    results = run_validator(SEED + name, broken)
    assert any(r.returncode != 0 and message in r.stdout + r.stderr for r in results), \
        [(r.returncode, r.stdout + r.stderr) for r in results]
    # and the line is named, for provenance
    assert any(f"{broken}:" in r.stdout + r.stderr or " line " in r.stdout + r.stderr for r in results if r.returncode)


def test_validators_are_found():
    for name in ("user-data", "network-config", "nftables.conf", "moat-firstboot"):
        assert validators_for(SEED + name)
    assert all(which(v.tool) for name in ("user-data", "network-config") for v in validators_for(SEED + name))


# --- what the seed says ---------------------------------------------------------------------


def test_user_data_users_keys_only(example):
    compiled = check_file(example)
    data = load(seed(compiled.files, "user-data"))
    assert seed(compiled.files, "user-data").startswith("#cloud-config\n")
    assert data["hostname"] == "nextcloud"
    assert data["ssh_pwauth"] is False and data["disable_root"] is True
    expected = {u.name: u for u in compiled.plan.vm("nextcloud").users}
    assert {u["name"] for u in data["users"]} == set(expected)  # no "default" user
    for user in data["users"]:
        blueprint_user = expected[user["name"]]
        assert user["lock_passwd"] is True
        assert user["ssh_authorized_keys"] == list(blueprint_user.ssh_keys)
        assert not {"passwd", "hashed_passwd", "plain_text_passwd"} & set(user)
        if blueprint_user.sudo:
            assert user["sudo"] == "ALL=(ALL) NOPASSWD:ALL" and user["groups"] == ["sudo"]
        else:
            assert "sudo" not in user and "groups" not in user
    assert "chpasswd" not in data and "password" not in data
    if example.stem == "vps-front":  # bob is not an administrator there
        assert {u["name"]: "sudo" in u for u in data["users"]} == {"alice": True, "bob": False}


def test_user_data_carries_the_bundle_files_byte_for_byte(example):
    files = check_file(example).files
    data = load(seed(files, "user-data"))
    written = {f["path"]: f for f in data["write_files"]}
    expected = {
        "/etc/ssh/sshd_config": ("vms/nextcloud/ssh/sshd_config", "0600"),
        cloudinit.NFTABLES_PATH: (SEED + "nftables.conf", "0600"),
        LUKS_INSTALL_PATH: (script_path("nextcloud"), "0700"),
        cloudinit.FIRSTBOOT_PATH: (SEED + "moat-firstboot", "0700"),
    }
    if example.stem == "example":
        expected[cloudinit.WAZUH_STAGED] = ("vms/nextcloud/wazuh/ossec.conf", "0600")
    assert set(written) == set(expected)
    for path, (source, mode) in expected.items():
        assert written[path]["content"].encode() == files[source].content, path
        assert written[path]["permissions"] == mode and written[path]["owner"] == "root:root"
    # the VM's own input to the script (the seed's passphrase file) is its argument: the script
    # is the same for every VM with the same steps, and shellcheck judges it once
    assert data["runcmd"] == [[cloudinit.FIRSTBOOT_PATH, "moat/secrets/nextcloud-luks"]]


def test_network_config_matches_the_dhcp_lease_and_the_domain(example):
    files = check_file(example).files
    net = ET.fromstring(files["host/libvirt/networks/default.xml"].content)
    lease = net.find("ip/dhcp/host[@name='nextcloud']")
    gateway = net.find("ip").get("address")
    domain_mac = ET.fromstring(files["host/libvirt/domains/nextcloud.xml"].content).find("devices/interface/mac").get("address")
    config = load(seed(files, "network-config"))["network"]
    assert config["version"] == 2
    eth0 = config["ethernets"]["eth0"]
    assert eth0["match"]["macaddress"] == lease.get("mac") == domain_mac
    assert eth0["set-name"] == "eth0"
    assert eth0["addresses"] == [f"{lease.get('ip')}/24"]
    assert eth0["routes"] == [{"to": "0.0.0.0/0", "via": gateway}]
    assert eth0["nameservers"] == {"addresses": [gateway]}
    assert eth0["dhcp4"] is False and eth0["dhcp6"] is False


def test_instance_id_is_deterministic_and_follows_the_seed(tmp_path):
    first, again = check_file(EXAMPLE).files, check_file(EXAMPLE).files
    meta = load(seed(first, "meta-data"))
    assert meta == load(seed(again, "meta-data"))
    assert meta["local-hostname"] == "nextcloud"
    assert meta["instance-id"] == cloudinit.instance_id("example", "nextcloud", first[SEED + "user-data"].content,
                                                        first[SEED + "network-config"].content)
    assert meta["instance-id"].startswith("iid-example-nextcloud-")
    # another user key changes user-data, hence the instance; so does another address
    changed_users = tmp_path / "users.yaml"
    changed_users.write_text(EXAMPLE.read_text().replace(" alice@laptop", " alice@desktop"))
    changed_net = tmp_path / "net.yaml"
    changed_net.write_text(EXAMPLE.read_text().replace("address: 192.168.122.5,", "address: 192.168.122.6,"))
    ids = {load(seed(check_file(p).files, "meta-data"))["instance-id"] for p in (EXAMPLE, changed_users, changed_net)}
    assert len(ids) == 3


def test_no_secret_in_the_seed(example):
    compiled = check_file(example)
    reference = compiled.plan.blueprint.host.disk.encryption.passphrase
    for name in ("user-data", "meta-data", "network-config", "moat-firstboot", "nftables.conf"):
        text = seed(compiled.files, name)
        # references stay references: no secret is resolved (moat never reads secret values),
        # and the seed never sets a password or a passphrase
        assert "secret:" not in text and reference not in text
        assert "passphrase=" not in text and "passwd:" not in text.replace("lock_passwd:", "")
    # the data disks' passphrase is a file on the seed volume, named in user-data and the script only
    assert "moat/secrets/nextcloud-luks" in seed(compiled.files, "moat-firstboot")


def test_only_image_vms_get_a_seed():
    files = check_file(EXAMPLE).files
    seeded = {p.split("/")[1] for p in files if "/cloud-init/" in p}
    assert seeded == {"nextcloud"}  # onion is an ISO install, vpn a kickstart install


# --- behaviour ----------------------------------------------------------------------------------


def test_netplan_renders_the_static_address(tmp_path):
    text = seed(check_file(EXAMPLE).files, "network-config")
    (tmp_path / "etc/netplan").mkdir(parents=True)
    conf = tmp_path / "etc/netplan/50-cloud-init.yaml"
    conf.write_text(text)
    conf.chmod(0o600)
    subprocess.run(["netplan", "generate", "--root-dir", str(tmp_path)], check=True,
                   env={**os.environ, "PATH": os.environ["PATH"] + ":/usr/sbin:/sbin"})
    network = (tmp_path / "run/systemd/network/10-netplan-eth0.network").read_text()
    link = (tmp_path / "run/systemd/network/10-netplan-eth0.link").read_text()
    assert "Address=192.168.122.5/24" in network and "Gateway=192.168.122.1" in network
    assert "DNS=192.168.122.1" in network
    assert "MACAddress=52:54:00:50:28:a7" in link and "Name=eth0" in link


def _ip(*args: str, ns: str | None = None) -> None:
    cmd = (["ip", "netns", "exec", ns] if ns else []) + ["ip", *args]
    subprocess.run(cmd, check=True, capture_output=True)


@contextmanager
def vm_and_host_namespaces():
    """Two network namespaces joined by a veth pair: `vm` (192.168.122.5/24, default route via
    the host) and `host` (192.168.122.1/24 on the NAT side, plus 198.51.100.7, an Internet client
    whose forwarded connections keep their address after DNAT)."""
    tag = f"{os.getpid() % 100000}"
    vm, host = f"moatci-vm-{tag}", f"moatci-host-{tag}"
    created = []
    try:
        for ns in (vm, host):
            subprocess.run(["ip", "netns", "add", ns], check=True)
            created.append(ns)
            _ip("link", "set", "lo", "up", ns=ns)
        _ip("link", "add", "eth0", "netns", vm, "type", "veth", "peer", "name", "virbr0", "netns", host)
        _ip("addr", "add", "192.168.122.5/24", "dev", "eth0", ns=vm)
        _ip("link", "set", "eth0", "up", ns=vm)
        _ip("route", "add", "default", "via", "192.168.122.1", ns=vm)
        _ip("addr", "add", "192.168.122.1/24", "dev", "virbr0", ns=host)
        _ip("addr", "add", "198.51.100.7/32", "dev", "lo", ns=host)
        _ip("link", "set", "virbr0", "up", ns=host)
        yield vm, host
    finally:
        for ns in created:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


PROBE = """
import socket, sys
source, port = sys.argv[1], int(sys.argv[2])
s = socket.socket()
s.settimeout(1.0)
s.bind((source, 0))
try:
    s.connect(("192.168.122.5", port))
    print("open")
except OSError:
    print("closed")
"""

LISTEN = """
import socket, sys, time
socks = []
for port in map(int, sys.argv[1:]):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(16)
    socks.append(s)
print("ready", flush=True)
time.sleep(60)
"""


@pytest.mark.slow
def test_vm_firewall_drops_all_but_ssh_from_the_nat_network_and_the_forwarded_ports(tmp_path):
    ruleset = tmp_path / "nftables.conf"
    ruleset.write_text(seed(check_file(EXAMPLE).files, "nftables.conf"))
    with vm_and_host_namespaces() as (vm, host):
        subprocess.run(["ip", "netns", "exec", vm, "nft", "-f", str(ruleset)], check=True)
        listener = subprocess.Popen(["ip", "netns", "exec", vm, "python3", "-c", LISTEN, "22", "80", "443", "8080"],
                                    stdout=subprocess.PIPE, text=True)
        try:
            assert listener.stdout.readline().strip() == "ready"

            def probe(source: str, port: int) -> str:
                return subprocess.run(["ip", "netns", "exec", host, "python3", "-c", PROBE, source, str(port)],
                                      capture_output=True, text=True, check=True).stdout.strip()

            # sshd: from the NAT network (the host's gateway address), not from the Internet
            assert probe("192.168.122.1", 22) == "open"
            assert probe("198.51.100.7", 22) == "closed"
            # the forwarded ports (80, 443 to nextcloud) from anywhere
            assert probe("198.51.100.7", 80) == "open" and probe("198.51.100.7", 443) == "open"
            # anything else: dropped even from the NAT network
            assert probe("192.168.122.1", 8080) == "closed"
        finally:
            listener.kill()
            listener.wait()


class _Probes(Namespaces):
    """Listeners and probes in namespaces vm_and_host_namespaces() made (and deletes)."""

    def namespaces(self) -> tuple[str, ...]:
        return ()


@pytest.mark.slow
def test_vm_firewall_lets_out_only_its_egress(tmp_path):
    """The seed's output chain: DNS to the gateway (libvirt's dnsmasq), the Wazuh manager, the mirrors'
    HTTPS and the blueprint's egress.allow (587/tcp) go out; DNS to another resolver, SMTP on 25 and
    a port nobody declared do not, and the drop rule counts them."""
    compiled = check_file(EXAMPLE)
    assert compiled.plan.wazuh.manager_address == IPv4Address("192.168.122.50")
    ruleset = tmp_path / "nftables.conf"
    ruleset.write_text(seed(compiled.files, "nftables.conf"))
    with vm_and_host_namespaces() as (vm, host):
        _ip("addr", "add", "192.168.122.50/32", "dev", "lo", ns=host)  # the Wazuh manager
        lab = _Probes()
        try:
            lab.serve(host, "out", [("udp", 53), ("tcp", 53), ("tcp", 443), ("tcp", 587), ("tcp", 1514), ("tcp", 25),
                                    ("tcp", 5432), ("udp", 5353)])
            probes = [dict(id=id, proto=proto, src="192.168.122.5", dst=dst, port=port) for id, proto, dst, port in (
                ("DNS to the gateway", "udp", "192.168.122.1", 53),
                ("DNS over TCP to the gateway", "tcp", "192.168.122.1", 53),
                ("HTTPS (mirrors)", "tcp", "198.51.100.7", 443),
                ("declared 587/tcp", "tcp", "198.51.100.7", 587),
                ("Wazuh manager", "tcp", "192.168.122.50", 1514),
                ("DNS to another resolver", "udp", "198.51.100.7", 53),
                ("SMTP", "tcp", "198.51.100.7", 25),
                ("undeclared tcp", "tcp", "192.168.122.1", 5432),
                ("undeclared udp", "udp", "198.51.100.7", 5353),
                ("Wazuh port elsewhere", "tcp", "198.51.100.7", 1514))]
            refused_or_dropped = {"dropped", "rejected:EPERM"}
            blocked = {"DNS to another resolver", "SMTP", "undeclared tcp", "undeclared udp", "Wazuh port elsewhere"}
            # without the ruleset everything answers: the probes can tell open from blocked
            before = lab.probe(vm, probes)
            assert all(v == "open:out:hi" for v in before.values()), repr(before)
            subprocess.run(["ip", "netns", "exec", vm, "nft", "-f", str(ruleset)], check=True)
            after = lab.probe(vm, probes)
            wrong = {k: v for k, v in after.items() if (v in refused_or_dropped) != (k in blocked)
                     or (k not in blocked and v != "open:out:hi")}
            assert not wrong, f"unexpected: {wrong}\nall: {after}"
            # every blocked attempt reached the last rule (logged, rate-limited) and was counted there
            assert lab.drops_counted(vm) >= len(blocked)
        finally:
            lab.close()


def multi_nic(tmp_path: Path) -> Path:
    """example with a second NAT network `backend`: nextcloud on default, mirror and backend;
    vpn on backend first (its primary network), then default and mirror."""
    text = EXAMPLE.read_text()
    for old, new in (
        ('      - { network: default, address: 192.168.122.5, mac: "52:54:00:50:28:a7" }\n',
         '      - { network: default, address: 192.168.122.5, mac: "52:54:00:50:28:a7" }\n'
         '      - { network: mirror }\n      - { network: backend, address: 10.9.0.5 }\n'),
        ('      - { network: default, address: 192.168.122.150, mac: "52:54:00:18:17:c1" }\n',
         '      - { network: backend, address: 10.9.0.150 }\n'
         '      - { network: default, address: 192.168.122.150, mac: "52:54:00:18:17:c1" }\n'
         '      - { network: mirror }\n'),
        ("  - name: mirror\n    mode: mirror\n",
         "  - name: backend\n    mode: nat\n    bridge: virbr1\n    subnet: 10.9.0.0/24\n"
         "  - name: mirror\n    mode: mirror\n"),
    ):
        assert old in text
        text = text.replace(old, new)
    path = tmp_path / "multi-nic.yaml"
    path.write_text(text)
    return path


def test_several_nics_one_default_route_and_a_silent_mirror_port(tmp_path):
    files = check_file(multi_nic(tmp_path)).files
    ethernets = load(seed(files, "network-config"))["network"]["ethernets"]
    assert list(ethernets) == ["eth0", "eth1", "eth2"]
    assert "routes" in ethernets["eth0"] and "routes" not in ethernets["eth2"]
    assert ethernets["eth2"]["addresses"] == ["10.9.0.5/24"] and ethernets["eth2"]["nameservers"]["addresses"] == ["10.9.0.1"]
    mirror = ethernets["eth1"]
    assert "addresses" not in mirror and mirror["link-local"] == [] and mirror["dhcp4"] is False
    domain = ET.fromstring(files["host/libvirt/domains/nextcloud.xml"].content)
    assert [e["match"]["macaddress"] for e in ethernets.values()] == [m.get("address") for m in domain.iter("mac")]
    # sshd from both NAT networks
    rules = seed(files, "nftables.conf")
    assert "ip saddr 10.9.0.0/24 tcp dport 22 accept" in rules and "ip saddr 192.168.122.0/24 tcp dport 22 accept" in rules


@pytest.mark.slow
def test_several_nics_pass_the_validators(tmp_path):
    findings = validate(multi_nic(tmp_path), tmp_path / "out", lambda path: path.startswith(SEED))
    assert len(findings) == 5 and all(f.ok for f in findings), [f.output for f in findings if not f.ok]


def test_a_rejection_points_at_the_blueprint_line(tmp_path):
    from compiler.verify import check_bundle

    files = check_file(EXAMPLE).files
    path = SEED + "network-config"
    broken = tmp_path / path
    broken.parent.mkdir(parents=True)
    broken.write_text(files[path].content.decode().replace("192.168.122.5/24", "192.168.122.5/33"))
    rejected = [d for d in check_bundle(tmp_path, files) if d.rule == "tool-rejected" and "netplan" in d.message]
    # the address on that line came from vms[0].nics[0].address
    assert [d.path for d in rejected] == [("vms", 0, "nics", 0, "address")]
