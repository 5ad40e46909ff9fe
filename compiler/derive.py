"""Stage 5, derive: resolve every value the templates need, deterministically.

Nothing here is random or time-based: MACs and UUIDs are hashes of names, lists are sorted
by name or address, so reordering the blueprint never changes a generated file.
"""

from __future__ import annotations

import hashlib
import uuid
from ipaddress import IPv4Address, IPv4Network

import attrs

from .checks.addressing import gateway_of
from .checks.identity import TUN_DEV
from .checks.tunnel import served_sites, site_forward
from .diagnostics import Path
from .images.lock import ImagesLock, LockedImage
from .images.recipe import ImageRecipe
from .model import Blueprint, DataDisk, Forward, Image, MiB, Network, Site, User, Vm


def derived_mac(blueprint: str, vm: str, network: str, attempt: int = 0) -> str:
    """52:54:00 (libvirt's prefix) + 3 bytes of sha256(blueprint, VM, network[, attempt])."""
    key = f"{blueprint}\0{vm}\0{network}" + (f"\0{attempt}" if attempt else "")
    digest = hashlib.sha256(key.encode()).digest()
    return "52:54:00:" + ":".join(f"{b:02x}" for b in digest[:3])


def stable_uuid(*parts: str) -> str:
    """A UUID (v4 layout) from a hash of names: the same names always give the same UUID."""
    return str(uuid.UUID(bytes=hashlib.sha256("\0".join(parts).encode()).digest()[:16], version=4))


@attrs.frozen
class ResolvedNic:
    network: Network
    mac: str
    address: IPv4Address | None


@attrs.frozen
class Volume:
    name: str
    pool: str
    size: MiB
    target: str  # guest device: vda, vdb, ...
    data: DataDisk | None = None


@attrs.frozen
class GoldenImage:
    """A declared image with its recipe and key: the file `NAME-KEY.qcow2` its VMs' OS disks are
    copies of (compiler/images/recipe.py). Any change of its inputs is a new key, so a new bundle;
    so is, for an image the lock locks, any change of its packages (compiler/images/lock.py)."""

    image: Image
    recipe: ImageRecipe
    key: str
    # the lock's entry was made for another recipe: it is not used (the key is the recipe's)
    stale_lock: LockedImage | None = None

    @property
    def name(self) -> str:
        return self.image.name

    @property
    def ref(self) -> str:
        """NAME-KEY: what the host's marker of an OS volume says it holds."""
        return f"{self.name}-{self.key}"

    @property
    def file(self) -> str:
        return f"{self.ref}.qcow2"


def golden_image(image: Image, locked: LockedImage | None = None) -> GoldenImage:
    recipe = ImageRecipe(image.name, image.distribution, image.release, image.elements, image.packages, image.snapshot)
    stale = None
    if locked is not None:
        if locked.recipe == recipe.key():
            recipe = recipe.lock_to(locked.packages)
        else:
            stale = locked
    golden = GoldenImage(image, recipe, recipe.key(), stale)
    assert golden.file == recipe.file_name()
    return golden


@attrs.frozen
class ResolvedVm:
    vm: Vm
    uuid: str
    nics: tuple[ResolvedNic, ...]
    volumes: tuple[Volume, ...]
    users: tuple[User, ...]
    image: GoldenImage | None = None  # install.method `image`: the golden image of its OS disk

    @property
    def name(self) -> str:
        return self.vm.name

    @property
    def primary_address(self) -> IPv4Address | None:
        return next((n.address for n in self.nics if n.network.mode == "nat"), None)


@attrs.frozen
class DhcpHost:
    name: str
    mac: str
    address: IPv4Address


@attrs.frozen
class ResolvedNetwork:
    network: Network
    gateway: IPv4Address | None
    subnet: IPv4Network | None
    hosts: tuple[DhcpHost, ...]


@attrs.frozen
class Ingress:
    """Where a forward's packets arrive: an interface of the host and the host's address on it
    (the packets' destination). `at` is the blueprint node of that address (host.uplink, or this
    host's entry in vps.openvpn.clients), so provenance maps `interface` and `address` there;
    `sites` are the VPS sites that route through it (none for the uplink)."""

    interface: str
    address: IPv4Address
    tunnel: bool
    at: Path
    sites: tuple[Site, ...] = ()


@attrs.frozen
class ResolvedForward:
    """A forward with its VM's address and every ingress it is DNATed on: the uplink, always; and,
    with a `vps`, the OpenVPN tunnel at this host's tunnel address when it is the tcp forward of
    a site this host serves (vps.sites[] with client == vps.client): HAProxy on the VPS sends
    those requests there. Nothing else arriving on the tunnel is forwarded."""

    forward: Forward
    address: IPv4Address
    to_port: int
    ingress: tuple[Ingress, ...] = ()


@attrs.frozen
class Opening:
    """A port open on the host's uplink, and why (for comments in firewall configs)."""

    port: int
    proto: str
    why: str
    source: IPv4Network | None = None


@attrs.frozen
class MirrorPlan:
    interface: str  # mirrored interface (the uplink by default)
    bridge: str     # bridge of the mirror network receiving the copies


@attrs.frozen
class WazuhPlan:
    manager: str
    manager_address: IPv4Address
    agents: tuple[str, ...]  # "host" and VM names, sorted


@attrs.frozen
class Plan:
    """The blueprint with everything resolved: what renderers read."""

    blueprint: Blueprint
    vms: tuple[ResolvedVm, ...]
    networks: tuple[ResolvedNetwork, ...]
    forwards: tuple[ResolvedForward, ...]
    host_users: tuple[User, ...]
    openings: tuple[Opening, ...]
    mirror: MirrorPlan | None
    wazuh: WazuhPlan | None
    tunnel: Ingress | None  # the OpenVPN tunnel to the VPS (without sites); None without a vps
    images: tuple[GoldenImage, ...] = ()  # the images VMs are installed from, by name
    # indexes, so renderers looking things up per VM stay linear
    by_name: dict[str, ResolvedVm] = attrs.field(factory=dict, eq=False, repr=False)
    forwards_by_vm: dict[str, tuple[ResolvedForward, ...]] = attrs.field(factory=dict, eq=False, repr=False)

    def vm(self, name: str) -> ResolvedVm:
        return self.by_name[name]

    def forwards_to(self, vm: str) -> tuple[ResolvedForward, ...]:
        """Forwards whose target is `vm`, in (proto, port) order."""
        return self.forwards_by_vm.get(vm, ())


def _macs(bp: Blueprint) -> dict[tuple[str, str], str]:
    taken = {nic.mac for vm in bp.vms for nic in vm.nics if nic.mac}
    macs: dict[tuple[str, str], str] = {}
    for vm, nic in sorted(((vm, nic) for vm in bp.vms for nic in vm.nics), key=lambda p: (p[0].name, p[1].network)):
        if nic.mac:
            macs[(vm.name, nic.network)] = nic.mac
            continue
        attempt = 0
        while (mac := derived_mac(bp.name, vm.name, nic.network, attempt)) in taken:
            attempt += 1
        taken.add(mac)
        macs[(vm.name, nic.network)] = mac
    return macs


def _users(all_users: tuple[User, ...], names: tuple[str, ...] | None) -> tuple[User, ...]:
    if names is None:
        return tuple(sorted(all_users, key=lambda u: u.name))
    by_name = {u.name: u for u in all_users}
    return tuple(sorted((by_name[n] for n in set(names)), key=lambda u: u.name))


def derive(bp: Blueprint, lock: ImagesLock | None = None) -> Plan:
    """The plan of a blueprint; `lock`, the image lock beside it, keys its images by their packages."""
    networks = {n.name: n for n in bp.networks}
    macs = _macs(bp)
    used = {vm.install.image for vm in bp.vms if vm.install.method == "image"}
    locked = lock.images if lock is not None else {}
    images = {i.name: golden_image(i, locked.get(i.name)) for i in sorted(bp.images, key=lambda i: i.name)
              if i.name in used}
    vms = []
    for vm in sorted(bp.vms, key=lambda v: v.name):
        nics = tuple(ResolvedNic(networks[n.network], macs[(vm.name, n.network)], n.address) for n in vm.nics)
        targets = (f"vd{chr(ord('a') + i)}" for i in range(26))
        volumes = [Volume(f"{vm.name}-os", vm.os_disk.pool, vm.os_disk.size, next(targets))]
        volumes += [Volume(f"{vm.name}-{d.name}", d.pool, d.size, next(targets), d) for d in vm.data_disks]
        vms.append(ResolvedVm(vm, stable_uuid("moat-domain", bp.name, vm.name), nics, tuple(volumes), _users(bp.users, vm.users),
                              images.get(vm.install.image) if vm.install.method == "image" else None))
    resolved_networks = []
    for net in sorted(bp.networks, key=lambda n: n.name):
        hosts = sorted((DhcpHost(rv.name, nic.mac, nic.address) for rv in vms for nic in rv.nics
                        if nic.network.name == net.name and nic.address is not None), key=lambda h: h.address)
        gateway = gateway_of(net.subnet, net.gateway) if net.subnet else None
        resolved_networks.append(ResolvedNetwork(net, gateway, net.subnet, tuple(hosts)))
    by_vm = {rv.name: rv for rv in vms}
    uplink = Ingress(bp.host.uplink.interface, bp.host.uplink.address.ip, False, bp.host.uplink.at)
    tunnel = None
    if bp.vps is not None:
        me = next(c for c in bp.vps.openvpn.clients if c.name == bp.vps.client)
        tunnel = Ingress(TUN_DEV, me.address, True, me.at)
    sites: dict[tuple[str, int], list[Site]] = {}
    for site in served_sites(bp):
        fwd = site_forward(bp, site)
        if fwd is not None:  # a site without one is the error site-unforwarded
            sites.setdefault((fwd.proto, fwd.port), []).append(site)
    forwards = []
    for fwd in sorted(bp.forwards, key=lambda f: (f.proto, f.port)):
        address = by_vm[fwd.to].primary_address
        assert address is not None  # guaranteed by checks (reference-kind, address-required)
        ingress = (uplink,)
        if tunnel is not None and (fwd.proto, fwd.port) in sites:
            ingress += (attrs.evolve(tunnel, sites=tuple(sorted(sites[(fwd.proto, fwd.port)], key=lambda s: s.host))),)
        forwards.append(ResolvedForward(fwd, address, fwd.to_port or fwd.port, ingress))
    openings = [Opening(bp.host.sshd.port, "tcp", "sshd")]
    openings += [Opening(f.forward.port, f.forward.proto, f"forwarded to {f.forward.to}:{f.to_port}") for f in forwards]
    openings += [Opening(o.port, o.proto, o.description or "firewall.allow", o.source) for o in bp.firewall.allow]
    openings.sort(key=lambda o: (o.proto, o.port))
    mirror = None
    if bp.mirror:
        mirror = MirrorPlan(bp.mirror.interface or bp.host.uplink.interface, networks[bp.mirror.network].bridge)
    wazuh = None
    if bp.monitoring and bp.monitoring.wazuh:
        w = bp.monitoring.wazuh
        manager_address = by_vm[w.manager].primary_address
        assert manager_address is not None
        agents = w.agents if w.agents is not None else ("host", *(v.name for v in vms if v.name != w.manager))
        wazuh = WazuhPlan(w.manager, manager_address, tuple(sorted(set(agents))))
    forwards_by_vm: dict[str, list[ResolvedForward]] = {}
    for f in forwards:
        forwards_by_vm.setdefault(f.forward.to, []).append(f)
    return Plan(bp, tuple(vms), tuple(resolved_networks), tuple(forwards), _users(bp.users, bp.host.users),
                tuple(openings), mirror, wazuh, tunnel, tuple(images.values()), by_vm,
                {k: tuple(v) for k, v in forwards_by_vm.items()})
