"""What changed in the blueprint's meaning, in its own words: VMs and networks added or removed,
resized, readdressed, images and forwards changed. Read from the two derived plans, so a
reordered or reformatted blueprint shows nothing here."""

from __future__ import annotations

from collections.abc import Iterator

import attrs

from ..derive import Plan
from ..model import in_one_unit


@attrs.frozen
class Note:
    subject: str
    message: str


def _vms(a: Plan, b: Plan) -> Iterator[Note]:
    for name in sorted(set(b.by_name) - set(a.by_name)):
        vm = b.vm(name)
        addresses = ", ".join(f"{n.address} on {n.network.name}" for n in vm.nics if n.address) or "no fixed address"
        yield Note(name, f"VM {name} added: {vm.vm.cpus} cpus, {vm.vm.memory.human()}, OS disk "
                         f"{vm.vm.os_disk.size.human()}, {addresses}")
    for name in sorted(set(a.by_name) - set(b.by_name)):
        yield Note(name, f"VM {name} removed")
    for name in sorted(set(a.by_name) & set(b.by_name)):
        o, n = a.vm(name), b.vm(name)
        if o.vm.cpus != n.vm.cpus:
            yield Note(name, f"{name}: cpus {o.vm.cpus} -> {n.vm.cpus}")
        for what, x, y in (("memory", o.vm.memory, n.vm.memory), ("OS disk", o.vm.os_disk.size, n.vm.os_disk.size)):
            if x != y:
                sx, sy = in_one_unit(x, y)
                yield Note(name, f"{name}: {what} {sx} -> {sy}")
        old_nics = {nic.network.name: nic for nic in o.nics}
        for nic in n.nics:
            was = old_nics.get(nic.network.name)
            if was is not None and was.address != nic.address:
                yield Note(name, f"{name}: address on {nic.network.name} {was.address or 'none'} -> {nic.address or 'none'}")
        old_disks = {d.name: d for d in o.vm.data_disks}
        for d in n.vm.data_disks:
            if d.name not in old_disks:
                yield Note(name, f"{name}: data disk {d.name} added ({d.size.human()} at {d.mount})")
            elif old_disks[d.name].mount != d.mount:
                yield Note(name, f"{name}: data disk {d.name} mounted at {d.mount} (was {old_disks[d.name].mount})")
        for d in sorted(set(old_disks) - {d.name for d in n.vm.data_disks}):
            yield Note(name, f"{name}: data disk {d} removed")
        if o.vm.autostart != n.vm.autostart:
            yield Note(name, f"{name}: autostart {'on' if n.vm.autostart else 'off'}")


def _images(a: Plan, b: Plan) -> Iterator[Note]:
    old = {i.name: i for i in a.images}
    for image in b.images:
        was = old.get(image.name)
        if was is None:
            yield Note(image.name, f"golden image {image.name} ({image.image.distribution} {image.image.release}) now used")
        elif was.key != image.key:
            what = [f"{k} {getattr(was.image, k)} -> {getattr(image.image, k)}"
                    for k in ("release", "elements", "packages", "snapshot") if getattr(was.image, k) != getattr(image.image, k)]
            yield Note(image.name, f"golden image {image.name}: new key {image.key[:12]}"
                       + (f" ({'; '.join(what)})" if what else " (moat's elements or diskimage-builder changed)"))


def _networks(a: Plan, b: Plan) -> Iterator[Note]:
    old = {n.network.name: n.network for n in a.networks}
    new = {n.network.name: n.network for n in b.networks}
    for name in sorted(set(new) - set(old)):
        net = new[name]
        yield Note(name, f"network {name} added ({net.mode}, bridge {net.bridge}" + (f", {net.subnet})" if net.subnet else ")"))
    for name in sorted(set(old) - set(new)):
        yield Note(name, f"network {name} removed")
    for name in sorted(set(old) & set(new)):
        if old[name].subnet != new[name].subnet:
            yield Note(name, f"network {name}: subnet {old[name].subnet} -> {new[name].subnet}")


def _host(a: Plan, b: Plan) -> Iterator[Note]:
    o, n = a.blueprint.host, b.blueprint.host
    for what, x, y in (("cpus", o.cpus, n.cpus), ("os", o.os, n.os), ("sshd port", o.sshd.port, n.sshd.port),
                       ("selinux", o.selinux, n.selinux), ("uplink address", o.uplink.address, n.uplink.address)):
        if x != y:
            yield Note("host", f"host: {what} {x} -> {y}")
    if o.memory != n.memory:
        yield Note("host", f"host: memory {' -> '.join(in_one_unit(o.memory, n.memory))}")


def notes(a: Plan, b: Plan) -> list[Note]:
    return [*_host(a, b), *_networks(a, b), *_images(a, b), *_vms(a, b)]
