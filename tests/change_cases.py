"""Pairs of real blueprints, one per kind of change `moat plan`/`moat diff` tell apart: each an
edit of an example (a function of its YAML data), with what the analysis must find. The
markdown `moat diff` prints for each is a golden file (tests/golden/changes/NAME.md), reviewed
like the golden bundles and regenerated with them (tests/golden.py)."""

from __future__ import annotations

import io
import sys
from collections.abc import Callable
from pathlib import Path

import attrs
from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "golden" / "changes"
EXAMPLE = ROOT / "blueprints" / "example.yaml"
FRONT = ROOT / "blueprints" / "vps-front.yaml"
NEW_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPl2cXk3VCeoMfsT4lX7jVNzF2cwvDhGVyUW9Wu6Xrs3 alice@phone"


@attrs.frozen
class Case:
    name: str
    base: Path
    edit: Callable[[dict], None]
    verdict: str
    actions: tuple[tuple[str, str], ...] = ()   # (action, subject) that must be in the plan
    findings: tuple[tuple[str, str], ...] = ()  # (kind, subject) that must be found
    refused: tuple[str, ...] = ()               # data-disk subjects `moat plan` refuses


def _vm(data: dict, name: str) -> dict:
    return next(v for v in data["vms"] if v["name"] == name)


def _add_git_vm(d: dict) -> None:
    d["vms"].append({"name": "git", "description": "Forgejo", "cpus": 2, "memory": "2GiB",
                     "os_disk": {"size": "10GiB", "pool": "images"},
                     "nics": [{"network": "default", "address": "192.168.122.7"}],
                     "install": {"method": "image", "image": "nextcloud"}})
    d["forwards"].append({"port": 2222 + 1, "proto": "tcp", "to": "git", "to_port": 22})


def _set(path: tuple, value) -> Callable[[dict], None]:
    def edit(d: dict) -> None:
        for key in path[:-1]:
            d = _vm(d, key[3:]) if isinstance(key, str) and key.startswith("vm:") else d[key]
        d[path[-1]] = value
    return edit


def _delete(path: tuple) -> Callable[[dict], None]:
    def edit(d: dict) -> None:
        for key in path[:-1]:
            d = _vm(d, key[3:]) if isinstance(key, str) and key.startswith("vm:") else d[key]
        del d[path[-1]]
    return edit


def _reorder(d: dict) -> None:
    d["vms"].reverse()
    d["forwards"].reverse()


def _remove_vm(name: str) -> Callable[[dict], None]:
    def edit(d: dict) -> None:
        d["vms"] = [v for v in d["vms"] if v["name"] != name]
        d["forwards"] = [f for f in d["forwards"] if f["to"] != name]
    return edit


def _join_mirror(d: dict) -> None:
    _vm(d, "nextcloud")["nics"].append({"network": "mirror"})


def _leave_mirror(d: dict) -> None:
    onion = _vm(d, "onion")
    onion["nics"] = [n for n in onion["nics"] if n["network"] != "mirror"]


def _new_user(d: dict) -> None:
    d["users"].append({"name": "carol", "ssh_keys": [NEW_KEY.replace("alice@phone", "carol@laptop")]})


def _new_key(d: dict) -> None:
    d["users"][0]["ssh_keys"].append(NEW_KEY)


def _grant_sudo(d: dict) -> None:
    d["host"]["users"] = ["alice", "bob"]
    d["users"][1]["sudo"] = True


def _add_site(d: dict) -> None:
    d["vps"]["sites"].append({"host": "notes.example.org", "client": "home1"})


def _firewall_allow(d: dict) -> None:
    d["firewall"] = {"allow": [{"port": 9443, "proto": "tcp", "description": "admin UI"}]}


def _retarget(d: dict) -> None:
    for f in d["forwards"]:
        if f["port"] == 443:
            f["to"] = "vpn"


def _close_port(d: dict) -> None:
    d["forwards"] = [f for f in d["forwards"] if f["port"] != 80]


def _egress_allow(d: dict) -> None:
    _vm(d, "nextcloud")["egress"]["allow"].append({"port": 5432, "proto": "tcp", "to": "192.0.2.40",
                                                   "description": "external database"})


def _egress_narrowed(d: dict) -> None:
    _vm(d, "nextcloud")["egress"]["allow"][0]["to"] = "192.0.2.25"


def _image_package(d: dict) -> None:
    d["images"][0]["packages"] = ["htop"]


def _resize_data(size: str) -> Callable[[dict], None]:
    return _set(("vm:nextcloud", "data_disks", 0, "size"), size)


CASES = (
    Case("no-change-reordered", EXAMPLE, _reorder, "no change"),
    Case("add-vm-with-forward", EXAMPLE, _add_git_vm, "security-relevant",
         (("create", "git"), ("redefine", "default"), ("reload", "nftables")),
         (("port-opened", "host"), ("forward-added", "host"), ("login-added", "git"))),
    Case("image-changed", EXAMPLE, _image_package, "disruptive", (("reinstall", "nextcloud"), ("kept", "nextcloud/data"))),
    Case("os-disk-resized", EXAMPLE, _set(("vm:nextcloud", "os_disk", "size"), "40GiB"), "disruptive",
         (("reinstall", "nextcloud"),)),
    Case("cpus-memory", EXAMPLE, lambda d: (_set(("vm:vpn", "cpus"), 4)(d), _set(("vm:vpn", "memory"), "4GiB")(d)),
         "disruptive", (("restart", "vpn"), ("unchanged", "nextcloud"))),
    Case("data-disk-grown", EXAMPLE, _resize_data("1300GiB"), "disruptive", (("grown", "nextcloud/data"),)),
    Case("data-disk-shrunk", EXAMPLE, _resize_data("1000GiB"), "disruptive", (("shrunk", "nextcloud/data"),),
         refused=("nextcloud/data",)),
    Case("data-disk-removed", EXAMPLE, _set(("vm:nextcloud", "data_disks"), []), "disruptive",
         (("destroyed", "nextcloud/data"), ("reinstall", "nextcloud")), refused=("nextcloud/data",)),
    Case("data-disk-unencrypted", EXAMPLE, _set(("vm:nextcloud", "data_disks", 0, "encrypted"), False), "security-relevant",
         (("reformatted", "nextcloud/data"),), (("encryption-removed", "nextcloud"),), ("nextcloud/data",)),
    Case("vm-removed", EXAMPLE, _remove_vm("nextcloud"), "disruptive",
         (("destroy", "nextcloud"), ("destroyed", "nextcloud/data")), (("port-closed", "host"),), ("nextcloud/data",)),
    Case("firewall-opening", EXAMPLE, _firewall_allow, "security-relevant", (("reload", "firewalld"),),
         (("port-opened", "host"),)),
    Case("forward-retargeted", EXAMPLE, _retarget, "security-relevant", (), (("forward-retargeted", "host"),)),
    Case("port-closed", EXAMPLE, _close_port, "disruptive", (("reload", "nftables"), ("reinstall", "nextcloud")),
         (("port-closed", "host"), ("forward-removed", "host"))),
    Case("sshd-port-moved", EXAMPLE, _set(("host", "sshd", "port"), 22), "security-relevant",
         (("reload", "sshd"),), (("port-opened", "host"), ("port-closed", "host"))),
    Case("totp-off", FRONT, _set(("host", "sshd", "totp"), False), "security-relevant", (("reload", "sshd"),),
         (("sshd-weakened", "host"),)),
    Case("host-encryption-removed", FRONT, _delete(("host", "disk", "encryption")), "security-relevant",
         (("install-only", "host installer"),), (("encryption-removed", "host"),)),
    Case("mirror-joined", EXAMPLE, _join_mirror, "security-relevant", (("reinstall", "nextcloud"),),
         (("mirror-joined", "nextcloud"),)),
    Case("mirror-left", EXAMPLE, _leave_mirror, "security-relevant", (("restart", "onion"),), (("mirror-left", "onion"),)),
    Case("mirror-removed", EXAMPLE, _delete(("mirror",)), "security-relevant", (("restart-service", "moat-mirror"),),
         (("mirror-removed", "host"),)),
    Case("new-login-user", EXAMPLE, _new_user, "security-relevant", (("reinstall", "nextcloud"),),
         (("login-added", "host"), ("login-added", "nextcloud"))),
    Case("new-ssh-key", EXAMPLE, _new_key, "security-relevant", (("reinstall", "nextcloud"),),
         (("key-added", "host"), ("key-added", "nextcloud"))),
    Case("sudo-granted", FRONT, _grant_sudo, "security-relevant", (), (("login-added", "host"),)),
    Case("vps-site-added", FRONT, _add_site, "security-relevant", (("reload", "haproxy"),), (("site-added", "vps"),)),
    Case("egress-allowed", EXAMPLE, _egress_allow, "security-relevant", (("reinstall", "nextcloud"),),
         (("egress-widened", "nextcloud"),)),
    Case("egress-opened", FRONT, _set(("vps", "egress"), {"open": True}), "security-relevant",
         (("reload", "nftables (VPS)"),), (("egress-widened", "vps"),)),
    Case("egress-narrowed", EXAMPLE, _egress_narrowed, "disruptive", (("reinstall", "nextcloud"),),
         (("egress-narrowed", "nextcloud"),)),
    Case("network-subnet", FRONT, lambda d: (_set(("networks", 0, "subnet"), "192.168.123.0/24")(d),
                                              _set(("vm:nextcloud", "nics", 0, "address"), "192.168.123.5")(d)),
         "disruptive", (("redefine", "default"), ("reinstall", "nextcloud"))),
)


def _yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.width = 4096
    yaml.indent(mapping=2, sequence=4, offset=2)  # the examples' style: a diff shows the edit only
    return yaml


def edited(case: Case) -> str:
    """The case's NEW blueprint text: its base, loaded, edited and written back."""
    data = _yaml().load(case.base.read_text())
    case.edit(data)
    text = io.StringIO()
    _yaml().dump(data, text)
    return text.getvalue()


def write_pair(case: Case, where: Path) -> tuple[Path, Path]:
    """OLD and NEW blueprints of `case` in where/old and where/new, both under the base's name."""
    old, new = where / "old" / case.base.name, where / "new" / case.base.name
    for path, text in ((old, case.base.read_text()), (new, edited(case))):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return old, new


def analysis(case: Case, where: Path):
    sys.path.insert(0, str(ROOT))
    from compiler.changes.analysis import analyze
    from compiler.changes.sides import from_blueprint

    old, new = write_pair(case, where)
    return analyze(from_blueprint(old, f"old/{old.name}"), from_blueprint(new, f"new/{new.name}"))


def markdown(case: Case, where: Path) -> str:
    from compiler.changes.views import diff_markdown
    return diff_markdown(analysis(case, where))
