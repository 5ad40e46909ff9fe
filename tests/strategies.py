"""Hypothesis strategies for moat blueprints.

Three families:

* ``blueprints()`` draws VALID blueprints as plain Python data (dicts and lists): 1..8 VMs,
  1..3 NAT networks with distinct, non-overlapping subnets (plus optionally a mirror network),
  static addresses inside their subnet and outside the DHCP range, optional explicit unicast
  MACs, forwards on unique (port, proto), resources that fit the host, an optional VPS front,
  the golden images the image VMs are installed from (now and then one no VM uses: a warning).
* ``conflicting(rule)`` draws a valid blueprint and injects exactly ONE conflict of the class
  ``rule`` (a compiler rule id); ``maybe_conflicting()`` perturbs a valid blueprint with random
  edits that may or may not create a conflict (the test's oracle decides).
* fuzz input: arbitrary YAML-ish text, arbitrary JSON-like data, and structural mutations of
  valid blueprints (delete a key, change a value's type, ...).

``dump_yaml`` turns data into block-style YAML text (ruamel.yaml), which is what the compiler
reads. Nothing here imports the compiler: defaults and rules are restated from the schema
(schema/blueprint.schema.json) and docs/blueprint.md.
"""

from __future__ import annotations

import copy
import io
import ipaddress
import re
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any, Callable

from hypothesis import assume
from hypothesis import strategies as st
from ruamel.yaml import YAML

# --------------------------------------------------------------------------------------------
# constants restated from the schema
# --------------------------------------------------------------------------------------------

MIB, GIB, TIB = 1, 1024, 1024 * 1024
DEFAULT_EFI = 200 * MIB
DEFAULT_BOOT = 1 * GIB
DEFAULT_ROOT = 30 * GIB
DEFAULT_SWAP = 8 * GIB
DEFAULT_RESERVED_MEMORY = 4 * GIB
DEFAULT_RESERVED_CPUS = 1
DEFAULT_SSHD_PORT = 22
DEFAULT_OPENVPN = (1194, "udp")
DEFAULT_ACME_PORT = 8888
DEFAULT_POOL = "images"
HAPROXY_PORTS = ((80, "tcp"), (443, "tcp"))
# golden images: each distribution's releases, and moat's own elements (directories of images/
# with a README.rst, read from the checkout: restated, not imported from the compiler)
RELEASES = {"debian": ["bookworm", "trixie"], "ubuntu": ["jammy", "noble"]}
ELEMENTS_DIR = Path(__file__).resolve().parent.parent / "images"
MOAT_ELEMENTS = sorted(p.name for p in ELEMENTS_DIR.iterdir() if (p / "README.rst").exists())

# Address space the valid generator never touches, so mutators can use it freely.
OUTSIDE_BLOCK = IPv4Network("100.64.0.0/10")  # addresses that are in no subnet of any blueprint
EXTRA_BLOCK = IPv4Network("172.31.0.0/16")  # subnets of networks added by mutators
VPS_BLOCK = IPv4Network("198.18.0.0/15")  # public address of the VPS
# Uplink networks other than 10.x.0.0/16 blocks; none overlaps 10/8, 172.16/12 or the blocks above.
UPLINK_NETS = [IPv4Network("203.0.113.0/24"), IPv4Network("198.51.100.0/24"), IPv4Network("192.168.1.0/24"),
               IPv4Network("192.0.2.0/25")]

SSH_KEYS = [
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGGYoGgelGlvc01Uok42rUekwV8r3Hc+IOAJ5gKyQNKh ops@laptop",
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIC+X2odbINDnS9Wim9B6Rco7PKtCoTx0uaEY+J7F03y8",
    "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7vbqajDhA== bob@desktop",
    "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTY= carol",
]

# Characters no blueprint string may contain (docs: rule unsafe-string).
UNSAFE_CHARS = [chr(c) for c in range(0x20)] + ["\x7f", '"', "'", "`", "\\", "$"]
# Characters odd in YAML, XML or UTF-8: NEL and C1 controls, Unicode line/paragraph separators, BOM,
# noncharacters, lone surrogates, astral and combining chars. Those str.isprintable() refuses are
# refused (unsafe-string, or invisible-character: tests/test_limits.py); the rest must render.
ODD_CHARS = ["\x85", "\x80", "\x9f", "\xa0", "\u2028", "\u2029", "\ufeff", "\ufffe", "\uffff", "\ud800",
             "\udfff", "\U0001f600", "\u0301", "\U0010ffff", "<", "&", "]", ">"]
# Free text that is safe but not boring: XML specials, YAML specials, non-ASCII letters.
SAFE_TEXT_ALPHABET = "abcXYZ019 .,-_:;#!?()[]{}/&<>%@*|=+~éü日本"

# --------------------------------------------------------------------------------------------
# YAML
# --------------------------------------------------------------------------------------------


def dump_yaml(data: Any) -> str:
    """Block-style YAML (ruamel round-trip dumper) of plain data."""
    yaml = YAML(typ="rt")
    yaml.default_flow_style = False
    yaml.width = 4096
    yaml.allow_unicode = True
    buf = io.StringIO()
    yaml.dump(data, buf)
    return buf.getvalue()


# --------------------------------------------------------------------------------------------
# small value strategies
# --------------------------------------------------------------------------------------------

# Names come from fixed pools (drawing from regexes made generation several times slower);
# the pools cover the edges of the `name` pattern: one letter, 32 characters, digits, dashes.
NAME_POOL = ["a", "b", "z", "x1", "web", "db", "mail", "onion", "vpn", "lan", "dmz", "wan2", "a-b", "a-b-c",
             "web-1", "db-02", "n0", "q9z", "k8s-node", "nextcloud", "proxy", "ids", "backup", "git", "ci-runner",
             "m" * 32, "a" + "-b" * 15 + "c", "lab", "edge", "core", "null", "true", "yes", "on", "off", "no",
             "n1e5", "e1", "x0x", "vm"]
names = st.sampled_from(NAME_POOL)
vm_names = names.filter(lambda n: n != "host")  # VM names share a namespace with the host
user_names = st.sampled_from(["ops", "alice", "bob", "_svc", "a", "root2", "deploy-ci", "x_y-z", "u" * 32, "null"])
# data disk names without dashes and never "os": the volume is VM-NAME, so these cannot collide
# with another VM's volumes (see test_properties for what happens otherwise)
disk_names = st.sampled_from(["data", "logs", "db", "a", "srv", "var", "backup1", "d9", "scratch", "home"])
labels = st.sampled_from(["kvm", "kvm1", "host-a", "h", "front", "vps", "edge-01", "s" * 63, "x9"])
domains = st.lists(labels, min_size=1, max_size=3).map(lambda ls: ".".join(ls + ["example", "org"]))
safe_text = st.text(alphabet=SAFE_TEXT_ALPHABET, min_size=1, max_size=40)
protos = st.sampled_from(["tcp", "udp"])
# ports: mostly well-known ones (so that random draws collide often), sometimes anything
ports = st.one_of(st.sampled_from([22, 80, 443, 1194, 2222, 8080, 8443, 8888, 53201, 65535, 1]),
                  st.integers(1, 65535))


@st.composite
def image_decl(draw, name: str) -> dict:
    """A valid `images` entry named `name`."""
    distribution = draw(st.sampled_from(sorted(RELEASES)))
    image: dict[str, Any] = {"name": name, "distribution": distribution,
                             "release": draw(st.sampled_from(RELEASES[distribution]))}
    if draw(st.booleans()):
        image["elements"] = draw(st.lists(st.sampled_from(MOAT_ELEMENTS), unique=True))
    if draw(st.booleans()):
        image["packages"] = draw(st.lists(st.sampled_from(["htop", "curl", "nginx", "g++", "libc6-dev", "x11-utils"]),
                                          unique=True))
    if draw(st.integers(0, 3)) == 0:
        image["snapshot"] = draw(st.sampled_from(["20261201T000000Z", "20250101T120000Z"]))
    if draw(st.integers(0, 3)) == 0:
        image["description"] = draw(safe_text)
    return image


def size_text(mib: int) -> st.SearchStrategy[str]:
    """All the ways to write `mib` as a size (`NMiB`, `NGiB`, `NTiB`, at most 9 digits)."""
    assert mib >= 1
    forms = []
    if mib % TIB == 0:
        forms.append(f"{mib // TIB}TiB")
    if mib % GIB == 0:
        forms.append(f"{mib // GIB}GiB")
    if mib < 10**9:
        forms.append(f"{mib}MiB")
    return st.sampled_from(forms)


def parse_size(text: str) -> int:
    """`12GiB` -> MiB."""
    for unit, factor in (("MiB", MIB), ("GiB", GIB), ("TiB", TIB)):
        if text.endswith(unit):
            return int(text[: -len(unit)]) * factor
    raise ValueError(text)


def mac_text(value: int, upper: bool) -> str:
    text = ":".join(f"{(value >> (8 * i)) & 0xFF:02x}" for i in reversed(range(6)))
    return text.upper() if upper else text


@st.composite
def unicast_macs(draw, n: int) -> list[str]:
    """`n` distinct unicast MACs, often in libvirt's 52:54:00 range, in random letter case."""
    libvirt = st.integers(0, 2**24 - 1).map(lambda t: 0x525400 << 24 | t)
    anywhere = st.tuples(st.integers(0, 127).map(lambda o: o * 2), st.integers(0, 2**40 - 1)).map(
        lambda p: p[0] << 40 | p[1])
    values = draw(st.lists(st.one_of(libvirt, anywhere), min_size=n, max_size=n, unique=True))
    return [mac_text(v, draw(st.booleans())) for v in values]


def distinct_ints(draw, lo: int, hi: int, n: int) -> list[int]:
    """`n` distinct integers of [lo, hi] in random order (never gives up, unlike unique lists)."""
    chosen: list[int] = []
    for i in range(n):
        k = draw(st.integers(0, hi - lo - i))
        chosen.append(_nth_allowed(k, lo, hi, [(c, c) for c in chosen]))
    return chosen


def _ip(value: int) -> str:
    return str(IPv4Address(value))


def _nth_allowed(n: int, lo: int, hi: int, holes: list[tuple[int, int]]) -> int:
    """The n-th integer of [lo, hi] outside the (sorted, disjoint) closed intervals `holes`."""
    value = lo + n
    for a, b in sorted(holes):
        if a <= value:
            value += b - a + 1
    assert value <= hi
    return value


# --------------------------------------------------------------------------------------------
# valid blueprints
# --------------------------------------------------------------------------------------------


@st.composite
def nat_network(draw, name: str, bridge: str, block: int, n_nics: int) -> tuple[dict, list[str]]:
    """A NAT network inside 10.<block>.0.0/16 with room for `n_nics` static addresses.

    Returns the network mapping and `n_nics` distinct usable addresses: not network, broadcast
    or gateway, outside the DHCP range."""
    need = n_nics + 3  # network + broadcast + gateway
    pmax = min(30, 32 - (need - 1).bit_length())
    prefix = draw(st.integers(16, pmax))
    size = 2 ** (32 - prefix)
    index = draw(st.integers(0, 2 ** (prefix - 16) - 1))
    subnet = IPv4Network((int(IPv4Address(f"10.{block}.0.0")) + index * size, prefix))
    base = int(subnet.network_address)
    net: dict[str, Any] = {"name": name, "mode": "nat", "bridge": bridge, "subnet": str(subnet)}

    gw = 1
    if draw(st.booleans()):
        gw = draw(st.integers(1, size - 2))
        net["gateway"] = _ip(base + gw)
    holes = [(gw, gw)]
    spare = size - 3 - n_nics
    if spare >= 1 and draw(st.booleans()):
        length = draw(st.integers(1, min(spare, 4096)))
        segments = [(1, gw - 1), (gw + 1, size - 2)]
        length = min(length, max(b - a + 1 for a, b in segments))
        if length >= 1:
            a, b = draw(st.sampled_from([s for s in segments if s[1] - s[0] + 1 >= length]))
            start = draw(st.integers(a, b - length + 1))
            end = start + length - 1
            net["dhcp"] = {"start": _ip(base + start), "end": _ip(base + end)}
            holes.append((start, end))
    count = size - 2 - sum(b - a + 1 for a, b in holes)
    assert count >= n_nics
    picks = distinct_ints(draw, 0, count - 1, n_nics)
    addresses = [_ip(base + _nth_allowed(p, 1, size - 2, holes)) for p in picks]
    return net, addresses


@st.composite
def vps_front(draw, users: list[str], block: int | None, served_ports: tuple[int, ...] = ()) -> dict:
    """A VPS section with non-clashing ports and a tunnel subnet of its own. The sites of this
    host (client == vps.client) use the ports of its tcp forwards (`served_ports`); without
    any, every site is another home's."""
    n_clients = draw(st.integers(1 if served_ports else 2, 3))
    need = n_clients + 3  # network, server (first address), broadcast
    pmax = min(30, 32 - (need - 1).bit_length())
    prefix = draw(st.integers(16, pmax))
    size = 2 ** (32 - prefix)
    if block is None:  # 172.16.0.0/16 .. 172.30.0.0/16
        start = int(IPv4Address(f"172.{draw(st.integers(16, 30))}.0.0"))
    else:
        start = int(IPv4Address(f"10.{block}.0.0"))
    subnet = IPv4Network((start + draw(st.integers(0, 2 ** (prefix - 16) - 1)) * size, prefix))
    offsets = distinct_ints(draw, 2, size - 2, n_clients)
    client_names = draw(st.lists(names, min_size=n_clients, max_size=n_clients, unique=True))
    clients = [{"name": n, "address": _ip(int(subnet.network_address) + o)} for n, o in zip(client_names, offsets)]

    # VPS port claims: HAProxy 80/443 tcp, sshd tcp, OpenVPN port/proto, certbot tcp: all distinct
    taken = set(HAPROXY_PORTS)
    vps: dict[str, Any] = {"name": draw(labels),
                           "address": _ip(int(VPS_BLOCK.network_address) + draw(st.integers(1, VPS_BLOCK.num_addresses - 2)))}
    if draw(st.booleans()):
        vps["users"] = draw(st.lists(st.sampled_from(users), min_size=1, unique=True))
    sshd_port = DEFAULT_SSHD_PORT
    if draw(st.booleans()):
        sshd_port = draw(ports.filter(lambda p: (p, "tcp") not in taken))
        vps["sshd"] = {"port": sshd_port}
        if draw(st.booleans()):
            vps["sshd"]["totp"] = draw(st.booleans())
    taken.add((sshd_port, "tcp"))
    openvpn: dict[str, Any] = {}
    ovpn = DEFAULT_OPENVPN
    if DEFAULT_OPENVPN in taken or draw(st.booleans()):
        ovpn = draw(st.tuples(ports, protos).filter(lambda c: c not in taken))
        openvpn["port"], openvpn["proto"] = ovpn
    taken.add(ovpn)
    openvpn["subnet"] = str(subnet)
    openvpn["clients"] = clients
    vps["openvpn"] = openvpn
    vps["client"] = draw(st.sampled_from(client_names))
    acme_port = DEFAULT_ACME_PORT
    acme: dict[str, Any] = {}
    if (DEFAULT_ACME_PORT, "tcp") in taken or draw(st.booleans()):
        acme_port = draw(ports.filter(lambda p: (p, "tcp") not in taken))
        acme["port"] = acme_port
    if draw(st.booleans()):
        acme["email"] = "admin@example.org"
    if acme or draw(st.booleans()):
        vps["acme"] = acme
    hosts = draw(st.lists(domains, min_size=1, max_size=3, unique=True))
    sites = []
    for host in hosts:
        others = [c for c in client_names if c != vps["client"]]
        site: dict[str, Any] = {"host": host, "client": draw(st.sampled_from(client_names if served_ports else others))}
        if site["client"] == vps["client"]:
            port = draw(st.sampled_from(served_ports))
            if port != 443 or draw(st.booleans()):
                site["port"] = port
        elif draw(st.booleans()):
            site["port"] = draw(ports)
        sites.append(site)
    vps["sites"] = sites
    return vps


@st.composite
def blueprints(draw, max_vms: int = 8, with_vps: bool | None = None) -> dict:
    """A valid, conflict-free blueprint as plain data (only some defaults written out)."""
    bp_name = draw(names)

    # users -----------------------------------------------------------------------------------
    user_list = draw(st.lists(user_names, min_size=1, max_size=3, unique=True))
    users = []
    for u in user_list:
        user: dict[str, Any] = {"name": u,
                                "ssh_keys": draw(st.lists(st.sampled_from(SSH_KEYS), min_size=1, max_size=2, unique=True))}
        if draw(st.booleans()):
            user["sudo"] = draw(st.booleans())
        users.append(user)

    # networks and which VM sits where --------------------------------------------------------
    n_nat = draw(st.integers(1, 3))
    with_mirror = draw(st.booleans())
    net_names = draw(st.lists(names, min_size=n_nat + with_mirror, max_size=n_nat + with_mirror, unique=True))
    nat_names, mirror_name = net_names[:n_nat], (net_names[n_nat] if with_mirror else None)
    n_vms = draw(st.integers(1, max_vms))
    vm_name_list = draw(st.lists(vm_names, min_size=n_vms, max_size=n_vms, unique=True))
    vm_nets: list[list[str]] = []
    for _ in range(n_vms):
        on_mirror = with_mirror and draw(st.integers(0, 3)) == 0
        nats = draw(st.lists(st.sampled_from(nat_names), min_size=0 if on_mirror else 1, unique=True))
        nets = nats + ([mirror_name] if on_mirror else [])
        vm_nets.append(draw(st.permutations(nets)))

    # subnets: NAT networks, uplink and VPN tunnel each in their own 10.<block>.0.0/16
    blocks = distinct_ints(draw, 0, 255, n_nat + 2)
    bridges = draw(st.permutations([f"{draw(st.sampled_from(['virbr', 'br', 'nat']))}{i}" for i in range(len(net_names))]))
    networks = []
    addresses: dict[str, list[str]] = {}
    for i, name in enumerate(nat_names):
        count = sum(name in nets for nets in vm_nets)
        net, addrs = draw(nat_network(name, bridges[i], blocks[i], count))
        networks.append(net)
        addresses[name] = addrs
    if with_mirror:
        networks.append({"name": mirror_name, "mode": "mirror", "bridge": bridges[n_nat]})
    networks = draw(st.permutations(networks))

    # NICs ------------------------------------------------------------------------------------
    n_nics = sum(len(n) for n in vm_nets)
    explicit = draw(st.lists(st.booleans(), min_size=n_nics, max_size=n_nics))
    macs = iter(draw(unicast_macs(sum(explicit))))
    flags = iter(explicit)
    nics_of: list[list[dict]] = []
    for nets in vm_nets:
        nics = []
        for net in nets:
            nic: dict[str, Any] = {"network": net}
            if net != mirror_name:
                nic["address"] = addresses[net].pop()
            if next(flags):
                nic["mac"] = next(macs)
            nics.append(nic)
        nics_of.append(nics)

    # host CPUs and memory --------------------------------------------------------------------
    host_cpus = draw(st.one_of(st.integers(1, 16), st.integers(1, 256)))
    reserved: dict[str, Any] = {}
    reserved_cpus = DEFAULT_RESERVED_CPUS
    if host_cpus <= DEFAULT_RESERVED_CPUS or draw(st.booleans()):
        reserved_cpus = draw(st.integers(0, host_cpus - 1))
        reserved["cpus"] = reserved_cpus
    threads = host_cpus - reserved_cpus
    reserved_memory = DEFAULT_RESERVED_MEMORY
    if draw(st.booleans()):
        reserved_memory = draw(st.integers(1, 8 * GIB))
        reserved["memory"] = draw(size_text(reserved_memory))

    # pools -----------------------------------------------------------------------------------
    pools = [{"name": DEFAULT_POOL, "type": "logical"} if draw(st.integers(0, 4)) else
             {"name": DEFAULT_POOL, "type": "dir", "path": "/var/lib/libvirt/images"}]
    if draw(st.booleans()):
        pools.append({"name": "fast", "type": "logical"})
    if draw(st.booleans()):
        iso_pool: dict[str, Any] = {"name": "ISOs", "type": "dir", "path": "/ISOs"}
        if draw(st.booleans()):
            iso_pool["capacity"] = draw(st.sampled_from(["1GiB", "30GiB", "2TiB"]))  # exceeding it: a warning
        pools.append(iso_pool)
    pool_type = {p["name"]: p["type"] for p in pools}
    pools = draw(st.permutations(pools))

    # VMs -------------------------------------------------------------------------------------
    vms = []
    logical_used = 0
    for name, nics in zip(vm_name_list, nics_of):
        vm: dict[str, Any] = {"name": name}
        if draw(st.integers(0, 3)) == 0:
            vm["description"] = draw(safe_text)
        vm["cpus"] = draw(st.integers(1, min(threads, 512)))
        memory = draw(st.one_of(st.integers(1, 32).map(lambda g: g * GIB), st.integers(64, 8192)))
        vm["memory"] = draw(size_text(memory))
        vm["_memory"] = memory
        disks = []
        os_size = draw(st.integers(1, 64)) * GIB
        os_pool = draw(st.sampled_from(sorted(pool_type)))
        vm["os_disk"] = {"size": draw(size_text(os_size))}
        if os_pool != DEFAULT_POOL or draw(st.booleans()):
            vm["os_disk"]["pool"] = os_pool
        disks.append((os_size, os_pool))
        data = []
        for dname in draw(st.lists(disk_names, max_size=3, unique=True)):
            d_size = draw(st.one_of(st.integers(1, 200).map(lambda g: g * GIB), st.integers(1, 4096)))
            d_pool = draw(st.sampled_from(sorted(pool_type)))
            disk: dict[str, Any] = {"name": dname, "size": draw(size_text(d_size))}
            if d_pool != DEFAULT_POOL or draw(st.booleans()):
                disk["pool"] = d_pool
            disk["mount"] = f"/srv/{dname}"
            if draw(st.booleans()):
                disk["encrypted"] = draw(st.booleans())
            data.append(disk)
            disks.append((d_size, d_pool))
        if data:
            vm["data_disks"] = data
        logical_used += sum(size for size, pool in disks if pool_type[pool] == "logical")
        vm["nics"] = nics
        method = draw(st.sampled_from(["image", "kickstart", "iso"] if "ISOs" in pool_type else ["image", "kickstart"]))
        vm["install"] = {"method": method,
                         **({"image": draw(names)} if method == "image" else {}),
                         **({"os": draw(st.sampled_from(["rocky9", "alma9"]))} if method == "kickstart" else {}),
                         **({"iso": draw(st.sampled_from(["installer.iso", "so-2.4.iso", "a+b_c.iso"]))}
                            if method == "iso" else {})}
        if draw(st.integers(0, 3)) == 0:
            vm["users"] = draw(st.lists(st.sampled_from(user_list), min_size=1, unique=True))
        if draw(st.integers(0, 3)) == 0:
            vm["autostart"] = draw(st.booleans())
        vms.append(vm)
    vm_memory = sum(vm.pop("_memory") for vm in vms)
    host_memory = vm_memory + reserved_memory + draw(st.one_of(st.just(0), st.integers(0, 16 * GIB)))

    # host disk: the volume group (what is left after efi/boot/root/swap) holds the logical disks
    disk: dict[str, Any] = {"device": draw(st.sampled_from(["sda", "vda", "nvme0n1"]))}
    layout = {"efi": DEFAULT_EFI, "boot": DEFAULT_BOOT, "root": DEFAULT_ROOT, "swap": DEFAULT_SWAP}
    for part in list(layout):
        if draw(st.integers(0, 3)) == 0:
            layout[part] = draw(st.integers(1, 64 * GIB))
            disk[part] = draw(size_text(layout[part]))
    vg = logical_used + draw(st.one_of(st.just(0), st.integers(0, 512 * GIB)))
    vg = max(vg, 1)
    disk_size = sum(layout.values()) + vg
    disk = {"device": disk["device"], "size": draw(size_text(disk_size)),
            **{k: v for k, v in disk.items() if k != "device"}}
    if draw(st.booleans()):
        disk["volume_group"] = draw(names)
    if draw(st.integers(0, 3)) == 0:
        disk["encryption"] = {"passphrase": "secret:host-luks"}
        if draw(st.booleans()):
            disk["encryption"]["unlock_port"] = draw(ports)

    # uplink ----------------------------------------------------------------------------------
    if draw(st.booleans()):
        up_net = draw(st.sampled_from(UPLINK_NETS))
    else:
        prefix = draw(st.integers(16, 30))
        up_net = IPv4Network((int(IPv4Address(f"10.{blocks[n_nat]}.0.0")), prefix))
    host_offsets = distinct_ints(draw, 1, up_net.num_addresses - 2, 2)
    uplink: dict[str, Any] = {
        "interface": draw(st.sampled_from(["eth0", "eno1", "enp1s0f1"])),
        "address": f"{_ip(int(up_net.network_address) + host_offsets[0])}/{up_net.prefixlen}",
        "gateway": _ip(int(up_net.network_address) + host_offsets[1]),
    }
    if draw(st.booleans()):
        # never the host itself (self-reference): a resolver elsewhere
        resolvers = [a for a in ["1.1.1.1", "9.9.9.9", "203.0.113.53"] if a != uplink["address"].split("/")[0]]
        uplink["dns"] = draw(st.lists(st.sampled_from(resolvers), max_size=2))

    # host ports: sshd/tcp, forwards and firewall openings all distinct ------------------------
    host: dict[str, Any] = {"name": draw(labels), "domain": draw(domains)}
    if draw(st.booleans()):
        host["os"] = draw(st.sampled_from(["rocky9", "alma9"]))
    host["cpus"] = host_cpus
    host["memory"] = draw(size_text(host_memory))
    if reserved or draw(st.integers(0, 3)) == 0:
        host["reserved"] = reserved
    host["uplink"] = uplink
    host["disk"] = disk
    host["pools"] = pools
    if draw(st.integers(0, 3)) == 0:
        host["users"] = draw(st.lists(st.sampled_from(user_list), min_size=1, unique=True))
    sshd_port = DEFAULT_SSHD_PORT
    if draw(st.integers(0, 3)):
        sshd_port = draw(ports)
        host["sshd"] = {"port": sshd_port}
        if draw(st.booleans()):
            host["sshd"]["totp"] = draw(st.booleans())
    if draw(st.booleans()):
        host["selinux"] = draw(st.sampled_from(["enforcing", "permissive"]))

    targets = [vm["name"] for vm in vms if any(n["network"] in nat_names for n in vm["nics"])]
    # the initramfs's unlock sshd owns its port too (unless it is the sshd port)
    unlock = disk.get("encryption", {}).get("unlock_port", 2222) if "encryption" in disk else sshd_port
    claims = draw(st.lists(st.tuples(ports, protos).filter(lambda c: c not in ((sshd_port, "tcp"), (unlock, "tcp"))),
                           max_size=8, unique=True))
    n_forwards = draw(st.integers(0, len(claims))) if targets else 0
    forwards = []
    for port, proto in claims[:n_forwards]:
        fwd: dict[str, Any] = {"port": port, "proto": proto, "to": draw(st.sampled_from(targets))}
        if draw(st.booleans()):
            fwd["to_port"] = draw(ports)
        forwards.append(fwd)
    allow = []
    for port, proto in claims[n_forwards:]:
        opening: dict[str, Any] = {"port": port, "proto": proto}
        if draw(st.booleans()):
            opening["from"] = draw(st.sampled_from(["0.0.0.0/0", "192.0.2.0/24", "10.0.0.0/8"]))
        if draw(st.booleans()):
            opening["description"] = draw(safe_text)
        allow.append(opening)

    # assemble ---------------------------------------------------------------------------------
    bp: dict[str, Any] = {"version": 1, "name": bp_name}
    if draw(st.integers(0, 3)) == 0:
        bp["description"] = draw(safe_text)
    bp["users"] = users
    bp["host"] = host
    bp["networks"] = networks
    used_images = sorted({vm["install"]["image"] for vm in vms if vm["install"]["method"] == "image"})
    spare = [draw(st.sampled_from(["spare", "old-image"]))] if draw(st.integers(0, 5)) == 0 else []  # rule unused
    if used_images or spare or draw(st.booleans()):
        bp["images"] = draw(st.permutations([draw(image_decl(name)) for name in used_images + spare]))
    bp["vms"] = vms
    if forwards or draw(st.booleans()):
        bp["forwards"] = forwards
    if allow:
        bp["firewall"] = {"allow": allow}
    if with_mirror and draw(st.booleans()):
        bp["mirror"] = {"network": mirror_name}
        if draw(st.booleans()):
            bp["mirror"]["interface"] = "eno2"
    if targets and draw(st.integers(0, 3)) == 0:
        # agents report to the manager's address on its first nat network
        wazuh: dict[str, Any] = {"manager": draw(st.sampled_from(targets))}
        if draw(st.booleans()):
            others = ["host", *(v for v in vm_name_list if v != wazuh["manager"])]  # not its own agent
            wazuh["agents"] = draw(st.lists(st.sampled_from(others), unique=True))
        bp["monitoring"] = {"wazuh": wazuh}
    if with_vps is True or (with_vps is None and draw(st.integers(0, 2)) == 0):
        tunnel_block = blocks[n_nat + 1] if draw(st.booleans()) else None
        served = tuple(sorted({f["port"] for f in forwards if f["proto"] == "tcp"}))
        bp["vps"] = vps = draw(vps_front(user_list, tunnel_block, served))
        # the VPS is another machine than the host and its VMs, and no site takes the host's own name
        taken = {host["name"], *vm_name_list}
        if vps["name"] in taken:
            vps["name"] = next(label for label in ["front", "vps", "edge-01", "x9", "h"] if label not in taken)
        fqdn = f"{host['name']}.{host['domain']}"
        for site in vps["sites"]:
            if site["host"] == fqdn:
                site["host"] = "www." + fqdn
    return bp


# --------------------------------------------------------------------------------------------
# reading generated blueprints (shared by the mutators)
# --------------------------------------------------------------------------------------------


def nat_networks(bp: dict) -> dict[str, dict]:
    return {n["name"]: n for n in bp["networks"] if n["mode"] == "nat"}


def gateway(net: dict) -> IPv4Address:
    subnet = IPv4Network(net["subnet"])
    return IPv4Address(net["gateway"]) if "gateway" in net else subnet.network_address + 1


def all_nics(bp: dict) -> list[tuple[dict, dict]]:
    return [(vm, nic) for vm in bp.get("vms", []) for nic in vm["nics"]]


def nat_nics(bp: dict) -> list[tuple[dict, dict]]:
    nats = nat_networks(bp)
    return [(vm, nic) for vm, nic in all_nics(bp) if nic["network"] in nats]


def host_threads(bp: dict) -> int:
    reserved = bp["host"].get("reserved", {}).get("cpus", DEFAULT_RESERVED_CPUS)
    return max(bp["host"]["cpus"] - reserved, 1)


def vm_memory(bp: dict) -> int:
    return sum(parse_size(vm["memory"]) for vm in bp.get("vms", []))


def reserved_memory(bp: dict) -> int:
    return parse_size(bp["host"].get("reserved", {}).get("memory", f"{DEFAULT_RESERVED_MEMORY}MiB"))


def layout_size(bp: dict) -> int:
    disk = bp["host"]["disk"]
    return sum(parse_size(disk[k]) if k in disk else d for k, d in
               (("efi", DEFAULT_EFI), ("boot", DEFAULT_BOOT), ("root", DEFAULT_ROOT), ("swap", DEFAULT_SWAP)))


def logical_used(bp: dict) -> int:
    types = {p["name"]: p["type"] for p in bp["host"].get("pools", [])}
    used = 0
    for vm in bp.get("vms", []):
        for d in [vm["os_disk"], *vm.get("data_disks", [])]:
            if types.get(d.get("pool", DEFAULT_POOL)) == "logical":
                used += parse_size(d["size"])
    return used


def used_names(bp: dict) -> set[str]:
    """Every name and bridge in the blueprint, so that added things can avoid them."""
    found = {"host", bp["name"]}
    found |= {n["name"] for n in bp["networks"]} | {n["bridge"] for n in bp["networks"]}
    found |= {vm["name"] for vm in bp.get("vms", [])}
    found |= {p["name"] for p in bp["host"].get("pools", [])}
    found |= {i["name"] for i in bp.get("images", [])}
    return found


def fresh_name(bp: dict, stem: str) -> str:
    taken = used_names(bp)
    i = 0
    while f"{stem}{i}" in taken:
        i += 1
    return f"{stem}{i}"


def fresh_mac(bp: dict, first_octet: int = 0x02) -> str:
    taken = {nic["mac"].lower() for _, nic in all_nics(bp) if "mac" in nic}
    i = 1
    while (mac := mac_text(first_octet << 40 | 0xBEEF00 << 8 | i, False)) in taken:
        i += 1
    return mac


def add_extra_network(bp: dict, subnet: str | None = None) -> dict:
    """Append a NAT network without VMs: in EXTRA_BLOCK (conflict-free by itself) unless `subnet` is given."""
    if subnet is None:
        taken = {n.get("subnet") for n in bp["networks"]}
        subnet = next(s for i in range(256)
                      if (s := str(IPv4Network((int(EXTRA_BLOCK.network_address) + 256 * i, 24)))) not in taken)
    net = {"name": fresh_name(bp, "extra"), "mode": "nat", "bridge": fresh_name(bp, "xbr"), "subnet": subnet}
    bp["networks"].append(net)
    return net


def declare_image(bp: dict, name: str) -> None:
    """Declare image `name` (Debian 12) unless the blueprint has it."""
    images = bp.setdefault("images", [])
    if name not in {i["name"] for i in images}:
        images.append({"name": name, "distribution": "debian", "release": "bookworm"})


def add_vm(bp: dict, name: str | None = None, nic: dict | None = None) -> dict:
    """Append a small VM on a new network of its own, growing host memory and disk to keep it fitting.

    `nic` overrides fields of its NIC (to plant a conflict)."""
    net = add_extra_network(bp)
    vm_name = name or fresh_name(bp, "added")
    vm = {"name": vm_name, "cpus": 1, "memory": "256MiB", "os_disk": {"size": "1GiB"},
          "nics": [{"network": net["name"], "address": str(IPv4Network(net["subnet"]).network_address + 10),
                    **(nic or {})}],
          "install": {"method": "image", "image": "debian"}}
    bp.setdefault("vms", []).append(vm)
    declare_image(bp, "debian")
    host = bp["host"]
    host["memory"] = f"{parse_size(host['memory']) + 256}MiB"
    host["disk"]["size"] = f"{parse_size(host['disk']['size']) + GIB}MiB"
    # the os disk lands in the default pool; make sure it exists and counts
    if DEFAULT_POOL not in {p["name"] for p in host["pools"]}:
        host["pools"].append({"name": DEFAULT_POOL, "type": "logical"})
    return vm


# --------------------------------------------------------------------------------------------
# one-conflict mutators: (draw, valid blueprint) -> blueprint with exactly one conflict class
# --------------------------------------------------------------------------------------------

Mutator = Callable[[Callable, dict], dict]
MUTATORS: dict[str, dict[str, Mutator]] = {}


def mutator(rule: str, variant: str, applies: Callable[[dict], bool] = lambda bp: True):
    def register(fn):
        fn.applies = applies
        MUTATORS.setdefault(rule, {})[variant] = fn
        return fn
    return register


def _sshd_port(bp: dict) -> int:
    return bp["host"].get("sshd", {}).get("port", DEFAULT_SSHD_PORT)


def _host_claims(bp: dict) -> set[tuple[int, str]]:
    claims = {(_sshd_port(bp), "tcp")}
    claims |= {(f["port"], f["proto"]) for f in bp.get("forwards", [])}
    claims |= {(a["port"], a["proto"]) for a in bp.get("firewall", {}).get("allow", [])}
    return claims


def _targets(bp: dict) -> list[str]:
    nats = nat_networks(bp)
    return [vm["name"] for vm in bp["vms"] if any(n["network"] in nats for n in vm["nics"])]


@mutator("port-collision", "duplicate-forward", lambda bp: bool(bp.get("forwards")))
def _dup_forward(draw, bp):
    fwd = draw(st.sampled_from(bp["forwards"]))
    clone = {"port": fwd["port"], "proto": fwd["proto"], "to": draw(st.sampled_from(_targets(bp)))}
    bp["forwards"].insert(draw(st.integers(0, len(bp["forwards"]))), clone)
    return bp


@mutator("port-collision", "forward-on-sshd", lambda bp: bool(_targets(bp)))
def _forward_on_sshd(draw, bp):
    port = _sshd_port(bp)
    bp.setdefault("forwards", [])
    bp["forwards"] = [f for f in bp["forwards"] if (f["port"], f["proto"]) != (port, "tcp")]
    bp["forwards"].append({"port": port, "proto": "tcp", "to": draw(st.sampled_from(_targets(bp)))})
    return bp


@mutator("port-collision", "sshd-on-forward", lambda bp: any(f["proto"] == "tcp" for f in bp.get("forwards", [])))
def _sshd_on_forward(draw, bp):
    fwd = draw(st.sampled_from([f for f in bp["forwards"] if f["proto"] == "tcp"]))
    bp["host"]["sshd"] = {**bp["host"].get("sshd", {}), "port": fwd["port"]}
    return bp


@mutator("port-collision", "opening-on-forward", lambda bp: bool(bp.get("forwards")))
def _opening_on_forward(draw, bp):
    fwd = draw(st.sampled_from(bp["forwards"]))
    bp.setdefault("firewall", {}).setdefault("allow", []).append({"port": fwd["port"], "proto": fwd["proto"]})
    return bp


@mutator("port-collision", "vps-clash", lambda bp: "vps" in bp)
def _vps_clash(draw, bp):
    vps = bp["vps"]
    sshd = vps.get("sshd", {}).get("port", DEFAULT_SSHD_PORT)
    ovpn = (vps["openvpn"].get("port", DEFAULT_OPENVPN[0]), vps["openvpn"].get("proto", DEFAULT_OPENVPN[1]))
    acme = vps.get("acme", {}).get("port", DEFAULT_ACME_PORT)
    which = draw(st.sampled_from(["sshd", "openvpn", "acme"]))
    others = {"sshd": [(sshd, "tcp")], "openvpn": [ovpn], "acme": [(acme, "tcp")]}
    victims = [c for k, cs in others.items() if k != which for c in cs if c[1] == "tcp"] + list(HAPROXY_PORTS)
    port, _ = draw(st.sampled_from(victims))
    if which == "sshd":
        vps["sshd"] = {**vps.get("sshd", {}), "port": port}
    elif which == "openvpn":
        vps["openvpn"]["port"], vps["openvpn"]["proto"] = port, "tcp"
    else:
        vps["acme"] = {**vps.get("acme", {}), "port": port}
    return bp


@mutator("ip-duplicate", "same-network", lambda bp: any(
    sum(n["network"] == name for _, n in nat_nics(bp)) >= 2 for name in nat_networks(bp)))
def _dup_ip(draw, bp):
    name = draw(st.sampled_from([m for m in nat_networks(bp) if sum(n["network"] == m for _, n in nat_nics(bp)) >= 2]))
    nics = [n for _, n in nat_nics(bp) if n["network"] == name]
    a, b = draw(st.permutations(nics))[:2]
    b["address"] = a["address"]
    return bp


@mutator("ip-duplicate", "added-vm", lambda bp: bool(nat_nics(bp)))
def _dup_ip_added(draw, bp):
    _, nic = draw(st.sampled_from(nat_nics(bp)))
    vm = add_vm(bp)
    vm["nics"][0] = {"network": nic["network"], "address": nic["address"]}
    return bp


@mutator("ip-duplicate", "vpn-client", lambda bp: "vps" in bp)
def _dup_vpn(draw, bp):
    vpn = bp["vps"]["openvpn"]
    client = draw(st.sampled_from(vpn["clients"]))
    vpn["clients"].append({"name": fresh_name(bp, "client"), "address": client["address"]})
    return bp


def _outside_address(draw) -> str:
    return str(OUTSIDE_BLOCK.network_address + draw(st.integers(1, OUTSIDE_BLOCK.num_addresses - 2)))


@mutator("ip-outside-subnet", "nic", lambda bp: bool(nat_nics(bp)))
def _outside(draw, bp):
    vm, nic = draw(st.sampled_from(nat_nics(bp)))
    others = [IPv4Network(n["subnet"]) for n in nat_networks(bp).values() if n["name"] != nic["network"]]
    # either an address in no network at all, or one inside another network of the blueprint
    choices = [_outside_address(draw)]
    if others:
        other = draw(st.sampled_from(others))
        choices.append(str(other.network_address + draw(st.integers(0, other.num_addresses - 1))))
    nic["address"] = draw(st.sampled_from(choices))
    return bp


@mutator("ip-outside-subnet", "vpn-client", lambda bp: "vps" in bp)
def _outside_vpn(draw, bp):
    client = draw(st.sampled_from(bp["vps"]["openvpn"]["clients"]))
    client["address"] = _outside_address(draw)
    return bp


@mutator("ip-outside-subnet", "uplink-gateway")
def _outside_uplink_gw(draw, bp):
    bp["host"]["uplink"]["gateway"] = _outside_address(draw)
    return bp


@mutator("ip-reserved", "nic", lambda bp: bool(nat_nics(bp)))
def _reserved(draw, bp):
    vm, nic = draw(st.sampled_from(nat_nics(bp)))
    net = nat_networks(bp)[nic["network"]]
    subnet = IPv4Network(net["subnet"])
    nic["address"] = str(draw(st.sampled_from([subnet.network_address, subnet.broadcast_address, gateway(net)])))
    return bp


@mutator("ip-reserved", "vpn-client", lambda bp: "vps" in bp)
def _reserved_vpn(draw, bp):
    subnet = IPv4Network(bp["vps"]["openvpn"]["subnet"])
    client = draw(st.sampled_from(bp["vps"]["openvpn"]["clients"]))
    client["address"] = str(draw(st.sampled_from(
        [subnet.network_address, subnet.network_address + 1, subnet.broadcast_address])))
    return bp


@mutator("ip-in-dhcp-range", "nic", lambda bp: bool(nat_nics(bp)))
def _in_dhcp(draw, bp):
    vm, nic = draw(st.sampled_from(nat_nics(bp)))
    net = nat_networks(bp)[nic["network"]]
    if "dhcp" in net and draw(st.booleans()):
        start, end = int(IPv4Address(net["dhcp"]["start"])), int(IPv4Address(net["dhcp"]["end"]))
        nic["address"] = str(IPv4Address(draw(st.integers(start, end))))
    else:
        # a (new) range that takes in the NIC's address but not the gateway
        net["dhcp"] = {"start": nic["address"], "end": nic["address"]}
    return bp


def _subnets(bp: dict) -> list[IPv4Network]:
    found = [uplink_network(bp["host"]["uplink"]["address"])]
    found += [IPv4Network(n["subnet"]) for n in nat_networks(bp).values()]
    if "vps" in bp:
        found.append(IPv4Network(bp["vps"]["openvpn"]["subnet"]))
    return found


def uplink_network(text: str) -> IPv4Network:
    return ipaddress.IPv4Interface(text).network


@mutator("subnet-overlap", "added-network")
def _overlap(draw, bp):
    target = draw(st.sampled_from(_subnets(bp)))
    # the same subnet, a subnet of it, or a supernet of it
    how = draw(st.sampled_from(["same", "sub", "super"]))
    if how == "sub" and target.prefixlen < 30:  # a /31 or /32 would also be subnet-too-small
        new = draw(st.sampled_from(list(target.subnets(prefixlen_diff=1))))
    elif how == "super" and target.prefixlen > 8:
        new = target.supernet(prefixlen_diff=draw(st.integers(1, 4)))
    else:
        new = target
    add_extra_network(bp, str(new))
    return bp


@mutator("mac-duplicate", "nic")
def _dup_mac(draw, bp):
    nics = all_nics(bp)
    vm, nic = draw(st.sampled_from(nics))
    mac = nic.get("mac") or fresh_mac(bp)
    nic["mac"] = mac
    others = [n for _, n in nics if n is not nic]
    if others:
        other = draw(st.sampled_from(others))
    else:
        other = add_vm(bp)["nics"][0]
    # same MAC, maybe written in the other letter case
    other["mac"] = mac.upper() if draw(st.booleans()) else mac.lower()
    return bp


@mutator("mac-multicast", "nic")
def _multicast(draw, bp):
    vm, nic = draw(st.sampled_from(all_nics(bp)))
    nic["mac"] = fresh_mac(bp, first_octet=draw(st.sampled_from([0x01, 0x33, 0xFF, 0x53])))
    return bp


@mutator("duplicate-name", "vm")
def _dup_vm(draw, bp):
    # inserted first, so that a name lookup keeps finding the original (later) VM
    name = draw(st.sampled_from([vm["name"] for vm in bp["vms"]]))
    vm = add_vm(bp, name=name)
    bp["vms"].remove(vm)
    bp["vms"].insert(0, vm)
    return bp


@mutator("duplicate-name", "vm-named-host")
def _vm_host(draw, bp):
    add_vm(bp, name="host")
    return bp


@mutator("duplicate-name", "network")
def _dup_network(draw, bp):
    name = draw(st.sampled_from([n["name"] for n in bp["networks"]]))
    net = add_extra_network(bp)
    bp["networks"].remove(net)
    net["name"] = name
    bp["networks"].insert(0, net)
    return bp


@mutator("duplicate-name", "bridge")
def _dup_bridge(draw, bp):
    net = add_extra_network(bp)
    net["bridge"] = draw(st.sampled_from([n["bridge"] for n in bp["networks"] if n is not net]))
    return bp


@mutator("duplicate-name", "user")
def _dup_user(draw, bp):
    user = draw(st.sampled_from(bp["users"]))
    bp["users"].append({"name": user["name"], "ssh_keys": [SSH_KEYS[0]]})
    return bp


@mutator("duplicate-name", "data-disk")
def _dup_disk(draw, bp):
    vm = draw(st.sampled_from(bp["vms"]))
    disks = vm.setdefault("data_disks", [])
    name = disks[0]["name"] if disks else "data"
    if not disks:
        disks.append({"name": name, "size": "1GiB", "pool": "dirpool", "mount": "/a"})
    disks.append({"name": name, "size": "1GiB", "pool": "dirpool", "mount": "/b"})
    bp["host"]["pools"].append({"name": "dirpool", "type": "dir", "path": "/dirpool"})
    return bp


@mutator("duplicate-name", "vpn-client", lambda bp: "vps" in bp)
def _dup_client(draw, bp):
    vpn = bp["vps"]["openvpn"]
    subnet = IPv4Network(vpn["subnet"])
    taken = {c["address"] for c in vpn["clients"]}
    free = next(str(a) for a in subnet.hosts() if a != subnet.network_address + 1 and str(a) not in taken) \
        if subnet.num_addresses > 3 + len(taken) else None
    if free is None:
        return _dup_vm(draw, bp)
    vpn["clients"].append({"name": draw(st.sampled_from(vpn["clients"]))["name"], "address": free})
    return bp


@mutator("unknown-reference", "forward")
def _unknown_forward(draw, bp):
    bp.setdefault("forwards", []).append({"port": _free_port(bp), "proto": "tcp", "to": fresh_name(bp, "ghost")})
    return bp


def _free_port(bp: dict) -> int:
    taken = _host_claims(bp)
    return next(p for p in range(40000, 65536) if (p, "tcp") not in taken)


@mutator("unknown-reference", "nic-network")
def _unknown_network(draw, bp):
    vm, nic = draw(st.sampled_from(all_nics(bp)))
    nic["network"] = fresh_name(bp, "nowhere")
    nic.pop("address", None)
    # a forward to this VM would now have no nat NIC (reference-kind is not checked for unknown networks)
    return bp


@mutator("unknown-reference", "user")
def _unknown_user(draw, bp):
    where = draw(st.sampled_from(["host", "vm"] + (["vps"] if "vps" in bp else [])))
    owner = bp["host"] if where == "host" else bp["vps"] if where == "vps" else draw(st.sampled_from(bp["vms"]))
    owner["users"] = [*owner.get("users", []), "nobody_here"]
    return bp


@mutator("unknown-reference", "image", lambda bp: any(vm["install"]["method"] != "iso" for vm in bp["vms"]))
def _unknown_image(draw, bp):
    vm = draw(st.sampled_from([vm for vm in bp["vms"] if vm["install"]["method"] != "iso"]))
    vm["install"] = {"method": "image", "image": fresh_name(bp, "ghost")}
    return bp


@mutator("unknown-reference", "image-element", lambda bp: bool(bp.get("images")))
def _unknown_element(draw, bp):
    image = draw(st.sampled_from(bp["images"]))
    image["elements"] = [*image.get("elements", []), draw(st.sampled_from(["moat-ghost", "nginx", "vm", "debian-minimal"]))]
    return bp


@mutator("duplicate-name", "image", lambda bp: bool(bp.get("images")))
def _dup_image(draw, bp):
    image = draw(st.sampled_from(bp["images"]))
    bp["images"].insert(draw(st.integers(0, len(bp["images"]))), draw(image_decl(image["name"])))
    return bp


@mutator("image-release", "other-distribution", lambda bp: bool(bp.get("images")))
def _image_release(draw, bp):
    image = draw(st.sampled_from(bp["images"]))
    other = next(d for d in sorted(RELEASES) if d != image["distribution"])
    image["release"] = draw(st.sampled_from(RELEASES[other]))
    return bp


@mutator("unknown-reference", "pool")
def _unknown_pool(draw, bp):
    vm = draw(st.sampled_from(bp["vms"]))
    vm["os_disk"]["pool"] = "NoSuchPool"
    return bp


@mutator("unknown-reference", "wazuh-manager")
def _unknown_manager(draw, bp):
    bp["monitoring"] = {"wazuh": {"manager": fresh_name(bp, "ghost")}}
    return bp


@mutator("unknown-reference", "site-client", lambda bp: "vps" in bp)
def _unknown_site_client(draw, bp):
    site = draw(st.sampled_from(bp["vps"]["sites"]))
    site["client"] = "ghost-client"
    return bp


@mutator("overcommit-memory", "host-memory")
def _overcommit_memory(draw, bp):
    need = vm_memory(bp) + reserved_memory(bp)
    short = draw(st.integers(1, min(need - 1, 4 * GIB)))
    bp["host"]["memory"] = f"{need - short}MiB"
    return bp


@mutator("overcommit-memory", "reserved-memory")
def _overcommit_reserved(draw, bp):
    spare = parse_size(bp["host"]["memory"]) - vm_memory(bp)
    bp["host"].setdefault("reserved", {})["memory"] = f"{spare + draw(st.integers(1, 4 * GIB))}MiB"
    return bp


@mutator("overcommit-disk", "host-disk")
def _overcommit_disk(draw, bp):
    pools = {p["name"]: p for p in bp["host"]["pools"]}
    if not any(p["type"] == "logical" for p in pools.values()):
        bp["host"]["pools"].append({"name": "lvm", "type": "logical"})
        pools["lvm"] = bp["host"]["pools"][-1]
    if logical_used(bp) < 2:
        vm = draw(st.sampled_from(bp["vms"]))
        vm["os_disk"] = {"size": "2GiB", "pool": next(n for n, p in pools.items() if p["type"] == "logical")}
    used = logical_used(bp)
    vg = used - draw(st.integers(1, used - 1))  # still > 0: no disk-layout error
    bp["host"]["disk"]["size"] = f"{layout_size(bp) + vg}MiB"
    return bp


@mutator("overcommit-cpu", "vm-cpus", lambda bp: host_threads(bp) < 512)
def _overcommit_cpu(draw, bp):
    vm = draw(st.sampled_from(bp["vms"]))
    vm["cpus"] = draw(st.integers(host_threads(bp) + 1, min(host_threads(bp) + 8, 512)))
    return bp


@mutator("overcommit-cpu", "host-cpus", lambda bp: max(vm["cpus"] for vm in bp["vms"]) >= 2)
def _overcommit_host_cpu(draw, bp):
    biggest = max(vm["cpus"] for vm in bp["vms"])
    reserved = bp["host"].get("reserved", {}).get("cpus", DEFAULT_RESERVED_CPUS)
    bp["host"]["cpus"] = reserved + draw(st.integers(1, biggest - 1))
    return bp


@mutator("unsafe-string", "description")
def _unsafe(draw, bp):
    bad = draw(st.sampled_from(["\n", '"', "'", "`", "$", "\\", "\t", "\x00", "\x7f", "\r"]))
    text = draw(safe_text)
    at = draw(st.integers(0, len(text)))
    text = text[:at] + bad + text[at:]
    where = draw(st.sampled_from(["vm", "blueprint", "opening"]))
    if where == "vm":
        draw(st.sampled_from(bp["vms"]))["description"] = text
    elif where == "blueprint":
        bp["description"] = text
    else:
        bp.setdefault("firewall", {}).setdefault("allow", []).append(
            {"port": _free_port(bp), "proto": "tcp", "description": text})
    return bp


# --- the classes of issue 9 ---------------------------------------------------------------------

NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,30}[a-z0-9]$|^[a-z]$")


@mutator("lock-out", "empty-users")
def _empty_users(draw, bp):
    draw(st.sampled_from([bp["host"]] + ([bp["vps"]] if "vps" in bp else [])))["users"] = []
    return bp


def _uplink_ip(bp: dict) -> str:
    return bp["host"]["uplink"]["address"].split("/")[0]


@mutator("self-reference", "uplink-gateway")
def _gateway_self(draw, bp):
    bp["host"]["uplink"]["gateway"] = _uplink_ip(bp)
    return bp


@mutator("self-reference", "dns-is-the-host")
def _dns_self(draw, bp):
    own = [_uplink_ip(bp)] + [str(gateway(n)) for n in nat_networks(bp).values()]
    bp["host"]["uplink"]["dns"] = [*bp["host"]["uplink"].get("dns", []), draw(st.sampled_from(own))]
    return bp


@mutator("self-reference", "vps-in-its-tunnel", lambda bp: "vps" in bp)
def _vps_in_tunnel(draw, bp):
    tunnel = IPv4Network(bp["vps"]["openvpn"]["subnet"])
    bp["vps"]["address"] = str(tunnel.network_address + draw(st.integers(0, tunnel.num_addresses - 1)))
    return bp


@mutator("self-reference", "wazuh-manager-as-agent", lambda bp: bool(_targets(bp)))
def _wazuh_self(draw, bp):
    manager = draw(st.sampled_from(_targets(bp)))
    bp["monitoring"] = {"wazuh": {"manager": manager, "agents": ["host", manager]}}
    return bp


@mutator("self-reference", "mirror-into-itself",
         lambda bp: any(n["mode"] == "mirror" for n in bp["networks"]))
def _mirror_self(draw, bp):
    net = draw(st.sampled_from([n for n in bp["networks"] if n["mode"] == "mirror"]))
    bp["mirror"] = {"network": net["name"], "interface": net["bridge"]}
    return bp


@mutator("host-identity", "vm-named-like-the-host", lambda bp: bool(NAME_RE.match(bp["host"]["name"])))
def _vm_host_name(draw, bp):
    add_vm(bp, name=bp["host"]["name"])
    return bp


@mutator("host-identity", "bridge-named-like-a-host-interface")
def _bridge_uplink(draw, bp):
    net = add_extra_network(bp)
    net["bridge"] = draw(st.sampled_from([bp["host"]["uplink"]["interface"], "lo"]
                                         + (["tun-moat"] if "vps" in bp else [])))
    return bp


@mutator("host-identity", "vps-address-in-a-network", lambda bp: "vps" in bp)
def _vps_in_nat(draw, bp):
    net = draw(st.sampled_from(list(nat_networks(bp).values())))
    subnet = IPv4Network(net["subnet"])
    bp["vps"]["address"] = str(subnet.network_address + draw(st.integers(0, subnet.num_addresses - 1)))
    return bp


@mutator("host-identity", "site-named-like-the-host", lambda bp: "vps" in bp)
def _site_fqdn(draw, bp):
    site = draw(st.sampled_from(bp["vps"]["sites"]))
    site["host"] = f"{bp['host']['name']}.{bp['host']['domain']}"
    return bp


@mutator("reserved-range", "nat-subnet")
def _reserved_subnet(draw, bp):
    add_extra_network(bp, draw(st.sampled_from(["127.0.0.0/24", "169.254.0.0/16", "224.1.0.0/24", "240.0.0.0/24",
                                                "0.0.0.0/24"])))
    return bp


@mutator("reserved-range", "dns")
def _reserved_dns(draw, bp):
    bp["host"]["uplink"]["dns"] = [draw(st.sampled_from(["127.0.0.53", "169.254.169.254", "224.0.0.251", "0.0.0.0"]))]
    return bp


@mutator("reserved-range", "firewall-source")
def _reserved_source(draw, bp):
    bp.setdefault("firewall", {}).setdefault("allow", []).append(
        {"port": _free_port(bp), "proto": "tcp", "from": draw(st.sampled_from(["127.0.0.0/8", "224.0.0.0/4"]))})
    return bp


@mutator("reserved-range", "vps-address", lambda bp: "vps" in bp)
def _reserved_vps(draw, bp):
    bp["vps"]["address"] = draw(st.sampled_from(["127.0.0.1", "255.255.255.255", "224.0.0.1", "169.254.1.1"]))
    return bp


def _add_disk(bp: dict, vm: dict, mount: str) -> None:
    """A 1MiB data disk in a dir pool of its own (no capacity: no overcommit, and it is used)."""
    pools = bp["host"]["pools"]
    if not any(p["name"] == "extradisks" for p in pools):
        pools.append({"name": "extradisks", "type": "dir", "path": "/srv/extradisks"})
    taken = {d["name"] for d in vm.get("data_disks", [])}
    name = next(f"x{i}" for i in range(100) if f"x{i}" not in taken)
    vm.setdefault("data_disks", []).append({"name": name, "size": "1MiB", "pool": "extradisks", "mount": mount})


@mutator("mount-collision", "disk-over-the-system")
def _disk_on_system(draw, bp):
    vm = draw(st.sampled_from(bp["vms"]))
    _add_disk(bp, vm, draw(st.sampled_from(["/home", "/var", "/usr/", "/etc/luks-keys", "/boot/efi", "/run/x", "/root"])))
    return bp


@mutator("mount-collision", "two-disks-one-mount")
def _disks_one_mount(draw, bp):
    vm = draw(st.sampled_from(bp["vms"]))
    if not vm.get("data_disks"):
        _add_disk(bp, vm, "/srv/shared")
    mount = draw(st.sampled_from(vm["data_disks"]))["mount"]
    _add_disk(bp, vm, draw(st.sampled_from([mount, mount + "/"])))
    return bp


@mutator("mount-collision", "pool-directory")
def _pool_dirs(draw, bp):
    dirs = [p["path"] for p in bp["host"]["pools"] if p["type"] == "dir"]
    path = draw(st.sampled_from(dirs + ["/boot/isos", "/etc/pool", "/var"]))
    bp["host"]["pools"].append({"name": "clash", "type": "dir", "path": path})
    return bp



CONFLICT_RULES = sorted(MUTATORS)


@st.composite
def conflicting(draw, rule: str) -> tuple[dict, dict, str]:
    """(valid blueprint, the same with one conflict of class `rule`, variant name)."""
    bp = draw(blueprints())
    variants = {name: fn for name, fn in MUTATORS[rule].items() if fn.applies(bp)}
    assume(variants)  # e.g. no VM on a nat network: no NIC address to play with
    name = draw(st.sampled_from(sorted(variants)))
    return bp, variants[name](draw, copy.deepcopy(bp)), name


# --------------------------------------------------------------------------------------------
# maybe-conflicting: random schema-valid edits that may or may not conflict
# --------------------------------------------------------------------------------------------


def _addresses_near(bp: dict, net: dict) -> list[str]:
    """Addresses likely to matter for `net`: reserved ones, the DHCP range, other NICs', neighbours."""
    subnet = IPv4Network(net["subnet"])
    found = {subnet.network_address, subnet.broadcast_address, gateway(net), subnet.network_address + 2}
    if "dhcp" in net:
        found |= {IPv4Address(net["dhcp"]["start"]), IPv4Address(net["dhcp"]["end"])}
    found |= {IPv4Address(n["address"]) for _, n in nat_nics(bp) if "address" in n}
    if int(subnet.broadcast_address) < 2**32 - 1:
        found.add(subnet.broadcast_address + 1)
    if int(subnet.network_address) > 0:
        found.add(subnet.network_address - 1)
    return sorted(str(a) for a in found)


@st.composite
def maybe_conflicting(draw) -> dict:
    """A valid blueprint with 1..4 random edits; each may or may not create a conflict."""
    bp = copy.deepcopy(draw(blueprints(max_vms=5)))
    for _ in range(draw(st.integers(1, 4))):
        edit = draw(st.sampled_from(sorted(EDITS)))
        EDITS[edit](draw, bp)
    return bp


def _edit_nic_address(draw, bp):
    nics = nat_nics(bp)
    if nics:
        _, nic = draw(st.sampled_from(nics))
        net = nat_networks(bp)[nic["network"]]
        subnet = IPv4Network(net["subnet"])
        nic["address"] = draw(st.one_of(
            st.sampled_from(_addresses_near(bp, net)),
            st.integers(int(subnet.network_address), int(subnet.broadcast_address)).map(_ip)))


def _edit_nic_mac(draw, bp):
    _, nic = draw(st.sampled_from(all_nics(bp)))
    known = sorted({n["mac"] for _, n in all_nics(bp) if "mac" in n})
    choice = draw(st.sampled_from(["drop", "copy", "fresh", "multicast"] if known else ["drop", "fresh", "multicast"]))
    if choice == "drop":
        nic.pop("mac", None)
    elif choice == "copy":
        nic["mac"] = draw(st.sampled_from(known))
    elif choice == "fresh":
        nic["mac"] = draw(unicast_macs(1))[0]
    else:
        nic["mac"] = mac_text(draw(st.integers(0, 2**48 - 1)) | 1 << 40, draw(st.booleans()))


def _edit_forward(draw, bp):
    forwards = bp.setdefault("forwards", [])
    targets = _targets(bp)
    if not targets:
        return
    known = sorted({(f["port"], f["proto"]) for f in forwards} | {(_sshd_port(bp), "tcp")})
    claim = draw(st.one_of(st.sampled_from(known), st.tuples(ports, protos)))
    fwd = {"port": claim[0], "proto": claim[1], "to": draw(st.sampled_from(targets))}
    if forwards and draw(st.booleans()):
        forwards[draw(st.integers(0, len(forwards) - 1))] = fwd
    else:
        forwards.append(fwd)


def _edit_forward_target(draw, bp):
    if bp.get("forwards"):
        fwd = draw(st.sampled_from(bp["forwards"]))
        fwd["to"] = draw(st.sampled_from([vm["name"] for vm in bp["vms"]] + ["ghost"]))


def _edit_sshd(draw, bp):
    known = sorted({f["port"] for f in bp.get("forwards", [])} | {22, 2222})
    bp["host"]["sshd"] = {"port": draw(st.one_of(st.sampled_from(known), ports))}


def _edit_vm_memory(draw, bp):
    vm = draw(st.sampled_from(bp["vms"]))
    vm["memory"] = draw(st.integers(64, 64 * GIB).flatmap(size_text))


def _edit_host_memory(draw, bp):
    need = vm_memory(bp) + reserved_memory(bp)
    bp["host"]["memory"] = f"{max(1, need + draw(st.integers(-2 * GIB, 2 * GIB)))}MiB"


def _edit_vm_cpus(draw, bp):
    vm = draw(st.sampled_from(bp["vms"]))
    vm["cpus"] = draw(st.integers(1, min(host_threads(bp) + 3, 512)))


def _edit_host_disk(draw, bp):
    need = layout_size(bp) + logical_used(bp)
    bp["host"]["disk"]["size"] = f"{max(1, need + draw(st.integers(-64 * GIB, 64 * GIB)))}MiB"


def _edit_os_disk(draw, bp):
    vm = draw(st.sampled_from(bp["vms"]))
    vm["os_disk"]["size"] = draw(st.integers(1, 4 * TIB).flatmap(size_text))


def _edit_subnet(draw, bp):
    nets = list(nat_networks(bp).values())
    net = draw(st.sampled_from(nets))
    candidates = _subnets(bp) + [IPv4Network("10.0.0.0/8"), IPv4Network("172.31.0.0/24")]
    new = draw(st.sampled_from(candidates))
    if draw(st.booleans()) and new.prefixlen < 30:
        new = draw(st.sampled_from(list(new.subnets(prefixlen_diff=1))))
    net["subnet"] = str(new)


def _edit_add_network(draw, bp):
    new = draw(st.sampled_from(_subnets(bp) + [IPv4Network("172.31.7.0/24"), IPv4Network("10.0.0.0/8")]))
    add_extra_network(bp, str(new))


def _edit_dhcp(draw, bp):
    net = draw(st.sampled_from(list(nat_networks(bp).values())))
    if "dhcp" in net and draw(st.booleans()):
        del net["dhcp"]
        return
    near = _addresses_near(bp, net)
    net["dhcp"] = {"start": draw(st.sampled_from(near)), "end": draw(st.sampled_from(near))}


def _edit_gateway(draw, bp):
    net = draw(st.sampled_from(list(nat_networks(bp).values())))
    if "gateway" in net and draw(st.booleans()):
        del net["gateway"]
    else:
        net["gateway"] = draw(st.sampled_from(_addresses_near(bp, net)))


def _edit_description(draw, bp):
    vm = draw(st.sampled_from(bp["vms"]))
    vm["description"] = draw(st.text(alphabet=SAFE_TEXT_ALPHABET + "\n\"'`$\\", min_size=1, max_size=20))


def _edit_vm_name(draw, bp):
    vm = draw(st.sampled_from(bp["vms"]))
    vm["name"] = draw(st.sampled_from([v["name"] for v in bp["vms"]] + ["host", "fresh"]))


def _edit_vps(draw, bp):
    if "vps" not in bp:
        return
    vps = bp["vps"]
    pick = st.sampled_from([22, 80, 443, 1194, 8888, 2222])
    what = draw(st.sampled_from(["sshd", "openvpn", "acme", "client-address", "tunnel"]))
    if what == "sshd":
        vps["sshd"] = {"port": draw(pick)}
    elif what == "openvpn":
        vps["openvpn"]["port"], vps["openvpn"]["proto"] = draw(pick), draw(protos)
    elif what == "acme":
        vps["acme"] = {"port": draw(pick)}
    elif what == "client-address":
        subnet = IPv4Network(vps["openvpn"]["subnet"])
        client = draw(st.sampled_from(vps["openvpn"]["clients"]))
        client["address"] = draw(st.sampled_from(
            [str(subnet.network_address + i) for i in range(min(4, subnet.num_addresses))]
            + [c["address"] for c in vps["openvpn"]["clients"]] + [str(subnet.broadcast_address)]))
    else:
        vps["openvpn"]["subnet"] = str(draw(st.sampled_from(_subnets(bp))))


def _edit_image(draw, bp):
    images = bp.get("images", [])
    what = draw(st.sampled_from(["vm-image", "release", "elements", "name"] if images else ["vm-image"]))
    if what == "vm-image":
        vm = draw(st.sampled_from(bp["vms"]))
        vm["install"] = {"method": "image", "image": draw(st.sampled_from(sorted({i["name"] for i in images} | {"ghost"})))}
        return
    image = draw(st.sampled_from(images))
    if what == "release":
        image["release"] = draw(st.sampled_from(sorted(r for rs in RELEASES.values() for r in rs)))
    elif what == "elements":
        image["elements"] = draw(st.lists(st.sampled_from(MOAT_ELEMENTS + ["moat-ghost"]), unique=True))
    else:
        image["name"] = draw(st.sampled_from([i["name"] for i in images] + ["fresh-image"]))


def _edit_reserved_cpus(draw, bp):
    bp["host"].setdefault("reserved", {})["cpus"] = draw(st.integers(0, bp["host"]["cpus"] - 1))


EDITS: dict[str, Callable] = {
    "nic-address": _edit_nic_address, "nic-mac": _edit_nic_mac, "forward": _edit_forward,
    "forward-target": _edit_forward_target, "sshd": _edit_sshd, "vm-memory": _edit_vm_memory,
    "host-memory": _edit_host_memory, "vm-cpus": _edit_vm_cpus, "host-disk": _edit_host_disk,
    "os-disk": _edit_os_disk, "subnet": _edit_subnet, "add-network": _edit_add_network, "dhcp": _edit_dhcp,
    "gateway": _edit_gateway, "description": _edit_description, "vm-name": _edit_vm_name, "vps": _edit_vps,
    "reserved-cpus": _edit_reserved_cpus, "image": _edit_image,
}


# --------------------------------------------------------------------------------------------
# fuzz input
# --------------------------------------------------------------------------------------------

SCHEMA_KEYS = [
    "version", "name", "description", "users", "host", "networks", "vms", "forwards", "firewall", "mirror",
    "monitoring", "vps", "ssh_keys", "sudo", "domain", "os", "cpus", "memory", "reserved", "uplink", "disk",
    "pools", "sshd", "selinux", "interface", "address", "gateway", "dns", "device", "size", "efi", "boot",
    "root", "swap", "volume_group", "encryption", "passphrase", "unlock_port", "type", "path", "capacity",
    "port", "totp", "mode", "bridge", "subnet", "dhcp", "start", "end", "os_disk", "data_disks", "nics",
    "install", "autostart", "pool", "mount", "encrypted", "network", "mac", "method", "image", "iso",
    "proto", "to", "to_port", "allow", "from", "wazuh", "manager", "agents", "openvpn", "clients", "client",
    "acme", "email", "sites", "images", "distribution", "release", "elements", "packages", "snapshot",
]

# Values at the edges of what the schema and the checks accept.
BOUNDARY_VALUES: list[Any] = [
    None, True, False, 0, -1, 1, 2, 65535, 65536, 4096, 4097, 512, 513, 2**31, 2**64, 1.0, 1.5, -0.0,
    float("inf"), float("nan"), "", " ", "os", "host", "ISOs", "images", "a-b", "x" * 201, "secret:x",
    "0.0.0.0", "255.255.255.255", "0.0.0.0/0", "0.0.0.0/32", "255.255.255.255/32", "10.0.0.0/31",
    "10.0.0.1/24", "10.0.0.0/255.255.255.0", "1.2.3.4/32", "01:00:5e:00:00:01", "FF:FF:FF:FF:FF:FF",
    "52:54:00:00:00:00", "1MiB", "999999999TiB", "0MiB", "12gib", "nat", "mirror", "logical", "dir", "tcp",
    "udp", "image", "iso", "kickstart", "rocky9", "debian", "ubuntu", "bookworm", "jammy", "moat-base",
    "20261201T000000Z", "a.b", "-a", "/", "/ISOs", "x.iso", [], {}, [None], {"": None},
]

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20), st.sampled_from(BOUNDARY_VALUES),
)


def json_like(keys: st.SearchStrategy[str] | None = None) -> st.SearchStrategy[Any]:
    """Arbitrary JSON-like data; mapping keys are mostly the schema's own (to get past the top level)."""
    keys = keys or st.one_of(st.sampled_from(SCHEMA_KEYS), st.text(max_size=8))
    return st.recursive(json_scalars, lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=6)), max_leaves=25)


# YAML-ish text: a small grammar of flow and block fragments with YAML's sharp edges
# (anchors, aliases, merge keys, tags, timestamps, odd numbers, directives, documents).
_yaml_scalars = st.one_of(
    st.sampled_from(["~", "null", "true", "no", "on", "0x1f", "0o17", "0b101", "1_000", ".inf", "-.nan", "1e3",
                     "12:30:45", "'q'", '"d\\n"', '"\\ud800"', '"\\uFFFE"', "|\n  lit\n", ">-\n  fold\n", "''",
                     "*a", "&a x", "!!str 1", "!!int x", "!!float y", "!!binary aGk=", "!!timestamp 2001-02-03",
                     "!!omap [a: 1]", "!!set {a, b}", "!!python/object:os.system x", "!custom z", "? k", "-", ":",
                     "@", "%", "`"]),
    st.from_regex(r"[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}([Tt ][0-9]{1,2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-][0-9]{1,2})?)?",
                  fullmatch=True),
    st.from_regex(r"[+-]?[0-9]{1,30}(\.[0-9]*)?([eE][+-]?[0-9]{1,4})?", fullmatch=True),
    st.sampled_from(SCHEMA_KEYS),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=6),
)


def _flow(inner):
    return st.one_of(
        st.lists(inner, max_size=4).map(lambda xs: "[" + ", ".join(xs) + "]"),
        st.lists(st.tuples(inner, inner), max_size=4).map(lambda kv: "{" + ", ".join(f"{k}: {v}" for k, v in kv) + "}"),
        st.tuples(st.sampled_from(["&a ", "&b ", "!!map ", "!!seq ", "!!omap ", "!!set ", "!t "]), inner).map("".join),
        st.tuples(inner, inner).map(lambda kv: "{<<: " + kv[0] + ", " + kv[1] + ": 1}"),
    )


yaml_flow = st.recursive(_yaml_scalars, _flow, max_leaves=12)


@st.composite
def yaml_block(draw, depth: int = 0) -> str:
    """A block mapping or sequence of flow nodes, with anchors/merges/aliases sprinkled in."""
    indent = "  " * depth
    lines = []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["map", "seq", "nested", "merge", "raw"]))
        if kind == "map":
            lines.append(f"{indent}{draw(_yaml_scalars)}: {draw(yaml_flow)}")
        elif kind == "seq":
            lines.append(f"{indent}- {draw(yaml_flow)}")
        elif kind == "nested" and depth < 3:
            lines.append(f"{indent}{draw(st.sampled_from(SCHEMA_KEYS))}: {draw(st.sampled_from(['', '&a', '&b']))}")
            lines.append(draw(yaml_block(depth + 1)))
        elif kind == "merge":
            lines.append(f"{indent}<<: {draw(st.sampled_from(['*a', '*b', '[*a, *b]', '{x: 1}', '1']))}")
        else:
            lines.append(indent + draw(st.sampled_from(["---", "...", "%YAML 1.1", "%TAG ! tag:x,2000:", "#c", "\t",
                                                         "? [a, b]", ": c", "- - x", "key: |", "  text"])))
    return "\n".join(lines)


yaml_ish_text = st.one_of(
    st.text(max_size=80),
    yaml_flow,
    yaml_block(),
    st.lists(st.one_of(yaml_block(), yaml_flow), min_size=1, max_size=3).map("\n---\n".join),
)


# --------------------------------------------------------------------------------------------
# structural mutations of valid blueprints
# --------------------------------------------------------------------------------------------


def paths_of(data: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path (tuple of keys/indexes) to a node below the root."""
    found = []
    if isinstance(data, dict):
        for k, v in data.items():
            found.append(prefix + (k,))
            found += paths_of(v, prefix + (k,))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            found.append(prefix + (i,))
            found += paths_of(v, prefix + (i,))
    return found


def _get(data: Any, path: tuple) -> Any:
    for part in path:
        data = data[part]
    return data


def _other_type(value: Any) -> st.SearchStrategy[Any]:
    """Something of a different JSON type than `value` (a string for an int, a list for a mapping, ...)."""
    if isinstance(value, bool):
        return st.sampled_from([1, "true", "yes", None, [True]])
    if isinstance(value, int):
        return st.sampled_from([str(value), float(value), value + 0.5, [value], {"v": value}, True, None])
    if isinstance(value, str):
        return st.one_of(st.sampled_from([[value], {value: value}, None, True, 0]),
                         st.integers(), st.floats())
    if isinstance(value, list):
        return st.sampled_from([{}, value[0] if value else None, "list", 0, {"0": value[0]} if value else {}])
    if isinstance(value, dict):
        return st.sampled_from([[], [value], "mapping", 0, None, list(value)])
    return json_scalars


@st.composite
def structurally_mutated(draw) -> dict:
    """A valid blueprint with 1..3 edits: delete a key or item, change a value's type,
    replace a value with a boundary one, duplicate a list item, or copy one value elsewhere."""
    bp = copy.deepcopy(draw(blueprints(max_vms=4)))
    for _ in range(draw(st.integers(1, 3))):
        paths = paths_of(bp)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent, key = _get(bp, path[:-1]), path[-1]
        op = draw(st.sampled_from(["delete", "retype", "boundary", "json", "duplicate", "copy"]))
        if op == "delete":
            del parent[key]
        elif op == "retype":
            parent[key] = draw(_other_type(parent[key]))
        elif op == "boundary":
            parent[key] = copy.deepcopy(draw(st.sampled_from(BOUNDARY_VALUES)))
        elif op == "json":
            parent[key] = draw(json_like())
        elif op == "duplicate" and isinstance(parent, list):
            parent.insert(key, copy.deepcopy(parent[key]))
        elif op == "copy":
            source = _get(bp, draw(st.sampled_from(paths)))
            parent[key] = copy.deepcopy(source)
    return bp


@st.composite
def text_mutated(draw) -> str:
    """The YAML text of a valid blueprint with a few character-level edits."""
    text = dump_yaml(draw(blueprints(max_vms=3)))
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(text)))
        op = draw(st.sampled_from(["insert", "delete", "dup-line", "indent"]))
        if op == "insert":
            token = draw(st.one_of(st.sampled_from([":", "- ", "[", "{", "&a ", "*a", "<<: *a", "!!omap ", "\t", "#",
                                                    "'", '"', "\n", "  ", "2021-02-30", "? "]), _yaml_scalars))
            text = text[:at] + token + text[at:]
        elif op == "delete":
            text = text[:at] + text[at + draw(st.integers(1, 20)):]
        elif op == "dup-line":
            lines = text.splitlines(keepends=True)
            i = draw(st.integers(0, len(lines) - 1))
            lines.insert(i, lines[i])
            text = "".join(lines)
        else:
            lines = text.splitlines(keepends=True)
            i = draw(st.integers(0, len(lines) - 1))
            lines[i] = draw(st.sampled_from(["", " ", "   "])) + lines[i].lstrip(" ") if draw(st.booleans()) \
                else "  " + lines[i]
            text = "".join(lines)
    return text


# --------------------------------------------------------------------------------------------
# collisions: make two things of one kind equal, or a reference point to its own owner
# --------------------------------------------------------------------------------------------

Slot = tuple[Any, Any]  # (container, key): container[key] is the value


def slots(bp: dict) -> dict[str, list[Slot]]:
    """Every name, address, subnet, port and path of a blueprint, by kind, as writable places."""
    host, vps = bp["host"], bp.get("vps")
    kinds: dict[str, list[Slot]] = {k: [] for k in ("name", "address", "subnet", "port", "path")}
    name, address, subnet, port, path = (kinds[k].append for k in ("name", "address", "subnet", "port", "path"))
    name((host, "name")); name((host["uplink"], "interface")); address((host["uplink"], "gateway"))
    address((host["uplink"], "address"))  # an interface: copied with its prefix (see collided)
    for i in range(len(host["uplink"].get("dns", []))):
        address((host["uplink"]["dns"], i))
    if "volume_group" in host["disk"]:
        name((host["disk"], "volume_group"))
    if "unlock_port" in host["disk"].get("encryption", {}):
        port((host["disk"]["encryption"], "unlock_port"))
    if "port" in host.get("sshd", {}):
        port((host["sshd"], "port"))
    for p in host["pools"]:
        name((p, "name"))
        if "path" in p:
            path((p, "path"))
    for u in bp["users"]:
        name((u, "name"))
    for n in bp["networks"]:
        name((n, "name")); name((n, "bridge"))
        for key in ("subnet",):
            if key in n:
                subnet((n, key))
        if "gateway" in n:
            address((n, "gateway"))
        if "dhcp" in n:
            address((n["dhcp"], "start")); address((n["dhcp"], "end"))
    for image in bp.get("images", []):
        name((image, "name"))
    for vm in bp["vms"]:
        name((vm, "name"))
        if vm["install"]["method"] == "image":
            name((vm["install"], "image"))
        for nic in vm["nics"]:
            name((nic, "network"))
            if "address" in nic:
                address((nic, "address"))
        for d in vm.get("data_disks", []):
            name((d, "name")); path((d, "mount"))
    for f in bp.get("forwards", []):
        name((f, "to")); port((f, "port"))
        if "to_port" in f:
            port((f, "to_port"))
    for a in bp.get("firewall", {}).get("allow", []):
        port((a, "port"))
        if "from" in a:
            subnet((a, "from"))
    if "mirror" in bp:
        name((bp["mirror"], "network"))
        if "interface" in bp["mirror"]:
            name((bp["mirror"], "interface"))
    wazuh = bp.get("monitoring", {}).get("wazuh")
    if wazuh:
        name((wazuh, "manager"))
    if vps:
        name((vps, "name")); name((vps, "client")); address((vps, "address"))
        subnet((vps["openvpn"], "subnet"))
        for c in vps["openvpn"]["clients"]:
            name((c, "name")); address((c, "address"))
        for site in vps["sites"]:
            name((site, "client"))
            if "port" in site:
                port((site, "port"))
        for section, key in (("sshd", "port"), ("openvpn", "port"), ("acme", "port")):
            if key in vps.get(section, {}):
                port((vps[section], key))
    return kinds


def _self_references(bp: dict) -> list[Callable[[], None]]:
    """Edits that point a reference at its own owner: each loops something into itself."""
    host, up = bp["host"], bp["host"]["uplink"]
    ip = up["address"].split("/")[0]
    edits: list[Callable[[], None]] = [
        lambda: up.__setitem__("gateway", ip),
        lambda: up.__setitem__("dns", [ip]),
    ]
    for net in nat_networks(bp).values():
        edits.append(lambda net=net: up.__setitem__("dns", [str(gateway(net))]))
        edits.append(lambda net=net: net.__setitem__("dhcp", {"start": str(gateway(net)), "end": str(gateway(net))}))
    for vm, nic in nat_nics(bp):
        net = nat_networks(bp)[nic["network"]]
        edits.append(lambda nic=nic, net=net: nic.__setitem__("address", str(gateway(net))))
    for net in bp["networks"]:
        if net["mode"] == "mirror":
            edits.append(lambda net=net: bp.__setitem__("mirror", {"network": net["name"], "interface": net["bridge"]}))
        edits.append(lambda net=net: net.__setitem__("bridge", up["interface"]))
    wazuh = bp.get("monitoring", {}).get("wazuh")
    if wazuh:
        edits.append(lambda: wazuh.__setitem__("agents", [wazuh["manager"]]))
    if "vps" in bp:
        vps = bp["vps"]
        edits.append(lambda: vps.__setitem__("address", ip))
        edits.append(lambda: vps.__setitem__("address", vps["openvpn"]["clients"][0]["address"]))
        edits.append(lambda: vps.__setitem__("name", host["name"]))
        edits.append(lambda: vps["sites"][0].__setitem__("host", f"{host['name']}.{host['domain']}"))
    for vm in bp["vms"]:
        edits.append(lambda vm=vm: vm.__setitem__("name", host["name"]))
        for d in vm.get("data_disks", []):
            edits.append(lambda d=d: d.__setitem__("mount", "/home"))
    return edits


@st.composite
def collided(draw) -> tuple[dict, list[str]]:
    """A valid blueprint with 1..2 collisions: two slots of one kind made equal (`kind a := b`), or a
    reference pointed at its owner. Returns the blueprint and what was done. The result may break
    the schema (a pool name copied into a VM name): the test skips those."""
    bp = copy.deepcopy(draw(blueprints(max_vms=4)))
    done = []
    for _ in range(draw(st.integers(1, 2))):
        if draw(st.integers(0, 2)) == 0:
            edits = _self_references(bp)
            i = draw(st.integers(0, len(edits) - 1))
            edits[i]()
            done.append(f"self-reference #{i}")
            continue
        kinds = {k: v for k, v in slots(bp).items() if len(v) >= 2}
        kind = draw(st.sampled_from(sorted(kinds)))
        (src, src_key), (dst, dst_key) = draw(st.permutations(kinds[kind]))[:2]
        value = src[src_key]
        if kind == "address":  # the uplink address is an interface (with its prefix)
            value = value.split("/")[0]
            if dst is bp["host"]["uplink"] and dst_key == "address":
                value = f"{value}/{dst[dst_key].split('/')[1]}"
        dst[dst_key] = value
        done.append(f"{kind}: {dst_key} := {value!r}")
    return bp, done
