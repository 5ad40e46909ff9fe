"""VPS login: how people get onto the VPS front of setup B, hardened as on the host.

Only when the blueprint has `vps` (Debian 12). Files for the VPS under `vps/`:
- `ssh/sshd_config`: the sshd family's hardened sshd_config (its `_config`, same template),
  with vps.sshd (port, totp) and vps.users.
- `pam.d/sshd`, when vps.sshd.totp: Debian 12's own PAM stack for sshd with the password
  authentication (common-auth) replaced by pam_google_authenticator: after the key, a TOTP code.
- `fail2ban/jail.d/moat-sshd.conf`: the sshd family's fail2ban jail (same template) on the VPS's
  sshd port, reading the journal (backend systemd).
And the validator of certbot's settings `vps/letsencrypt/cli.ini` (rendered by the vps family):
certbot itself parses the file, offline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from ..derive import Plan, _users
from ..verify import Validator
from . import Output, template
from .sshd import _config as sshd_config

TOOLS = Path(__file__).resolve().parent.parent / "verify_tools"

VALIDATORS = (
    Validator("vps/ssh/sshd_config", (str(TOOLS / "sshd.sh"), "{file}"), "openssh-server", needs="sshd", batch=True),
    # fail2ban-client -t on a copy of the installed configuration with only this jail in jail.d,
    # and the jail must start
    Validator("vps/fail2ban/jail.d/*.conf", (str(TOOLS / "sshd-fail2ban.sh"), "{file}"), "fail2ban",
              needs="fail2ban-client"),
    # certbot parses the file (every key must be one of its options, every value valid for it)
    # with throwaway directories and no network
    Validator("vps/letsencrypt/cli.ini", (str(TOOLS / "vps-certbot.sh"), "{file}"), "certbot", needs="certbot"),
)

OS_NAME = "Debian 12"


def render(plan: Plan, bundle: dict[str, Output]) -> Iterator[Output]:
    vps = plan.blueprint.vps
    if vps is None:
        return
    sshd = vps.sshd
    yield sshd_config("vps/ssh/sshd_config", f"the VPS {vps.name} (Debian)", sshd, "blueprint vps.sshd.port",
                      "second factor (blueprint vps.sshd.totp): after the key, PAM's auth stack asks for a TOTP code"
                      if sshd.totp else "no second factor (blueprint vps.sshd.totp is false): the key alone",
                      _users(plan.blueprint.users, vps.users), "vps.users (all users when not given)")
    if sshd.totp:
        yield template("vps/pam.d/sshd", "vps_login/pam_sshd.j2", vps=vps, os=OS_NAME)
    yield template("vps/fail2ban/jail.d/moat-sshd.conf", "sshd/jail_sshd.conf.j2", vps=vps, os=OS_NAME, sshd=sshd)
