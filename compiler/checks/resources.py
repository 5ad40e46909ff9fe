"""Rules overcommit-memory, overcommit-cpu, overcommit-disk and disk-layout: VMs must fit the host."""

from __future__ import annotations

from collections import defaultdict
from typing import Iterator

from ..diagnostics import Diagnostic
from ..model import in_one_unit
from . import Context


def check(ctx: Context) -> Iterator[Diagnostic]:
    bp = ctx.bp
    host = bp.host

    memory = sum(vm.memory for vm in bp.vms)
    if memory + host.reserved.memory > host.memory:
        need, reserved, has = in_one_unit(memory, host.reserved.memory, host.memory)
        yield Diagnostic("overcommit-memory",
                         f"VMs need {need} + {reserved} reserved for the host, the host has {has}",
                         host.at + ("memory",), hint="lower VM memory or host.reserved.memory; KVM memory is not overcommitted")

    if host.reserved.cpus >= host.cpus:
        yield Diagnostic("overcommit-cpu", f"host.reserved.cpus keeps all {host.cpus} threads for the host, "
                         "none are left for VMs", host.reserved.at + ("cpus",),
                         hint=f"reserve fewer than {host.cpus} threads (1 is usual)")
    threads = max(host.cpus - host.reserved.cpus, 1)
    for vm in bp.vms:
        if vm.cpus > threads:
            yield Diagnostic("overcommit-cpu", f"VM '{vm.name}' has {vm.cpus} vCPUs, the host has {threads} to give "
                             f"({host.cpus} minus {host.reserved.cpus} reserved)", vm.at + ("cpus",),
                             hint="one VM cannot usefully have more vCPUs than the host's threads")
    vcpus = sum(vm.cpus for vm in bp.vms)
    if vcpus > threads:
        yield Diagnostic("overcommit-cpu", f"VMs have {vcpus} vCPUs in all on {threads} host threads "
                         f"({vcpus / threads:.1f}x overcommit)", host.at + ("cpus",), severity="warning",
                         hint="legal, but busy VMs will slow each other down")

    disk = host.disk
    if disk.volume_group_size <= 0:
        system, whole = in_one_unit(disk.efi + disk.boot + disk.root + disk.swap, disk.size)
        yield Diagnostic("disk-layout", f"EFI, /boot, root and swap take {system} of a {whole} disk, leaving nothing for VMs", disk.at + ("size",),
                         hint="shrink root or swap, or give the real disk size")
    pools = {p.name: p for p in host.pools}
    used: dict[str, int] = defaultdict(int)
    for vm in bp.vms:
        for d in (vm.os_disk, *vm.data_disks):
            if d.pool in pools:
                used["" if pools[d.pool].type == "logical" else d.pool] += d.size
    if used.get("", 0) > max(disk.volume_group_size, 0):
        need, has = in_one_unit(used[""], max(disk.volume_group_size, 0))
        yield Diagnostic("overcommit-disk", f"VM disks in logical pools take {need}, the volume group "
                         f"'{disk.volume_group}' has {has}",
                         disk.at + ("size",), hint="logical volumes are allocated in full: shrink VM disks")
    for pool in host.pools:
        if pool.type == "dir" and pool.capacity is not None and used.get(pool.name, 0) > pool.capacity:
            need, has = in_one_unit(used[pool.name], pool.capacity)
            yield Diagnostic("overcommit-disk", f"VM disks in pool '{pool.name}' may grow to {need}, "
                             f"the pool has {has}", pool.at + ("capacity",), severity="warning",
                             hint="images are sparse, so this works until the disks fill up")
