"""Rule lock-out: every machine keeps a way in, and the host's disk a way to be unlocked.

Nobody has a password (root is locked, PasswordAuthentication no): an account can only log in
with a key through sshd, on the console too. So a machine whose `users` list names nobody can
never be entered again: an error for the host and the VPS; for a VM a warning, as the host can
still reach its disk (a sealed VM, rebuilt rather than entered, is a legal choice). A machine
whose users can log in but none has sudo cannot be
administered, and an encrypted host disk is then unlocked at the console only, since the
initramfs sshd takes the sudo users' keys (warning: legal, with console access). VMs installed
from an ISO are left alone: moat does not make their accounts.
"""

from __future__ import annotations

from typing import Iterator

from ..diagnostics import Diagnostic, Path
from ..model import User
from . import Context


def allowed(users: tuple[User, ...], names: tuple[str, ...] | None) -> list[User] | None:
    """The users a machine lets in; None when a name is unknown (unknown-reference says so)."""
    if names is None:
        return list(users)
    by_name = {u.name: u for u in users}
    if any(n not in by_name for n in names):
        return None
    return [by_name[n] for n in names]


def _machine(ctx: Context, what: str, names: tuple[str, ...] | None, at: Path,
             unlock: bool = False, sealed_ok: bool = False) -> Iterator[Diagnostic]:
    users = allowed(ctx.bp.users, names)
    if users is None:
        return
    if not users:
        yield Diagnostic("lock-out", f"{what} lets nobody log in: its users list is empty and no account has a password",
                         at + ("users",), severity="warning" if sealed_ok else "error",
                         hint="name at least one user with an SSH key, or leave users out to allow all")
    elif not any(u.sudo for u in users):
        unlocked = (" and nobody can unlock its encrypted disk over SSH after a reboot (the initramfs takes the "
                    "keys of sudo users)") if unlock else ""
        yield Diagnostic("lock-out", f"none of the users of {what} ({', '.join(u.name for u in users)}) has sudo: "
                         f"nobody can become root there{unlocked}", at + ("users",) if names is not None else at,
                         severity="warning", hint="give one of them sudo: true (the default)")


def check(ctx: Context) -> Iterator[Diagnostic]:
    bp = ctx.bp
    yield from _machine(ctx, "the host", bp.host.users, bp.host.at, unlock=bp.host.disk.encryption is not None)
    if bp.vps:
        yield from _machine(ctx, "the VPS", bp.vps.users, bp.vps.at)
    for vm in bp.vms:
        if vm.install.method != "iso":
            yield from _machine(ctx, f"VM '{vm.name}'", vm.users, vm.at, sealed_ok=True)
