"""SSH: a hardened sshd_config for the host and every VM, the host's TOTP PAM stack, a fail2ban jail.

Every sshd_config is a complete file (no Include) that OpenSSH 8.7 (Rocky/Alma 9) through
9.x accept: only keywords and algorithm names that 8.7 knows. Keys only, no root, only the
machine's users, modern algorithms only (sntrup761/X25519, ChaCha20-Poly1305/AES-GCM, EtM
MACs, Ed25519 host key), no forwarding. With host.sshd.totp the host asks for a TOTP code
(pam_google_authenticator) after the key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import attrs

from ..derive import Plan
from ..verify import Validator
from . import Output, template

TOOLS = Path(__file__).resolve().parent.parent / "verify_tools"

# Algorithms, strongest first. Every name exists in OpenSSH 8.7 (Rocky/Alma 9) and 9.2
# (Debian 12); ML-KEM (mlkem768x25519-sha256) needs 9.9 and is left out.
KEX = ("sntrup761x25519-sha512@openssh.com", "curve25519-sha256", "curve25519-sha256@libssh.org")
CIPHERS = ("chacha20-poly1305@openssh.com", "aes256-gcm@openssh.com", "aes128-gcm@openssh.com")
MACS = ("hmac-sha2-512-etm@openssh.com", "hmac-sha2-256-etm@openssh.com", "umac-128-etm@openssh.com")
HOSTKEY_ALGORITHMS = ("ssh-ed25519",)
# signature algorithms for every user key type the schema accepts (ssh-key), without SHA-1
# "ssh-rsa" signatures: RSA keys sign with rsa-sha2-512/256
PUBKEY_ALGORITHMS = ("ssh-ed25519", "sk-ssh-ed25519@openssh.com", "rsa-sha2-512", "rsa-sha2-256",
                     "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
                     "sk-ecdsa-sha2-nistp256@openssh.com")

OS_NAMES = {"rocky9": "Rocky Linux 9", "alma9": "AlmaLinux 9"}


@attrs.frozen
class VmSshd:
    """A VM's sshd: not configurable in the blueprint (standard port, no TOTP)."""

    port: int = 22
    totp: bool = False


VALIDATORS = (
    Validator("host/ssh/sshd_config", (str(TOOLS / "sshd.sh"), "{file}"), "openssh-server", needs="sshd", batch=True),
    Validator("vms/*/ssh/sshd_config", (str(TOOLS / "sshd.sh"), "{file}"), "openssh-server", needs="sshd", batch=True),
    Validator("host/fail2ban/jail.d/*.conf", (str(TOOLS / "sshd-fail2ban.sh"), "{file}"), "fail2ban",
                     needs="fail2ban-client"),
)


def _config(path: str, role: str, sshd: object, port_note: str, totp_note: str, users: tuple, users_from: str) -> Output:
    return template(path, "sshd/sshd_config.j2", role=role, sshd=sshd, port_note=port_note, totp_note=totp_note,
                    users=users, users_from=users_from, kex=KEX, ciphers=CIPHERS, macs=MACS,
                    hostkey_algorithms=HOSTKEY_ALGORITHMS, pubkey_algorithms=PUBKEY_ALGORITHMS)


def render(plan: Plan, bundle: dict[str, Output]) -> Iterator[Output]:
    host = plan.blueprint.host
    sshd = host.sshd
    os_name = OS_NAMES[host.os]
    totp_note = ("second factor (blueprint host.sshd.totp): after the key, PAM's auth stack asks for a TOTP code"
                 if sshd.totp else "no second factor (blueprint host.sshd.totp is false): the key alone")
    yield _config("host/ssh/sshd_config", f"the host {host.name} ({os_name})", sshd, "blueprint host.sshd.port",
                  totp_note, plan.host_users, "host.users (all users when not given)")
    if sshd.totp:
        yield template("host/pam.d/sshd", "sshd/pam_sshd.j2", os=os_name)
    yield template("host/fail2ban/jail.d/moat-sshd.conf", "sshd/jail_sshd.conf.j2", os=os_name, sshd=sshd)
    for rv in plan.vms:
        yield _config(f"vms/{rv.name}/ssh/sshd_config", f"the VM {rv.name}", VmSshd(),
                      "the standard port inside the VM: only the host reaches it, unless a forward makes it public",
                      "no second factor inside VMs (TOTP guards the host's sshd)", rv.users,
                      f"vms[{rv.name}].users (all users when not given)")
