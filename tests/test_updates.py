"""updates family: dnf-automatic on the host, unattended-upgrades on the VPS, security only, the
reboot policy of host.updates / vps.updates.

The validators run for real (apt-config; the dnf-automatic model in python3) on every policy and
are shown to reject broken variants; the host's kickstart with the new file passes ksvalidator;
moat-install stages the apt files where apt reads them.
"""

from __future__ import annotations

import configparser
import os
import re
import subprocess
from fnmatch import fnmatch
from pathlib import Path

import pytest
import yaml

from compiler import load
from compiler.changes.actions import SERVICES
from compiler.diagnostics import MoatError
from compiler.pipeline import compile_source
from compiler.render import kickstart, updates
from compiler.render.vps_install import SCRIPT

from .conftest import ROOT

EXAMPLE_B = ROOT / "blueprints" / "vps-front.yaml"
DNF = updates.DNF_AUTOMATIC_CONF
UU = updates.UNATTENDED_UPGRADES
AUTO = updates.AUTO_UPGRADES
HOST_KS = "host/kickstart/ks.cfg"


def compiled(host: dict | None = None, vps: dict | None = None) -> dict[str, bytes]:
    data = yaml.safe_load(EXAMPLE_B.read_text())
    if host is not None:
        data["host"]["updates"] = host
    if vps is not None:
        data["vps"]["updates"] = vps
    out = compile_source(load.load_text(yaml.safe_dump(data, sort_keys=False), "bp.yaml"))
    return {p: o.content for p, o in out.files.items()}


POLICIES = {
    "defaults": (None, None),
    "reboots": ({"reboot": "when-needed", "reboot_time": "03:30"}, {"reboot": "when-needed", "reboot_time": "05:15"}),
    "never": ({"reboot": "never"}, {"reboot": "never"}),
    "report-only": ({"automatic": False}, {"automatic": False, "reboot": "never"}),
}


@pytest.fixture(scope="module", params=sorted(POLICIES))
def policy(request) -> tuple[str, dict[str, bytes]]:
    host, vps = POLICIES[request.param]
    return request.param, compiled(host, vps)


def run(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, **kw)


def validate(path: Path, rel: str) -> subprocess.CompletedProcess:
    (v,) = [v for v in updates.VALIDATORS if fnmatch(rel, v.pattern)]
    return run(*[str(path) if c == "{file}" else c for c in v.command])


def write(tmp_path: Path, rel: str, content: bytes | str) -> Path:
    path = tmp_path / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def apt_dump(tmp_path: Path, *files: Path) -> dict[str, list[str]]:
    """What apt makes of `files` in an otherwise empty apt.conf.d: option -> values."""
    parts = tmp_path / "parts"
    parts.mkdir(exist_ok=True)
    for f in files:
        (parts / f.name).write_bytes(f.read_bytes())
    (tmp_path / "apt.conf").write_text(f'Dir::Etc::parts "{parts}/";\n')
    proc = run("apt-config", "dump", env={**os.environ, "APT_CONFIG": str(tmp_path / "apt.conf")})
    assert proc.returncode == 0 and not proc.stderr, proc.stderr
    scalars: dict[str, list[str]] = {}
    items: dict[str, list[str]] = {}
    for line in proc.stdout.splitlines():
        key, _, value = line.partition(" ")
        value = value.strip().rstrip(";").strip('"')
        if key.endswith("::"):  # a list item: "Key:: "value";" after the list's own "Key "";"
            items.setdefault(key[:-2], []).append(value)
        else:
            scalars[key] = [value]
    return {**scalars, **items}


# --- what each policy says -------------------------------------------------------------------------


def test_the_defaults_never_reboot_the_host_and_reboot_the_vps_when_needed():
    files = compiled()
    conf = configparser.ConfigParser(interpolation=None)
    conf.read_string(files[DNF].decode())
    assert dict(conf["commands"]) == {"upgrade_type": "security", "download_updates": "yes", "apply_updates": "yes",
                                      "random_sleep": "0", "network_online_timeout": "60", "reboot": "never"}
    assert conf["emitters"]["emit_via"] == "stdio"
    uu = files[UU].decode()
    assert 'Unattended-Upgrade::Automatic-Reboot "true";' in uu
    assert 'Unattended-Upgrade::Automatic-Reboot-Time "04:00";' in uu


def test_the_policy_reaches_both_files(policy, tmp_path):
    name, files = policy
    host, vps = POLICIES[name]
    host, vps = host or {}, vps or {}
    conf = configparser.ConfigParser(interpolation=None)
    conf.read_string(files[DNF].decode())
    commands = conf["commands"]
    assert commands["upgrade_type"] == "security"
    assert commands["apply_updates"] == ("yes" if host.get("automatic", True) else "no")
    assert commands["reboot"] == host.get("reboot", "never")
    if commands["reboot"] == "when-needed":
        assert commands["reboot_command"] == f"shutdown -r {host.get('reboot_time', '04:00')}"
    else:
        assert "reboot_command" not in commands
    dump = apt_dump(tmp_path, write(tmp_path, UU, files[UU]), write(tmp_path, AUTO, files[AUTO]))
    assert dump["Unattended-Upgrade::Origins-Pattern"] == [
        "origin=Debian,codename=${distro_codename},label=Debian-Security",
        "origin=Debian,codename=${distro_codename}-security,label=Debian-Security"]
    reboot = vps.get("reboot", "when-needed") == "when-needed"
    assert dump["Unattended-Upgrade::Automatic-Reboot"] == ["true" if reboot else "false"]
    if reboot:
        assert dump["Unattended-Upgrade::Automatic-Reboot-Time"] == [vps.get("reboot_time", "04:00")]
    assert dump["APT::Periodic::Update-Package-Lists"] == ["1"]
    assert dump["APT::Periodic::Unattended-Upgrade"] == ["1" if vps.get("automatic", True) else "0"]


def test_moat_s_file_replaces_debians_origin_list(tmp_path):
    """Debian's 50unattended-upgrades also takes point releases (label=Debian); after moat's file
    (#clear, read later) only the security archive is left."""
    debian = write(tmp_path, "debian/50unattended-upgrades", 'Unattended-Upgrade::Origins-Pattern {\n'
                   '  "origin=Debian,codename=${distro_codename},label=Debian";\n'
                   '  "origin=Debian,codename=${distro_codename}-security,label=Debian-Security";\n};\n'
                   'Unattended-Upgrade::Allowed-Origins { "${distro_id}:${distro_codename}"; };\n')
    files = compiled()
    dump = apt_dump(tmp_path, debian, write(tmp_path, UU, files[UU]))
    assert all("Security" in o for o in dump["Unattended-Upgrade::Origins-Pattern"])
    assert dump.get("Unattended-Upgrade::Allowed-Origins", [""]) == [""]


def test_a_blueprint_without_a_vps_gets_only_the_hosts_file():
    data = yaml.safe_load((ROOT / "blueprints" / "example.yaml").read_text())
    files = compile_source(load.load_text(yaml.safe_dump(data), "bp.yaml")).files
    assert DNF in files and not any(p.startswith("vps/") for p in files)


@pytest.mark.parametrize("bad", ["25:00", "4:00", "04:60", "noon"])
def test_a_reboot_time_that_is_no_time_of_day_is_refused(bad):
    data = yaml.safe_load(EXAMPLE_B.read_text())
    data["vps"]["updates"] = {"reboot_time": bad}
    with pytest.raises(MoatError) as caught:
        compile_source(load.load_text(yaml.safe_dump(data), "bp.yaml"))
    (problem,) = [d for d in caught.value.diagnostics if d.is_error]
    assert problem.path == ("vps", "updates", "reboot_time"), problem


# --- the validators, for real ------------------------------------------------------------------------


def test_every_file_of_every_policy_passes_its_validator(policy, tmp_path):
    _, files = policy
    for rel in (DNF, UU, AUTO):
        proc = validate(write(tmp_path, rel, files[rel]), rel)
        assert proc.returncode == 0, f"{rel}: {proc.stdout}{proc.stderr}"


@pytest.mark.parametrize("rel, old, new, said", [
    (DNF, "upgrade_type = security", "upgrade_type = securty", "upgrade_type must be one of"),
    (DNF, "apply_updates = yes", "apply_update = yes", "no option apply_update"),
    (DNF, "reboot = never", "reboot = always", "reboot must be one of"),
    (DNF, "random_sleep = 0", "random_sleep = soon", "must be an integer"),
    (DNF, "emit_via = stdio", "emit_via = stdio,syslog", "unknown emitter"),
    (DNF, "[emitters]", "[emitter]", "unknown section"),
    (DNF, "[commands]\n", "", "before any [section]"),
    (UU, 'Automatic-Reboot "true";', 'Automatic-Reboot "true"', "Syntax error"),
    (UU, "Automatic-Reboot-Time", "Automatic-Reboot-Tme", "Automatic-Reboot-Tme is not an option"),
    (AUTO, "Update-Package-Lists", "Update-Packages-Lists", "Update-Packages-Lists is not an option"),
])
def test_the_validators_reject_a_broken_file_at_its_line(tmp_path, rel, old, new, said):
    files = compiled({"reboot": "never"}, {"reboot": "when-needed"})
    text = files[rel].decode()
    assert old in text
    broken = text.replace(old, new, 1)
    path = write(tmp_path, rel, broken)
    proc = validate(path, rel)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    out = proc.stdout + proc.stderr
    assert said in out, out
    if "before any" not in said and "Syntax" not in said:
        line = next(i for i, l in enumerate(broken.splitlines(), 1) if new in l)
        assert f"{path}:{line}:" in out, out


def test_apt_skips_a_file_name_with_an_extension_and_the_check_says_so(tmp_path):
    files = compiled()
    path = write(tmp_path, "vps/apt/apt.conf.d/52moat-auto-upgrades.txt", files[AUTO])
    proc = run(str(updates.TOOLS / "updates-apt.sh"), str(path))
    assert proc.returncode == 1 and "Ignoring file" in proc.stdout, proc.stdout + proc.stderr


# --- installed by the kickstart and by moat-install ------------------------------------------------


def test_the_host_kickstart_installs_dnf_automatic_and_enables_its_timer(tmp_path):
    files = compiled()
    ks = files[HOST_KS].decode()
    packages = re.search(r"^%packages\n(.*?)^%end", ks, re.MULTILINE | re.DOTALL).group(1).split()
    assert "dnf-automatic" in packages
    assert re.search(r"^install_file host/dnf/automatic\.conf /etc/dnf/automatic\.conf 0644 [0-9a-f]{64}$", ks,
                     re.MULTILINE)
    assert re.search(r"^systemctl enable dnf-automatic\.timer$", ks, re.MULTILINE)
    (v,) = [v for v in kickstart.VALIDATORS if v.pattern == HOST_KS]
    path = write(tmp_path, HOST_KS, files[HOST_KS])
    proc = run(*[str(path) if c == "{file}" else c for c in v.command])
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_moat_install_installs_unattended_upgrades_and_both_files(tmp_path):
    files = compiled()
    script = files[SCRIPT].decode()
    (packages,) = re.findall(r"^    for p in (.*); do$", script, re.MULTILINE)
    assert "unattended-upgrades" in packages.split()
    for name, unit in (("52moat-unattended-upgrades", "apt-daily-upgrade.timer"),
                       ("52moat-auto-upgrades", "apt-daily.timer")):
        assert re.search(rf'^install_file apt/apt\.conf\.d/{name} /etc/apt/apt\.conf\.d/{name} 0644 "{unit}"$',
                         script, re.MULTILINE)
        assert re.search(rf"^activate {re.escape(unit)} restart$", script, re.MULTILINE)


def test_a_changed_policy_is_a_reload_of_each_updater():
    rows = {pattern: (service, action) for pattern, service, action, _ in SERVICES}
    matched = {}
    for path in (DNF, UU, AUTO):
        matched[path] = next((s, a) for p, (s, a) in rows.items() if fnmatch(path, p))
    assert matched == {DNF: ("dnf-automatic", "reload"), UU: ("unattended-upgrades (VPS)", "reload"),
                       AUTO: ("unattended-upgrades (VPS)", "reload")}
