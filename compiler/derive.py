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
from .model import Blueprint, DataDisk, Egress, Forward, Image, MiB, Network, Site, User, Vm


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


# Wazuh's agent -> manager ports (the wazuh family writes them into each agent's ossec.conf)
WAZUH_EVENTS_PORT = 1514
WAZUH_ENROLLMENT_PORT = 1515
EGRESS_LOG_PREFIX = "moat egress drop: "
EGRESS_LOG_PER_MINUTE = 5  # at most this many log lines a minute; every dropped packet is counted


@attrs.frozen
class EgressRule:
    """One destination a machine may connect to: `to` None is anywhere; `interface`, only out of that
    interface (the VPS's tunnel). `at` is the blueprint node it comes from (an `egress.allow`
    entry, host.uplink for its resolvers, ...) and `declared` tells a blueprint allow from a default."""

    port: int
    proto: str
    why: str
    to: IPv4Network | None = None
    interface: str | None = None
    declared: bool = False
    at: Path = attrs.field(default=(), eq=False)


@attrs.frozen
class EgressPlan:
    """The outbound firewall of one machine ("host", a VM's name, "vps"): `open`, no filtering;
    else the rules, moat's defaults first then the blueprint's `egress.allow`, everything else
    dropped and logged. `local` are interfaces whose traffic is not filtered here (the host's
    bridges to its own VMs, which filter their input themselves)."""

    machine: str
    open: bool
    rules: tuple[EgressRule, ...]
    local: tuple[str, ...] = ()
    at: Path = attrs.field(default=(), eq=False)

    @property
    def log_prefix(self) -> str:
        return EGRESS_LOG_PREFIX

    @property
    def log_per_minute(self) -> int:
        return EGRESS_LOG_PER_MINUTE

    def declared(self) -> tuple[EgressRule, ...]:
        return tuple(r for r in self.rules if r.declared)


def _host_net(address: IPv4Address) -> IPv4Network:
    return IPv4Network(f"{address}/32")


def _egress_plan(machine: str, egress: Egress, needs: list[EgressRule], local: tuple[str, ...] = ()) -> EgressPlan:
    """The defaults every machine needs (NTP, package mirrors) + `needs` (its resolvers, the bundle's
    services) + the blueprint's allow list, in that order, without repeating a rule."""
    rules = [*needs, EgressRule(123, "udp", "NTP (chrony, systemd-timesyncd)", at=egress.at),
             EgressRule(80, "tcp", "package mirrors (HTTP)", at=egress.at),
             EgressRule(443, "tcp", "package mirrors, HTTPS", at=egress.at)]
    # in (proto, port, to) order: reordering the blueprint's list changes no file
    rules += [EgressRule(a.port, a.proto, a.description or "egress.allow", a.to, None, True, a.at)
              for a in sorted(egress.allow, key=lambda a: (a.proto, a.port, a.to is not None, a.to or 0))]
    seen: set = set()
    unique = []
    for r in rules:
        key = (r.port, r.proto, r.to, r.interface)
        if key not in seen:
            seen.add(key)
            unique.append(r)
    return EgressPlan(machine, egress.open, tuple(unique), local, egress.at)


def _dns(addresses, why: str, at: Path) -> list[EgressRule]:
    return [EgressRule(53, proto, why, None if a is None else _host_net(a), at=at)
            for a in addresses for proto in ("udp", "tcp")]


def _wazuh_agent(wazuh: WazuhPlan | None, machine: str, at: Path) -> list[EgressRule]:
    if wazuh is None or machine not in wazuh.agents or machine == wazuh.manager:
        return []
    to = _host_net(wazuh.manager_address)
    return [EgressRule(WAZUH_EVENTS_PORT, "tcp", f"Wazuh agent events to the manager {wazuh.manager}", to, at=at),
            EgressRule(WAZUH_ENROLLMENT_PORT, "tcp", f"Wazuh agent enrollment at the manager {wazuh.manager}", to, at=at)]


def egress_plans(bp: Blueprint, vms: tuple[ResolvedVm, ...], networks: tuple[ResolvedNetwork, ...],
                 wazuh: WazuhPlan | None) -> tuple[EgressPlan, ...]:
    """The outbound firewall of the host, each VM and the VPS, derived once from the blueprint."""
    host = bp.host
    resolvers = host.uplink.dns or (host.uplink.gateway,)  # as the kickstart's nameservers
    needs = _dns(resolvers, "DNS to the host's resolvers (host.uplink.dns" + (")" if host.uplink.dns else
                 ", empty: the gateway)"), host.uplink.at)
    needs += _wazuh_agent(wazuh, "host", bp.monitoring.wazuh.at if bp.monitoring and bp.monitoring.wazuh else ())
    if bp.vps is not None:
        needs.append(EgressRule(bp.vps.openvpn.port, bp.vps.openvpn.proto, f"OpenVPN tunnel to the VPS {bp.vps.name}",
                                _host_net(bp.vps.address), at=bp.vps.openvpn.at))
    bridges = tuple(n.network.bridge for n in networks if n.network.mode == "nat")
    plans = [_egress_plan("host", host.egress, needs, bridges)]
    gateways = {n.network.name: n.gateway for n in networks}
    for rv in vms:
        resolvers = sorted({gateways[n.network.name] for n in rv.nics if n.network.mode == "nat"
                            and gateways[n.network.name] is not None})
        needs = _dns(resolvers, "DNS to libvirt's dnsmasq (the gateway of the VM's networks)", rv.vm.at)
        needs += _wazuh_agent(wazuh, rv.name, rv.vm.at)
        plans.append(_egress_plan(rv.name, rv.vm.egress, needs))
    vps = bp.vps
    if vps is not None:
        needs = _dns([None], "DNS (the VPS's resolvers are its provider's, not declared)", vps.at)
        # the provider's network may lease the VPS its address: renewals are unicast UDP from the client
        needs += [EgressRule(67, "udp", "DHCP lease renewal (the provider's network)", at=vps.at),
                  EgressRule(547, "udp", "DHCPv6 (the provider's network)", at=vps.at)]
        clients = {c.name: c for c in vps.openvpn.clients}
        for site in sorted(vps.sites, key=lambda s: (s.client, s.port, s.host)):
            client = clients.get(site.client)
            if client is not None:
                needs.append(EgressRule(site.port, "tcp", f"HAProxy to {site.client} through the tunnel, for {site.host}",
                                        _host_net(client.address), TUN_DEV, at=site.at))
        plans.append(_egress_plan("vps", vps.egress, needs))
    return tuple(plans)


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
    egress: tuple[EgressPlan, ...] = ()  # host, VMs by name, VPS
    # indexes, so renderers looking things up per VM stay linear
    by_name: dict[str, ResolvedVm] = attrs.field(factory=dict, eq=False, repr=False)
    forwards_by_vm: dict[str, tuple[ResolvedForward, ...]] = attrs.field(factory=dict, eq=False, repr=False)
    egress_by_machine: dict[str, EgressPlan] = attrs.field(factory=dict, eq=False, repr=False)

    def vm(self, name: str) -> ResolvedVm:
        return self.by_name[name]

    def egress_of(self, machine: str) -> EgressPlan:
        """The outbound firewall of "host", a VM or "vps"."""
        return self.egress_by_machine[machine]

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
    on_network: dict[str, list[DhcpHost]] = {}  # each network's fixed addresses, in one pass over the VMs
    for rv in vms:
        for nic in rv.nics:
            if nic.address is not None:
                on_network.setdefault(nic.network.name, []).append(DhcpHost(rv.name, nic.mac, nic.address))
    for net in sorted(bp.networks, key=lambda n: n.name):
        hosts = sorted(on_network.get(net.name, ()), key=lambda h: h.address)
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
    egress = egress_plans(bp, tuple(vms), tuple(resolved_networks), wazuh)
    return Plan(bp, tuple(vms), tuple(resolved_networks), tuple(forwards), _users(bp.users, bp.host.users),
                tuple(openings), mirror, wazuh, tunnel, tuple(images.values()), egress, by_vm,
                {k: tuple(v) for k, v in forwards_by_vm.items()}, {e.machine: e for e in egress})
