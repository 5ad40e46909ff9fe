"""A VM under test, driven like the NixOS test driver: `start`, `wait_for_console_text`,
`wait_for_ssh`, `succeed`, `fail`, `shutdown`, each with a timeout; every failure says what was
awaited and ends with the tail of the VM's serial console. No sleeps: waiting polls what it waits
for (the console log, an SSH handshake) until it appears or the timeout passes.

The VM is a libvirt domain of a LibvirtSandbox (tests/libvirt_sandbox.py); SSH runs inside the
sandbox's network namespace, so the guest's addresses on libvirt's networks are reachable and
nothing else is.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import time
from pathlib import Path

from .libvirt_sandbox import LibvirtSandbox


class VmFailure(AssertionError):
    pass


class Machine:
    def __init__(self, sandbox: LibvirtSandbox, name: str, console_log: Path, address: str,
                 user: str, key: Path) -> None:
        self.sb = sandbox
        self.name = name
        self.console_log = console_log  # the domain's <serial><log file=...>, as seen from outside
        self.address = address
        self.user = user
        self.key = key
        self._console_from = 0  # wait_for_console_text reads from here (a new boot: reset by start)

    # -- diagnostics --------------------------------------------------------------------

    def console(self) -> str:
        return self.console_log.read_text(errors="replace") if self.console_log.exists() else ""

    def console_tail(self, lines: int = 40) -> str:
        return "\n".join(self.console().splitlines()[-lines:])

    def _fail(self, what: str) -> VmFailure:
        return VmFailure(f"{self.name}: {what}\n--- last lines of {self.name}'s serial console ---\n"
                         f"{self.console_tail()}\n--- libvirtd log ---\n{self.sb.log()[-1500:]}")

    # -- life cycle ---------------------------------------------------------------------

    def start(self) -> None:
        self._console_from = len(self.console())
        out = self.sb.virsh("start", self.name, check=False)
        if out.returncode != 0:
            raise self._fail(f"virsh start failed: {out.stdout}{out.stderr}")

    def state(self) -> str:
        return self.sb.virsh("domstate", self.name, check=False).stdout.strip()

    def shutdown(self, timeout: float = 180) -> None:
        """ACPI power-off, as an administrator would; wait until the domain is shut off."""
        self.sb.virsh("shutdown", self.name, check=False)
        self._wait(lambda: self.state() == "shut off", timeout, "to power off after `virsh shutdown`")

    # -- waiting ------------------------------------------------------------------------

    def _wait(self, ready, timeout: float, what: str, every: float = 0.5):
        deadline = time.monotonic() + timeout
        while True:
            found = ready()
            if found:
                return found
            if time.monotonic() > deadline:
                raise self._fail(f"timed out after {timeout:.0f} s waiting {what}")
            state = self.state()
            if state in ("shut off", "crashed"):
                # it may have stopped between the two looks: what it was waiting for decides
                found = ready()
                if found:
                    return found
                raise self._fail(f"the domain is {state} while waiting {what}")
            time.sleep(every)

    def wait_for_console_text(self, pattern: str, timeout: float = 300) -> re.Match:
        """Wait until the serial console of this boot shows `pattern` (a regular expression)."""
        regex = re.compile(pattern, re.M)
        return self._wait(lambda: regex.search(self.console()[self._console_from:]), timeout,
                          f"for console text /{pattern}/")

    def _ssh(self, command: str, timeout: float) -> subprocess.CompletedProcess:
        return self.sb.run(
            "ssh", "-i", str(self.key), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=5",
            f"{self.user}@{self.address}", command, check=False, timeout=timeout)

    def wait_for_ssh(self, timeout: float = 300) -> None:
        """Wait until the blueprint's user logs in with the key (the guest's sshd is up and configured)."""
        self._wait(lambda: self._ssh("true", 30).returncode == 0, timeout,
                   f"for SSH as {self.user}@{self.address}", every=2)

    # -- commands -----------------------------------------------------------------------

    def execute(self, command: str, timeout: float = 120) -> tuple[int, str]:
        out = self._ssh(command, timeout)
        return out.returncode, out.stdout + out.stderr

    def succeed(self, command: str, timeout: float = 120) -> str:
        """Run `command` over SSH (as the blueprint's user; sudo for root); it must exit 0."""
        out = self._ssh(command, timeout)
        if out.returncode != 0:
            raise self._fail(f"`{command}` failed (exit {out.returncode}):\n{out.stdout}{out.stderr}")
        return out.stdout

    def fail(self, command: str, timeout: float = 120) -> str:
        """Run `command`; it must exit non-zero."""
        out = self._ssh(command, timeout)
        if out.returncode == 0:
            raise self._fail(f"`{command}` succeeded, expected it to fail:\n{out.stdout}")
        return out.stdout + out.stderr

    def root(self, command: str, timeout: float = 120) -> str:
        return self.succeed("sudo sh -c " + shlex.quote(command), timeout)
