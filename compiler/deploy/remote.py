"""The SSH connection to the host: the blueprint's address and sshd port, the admin user, the
user's own ssh (keys, agent, known_hosts, ~/.ssh/config) with BatchMode: never a password prompt
in the middle of a deploy. Commands run as root through `sudo -n` (the host's kickstart gives the
blueprint's administrators passwordless sudo) and are the host's switch program."""

from __future__ import annotations

import shlex
import subprocess
import sys
from typing import IO, Callable

import attrs

from ..diagnostics import Diagnostic, MoatError
from ..render.images import HOST_STATE_DIR as HOST_STATE



@attrs.frozen
class Target:
    address: str
    port: int
    user: str
    options: tuple[str, ...] = ()   # ssh -o OPTION, in order

    def __str__(self) -> str:
        return f"{self.user}@{self.address}:{self.port}"


def target_of(plan, host: str | None, user: str | None, port: int | None, options: tuple[str, ...]) -> Target:
    """Where the blueprint's host is reached: host.uplink.address, host.sshd.port, the first host
    user with sudo (overridden by --host, --user, --port)."""
    bp = plan.blueprint
    admins = [u.name for u in plan.host_users if u.sudo]
    if user is None and not admins:
        raise MoatError([Diagnostic("deploy-no-admin", "no user of the host has sudo: nobody can run the switch",
                                    hint="give one host user `sudo: true` in the blueprint, or name one with --user")])
    address = host or str(bp.host.uplink.address.ip)
    return Target(address, port or bp.host.sshd.port, user or admins[0], options)


def ssh_command(target: Target, remote: list[str]) -> list[str]:
    """ssh running `remote` as root on the host. The connection's addresses and ports
    ($SSH_CONNECTION, which sudo does not keep) go along: the switch checks that the new sshd
    configuration still lets this user in on this port."""
    cmd = ["ssh", "-p", str(target.port), "-l", target.user, "-o", "BatchMode=yes", "-o", "ServerAliveInterval=15"]
    for option in target.options:
        cmd += ["-o", option]
    sudo = "" if target.user == "root" else "sudo -n "
    line = f'{sudo}env "MOAT_SSH_CONNECTION=$SSH_CONNECTION" ' + " ".join(shlex.quote(a) for a in remote)
    return cmd + [target.address, "--", line]


# runs a switch program the host holds, found under the host's root (MOAT_ROOT: a chroot, a test)
BOOTSTRAP = """\
import os, runpy, sys
path = os.path.join(os.environ.get("MOAT_ROOT", "/"), %r)
if not os.path.isfile(path):
    sys.exit("moat-switch: error: this host has no %%s: deploy a bundle to it first (moat deploy)" %% path)
sys.argv[0] = path
runpy.run_path(path, run_name="__main__")
"""


def switch_argv(program: bytes | str, args: list[str]) -> list[str]:
    """The host's python3 running the switch: from its text (`bytes`: before the host has the
    store path), or the one the host holds at `program` (`str`, below /var/lib/moat)."""
    if isinstance(program, str):
        return ["python3", "-c", BOOTSTRAP % f"{HOST_STATE.lstrip('/')}/{program}", *args]
    return ["python3", "-c", program.decode(), *args]


def run(target: Target, argv: list[str], stdin: IO[bytes] | bytes | None = None,
        timeout: float | None = None) -> subprocess.CompletedProcess:
    """Run `argv` as root on the host, its output captured."""
    cmd = ssh_command(target, argv)
    kwargs = {"input": stdin} if isinstance(stdin, bytes) else {"stdin": stdin if stdin is not None else subprocess.DEVNULL}
    return subprocess.run(cmd, capture_output=True, timeout=timeout, **kwargs)


def streamed(target: Target, argv: list[str], line: Callable[[str], None]) -> int:
    """Run `argv` as root on the host, its output passed on to ours as it comes (progress), each
    line also to `line`; its exit status."""
    with subprocess.Popen(ssh_command(target, argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True,
                          errors="replace") as proc:
        for text in proc.stdout:
            sys.stdout.write(text)
            sys.stdout.flush()
            line(text.rstrip("\n"))
    return proc.returncode


def failure(target: Target, what: str, proc: subprocess.CompletedProcess) -> MoatError:
    err = (proc.stderr or b"").decode(errors="replace").strip() if isinstance(proc.stderr, bytes) else ""
    hint = {255: f"check that `ssh -p {target.port} {target.user}@{target.address}` works (key, agent, known_hosts); "
                 "--host/--port/--user/--ssh-option change where moat connects",
            1: "the host said why above"}.get(proc.returncode, "the host said why above")
    if "sudo" in err and "password" in err:
        hint = f"{target.user} needs passwordless sudo on the host (the host's kickstart sets it for users with sudo: true)"
    return MoatError([Diagnostic("deploy-remote", f"{what} on {target} failed (exit {proc.returncode})"
                                 + (f": {err.splitlines()[-1]}" if err else ""), hint=hint)])
