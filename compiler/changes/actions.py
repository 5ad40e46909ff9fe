"""What a change does to the running server: one typed action per VM, data disk, network, host
service and VPS service, each with the reasons that forced it (like Terraform's action_reason and
replace_paths: the inputs, and the bundle files behind them).

A VM is reinstalled when what its OS disk is made from changed (golden image, install method, seed
files, OS disk); restarted when only its domain changed; data disks are kept, grown, or lost
(destroyed, shrunk, reformatted): data loss, which `moat plan` refuses unless allowed per VM.
"""

from __future__ import annotations

import fnmatch
import xml.etree.ElementTree as ET
from collections.abc import Iterator

import attrs

from ..derive import Plan, ResolvedVm
from ..model import in_one_unit
from .sides import Side

# most disruptive first: the order of the plan
ACTIONS = ("destroy", "destroyed", "shrunk", "reformatted", "reinstall", "restart", "redefine", "create",
           "created", "grown", "restart-service", "reload", "install-only", "kept", "unchanged")
DATA_LOSS = frozenset({"destroyed", "shrunk", "reformatted"})
DISRUPTIVE = DATA_LOSS | {"destroy", "reinstall", "restart", "redefine", "restart-service"}


@attrs.frozen
class Action:
    kind: str     # vm, data-disk, network, service (the host's), vps-service
    subject: str  # VM name, VM/disk, network name, service
    action: str   # one of ACTIONS
    reasons: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()  # the bundle files behind it
    vm: str | None = None        # the VM a data-disk action belongs to (--allow-data-loss VM)

    @property
    def data_loss(self) -> bool:
        return self.action in DATA_LOSS

    @property
    def rank(self) -> int:
        return ACTIONS.index(self.action)


# host and VPS files -> the service that reads them and what a changed file means for it;
# first match wins. VM files (vms/NAME/, domains, volumes) and networks are the VMs' own.
SERVICES = (
    ("host/kickstart/*", "host installer", "install-only",
     "read only when the host is installed: applies on its next install from a new medium"),
    ("host/firewalld/*", "firewalld", "reload", "firewall zones and policies"),
    ("host/nftables/*", "nftables", "reload", "port forwards and filtering"),
    ("host/libvirt/hooks/*", "libvirt qemu hook", "reload", "forwards set up when a VM starts"),
    ("host/ssh/*", "sshd", "reload", "the host's SSH server"),
    ("host/pam.d/sshd", "sshd", "reload", "the host's SSH server"),
    ("host/fail2ban/*", "fail2ban", "reload", "brute-force bans"),
    ("host/mirror/*", "moat-mirror", "restart-service", "the traffic mirror (tc)"),
    ("host/systemd/moat-mirror*", "moat-mirror", "restart-service", "the traffic mirror (tc)"),
    ("host/NetworkManager/*", "NetworkManager", "reload", "the host's bridges"),
    ("host/openvpn/*", "openvpn-client", "restart-service", "the tunnel to the VPS (drops while it restarts)"),
    ("host/wazuh/*", "wazuh-agent", "restart-service", "the host's Wazuh agent"),
    ("host/libvirt/pools/*", "libvirt storage pools", "reload", "pool definitions"),
    ("host/libvirt/moat-libvirt-apply", "moat-libvirt-apply", "reload", "how the host defines its VMs"),
    ("host/systemd/moat-libvirt-apply*", "moat-libvirt-apply", "reload", "how the host defines its VMs"),
    ("host/images.json", "moat-libvirt-apply", "reload", "the golden images the host's VMs come from"),
    ("host/dnf/*", "dnf-automatic", "reload", "the host's security updates (read at its next daily run)"),
    ("vps/haproxy/*", "haproxy", "reload", "the VPS's TLS front"),
    ("vps/letsencrypt/*", "certbot", "reload", "certificates of the VPS's sites"),
    ("vps/openvpn/*", "openvpn", "restart-service", "the tunnel to the home hosts (drops while it restarts)"),
    ("vps/ssh/*", "sshd (VPS)", "reload", "the VPS's SSH server"),
    ("vps/fail2ban/*", "fail2ban (VPS)", "reload", "brute-force bans on the VPS"),
    ("vps/nftables/*", "nftables (VPS)", "reload", "the VPS's firewall"),
    ("vps/moat-install", "moat-install (VPS)", "reload", "the VPS's installer"),
    ("vps/apt/*", "unattended-upgrades (VPS)", "reload", "the VPS's security updates (read at its next daily run)"),
    # a file no row names (a new artifact family): shown, never silently dropped
    ("*", "unclassified files", "reload", "files moat's change analysis has no service for"),
)
# shown among the files, never an action: documentation of the bundle (the blueprint and its
# image lock, the picture), and the switch and its table (how the host takes the bundle on: what
# they say is the other rows' actions)
INFORMATIONAL = ("blueprint.yaml", "blueprint.images.lock", "topology.*", "host/moat/*")


def informational(path: str) -> bool:
    return any(fnmatch.fnmatchcase(path, pattern) for pattern in INFORMATIONAL)


def _changed(old: Side, new: Side) -> set[str]:
    paths = set(old.files) | set(new.files)
    return {p for p in paths if old.files.get(p) != new.files.get(p)}


class _ByVm:
    """Paths by the VM they belong to and their role: seed (vms/VM/...), domain
    (host/libvirt/domains/VM.xml), os (host/libvirt/volumes/POOL/VM-os.xml), volumes (the VM's
    other volumes, POOL/VM-NAME.xml). One pass over the paths, not one per VM: at 1000 VMs that
    was most of what a build spent saying what changed."""

    def __init__(self, paths: set[str]):
        self.found: dict[str, dict[str, list[str]]] = {}
        for p in sorted(paths):
            parts = p.split("/")
            if parts[0] == "vms" and len(parts) > 2:
                self._add(parts[1], "seed", p)
            elif p.startswith("host/libvirt/domains/") and len(parts) == 4 and p.endswith(".xml"):
                self._add(parts[3][:-4], "domain", p)
            elif p.startswith("host/libvirt/volumes/") and len(parts) >= 5 and p.endswith(".xml"):
                stem = parts[-1][:-4]
                # VM-NAME: the VM is any part before a dash (vm names hold dashes too)
                for cut in (i for i, c in enumerate(stem) if c == "-"):
                    vm, rest = stem[:cut], stem[cut + 1:]
                    self._add(vm, "os" if rest == "os" else "volumes", p)

    def _add(self, vm: str, role: str, path: str) -> None:
        self.found.setdefault(vm, {"seed": [], "domain": [], "os": [], "volumes": []})[role].append(path)

    def roles(self, vm: str) -> dict[str, list[str]]:
        return self.found.get(vm) or {"seed": [], "domain": [], "os": [], "volumes": []}


def _vm_paths(vm: str, paths: set[str]) -> dict[str, list[str]]:
    """A VM's changed files by role (see _ByVm)."""
    return _ByVm(paths).roles(vm)


def _xml_paths(old: bytes | None, new: bytes | None) -> list[str]:
    """Element paths whose text or attributes differ between two XML documents (at most 6)."""
    if old is None or new is None:
        return []
    try:
        a, b = ET.fromstring(old), ET.fromstring(new)
    except ET.ParseError:
        return []
    found: list[str] = []

    def walk(x: ET.Element | None, y: ET.Element | None, where: str) -> None:
        if x is None or y is None or x.tag != y.tag or x.attrib != y.attrib or (x.text or "").strip() != (y.text or "").strip():
            found.append(where)
            if x is None or y is None or x.tag != y.tag:
                return
        xs, ys = list(x), list(y)
        for i in range(max(len(xs), len(ys))):
            child = xs[i] if i < len(xs) else None
            other = ys[i] if i < len(ys) else None
            tag = (child if child is not None else other).tag
            walk(child, other, f"{where}/{tag}")

    walk(a, b, f"/{a.tag}")
    return sorted(set(found))[:6]


def _size(a: int, b: int) -> str:
    x, y = in_one_unit(a, b)
    return f"{x} -> {y}"


def _vm_action(name: str, old: ResolvedVm, new: ResolvedVm, roles: dict[str, list[str]], a: Side,
               b: Side) -> Iterator[Action]:
    """`roles`: the VM's changed files by role (_ByVm)."""
    ov, nv = old.vm, new.vm
    reinstall: list[str] = []
    if ov.install.method != nv.install.method:
        reinstall.append(f"install method {ov.install.method} -> {nv.install.method}")
    elif old.image is not None and new.image is not None and old.image.ref != new.image.ref:
        if old.image.name != new.image.name:
            reinstall.append(f"golden image {old.image.name} -> {new.image.name}")
        else:
            reinstall.append(f"golden image {new.image.name}: key {old.image.key[:12]} -> {new.image.key[:12]}")
    elif (ov.install.os, ov.install.iso) != (nv.install.os, nv.install.iso):
        reinstall.append(f"install source {ov.install.os or ov.install.iso} -> {nv.install.os or nv.install.iso}")
    if ov.os_disk.size != nv.os_disk.size:
        reinstall.append(f"OS disk {_size(ov.os_disk.size, nv.os_disk.size)}")
    if ov.os_disk.pool != nv.os_disk.pool:
        reinstall.append(f"OS disk pool {ov.os_disk.pool} -> {nv.os_disk.pool}")
    old_macs = {n.network.name: n.mac for n in old.nics}
    for nic in new.nics:
        if nic.network.name in old_macs and old_macs[nic.network.name] != nic.mac:
            reinstall.append(f"NIC on {nic.network.name}: MAC {old_macs[nic.network.name]} -> {nic.mac} (the seed's network config matches by MAC)")
    by_hand = nv.install.method == "iso" and ov.install.method == "iso"  # moat never installs it
    if roles["seed"] and not by_hand:
        reinstall.append("seed: " + ", ".join(p.removeprefix(f"vms/{name}/") for p in roles["seed"]))
    elif roles["os"] and not any(r.startswith("OS disk") for r in reinstall):
        reinstall.append("OS disk definition: " + ", ".join(roles["os"]))
    restart: list[str] = []
    if ov.cpus != nv.cpus:
        restart.append(f"cpus {ov.cpus} -> {nv.cpus}")
    if ov.memory != nv.memory:
        restart.append(f"memory {_size(ov.memory, nv.memory)}")
    old_nets, new_nets = {n.network.name for n in old.nics}, {n.network.name for n in new.nics}
    restart += [f"NIC on {n} added" for n in sorted(new_nets - old_nets)]
    restart += [f"NIC on {n} removed" for n in sorted(old_nets - new_nets)]
    old_disks = {d.name for d in ov.data_disks}
    restart += [f"data disk {d.name} attached" for d in nv.data_disks if d.name not in old_disks]
    if roles["domain"] and not restart:
        domain = roles["domain"][0]
        restart.append("domain XML: " + (", ".join(_xml_paths(a.files.get(domain), b.files.get(domain))) or domain))
    paths = tuple(roles["seed"] + roles["os"] + roles["domain"])
    if reinstall:
        yield Action("vm", name, "reinstall", tuple(reinstall + restart), paths)
    elif restart:
        yield Action("vm", name, "restart", tuple(restart), paths)
    elif roles["seed"]:
        yield Action("vm", name, "install-only", ("installed by hand from an ISO: put " + ", ".join(roles["seed"])
                                                  + " in place on it yourself",), paths)
    else:
        yield Action("vm", name, "unchanged")


def _disks(plan: Plan) -> dict[tuple[str, str], tuple[str, object]]:
    return {(rv.name, v.data.name): (v.name, v) for rv in plan.vms for v in rv.volumes if v.data is not None}


def _disk_actions(a: Plan, b: Plan, changed: set[str]) -> Iterator[Action]:
    old, new = _disks(a), _disks(b)
    for key in sorted(set(old) | set(new)):
        vm, disk = key
        subject = f"{vm}/{disk}"
        paths = tuple(p for p in sorted(changed) if fnmatch.fnmatchcase(p, f"host/libvirt/volumes/*/{vm}-{disk}.xml"))
        if key not in new:
            why = f"VM {vm} removed" if vm not in b.by_name else "removed from the blueprint"
            yield Action("data-disk", subject, "destroyed", (why + ": its volume and every byte on it are deleted",), paths, vm)
            continue
        if key not in old:
            yield Action("data-disk", subject, "created", (f"{new[key][1].size.human()} in pool {new[key][1].pool}",), paths, vm)
            continue
        ov, nv = old[key][1], new[key][1]
        if ov.pool != nv.pool:
            yield Action("data-disk", subject, "destroyed",
                         (f"pool {ov.pool} -> {nv.pool}: a new empty volume there, the old one deleted",), paths, vm)
        elif nv.size < ov.size:
            yield Action("data-disk", subject, "shrunk",
                         (f"size {_size(ov.size, nv.size)}: a file system cannot be shrunk in place",), paths, vm)
        elif ov.data.encrypted != nv.data.encrypted:
            turn = "on" if nv.data.encrypted else "off"
            yield Action("data-disk", subject, "reformatted",
                         (f"encryption {turn}: the disk is formatted again, its contents lost",), paths, vm)
        elif nv.size > ov.size:
            yield Action("data-disk", subject, "grown", (f"size {_size(ov.size, nv.size)}",), paths, vm)
        else:
            yield Action("data-disk", subject, "kept", (), paths, vm)


def _network_actions(left: Side, right: Side, changed: set[str]) -> Iterator[Action]:
    a, b = left.plan, right.plan
    old = {n.network.name: n for n in a.networks}
    new = {n.network.name: n for n in b.networks}
    for name in sorted(set(old) | set(new)):
        path = f"host/libvirt/networks/{name}.xml"
        if name not in new:
            yield Action("network", name, "destroy", ("removed from the blueprint",), (path,))
        elif name not in old:
            yield Action("network", name, "create", (f"bridge {new[name].network.bridge}",), (path,))
        elif path in changed:
            reasons: list[str] = []
            o, n = old[name], new[name]
            if o.subnet != n.subnet:
                reasons.append(f"subnet {o.subnet} -> {n.subnet}")
            oh = {h.name: h for h in o.hosts}
            for h in n.hosts:
                if h.name not in oh:
                    reasons.append(f"DHCP host {h.name} {h.address} added")
                elif oh[h.name] != h:
                    reasons.append(f"DHCP host {h.name}: {oh[h.name].address} -> {h.address}")
            reasons += [f"DHCP host {h} removed" for h in sorted(set(oh) - {h.name for h in n.hosts})]
            yield Action("network", name, "redefine",
                         tuple(reasons) or ("network XML: " + ", ".join(_xml_paths(left.files.get(path), right.files.get(path)) or [path]),), (path,))


def _service_actions(changed: set[str], owned: set[str]) -> Iterator[Action]:
    by_service: dict[str, tuple[str, str, list[str]]] = {}
    for path in sorted(changed - owned):
        if informational(path):
            continue
        for pattern, service, action, what in SERVICES:
            if fnmatch.fnmatchcase(path, pattern):
                by_service.setdefault(service, (action, what, []))[2].append(path)
                break
    for service, (action, what, paths) in sorted(by_service.items()):
        kind = "vps-service" if paths[0].startswith("vps/") else "service"
        yield Action(kind, service, action, (what + ": " + ", ".join(paths),), tuple(paths))


def actions(old: Side, new: Side) -> list[Action]:
    """Every action taking `old`'s server to `new`'s, most disruptive first."""
    changed = _changed(old, new)
    a, b = old.plan, new.plan
    found: list[Action] = []
    owned: set[str] = set()
    every = _ByVm(set(old.files) | set(new.files))
    changed_by_vm = _ByVm(changed)  # once, not once per VM
    for name in sorted(set(a.by_name) | set(b.by_name)):
        roles = every.roles(name)
        owned.update(p for paths in roles.values() for p in paths)
        if name not in b.by_name:
            found.append(Action("vm", name, "destroy", ("removed from the blueprint",)))
        elif name not in a.by_name:
            vm = b.vm(name)
            how = f"image {vm.image.name}" if vm.image else vm.vm.install.method
            found.append(Action("vm", name, "create", (f"{vm.vm.cpus} cpus, {vm.vm.memory.human()}, from {how}",)))
        else:
            found.extend(_vm_action(name, a.vm(name), b.vm(name), changed_by_vm.roles(name), old, new))
    found.extend(_disk_actions(a, b, changed))
    networks = list(_network_actions(old, new, changed))
    found.extend(networks)
    owned.update(p for n in networks for p in n.paths)
    owned.update(f"host/libvirt/networks/{n.network.name}.xml" for n in (*a.networks, *b.networks))
    found.extend(_service_actions(changed, owned))
    return sorted(found, key=lambda x: (x.rank, x.kind, x.subject))
