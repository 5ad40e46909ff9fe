"""Automatic security updates on the machines moat does not reinstall for every fix: the host
(Rocky/Alma 9, dnf-automatic) and the VPS (Debian 12, unattended-upgrades). VMs are rebuilt from
new images instead.

Files (blueprint host.updates and vps.updates; docs/updates.md):
- `host/dnf/automatic.conf`, installed as /etc/dnf/automatic.conf by the host's kickstart, which
  also installs dnf-automatic and enables dnf-automatic.timer (daily; the timer that does what
  this file says, unlike the -install/-download/-notifyonly timers, which override it).
  `upgrade_type = security`: only packages of security advisories. `apply_updates` is the
  blueprint's `automatic`; false keeps the daily check and its report in the journal
  (`emit_via = stdio`). `reboot = never | when-needed` and `reboot_command = shutdown -r HH:MM`
  (the reboot waits for reboot_time). dnf-automatic has `reboot` from dnf 4.15 upstream, in
  RHEL 9.3 and later (so Rocky/Alma 9.3+); an older dnf ignores the option (never reboots).
- `vps/apt/apt.conf.d/52moat-unattended-upgrades` and `vps/apt/apt.conf.d/52moat-auto-upgrades`,
  installed under /etc/apt/apt.conf.d/ by moat-install, which also installs unattended-upgrades.
  Own names instead of Debian's 50unattended-upgrades and 20auto-upgrades: those belong to the
  package (a conffile, and a file ucf manages), and a changed conffile would hold back the
  package's own upgrades. apt reads the directory in name order, so these come after Debian's and
  win: the origin list is emptied first (`#clear`) and then holds the Debian-Security origin
  only; reboots use Unattended-Upgrade::Automatic-Reboot(-Time). The periodic file turns on the
  daily package-list update and unattended-upgrade run (apt-daily.timer, apt-daily-upgrade.timer).

Validators: dnf's automatic.conf is read as libdnf's INI parser reads it and every section,
option and value is checked against what dnf-automatic knows (verify_tools/updates-dnf-automatic.sh:
dnf is not on Debian); the apt files are parsed by apt-config from the file's installed name in an
otherwise empty apt.conf.d, and every option they set must be one apt.systemd.daily or
unattended-upgrade reads (verify_tools/updates-apt.sh).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from ..derive import Plan
from ..verify import Validator
from . import Output, template

TOOLS = Path(__file__).resolve().parent.parent / "verify_tools"

DNF_AUTOMATIC_CONF = "host/dnf/automatic.conf"
DNF_AUTOMATIC_TIMER = "dnf-automatic.timer"
DNF_AUTOMATIC_PACKAGE = "dnf-automatic"
APT_DIR = "vps/apt/apt.conf.d/"
UNATTENDED_UPGRADES = APT_DIR + "52moat-unattended-upgrades"
AUTO_UPGRADES = APT_DIR + "52moat-auto-upgrades"
APT_PACKAGE = "unattended-upgrades"

# Debian's security archive, as unattended-upgrades matches it: the bookworm-security suite
# (codename bookworm-security since Debian 11) and the older layout (codename bookworm, label
# Debian-Security), as Debian's own 50unattended-upgrades lists both. ${distro_codename} is
# unattended-upgrades' own variable (the running release).
SECURITY_ORIGINS = (
    "origin=Debian,codename=${distro_codename},label=Debian-Security",
    "origin=Debian,codename=${distro_codename}-security,label=Debian-Security",
)

VALIDATORS = (
    # awk: libdnf's INI rules and dnf-automatic's options, values and sections
    Validator(DNF_AUTOMATIC_CONF, (str(TOOLS / "updates-dnf-automatic.sh"), "{file}"), "mawk"),
    # apt-config parses the file under its installed name; apt.systemd.daily's options (same package)
    Validator(APT_DIR + "*", (str(TOOLS / "updates-apt.sh"), "{file}"), "apt"),
)


def render(plan: Plan, bundle: dict[str, Output]) -> Iterator[Output]:
    host = plan.blueprint.host
    yield template(DNF_AUTOMATIC_CONF, "updates/automatic.conf.j2", host=host, updates=host.updates,
                   timer=DNF_AUTOMATIC_TIMER)
    vps = plan.blueprint.vps
    if vps is None:
        return
    yield template(UNATTENDED_UPGRADES, "updates/52moat-unattended-upgrades.j2", vps=vps, updates=vps.updates,
                   origins=SECURITY_ORIGINS)
    yield template(AUTO_UPGRADES, "updates/52moat-auto-upgrades.j2", vps=vps, updates=vps.updates)
