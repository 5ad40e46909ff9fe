"""LUKS2 for encrypted data disks, done inside each VM by a generated, idempotent script.

For every VM with at least one data disk marked `encrypted` (the default), the bundle holds
`vms/<vm>/luks/moat-luks-provision`. The disk list (name, guest device, mount point, size)
is embedded at the end of the script, one traced line per disk; there is no separate
crypttab in the bundle because LUKS UUIDs exist only after formatting: the script writes
crypttab (and fstab) inside the VM.

What other families need (import these, don't copy the values):
- INSTALL_PATH: where the VM gets the script (cloud-init write_files / kickstart %post);
  run it as root with the initial passphrase file as first argument (or PASSPHRASE_ENV).
- script_path(vm_name): the script's path in the bundle; encrypted_volumes(rvm) the disks.
- GUEST_PACKAGES: what the VM needs installed before the script runs (same names on
  Debian/Ubuntu and Rocky/Alma).

Decisions (each also stated in the generated script's header):
- keyfile /etc/luks-keys/<disk>.key, 4 KiB from /dev/urandom, root 0400, directory 0700;
  crypttab line `<disk>_crypt UUID=<luks uuid> <keyfile> luks,discard` (UUID=, not PARTUUID).
- fstab line `/dev/mapper/<disk>_crypt <mount> ext4 defaults,x-systemd.makefs 0 2`: the
  blueprint gives a mount point, so the disk must end up mounted; systemd makes the file
  system on first mount only if the device is blank. ext4 because the blueprint has no file
  system field and ext4 is on every supported guest and can be shrunk. No `nofail`: a disk
  that does not unlock stops the boot instead of letting services write to the bare mount point.
- The initial passphrase stays in key slot 0 as the recovery key (a reinstalled VM keeps its
  data disks but loses /etc/luks-keys; the passphrase then adds a new keyfile).
- A device without a LUKS header is formatted only if blank (`blkid -p`) and exactly the
  blueprint's size, so a renamed device (vdb is not the disk we think) is never wiped.
- PBKDF argon2id by default; tests lower the cost only through MOAT_LUKS_PBKDF_ARGS.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import attrs

from ..derive import Plan, ResolvedVm, Volume
from ..diagnostics import Path as BlueprintPath
from ..model import DataDisk
from ..verify import Validator
from . import Output, template

INSTALL_PATH = "/usr/local/sbin/moat-luks-provision"
PASSPHRASE_ENV = "MOAT_LUKS_PASSPHRASE_FILE"
GUEST_PACKAGES = ("cryptsetup", "e2fsprogs")

KEYS_DIR = "/etc/luks-keys"
CRYPTTAB = "/etc/crypttab"
FSTAB = "/etc/fstab"
MAPPER_SUFFIX = "_crypt"
CRYPTTAB_OPTIONS = "luks,discard"
FS_TYPE = "ext4"
FSTAB_OPTIONS = "defaults,x-systemd.makefs"
PBKDF_ARGS = "--pbkdf argon2id"

# crypttab/fstab check for tests (the crypttab only exists inside the VM, after formatting)
CRYPTTAB_CHECK = Path(__file__).resolve().parent.parent / "verify_tools" / "luks-crypttab.sh"

VALIDATORS = (
    Validator("vms/*/luks/moat-luks-provision", ("shellcheck", "-S", "warning", "-s", "sh", "{file}"), "shellcheck",
              batch=True),
)


@attrs.frozen
class EncryptedDisk:
    """A data disk and its guest device; `at` is the disk's, so provenance of the device points there."""

    data: DataDisk
    target: str  # vdb, vdc, ...
    at: BlueprintPath


def script_path(vm_name: str) -> str:
    """Bundle path of the provisioning script of a VM."""
    return f"vms/{vm_name}/luks/moat-luks-provision"


def mapper_name(disk_name: str) -> str:
    """/dev/mapper name (and crypttab name) of an encrypted data disk."""
    return disk_name + MAPPER_SUFFIX


def encrypted_volumes(rvm: ResolvedVm) -> tuple[Volume, ...]:
    """The VM's encrypted data disks, in guest device order (vdb, vdc, ...)."""
    return tuple(v for v in rvm.volumes if v.data is not None and v.data.encrypted)


def render(plan: Plan, bundle: dict[str, Output]) -> Iterator[Output]:
    for rvm in plan.vms:
        volumes = encrypted_volumes(rvm)
        if not volumes:
            continue
        disks = [EncryptedDisk(v.data, v.target, v.data.at) for v in volumes if v.data is not None]
        yield template(script_path(rvm.name), "luks/moat-luks-provision.sh.j2", mode=0o555,
                       vm=rvm, disks=disks, install_path=INSTALL_PATH, keys_dir=KEYS_DIR,
                       crypttab=CRYPTTAB, fstab=FSTAB, mapper_suffix=MAPPER_SUFFIX,
                       crypttab_options=CRYPTTAB_OPTIONS, fs_type=FS_TYPE, fstab_options=FSTAB_OPTIONS,
                       pbkdf_args=PBKDF_ARGS)
