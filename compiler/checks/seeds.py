"""Rule seed-pool (and duplicate-name for seed volumes): the VMs' seed ISOs and installers need a
directory pool named ISOs (compiler/seeds.py). A blueprint that declares no such pool gets a
default one; one that declares it must make it a `dir` pool, and the default one's directory
must not be another pool's."""

from __future__ import annotations

from typing import Iterator

from ..diagnostics import Diagnostic
from ..seeds import DEFAULT_POOL_PATH, SEED_POOL, declared_pool, needs_pool, seed_of
from . import Context


def check(ctx: Context) -> Iterator[Diagnostic]:
    bp = ctx.bp
    if not needs_pool(bp):
        return
    pool = declared_pool(bp)
    if pool is not None and pool.type != "dir":
        yield Diagnostic("seed-pool", f"pool '{SEED_POOL}' holds the VMs' seed ISOs and installer ISOs as files, "
                         f"it cannot be a {pool.type} pool", pool.at + ("type",),
                         hint=f"make it a dir pool (type: dir, path: {DEFAULT_POOL_PATH}) and keep VM disks in another pool")
    if pool is None:
        for other in bp.host.pools:
            if other.type == "dir" and other.path and other.path.rstrip("/") == DEFAULT_POOL_PATH:
                yield Diagnostic("seed-pool", f"pool '{other.name}' uses {DEFAULT_POOL_PATH}, the directory of the "
                                 f"pool '{SEED_POOL}' moat adds for the VMs' seed ISOs", other.at + ("path",),
                                 hint=f"name this pool {SEED_POOL} (it then holds the seeds too), or give it another path")
    seeds = {s.name: s for s in (seed_of(vm) for vm in bp.vms) if s is not None}
    for vm in bp.vms:
        if vm.install.iso in seeds:
            seed = seeds[vm.install.iso]
            yield Diagnostic("duplicate-name", f"volume '{vm.install.iso}' of pool '{SEED_POOL}' is the seed ISO of "
                             f"VM '{seed.vm}' (at {ctx.line(seed.at)})", vm.install.at + ("iso",),
                             hint="moat writes <vm>-cidata.iso and <vm>-oemdrv.iso into that pool: rename the installer ISO")
