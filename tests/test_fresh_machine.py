"""The README's commands on a stranger's machine: a stock Debian 12 (debootstrap minbase with only
python3, make, git; tests/system/fresh_root.sh), unpacked fresh, a clean `git clone` of the commit
under test, and as root `make bundle`, then `make bundle BLUEPRINT=blueprints/vps-front.yaml`:
both succeed, every validator runs (no tool-missing, no tool-rejected) and out/current exists.

The root is entered with private mount and pid namespaces and pivot_root, not chroot: moat itself
runs its validators in a tools tree under user namespaces, which the kernel refuses in a chroot.
The network is the host's (apt and pip reach Debian's mirror and PyPI). What is slow is cached
on this machine, never the result: the root image (by its recipe's hash), the .debs (a host
directory bind-mounted as the root's /var/cache/apt/archives, also offered to moat's tools tree
as MOAT_DEBOOTSTRAP_CACHE) and pip's HTTP cache (bind-mounted as /root/.cache/pip; it stays empty
behind a proxy that strips Cache-Control, as on the development machines) and diskimage-builder's
downloads (/root/.cache/moat/dib); everything else starts from scratch each run: the tools tree
and the example's golden image are built there, as `make bundle` does on a stranger's machine.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from .conftest import ROOT
from .debian_root import image, unpacked

CACHE = Path(os.environ.get("MOAT_TEST_CACHE", "/var/cache/moat-test"))
APT_CACHE = CACHE / "apt-archives"  # tests/system/lib/debian-root.sh's MOAT_DEB_CACHE default too
PIP_CACHE = CACHE / "pip"
DIB_CACHE = CACHE / "dib"  # diskimage-builder's downloads (.debs): a download cache, never an image
CLONE = "/root/moat"  # inside the fresh root
# the host's network set-up, handed on as it is (an egress proxy, the CA bundle pip must trust)
NETWORK_ENV = ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY",
               "PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR", "CURL_CA_BUNDLE",
               "PIP_DEFAULT_TIMEOUT")

# in new mount (private) and pid namespaces: the root's own /proc, /sys, /dev, /tmp and /run, the
# caches, then pivot_root into it and the old root unmounted; the command runs under a clean
# environment with each output line prefixed by the seconds since it started
IN_FRESH = r'''
set -eu
root=$1 apt_cache=$2 pip_cache=$3 dib_cache=$4
shift 4
mount --bind "$root" "$root"
mount -t proc proc "$root/proc"
mount -t sysfs sysfs "$root/sys"
mount --rbind /dev "$root/dev"
mount -t tmpfs -o mode=1777 tmpfs "$root/tmp"
mount -t tmpfs -o mode=0755 tmpfs "$root/run"
mount --bind "$apt_cache" "$root/var/cache/apt/archives"
mount --bind "$pip_cache" "$root/root/.cache/pip"
mkdir -p "$root/root/.cache/moat/dib"
mount --bind "$dib_cache" "$root/root/.cache/moat/dib"
cp /etc/resolv.conf "$root/etc/resolv.conf"
cd "$root"
mkdir -p .old-root
pivot_root . .old-root
cd /
umount -l /.old-root
rmdir /.old-root
# the machine's extra CAs (copied in by the test) in the root's bundle, as on the host
if ls /usr/local/share/ca-certificates/*.crt >/dev/null 2>&1; then update-ca-certificates >/dev/null 2>&1; fi
set -o pipefail
start=$EPOCHREALTIME
status=0
# shellcheck disable=SC2086  # FRESH_NETWORK_ENV: NAME=value words
/usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
    TERM=dumb MOAT_DEBOOTSTRAP_CACHE=/var/cache/apt/archives $FRESH_NETWORK_ENV "$@" 2>&1 |
    while IFS= read -r line; do
        now=$EPOCHREALTIME
        printf '%6d %s\n' "$(( (${now/./} - ${start/./}) / 1000000 ))" "$line"
    done || status=$?
exit "$status"
'''


def in_fresh(root: Path, *command: str, timeout: int = 3600) -> tuple[subprocess.CompletedProcess, float]:
    """Run `command` as root in the fresh root (see IN_FRESH): (the result, its seconds)."""
    network = " ".join(f"{k}={os.environ[k]}" for k in NETWORK_ENV if os.environ.get(k))
    began = time.monotonic()
    done = subprocess.run(["unshare", "--mount", "--pid", "--fork", "--kill-child", "bash", "-c", IN_FRESH,
                           "in-fresh", str(root), str(APT_CACHE), str(PIP_CACHE), str(DIB_CACHE), *command],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
                          env={"PATH": os.environ["PATH"], "FRESH_NETWORK_ENV": network})
    return done, time.monotonic() - began


@pytest.fixture
def fresh_root(tmp_path) -> Path:
    """The stock Debian 12 root, unpacked afresh, holding a clean clone of the commit under test
    at /root/moat, and the host's caches ready to be mounted."""
    tarball = image("fresh_root.sh", "bookworm-fresh")
    for d in (APT_CACHE / "partial", PIP_CACHE, DIB_CACHE):
        d.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    with unpacked(tarball, tmp_path / "fresh") as root:
        unpack = time.monotonic() - began
        commit = git("rev-parse", "HEAD").stdout.strip()
        clone = root / CLONE.lstrip("/")
        cloned = subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", str(ROOT), str(clone)],
                                capture_output=True, text=True, timeout=300)
        assert cloned.returncode == 0, cloned.stderr
        git("-C", str(clone), "checkout", "--quiet", "--detach", commit)
        (root / "root/.cache/pip").mkdir(parents=True)
        for ca in Path("/usr/local/share/ca-certificates").glob("*.crt"):
            shutil.copy(ca, root / "usr/local/share/ca-certificates" / ca.name)
        print(f"\nfresh machine: {tarball.name} unpacked in {unpack:.1f} s; testing {commit[:12]}")
        yield root


def git(*args: str) -> subprocess.CompletedProcess:
    done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done


def steps(output: str) -> str:
    """The commands make ran, with the second each started at: where the time went."""
    return "\n".join(line for line in output.splitlines()
                     if re.match(r"\s*\d+ (test -x|\.venv/bin/|installing|make\[|moat: |moat images: )", line))


@pytest.mark.slow
def test_the_readme_on_a_stock_debian_12_as_root(fresh_root, capsys):
    runs = []  # (out/current is removed before each step: it then shows that this step built)
    for command in ("make bundle", "make bundle BLUEPRINT=blueprints/vps-front.yaml"):
        done, seconds = in_fresh(fresh_root, "sh", "-c", f"cd {CLONE} && rm -f out/current && {command}")
        runs.append((command, done, (fresh_root / CLONE.lstrip("/") / "out" / "current" / "manifest.json").is_file()))
        with capsys.disabled():
            print(f"\n{command}: {seconds:.0f} s (exit {done.returncode})\n{steps(done.stdout)}")
    for command, done, built in runs:
        output = f"{command}:\n{done.stdout}{done.stderr}"
        assert done.returncode == 0, output[-6000:]
        assert built, output[-3000:]
        # the acceptance criterion of issue 9: every validator ran (from moat's tools tree)
        tools = [line for line in output.splitlines()
                 if any(rule in line for rule in ("tool-missing", "tool-rejected", "[tools-tree]"))]
        assert not tools, f"{command}:\n" + "\n".join(tools)
    # the first build made the tree (with progress), the second found it
    first, second = runs[0][1].stdout, runs[1][1].stdout
    assert "step 5/5" in first and "tools tree ready" in first, first[-3000:]
    assert "building the tools tree" not in second
    # the first baked the Nextcloud VM's golden image (with progress), the second (same image) found it
    assert re.search(r"moat images: .*image nextcloud \w+ baked in \d+ s", first), first[-3000:]
    assert re.search(r"moat images: image nextcloud \w+: cached", second), second[-3000:]
    assert "baking image" not in second
