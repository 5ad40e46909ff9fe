"""A real libvirtd in private namespaces, for tests that must not touch this machine's libvirt.

`LibvirtSandbox` starts virtlogd and libvirtd inside `unshare --mount --net --pid --fork`:
- a tmpfs over /run (sockets, pid files, libvirt's runtime state), and temp directories
  bind-mounted over /etc/libvirt (a configuration of its own: qemu.conf, libvirtd.conf and
  the hook under test), /var/lib/libvirt, /var/log/libvirt and /var/cache/libvirt: the
  machine's own libvirt configuration and state are never read nor written, and only the
  packages' programs are needed (libvirt-daemon, not libvirt-daemon-system and its services,
  which alone creates those directories: one that is missing is made inside a private overlay);
- its own network namespace: networks, bridges, firewall rules and dnsmasq live there;
- its own PID namespace: killing its init kills libvirtd, dnsmasq and every QEMU at once,
  and the namespaces vanish with them; so does the test's process dying (PR_SET_PDEATHSIG on
  unshare, --kill-child on its init), even when killed before its finalizers run.
Commands run inside with `nsenter` (`sandbox.run`, `sandbox.virsh`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

from compiler.cached_build import die_with_parent

# the sandbox's qemu.conf; each setting says why
QEMU_CONF = """# moat test sandbox:
# QEMU runs as root: the test's files live under pytest's private (0700) temp directories
user = "root"
group = "root"
# no cgroups: libvirt would otherwise create machine cgroups in the machine's own hierarchy
cgroup_controllers = [ ]
# (no KVM setting: /dev/kvm is a software shim on the test machines, test domains use TCG)
"""

LIBVIRTD_CONF = """# moat test sandbox: log warnings and errors to the private log directory
log_outputs = "3:file:/var/log/libvirt/libvirtd.log"
"""

# runs as the namespaces' init: mount the private directories, start the daemons, say ready
SETUP = r"""
set -eu
root=$1
mount -t tmpfs -o mode=0755 moat-run /run
# a mount point the machine lacks (libvirt-daemon-system was never installed) is made in an
# overlay of its nearest existing parent, private to this namespace: nothing is created on the
# machine; the overlay's upper layer is a tmpfs, whatever file system the test's root is on
n=0
for dir in etc:/etc/libvirt lib:/var/lib/libvirt log:/var/log/libvirt cache:/var/cache/libvirt; do
    target=${dir#*:}
    if [ ! -d "$target" ]; then
        parent=${target%/*}
        while [ ! -d "${parent:-/}" ]; do parent=${parent%/*}; done
        n=$((n + 1))
        layer=$root/overlay$n
        mkdir "$layer"
        mount -t tmpfs -o mode=0755 moat-overlay "$layer"
        mkdir "$layer/upper" "$layer/work"
        mount -t overlay -o "lowerdir=${parent:-/},upperdir=$layer/upper,workdir=$layer/work" moat-overlay "${parent:-/}"
        mkdir -p "$target"
    fi
    mount --bind "$root/${dir%%:*}" "$target"
done
# libvirt's QEMU driver resolves its built-in user and group (libvirt-qemu, made by
# libvirt-daemon-system's postinst) before it reads qemu.conf: lacking, they are added to
# private copies of /etc/passwd and /etc/group
for db in passwd group; do
    if ! getent "$db" libvirt-qemu >/dev/null; then
        cp "/etc/$db" "$root/$db"
        case $db in
            passwd) echo "libvirt-qemu:x:64055:64055:moat sandbox:/var/lib/libvirt:/usr/sbin/nologin" ;;
            group) echo "libvirt-qemu:x:64055:" ;;
        esac >>"$root/$db"
        mount --bind "$root/$db" "/etc/$db"
    fi
done
ip link set lo up
virtlogd --daemon </dev/null >/dev/null 2>&1
libvirtd --daemon </dev/null >/dev/null 2>&1
i=0
until [ -S /run/libvirt/libvirt-sock ]; do
    i=$((i + 1))
    [ $i -lt 300 ] || { echo "libvirtd did not create its socket" >&2; exit 1; }
    sleep 0.1
done
echo ready
# stay as init and reap orphans (libvirt's QEMU capability probe daemonizes: an unreaped
# zombie makes libvirt wait 40 s for it to die); the shell reaps every child while it waits
while :; do
    sleep 1
done
"""


class LibvirtSandbox:
    def __init__(self, root: Path, hook: Path | None = None, hooks_d: dict[str, str] | None = None):
        """`hook`: installed as hooks/qemu; `hooks_d`: name -> text of scripts in hooks/qemu.d,
        which libvirt runs after hooks/qemu."""
        self.root = root
        self.hook = hook
        self.hooks_d = hooks_d or {}
        self.proc: subprocess.Popen | None = None
        self.init_pid: int | None = None

    # -- life cycle ---------------------------------------------------------------------

    def __enter__(self) -> LibvirtSandbox:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _prepare(self) -> None:
        etc = self.root / "etc"
        for sub in ("etc", "lib", "log", "cache"):
            (self.root / sub).mkdir(parents=True)
        # a configuration of its own, not a copy of the machine's: only what the test needs
        (etc / "qemu.conf").write_text(QEMU_CONF)
        (etc / "libvirtd.conf").write_text(LIBVIRTD_CONF)
        (etc / "hooks" / "qemu.d").mkdir(parents=True)
        if self.hook is not None:
            shutil.copyfile(self.hook, etc / "hooks" / "qemu")
            (etc / "hooks" / "qemu").chmod(0o555)
        for name, text in self.hooks_d.items():
            (etc / "hooks" / "qemu.d" / name).write_text(text)
            (etc / "hooks" / "qemu.d" / name).chmod(0o555)

    def start(self, timeout: float = 60) -> None:
        self._prepare()
        self.proc = subprocess.Popen(
            ["unshare", "--mount", "--net", "--pid", "--fork", "--kill-child", "--mount-proc", "--propagation",
             "private", "sh", "-c", SETUP, "sh", str(self.root)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            start_new_session=True, preexec_fn=die_with_parent())
        try:
            deadline = time.monotonic() + timeout
            while self.init_pid is None and time.monotonic() < deadline:
                children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
                pids = children.read_text().split() if children.exists() else []
                if pids:
                    self.init_pid = int(pids[0])
                elif self.proc.poll() is not None:
                    break
                else:
                    time.sleep(0.02)
            line = self.proc.stdout.readline() if self.init_pid else ""
            if line.strip() != "ready":
                stderr = self.proc.stderr.read() if self.proc.poll() is not None else ""
                raise RuntimeError(f"libvirt sandbox did not start: {stderr}\n{self.log()}")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Kill the namespaces' init: the kernel kills everything else in them."""
        if self.init_pid is not None:
            try:
                os.kill(self.init_pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.proc is not None:
            if self.init_pid is None and self.proc.poll() is None:
                self.proc.kill()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            for stream in (self.proc.stdout, self.proc.stderr):
                if stream:
                    stream.close()
        self.proc = None
        self.init_pid = None

    # -- commands inside ----------------------------------------------------------------

    def run(self, *cmd: str, check: bool = True, timeout: float = 60, input: str | None = None
            ) -> subprocess.CompletedProcess:
        """Run a command inside the sandbox's mount, network and PID namespaces."""
        assert self.init_pid is not None, "sandbox not started"
        proc = subprocess.run(["nsenter", "--target", str(self.init_pid), "--mount", "--net", "--pid", "--", *cmd],
                              capture_output=True, text=True, timeout=timeout, input=input,
                              stdin=None if input is not None else subprocess.DEVNULL)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
        return proc

    def sh(self, script: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        return self.run("sh", "-c", script, check=check, timeout=timeout)

    def virsh(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        return self.run("virsh", "--quiet", "-c", "qemu:///system", *args, check=check, timeout=timeout)

    def ruleset(self) -> str:
        return self.run("nft", "list", "ruleset").stdout

    def log(self) -> str:
        path = self.root / "log" / "libvirtd.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""


# -- a bundle's libvirt definitions, made to run in the sandbox -------------------------------


def tcg_copy(xml: str) -> str:
    """A domain as generated, made startable here: TCG instead of the /dev/kvm shim (no host CPU
    passthrough under TCG) and little memory. Name, UUID, disks and NICs stay as generated."""
    xml = xml.replace('<domain type="kvm">', '<domain type="qemu">', 1)
    xml = xml.replace('<cpu mode="host-passthrough" check="none"/>', "", 1)
    xml = re.sub(r'<(memory|currentMemory) unit="MiB">\d+<', r'<\1 unit="MiB">128<', xml)
    return re.sub(r'<vcpu placement="static">\d+<', '<vcpu placement="static">1<', xml)


def small_copy(xml: str) -> str:
    """A volume as generated, but 16 MiB and sparse: the test creates it in a directory pool."""
    return re.sub(r'<capacity unit="MiB">\d+</capacity>', '<capacity unit="MiB">16</capacity><allocation>0</allocation>', xml)


def host_definitions(bundle: Path, dest: Path, pools: Path, tcg: bool = False) -> Path:
    """The bundle's host/libvirt definitions where moat-libvirt-apply reads them (MOAT_LIBVIRT_DIR
    = dest), made to run here: every pool a directory pool at pools/NAME (no volume group here, and
    /ISOs stays untouched), keeping the generated UUIDs as a redefinition must; volumes 16 MiB
    (small_copy), in the format generated; domains under TCG when `tcg`."""
    src = bundle / "host/libvirt"
    for kind in ("networks", "domains"):
        (dest / kind).mkdir(parents=True, exist_ok=True)
        for xml in (src / kind).glob("*.xml"):
            text = xml.read_text()
            (dest / kind / xml.name).write_text(tcg_copy(text) if tcg and kind == "domains" else text)
    (dest / "pools").mkdir(exist_ok=True)
    for pool in (src / "pools").glob("*.xml"):
        uuid = re.search(r"<uuid>(.*)</uuid>", pool.read_text()).group(1)
        (dest / "pools" / pool.name).write_text(f'<pool type="dir"><name>{pool.stem}</name><uuid>{uuid}</uuid>'
                                                f'<target><path>{pools / pool.stem}</path></target></pool>')
    for vol in src.glob("volumes/*/*.xml"):
        (dest / "volumes" / vol.parent.name).mkdir(parents=True, exist_ok=True)
        (dest / "volumes" / vol.parent.name / vol.name).write_text(small_copy(vol.read_text()))
    return dest


def tiny_golden(images: Path, bundle: Path, name: str, fill: int) -> Path:
    """A stand-in for the golden image `name` of the bundle (host/images.json), where
    moat-libvirt-apply looks for it (MOAT_IMAGES_DIR = images): an 8 MiB qcow2 whose first
    MiB is the byte `fill` and whose last 4 KiB name the file. No bake: the bytes are what matters."""
    [entry] = [i for i in json.loads((bundle / "host/images.json").read_text())["images"] if i["name"] == name]
    images.mkdir(parents=True, exist_ok=True)
    raw = images / (entry["file"] + ".raw")
    content = bytes([fill]) * (1 << 20) + bytes(7 << 20)
    tail = entry["file"].encode().ljust(4096, b"\0")
    raw.write_bytes(content[:-4096] + tail)
    golden = images / entry["file"]
    subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(raw), str(golden)], check=True)
    raw.unlink()
    return golden


# -- traffic probes (python3 -c scripts, run inside test network namespaces) ----------------

# SERVE proto:address:port ...: answer every TCP connection / UDP datagram with
# "<proto> <address>:<port>" (the local end it reached), forever; prints "listening" first
SERVE = r"""
import selectors, socket, sys
sel = selectors.DefaultSelector()
for spec in sys.argv[1:]:
    proto, addr, port = spec.split(":")
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, int(port)))
    if proto == "tcp":
        s.listen()
    sel.register(s, selectors.EVENT_READ, proto)
print("listening", flush=True)
while True:
    for key, _ in sel.select():
        s = key.fileobj
        here = "%s %s:%d" % ((key.data,) + s.getsockname())
        if key.data == "tcp":
            conn, _ = s.accept()
            conn.sendall(here.encode())
            conn.close()
        else:
            _, peer = s.recvfrom(512)
            s.sendto(here.encode(), peer)
"""

# PROBE proto:address:port [timeout]: print the answer of a SERVE, or "failed: <error>"
PROBE = r"""
import socket, sys
proto, addr, port = sys.argv[1].split(":")
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
s.settimeout(float(sys.argv[2]) if len(sys.argv) > 2 else 2)
try:
    if proto == "tcp":
        s.connect((addr, int(port)))
        print(s.recv(512).decode())
    else:
        s.sendto(b"ping", (addr, int(port)))
        print(s.recvfrom(512)[0].decode())
except OSError as e:
    print("failed:", type(e).__name__)
"""
