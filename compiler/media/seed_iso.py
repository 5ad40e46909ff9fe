"""The VMs' seed ISOs from a bundle: a cidata seed (cloud-init NoCloud) for a VM installed from
an image, an oemdrv seed (ks.cfg and its part of the bundle) for a VM installed by kickstart."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from ..store import MANIFEST
from .bundle import Bundle
from .layout import CLOUD_INIT, KS_PATH, MEDIUM_BUNDLE, VM_KICKSTART, secrets_read_by, sums_text
from .medium import File, Medium
from .secret_files import secret_files


def vms(bundle: Bundle) -> list[str]:
    return sorted({p.split("/")[1] for p in bundle.files("vms/") if p.count("/") >= 2})


def seed_files(bundle: Bundle, vm: str, kind: str, secrets: Path | None) -> list[File]:
    prefix = f"vms/{vm}/"
    if kind == "cidata":
        files = [File(name, bundle.read(f"{prefix}cloud-init/{name}"), 0o444) for name in CLOUD_INIT]
        needed = secrets_read_by(files[0].content)
        return files + secret_files(needed, secrets, f"the cloud-init seed of VM {vm} (user-data)")
    ks = bundle.read(prefix + VM_KICKSTART)
    files = [File(KS_PATH.lstrip("/"), ks, 0o444),
             File(f"{MEDIUM_BUNDLE}/{MANIFEST}", bundle.manifest_bytes, 0o444)]
    files += [File(f"{MEDIUM_BUNDLE}/{rel}", bundle.read(rel), bundle.mode(rel)) for rel in bundle.files(prefix)]
    return files + secret_files(secrets_read_by(ks), secrets, f"the kickstart of VM {vm} ({prefix}{VM_KICKSTART})")


def seed_kinds(bundle: Bundle) -> list[tuple[str, str]]:
    """(vm, "cidata" | "oemdrv") for every VM that has a cloud-init seed or a kickstart."""
    out = []
    files = set(bundle.files("vms/"))
    for vm in vms(bundle):
        if all(f"vms/{vm}/cloud-init/{n}" in files for n in CLOUD_INIT):
            out.append((vm, "cidata"))
        if f"vms/{vm}/{VM_KICKSTART}" in files:
            out.append((vm, "oemdrv"))
    return out


def seed_sums(seeds: Iterable[Medium]) -> bytes:
    """moat/seeds/SHA256SUMS: `<sha256>  <file name>` per seed, by name (`sha256sum -c` reads it)."""
    return sums_text({m.path.name: m.sha256 for m in seeds})

