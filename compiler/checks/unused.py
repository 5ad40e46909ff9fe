"""Rule unused (warnings): things declared but reached by nothing. Legal, and built as written,
but usually a typo or a leftover: a network no VM joins, a mirror network whose copies nobody
hears (or that receives none), a pool no disk uses, an image no VM is installed from, a user no
machine lets in, an OpenVPN client that is neither this host nor serves any site. (A site no
forward serves is site-unforwarded, an error: it would answer nothing.)
"""

from __future__ import annotations

from typing import Iterator

from ..diagnostics import Diagnostic
from ..seeds import SEED_POOL, needs_pool
from . import Context


def _unused(message: str, path, hint: str) -> Diagnostic:
    return Diagnostic("unused", message, path, hint=hint, severity="warning")


def check(ctx: Context) -> Iterator[Diagnostic]:
    bp = ctx.bp
    joined = {nic.network for vm in bp.vms for nic in vm.nics}
    mirrored = bp.mirror.network if bp.mirror else None
    for net in bp.networks:
        if net.mode == "nat" and net.name not in joined:
            yield _unused(f"no VM has a NIC on network '{net.name}'", net.at + ("name",),
                          hint="attach a VM to it (nics: [{network: " + net.name + ", ...}]) or remove it")
        elif net.mode == "mirror" and net.name not in joined:
            yield _unused(f"no VM listens on mirror network '{net.name}': its copies reach nobody", net.at + ("name",),
                          hint="give the IDS VM a NIC on it (nics: [{network: " + net.name + "}]) or remove it")
        elif net.mode == "mirror" and net.name != mirrored:
            yield _unused(f"mirror network '{net.name}' receives no copies: mirror.network does not name it",
                          net.at + ("name",), hint=f"add mirror: {{network: {net.name}}} or remove the network")
    used_pools = {d.pool for vm in bp.vms for d in (vm.os_disk, *vm.data_disks)}
    if needs_pool(bp):
        used_pools.add(SEED_POOL)
    for pool in bp.host.pools:
        if pool.name not in used_pools:
            yield _unused(f"no VM disk is in pool '{pool.name}'", pool.at + ("name",),
                          hint="put a disk in it (pool: " + pool.name + ") or remove it")
    used_images = {vm.install.image for vm in bp.vms if vm.install.method == "image"}
    for image in bp.images:
        if image.name not in used_images:
            yield _unused(f"no VM is installed from image '{image.name}': it is neither baked nor put on the media",
                          image.at + ("name",), hint=f"install a VM from it (install: {{method: image, image: {image.name}}}) "
                                                     "or remove it")
    lists = [bp.host.users, *(vm.users for vm in bp.vms)] + ([bp.vps.users] if bp.vps else [])
    if all(names is not None for names in lists):
        allowed = {n for names in lists for n in names}  # type: ignore[union-attr]
        for user in bp.users:
            if user.name not in allowed:
                yield _unused(f"user '{user.name}' may log in nowhere: no machine's users list names them",
                              user.at + ("name",), hint="add the user to host.users (or a VM's users) or remove them")
    if bp.vps:
        serving = {s.client for s in bp.vps.sites} | {bp.vps.client}
        for client in bp.vps.openvpn.clients:
            if client.name not in serving:
                yield _unused(f"OpenVPN client '{client.name}' is not this host (vps.client) and serves no site",
                              client.at + ("name",), hint="add a site for it, or remove the client")
