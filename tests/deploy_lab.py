"""A KVM host to deploy to, in namespaces the test creates, with real daemons:

- the host: the libvirt sandbox (tests/libvirt_sandbox.py: libvirtd, QEMU under TCG, its own
  mount, network and PID namespaces), plus, in the same namespaces, the generated sshd (keys only,
  the blueprint's port) as installed from generation 0 of the bundle, an admin account `ops` with
  passwordless sudo (private copies of /etc/passwd, group, shadow and sudoers bind-mounted, a
  tmpfs /home) and host keys in a private /etc/ssh;
- the network: a veth pair from a client namespace (203.0.113.2) to the host's uplink0
  (203.0.113.10, the blueprint's uplink), nothing else;
- the deployer: `moat deploy` run in the client namespace, as the user would from a laptop.

Two things stand in for what a namespace cannot have. The host's files live under a directory
(MOAT_ROOT): /etc of this machine is never written. systemd does not run here, so `systemctl` is a
script that logs each call and does what the unit would: sshd is sent SIGHUP (it re-reads its
configuration), `firewalld` loads the bundle's nftables policy. Both reach the switch through the
admin's login shell and sudo's env_keep, as a host's own configuration would. Everything else is
the real thing: sshd, sudo, python3 running the bundle's switch, virsh, libvirtd, QEMU, nft, the
bundle's apply script and qemu hook.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from .libvirt_sandbox import LibvirtSandbox
from .conftest import ROOT

UPLINK, HOST_ADDRESS, CLIENT_ADDRESS = "uplink0", "203.0.113.10", "203.0.113.2"
USER, UID = "ops", 4242
KEEP = "MOAT_ROOT MOAT_SYSTEMCTL MOAT_SHUTDOWN_TIMEOUT MOAT_SWITCH_KILL_AT"

SYSTEMCTL = """#!/bin/sh
# systemctl stand-in of the deploy test: logs, and does what the unit would on a host
echo "$*" >>"{log}"
case "$1 $2" in
    "reload-or-restart sshd.service"|"restart sshd.service") kill -HUP "$(cat /run/sshd.pid)" ;;
    "reload-or-restart firewalld.service"|"restart firewalld.service") nft -f "$MOAT_ROOT/etc/nftables/moat.nft" ;;
esac
"""

LOGIN_SHELL = """#!/bin/sh
export MOAT_ROOT="{root}" MOAT_SYSTEMCTL="{systemctl}" MOAT_SHUTDOWN_TIMEOUT=5
if [ -s "{kill_at}" ]; then MOAT_SWITCH_KILL_AT=$(cat "{kill_at}"); export MOAT_SWITCH_KILL_AT; fi
exec /bin/sh "$@"
"""

SETUP = r"""
set -eu
lab=$1 key=$2
acct=$lab/accounts
mkdir -p "$acct"
for db in passwd group shadow sudoers; do cp "/etc/$db" "$acct/$db"; done
echo "ops:x:4242:4242:moat deploy test:/home/ops:/home/.moat-login" >>"$acct/passwd"
echo "ops:x:4242:" >>"$acct/group"
echo "ops:*:19000:0:99999:7:::" >>"$acct/shadow"
printf 'Defaults:ops env_keep += "%s"\nops ALL=(ALL) NOPASSWD: ALL\n' "$KEEP" >>"$acct/sudoers"
chmod 0440 "$acct/sudoers"
for db in passwd group shadow sudoers; do mount --bind "$acct/$db" "/etc/$db"; done
mount -t tmpfs -o mode=0755 moat-home /home
install -d -m 0700 -o 4242 -g 4242 /home/ops /home/ops/.ssh
install -m 0600 -o 4242 -g 4242 "$key" /home/ops/.ssh/authorized_keys
install -m 0755 "$lab/login-shell" /home/.moat-login
: >/home/.moat-kill-at
mount -t tmpfs -o mode=0755 moat-ssh /etc/ssh
ssh-keygen -q -t ed25519 -N "" -f /etc/ssh/ssh_host_ed25519_key
# the same key again, given to the running sshd with -h: a test can take the configured one away
# (so the switch's `sshd -t` fails on the host) without changing what clients see
mkdir -p /etc/ssh/lab
cp -p /etc/ssh/ssh_host_ed25519_key /etc/ssh/lab/host_key
mkdir -p /run/sshd
# the host's libvirt configuration directory is where the switch installs the qemu hook
mkdir -p "$MOAT_ROOT/etc/libvirt"
mount --bind "$SANDBOX_ETC" "$MOAT_ROOT/etc/libvirt"
ip link set "$UPLINK" up
ip addr add "$HOST_ADDRESS/24" dev "$UPLINK"
"""

TEMPLATE = ROOT / "tests" / "deploy" / "host.yaml"

PLACEHOLDER_HOOK = "#!/bin/sh\n# the host's qemu hook before the first deploy installs the bundle's\nexit 0\n"


class DeployLab:
    def __init__(self, tmp: Path, key: Path) -> None:
        self.tmp = tmp
        self.key = key
        self.root = tmp / "hostroot"          # MOAT_ROOT: the host's /
        self.log = tmp / "systemctl.log"
        self.kill_at = "/home/.moat-kill-at"  # inside the namespaces: readable by the admin's login shell
        self.client = f"moat-dcli-{os.getpid()}"
        hook = tmp / "placeholder-hook"
        hook.write_text(PLACEHOLDER_HOOK)
        self.sandbox = LibvirtSandbox(tmp / "sandbox", hook=hook)

    # -- life cycle -----------------------------------------------------------------------

    def __enter__(self) -> DeployLab:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> None:
        self.root.mkdir()
        systemctl = self.tmp / "systemctl"
        systemctl.write_text(SYSTEMCTL.format(log=self.log))
        systemctl.chmod(0o755)
        (self.tmp / "login-shell").write_text(LOGIN_SHELL.format(root=self.root, systemctl=systemctl,
                                                                 kill_at=self.kill_at))
        self.sandbox.start()
        veth = f"mdv{os.getpid() % 100000}"
        subprocess.run(["ip", "netns", "add", self.client], check=True)
        subprocess.run(["ip", "link", "add", veth, "type", "veth", "peer", "name", UPLINK,
                        "netns", str(self.sandbox.init_pid)], check=True)
        subprocess.run(["ip", "link", "set", veth, "netns", self.client], check=True)
        for cmd in (["link", "set", "lo", "up"], ["addr", "add", f"{CLIENT_ADDRESS}/24", "dev", veth],
                    ["link", "set", veth, "up"]):
            subprocess.run(["ip", "-n", self.client, *cmd], check=True)
        self.sandbox.run("env", f"MOAT_ROOT={self.root}", f"SANDBOX_ETC={self.sandbox.root / 'etc'}",
                         f"UPLINK={UPLINK}", f"HOST_ADDRESS={HOST_ADDRESS}", f"KEEP={KEEP}",
                         "sh", "-c", SETUP, "sh", str(self.tmp), str(self.key.with_suffix(".pub")))

    def close(self) -> None:
        self.sandbox.stop()
        subprocess.run(["ip", "netns", "del", self.client], capture_output=True)

    # -- the host -------------------------------------------------------------------------

    def install_sshd(self, bundle: Path) -> None:
        """What the host's install did: the bundle's sshd_config in place, sshd started with it."""
        conf = self.root / "etc/ssh/sshd_config"
        conf.parent.mkdir(parents=True, exist_ok=True)
        conf.write_bytes((bundle / "host/ssh/sshd_config").read_bytes())
        conf.chmod(0o600)
        self.sandbox.run("/usr/sbin/sshd", "-f", str(conf), "-h", "/etc/ssh/lab/host_key", "-E", str(self.tmp / "sshd.log"))

    def kill_switch_at(self, point: str) -> None:
        """The next switch SIGKILLs itself at `point` (MOAT_SWITCH_KILL_AT); "" for none."""
        self.sandbox.run("sh", "-c", 'printf %s "$1" >"$2"', "sh", point, self.kill_at)

    def virsh(self, *args: str, check: bool = True) -> str:
        return self.sandbox.virsh(*args, check=check).stdout.strip()

    def domid(self, vm: str) -> str:
        return self.virsh("domid", vm)

    def state_dir(self) -> Path:
        return self.root / "var/lib/moat"

    def host_file(self, dest: str) -> Path:
        """Where a host path is, seen from outside the namespaces (/etc/libvirt is the sandbox's)."""
        if dest.startswith("/etc/libvirt/"):
            return self.sandbox.root / "etc" / dest[len("/etc/libvirt/"):]
        return self.root / dest.lstrip("/")

    def current(self) -> int | None:
        link = self.state_dir() / "current"
        return int(os.readlink(link).rsplit("/", 1)[-1]) if link.is_symlink() else None

    def current_store(self) -> Path:
        return (self.state_dir() / "current").resolve()

    def systemctl_calls(self) -> list[str]:
        calls = self.log.read_text().splitlines() if self.log.exists() else []
        self.log.write_text("")
        return calls

    def forwards(self) -> str:
        out = self.sandbox.run("nft", "list", "table", "ip", "moat_forwards", check=False)
        return out.stdout

    # -- the deployer ---------------------------------------------------------------------

    def moat(self, *args: str, cwd: Path, env: dict | None = None, timeout: float = 900
             ) -> subprocess.CompletedProcess:
        """The real CLI in the client namespace, with the test's key and known_hosts."""
        ssh = [f"--ssh-option=IdentityFile={self.key}", "--ssh-option=IdentitiesOnly=yes",
               f"--ssh-option=UserKnownHostsFile={self.tmp / 'known_hosts'}",
               "--ssh-option=StrictHostKeyChecking=accept-new"]
        command, *rest = args
        cmd = ["ip", "netns", "exec", self.client, sys.executable, "-m", "compiler.cli", command, *ssh, *rest]
        return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}, stdin=subprocess.DEVNULL)


class Workspace:
    """The user's side: a blueprint (edited between deploys), its secrets, its images."""

    def __init__(self, tmp: Path, key: Path) -> None:
        self.dir = tmp / "work"
        self.dir.mkdir()
        self.pools = tmp / "pools"
        self.text = TEMPLATE.read_text().replace("@POOLS@", str(self.pools)).replace(
            "@KEY@", key.with_suffix(".pub").read_text().strip())
        self.blueprint = self.dir / "host.yaml"
        self.write(self.text)
        self.run("secrets", "init", str(self.blueprint), "--dir", str(self.dir / "secrets"))

    def run(self, *args: str) -> str:
        """moat on the user's machine (the deploys run in the lab's client namespace)."""
        proc = subprocess.run([sys.executable, "-m", "compiler.cli", *args], cwd=self.dir, capture_output=True,
                              text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=900)
        assert proc.returncode == 0, f"moat {' '.join(args)}:\n{proc.stdout}{proc.stderr}"
        return proc.stdout

    def write(self, text: str) -> None:
        self.blueprint.write_text(text)
        self.stand_in_images()

    def edit(self, old: str, new: str) -> str:
        assert old in self.text, old
        return self.text.replace(old, new, 1)

    def stand_in_images(self) -> None:
        """Each image key the blueprint names gets its own 8 MiB qcow2 in the run's image cache."""
        from compiler.images.recipe import baked_path
        from compiler.pipeline import check_file
        listed = json.loads(check_file(self.blueprint).files["host/images.json"].content)["images"]
        for image in listed:
            path = baked_path(image["name"], image["key"])
            if path.exists():
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            raw = path.with_suffix(".raw")
            raw.write_bytes(image["file"].encode().ljust(1 << 20, b"\x5a") + bytes(7 << 20))
            subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(raw), str(path)], check=True)
            raw.unlink()
