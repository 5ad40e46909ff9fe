"""host/moat/switch and host/moat/switch.json: how the host takes this bundle on (`moat deploy`).

`switch` is one program for every bundle (templates/switch/moat-switch.py: standard-library
Python the host's own python3 runs, 3.9 and later); `switch.json` is this bundle's side of it:
- `files`: every host file the kickstart installs (kickstart.HOST_FILES, the one install table),
  with its destination, mode and owner, the unit to reload or restart when it changes, and the
  host tool that checks it before anything is touched;
- `vms`: per VM, its OS volume (pool, volume, size, format, the image it is a copy of), its data
  volumes with their sizes (never written; shrinking or dropping one needs --allow-data-loss),
  its seed and domain, autostart;
- `pools`: directory pools by path (the seeds go there), `paths`: where the apply script, the
  qemu hook and the libvirt definitions are installed.
"""

from __future__ import annotations

import fnmatch
import json
from pathlib import Path as FsPath
from typing import Iterator

from ..derive import Plan
from ..seeds import added_pools, seed_of
from ..verify import Validator
from . import TEMPLATES, Output
from .images import HOST_STATE_DIR
from .kickstart import AFTER as INSTALLED_FAMILIES
from .kickstart import HOST_FILES, LIBVIRT_DEFINITIONS, copies

AFTER = (*INSTALLED_FAMILIES, "kickstart")
PROGRAM = "host/moat/switch"
TABLE = "host/moat/switch.json"
SOURCE = TEMPLATES / "switch" / "moat-switch.py"
VERIFY_TOOLS = FsPath(__file__).resolve().parent.parent / "verify_tools"
APPLY_PATH = "/usr/local/libexec/moat/moat-libvirt-apply"
HOOK_PATH = "/etc/libvirt/hooks/qemu"

# what a changed host file asks of the host: (pattern under host/, unit, action, check); first
# match wins. Files with no unit are taken up by the switch itself: libvirt definitions and the
# apply script (it runs the apply script), the qemu hook (forwards of running VMs set up again).
EFFECTS = (
    ("ssh/sshd_config", "sshd.service", "reload", "sshd"),
    ("pam.d/sshd", "sshd.service", "reload", None),
    ("fail2ban/*", "fail2ban.service", "reload", None),
    ("firewalld/*", "firewalld.service", "reload", "firewalld"),
    ("nftables/*.nft", None, None, "nft"),
    ("libvirt/hooks/qemu", None, None, "sh"),
    ("libvirt/moat-libvirt-apply", None, None, "sh"),
    ("libvirt/*/*.xml", None, None, "libvirt-xml"),
    ("libvirt/volumes/*/*.xml", None, None, "libvirt-xml"),
    ("mirror/moat-mirror", "moat-mirror.service", "restart", "sh"),
    ("systemd/moat-mirror.service", "moat-mirror.service", "restart", None),
    ("NetworkManager/*", "NetworkManager.service", "reload", None),
    ("wazuh/*", "wazuh-agent.service", "restart", None),
    ("openvpn/client.conf", "openvpn-client@{client}.service", "restart", None),
)

# the table is plain JSON written by json.dumps, read by the switch (tests/test_deploy.py); the
# program is checked as the host's Python 3.9 reads it (the tools tree's interpreter is 3.11)
VALIDATORS = (
    Validator(PROGRAM, (str(VERIFY_TOOLS / "switch.sh"), "{file}"), "python3.11-minimal", needs="python3"),
)


def _effect(rel: str) -> tuple[str | None, str | None, str | None]:
    for pattern, unit, action, check in EFFECTS:
        if fnmatch.fnmatchcase(rel, pattern):
            return unit, action, check
    return None, None, None


def table(plan: Plan, bundle: dict[str, Output]) -> dict:
    vps = plan.blueprint.vps
    fields = {"client": vps.client} if vps else {}
    files = []
    for c in copies(bundle, "host/", HOST_FILES, **fields):
        unit, action, check = _effect(c.source[len("host/"):])
        files.append({"source": c.source, "dest": c.dest, "mode": c.mode, "owner": c.owner,
                      "unit": unit.format_map(fields) if unit else None, "action": action, "check": check,
                      "enable": c.enable is not None})
    pools = {p.name: p for p in (*plan.blueprint.host.pools, *added_pools(plan.blueprint))}
    vms = []
    for rvm in plan.vms:
        os_vol, *data = rvm.volumes
        fmt = "qcow2" if pools[os_vol.pool].type == "dir" else "raw"
        seed = seed_of(rvm.vm)
        vms.append({
            "name": rvm.name, "autostart": rvm.vm.autostart, "domain": f"host/libvirt/domains/{rvm.name}.xml",
            "os": {"pool": os_vol.pool, "volume": os_vol.name, "bytes": int(os_vol.size) << 20, "format": fmt,
                   "image": rvm.image.ref if rvm.image else None},
            "data": [{"pool": d.pool, "volume": d.name, "bytes": int(d.size) << 20} for d in data],
            "seed": {"pool": seed.pool, "volume": seed.name} if seed else None,
        })
    return {
        "format": 1,
        "files": files,
        "vms": vms,
        "pools": {p.name: str(p.path) for p in pools.values() if p.type == "dir" and p.path},
        "paths": {"apply": APPLY_PATH, "hook": HOOK_PATH, "definitions": LIBVIRT_DEFINITIONS.rstrip("/"),
                  "state": HOST_STATE_DIR},
    }


def render(plan: Plan, bundle: dict[str, Output]) -> Iterator[Output]:
    yield Output(PROGRAM, SOURCE.read_bytes(), 0o555)
    yield Output(TABLE, (json.dumps(table(plan, bundle), indent=2, sort_keys=True) + "\n").encode())
