"""Debian 12 roots for the tests that run things in a real Debian: built once per machine by
tests/system/*.sh (lib/debian-root.sh, keyed by the sha256 of the recipe), unpacked fresh for each
test into a directory that is removed afterwards, with any mount left under it."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .conftest import ROOT

SYSTEM = ROOT / "tests" / "system"
IMAGES = Path(os.environ.get("MOAT_IMAGE_DIR", os.environ.get("MOAT_VPS_IMAGE_DIR", "/opt/moat-tools")))


def image(script: str, name: str) -> Path:
    """The image tests/system/`script` builds as `name`, checked to be made by its current recipe."""
    path = IMAGES / f"{name}.tar.zst"
    key = hashlib.sha256((SYSTEM / script).read_bytes() + (SYSTEM / "lib" / "debian-root.sh").read_bytes()).hexdigest()
    stamp = IMAGES / f"{name}.key"
    assert path.is_file() and stamp.is_file() and stamp.read_text().strip() == key, \
        f"{path} is missing or not made by the current tests/system/{script}: run `make system-deps` as root"
    return path


def mounts_under(path: Path) -> list[str]:
    with open("/proc/self/mountinfo") as fh:
        points = [line.split()[4] for line in fh]
    return [p for p in points if p == str(path) or p.startswith(f"{path}/")]


@contextmanager
def unpacked(tarball: Path, root: Path) -> Iterator[Path]:
    """`tarball` unpacked into the new directory `root`; afterwards every mount under it is
    lazily unmounted (private mount namespaces should leave none) and it is removed."""
    root.mkdir()
    try:
        done = subprocess.run(["tar", "--zstd", "--numeric-owner", "-xpf", str(tarball), "-C", str(root)],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        yield root
    finally:
        for point in reversed(mounts_under(root)):
            subprocess.run(["umount", "-l", point], check=False)
        left = mounts_under(root)
        shutil.rmtree(root, ignore_errors=True)
        assert not left, left
