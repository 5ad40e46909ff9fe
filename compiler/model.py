"""Stage 3, structure: schema-valid data (defaults filled) -> frozen attrs model via cattrs.

Every model object carries `at`, the path of its mapping in the blueprint, so later stages
can report problems at the line that wrote them. Defaults live in the schema only.

Unlike moat's other modules, this one has no `from __future__ import annotations`: the classes'
annotations are types when the classes are made, which cattrs reads as they are; as strings it
would compile and evaluate each of them (145) again at every start (12 M of the 760 M
instructions of a `moat check` of the example).
"""

import ipaddress
import re
from typing import Any, Literal

import attrs
import cattrs

from .diagnostics import Path

IPv4 = ipaddress.IPv4Address
IPv4Net = ipaddress.IPv4Network
IPv4If = ipaddress.IPv4Interface
Proto = Literal["tcp", "udp"]


class MiB(int):
    """A size in MiB, written in the blueprint as `12GiB`, `200MiB` or `2TiB`."""

    _UNITS = {"MiB": 1, "GiB": 1024, "TiB": 1024 * 1024}

    @classmethod
    def parse(cls, text: str) -> "MiB":
        m = re.fullmatch(r"([0-9]+)(MiB|GiB|TiB)", text)
        if not m:
            raise ValueError(f"not a size: {text!r}")
        return cls(int(m.group(1)) * cls._UNITS[m.group(2)])

    def human(self) -> str:
        return in_one_unit(self)[0]


def in_one_unit(*sizes: int) -> list[str]:
    """Sizes written in ONE unit, so a message compares like with like: the largest unit they
    are all whole multiples of; else GiB with two decimals when each is at least 1GiB and that
    still tells them apart; else MiB."""
    for unit, factor in (("TiB", 1024 * 1024), ("GiB", 1024)):
        if all(s % factor == 0 for s in sizes):
            return [f"{s // factor}{unit}" for s in sizes]
    if min(sizes) >= 1024:
        texts = [f"{s / 1024:.2f}GiB" for s in sizes]
        if len(set(texts)) == len(set(sizes)):
            return texts
    return [f"{int(s)}MiB" for s in sizes]


def _at() -> Any:
    return attrs.field(default=(), eq=False, repr=False, kw_only=True)


@attrs.frozen
class User:
    name: str
    ssh_keys: tuple[str, ...]
    sudo: bool
    at: Path = _at()


@attrs.frozen
class Reserved:
    memory: MiB
    cpus: int
    at: Path = _at()


@attrs.frozen
class Uplink:
    interface: str
    address: IPv4If
    gateway: IPv4
    dns: tuple[IPv4, ...]
    at: Path = _at()


@attrs.frozen
class Encryption:
    passphrase: str
    unlock_port: int
    at: Path = _at()


@attrs.frozen
class HostDisk:
    device: str
    size: MiB
    efi: MiB
    boot: MiB
    root: MiB
    swap: MiB
    volume_group: str
    encryption: Encryption | None = None
    at: Path = _at()

    @property
    def volume_group_size(self) -> int:
        """MiB left for VM disks after EFI, /boot, root and swap."""
        return self.size - self.efi - self.boot - self.root - self.swap


@attrs.frozen
class Pool:
    name: str
    type: Literal["logical", "dir"]
    path: str | None = None
    capacity: MiB | None = None
    at: Path = _at()


@attrs.frozen
class Sshd:
    port: int
    totp: bool
    at: Path = _at()


@attrs.frozen
class Updates:
    """Automatic security updates of a machine moat does not reinstall for every fix (host, VPS)."""

    automatic: bool
    reboot: Literal["never", "when-needed"]
    reboot_time: str  # HH:MM
    at: Path = _at()


@attrs.frozen
class EgressAllow:
    port: int
    proto: Proto
    to: IPv4Net | None = None  # an address is a /32
    description: str | None = None
    at: Path = _at()


@attrs.frozen
class Egress:
    """What a machine (the host, a VM, the VPS) may connect to beyond moat's defaults (derive.egress_plan)."""

    open: bool = False
    allow: tuple[EgressAllow, ...] = ()
    at: Path = _at()


@attrs.frozen
class HostInstall:
    base_iso: str | None = None
    at: Path = _at()


@attrs.frozen
class Host:
    name: str
    domain: str
    os: Literal["rocky9", "alma9"]
    cpus: int
    memory: MiB
    reserved: Reserved
    uplink: Uplink
    disk: HostDisk
    pools: tuple[Pool, ...]
    sshd: Sshd
    selinux: Literal["enforcing", "permissive"]
    install: HostInstall
    updates: Updates
    users: tuple[str, ...] | None = None
    accelerator: Literal["kvm", "tcg"] = "kvm"
    egress: Egress = Egress()
    at: Path = _at()


@attrs.frozen
class DhcpRange:
    start: IPv4
    end: IPv4
    at: Path = _at()


@attrs.frozen
class Network:
    name: str
    mode: Literal["nat", "mirror"]
    bridge: str
    subnet: IPv4Net | None = None
    gateway: IPv4 | None = None
    dhcp: DhcpRange | None = None
    at: Path = _at()


@attrs.frozen
class Disk:
    size: MiB
    pool: str
    at: Path = _at()


@attrs.frozen
class DataDisk:
    name: str
    size: MiB
    pool: str
    mount: str
    encrypted: bool
    at: Path = _at()


@attrs.frozen
class Nic:
    network: str
    address: IPv4 | None = None
    mac: str | None = None
    at: Path = _at()


@attrs.frozen
class Install:
    method: Literal["image", "kickstart", "iso"]
    image: str | None = None
    os: Literal["rocky9", "alma9"] | None = None
    iso: str | None = None
    at: Path = _at()


@attrs.frozen
class Image:
    name: str
    distribution: Literal["debian", "ubuntu"]
    release: Literal["bookworm", "trixie", "jammy", "noble"]
    elements: tuple[str, ...]
    packages: tuple[str, ...]
    snapshot: str | None = None
    description: str | None = None
    at: Path = _at()


@attrs.frozen
class Vm:
    name: str
    cpus: int
    memory: MiB
    os_disk: Disk
    data_disks: tuple[DataDisk, ...]
    nics: tuple[Nic, ...]
    install: Install
    autostart: bool
    description: str | None = None
    users: tuple[str, ...] | None = None
    egress: Egress = Egress()
    at: Path = _at()


@attrs.frozen
class Forward:
    port: int
    proto: Proto
    to: str
    to_port: int | None = None
    at: Path = _at()


@attrs.frozen
class Opening:
    port: int
    proto: Proto
    description: str | None = None
    at: Path = _at()
    # `from` is a Python keyword: renamed when structuring
    source: IPv4Net | None = None


@attrs.frozen
class Firewall:
    allow: tuple[Opening, ...]
    at: Path = _at()


@attrs.frozen
class Mirror:
    network: str
    interface: str | None = None
    at: Path = _at()


@attrs.frozen
class Wazuh:
    manager: str
    agents: tuple[str, ...] | None = None
    at: Path = _at()


@attrs.frozen
class Monitoring:
    wazuh: Wazuh | None = None
    at: Path = _at()


@attrs.frozen
class VpnClient:
    name: str
    address: IPv4
    at: Path = _at()


@attrs.frozen
class OpenVpn:
    port: int
    proto: Proto
    subnet: IPv4Net
    clients: tuple[VpnClient, ...]
    at: Path = _at()


@attrs.frozen
class Acme:
    port: int
    email: str | None = None
    at: Path = _at()


@attrs.frozen
class Site:
    host: str
    client: str
    port: int
    at: Path = _at()


@attrs.frozen
class Vps:
    name: str
    address: IPv4
    sshd: Sshd
    openvpn: OpenVpn
    client: str
    acme: Acme
    sites: tuple[Site, ...]
    updates: Updates
    users: tuple[str, ...] | None = None
    egress: Egress = Egress()
    at: Path = _at()


@attrs.frozen
class Blueprint:
    version: int
    name: str
    users: tuple[User, ...]
    host: Host
    networks: tuple[Network, ...]
    images: tuple[Image, ...]
    vms: tuple[Vm, ...]
    forwards: tuple[Forward, ...]
    firewall: Firewall
    description: str | None = None
    mirror: Mirror | None = None
    monitoring: Monitoring | None = None
    vps: Vps | None = None
    at: Path = _at()


def _converter() -> cattrs.Converter:
    # The input is schema-valid, so a structuring error is a moat bug, not a user's: plain
    # structuring code, which cattrs generates and compiles at every start in half the time.
    conv = cattrs.Converter(forbid_extra_keys=True, detailed_validation=False)
    conv.register_structure_hook(MiB, lambda v, _: MiB.parse(v))
    conv.register_structure_hook(IPv4, lambda v, _: IPv4(v))
    conv.register_structure_hook(IPv4Net, lambda v, _: IPv4Net(v))
    conv.register_structure_hook(IPv4If, lambda v, _: IPv4If(v))
    conv.register_structure_hook_func(lambda t: t == Path, lambda v, _: tuple(v))
    return conv


_CONVERTER = _converter()


def _annotate(data: Any, path: Path = ()) -> Any:
    """Copy data, adding `at` (the path) to every mapping, lowercasing MACs, renaming `from`."""
    if isinstance(data, dict):
        out = {("source" if k == "from" else k): _annotate(v, path + (k,)) for k, v in data.items()}
        if "mac" in out and isinstance(out["mac"], str):
            out["mac"] = out["mac"].lower()
        out["at"] = path
        return out
    if isinstance(data, list):
        return [_annotate(v, path + (i,)) for i, v in enumerate(data)]
    return data


def structure(data: dict) -> Blueprint:
    """Schema-valid data with defaults -> Blueprint. Raises only on a schema/model mismatch (a bug)."""
    return _CONVERTER.structure(_annotate(data), Blueprint)
