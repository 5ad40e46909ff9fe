"""A validated `moat build` that is killed leaves none of its validators running, and one that is
asked to stop (SIGTERM, or SIGINT as Ctrl-C) also leaves no temporary tree and says so in one line (compiler/children.py).

The build validates with this machine's tools (--host-tools), a fresh validation cache, and a PATH
whose `xmllint` and `shellcheck` first sleep (as a child of their shell: a validator's own child),
so that validators are surely running when the signal comes. Every process the build starts
inherits a tag in its environment; afterwards no process with that tag may be left. Before
children.py, SIGKILL and SIGTERM left the sleeping validators running, SIGTERM also left
out/store/.tmp-* behind, and SIGINT waited for the sleeping validators (600 s)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from .conftest import ROOT

EXAMPLE = ROOT / "blueprints" / "example.yaml"
SLOW = "#!/bin/sh\nsleep 600\nexec {real} \"$@\"\n"


def tagged(tag: str) -> dict[int, str]:
    """pid -> command line of every process whose environment carries the tag."""
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if f"MOAT_SIGNAL_TEST={tag}".encode() in (proc / "environ").read_bytes().split(b"\0"):
                found[int(proc.name)] = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone meanwhile, or a zombie
            continue
    return found


def start_build(tmp_path: Path) -> tuple[subprocess.Popen, str, Path]:
    """A validated build of the example, returned once one of its validators' children sleeps."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("xmllint", "shellcheck"):
        real = subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True, text=True).stdout.strip()
        if not real:
            pytest.skip(f"{tool} is not installed")
        (bin_dir / tool).write_text(SLOW.format(real=real))
        (bin_dir / tool).chmod(0o755)
    tag, out = uuid.uuid4().hex, tmp_path / "out"
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "MOAT_SIGNAL_TEST": tag,
           "MOAT_CACHE_DIR": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT)}
    build = subprocess.Popen([sys.executable, "-m", "compiler.cli", "build", str(EXAMPLE), "--out", str(out),
                              "--host-tools"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    deadline = time.monotonic() + 120
    while not any(cmd.startswith("sleep ") for cmd in tagged(tag).values()):
        if build.poll() is not None or time.monotonic() > deadline:
            build.kill()
            pytest.fail(f"no validator started (exit {build.poll()}): {build.communicate()[1][-2000:]}")
        time.sleep(0.1)
    return build, tag, out


def left_running(tag: str, grace: float = 10.0) -> dict[int, str]:
    deadline = time.monotonic() + grace
    while (found := tagged(tag)) and time.monotonic() < deadline:
        time.sleep(0.1)
    while leftover := tagged(tag):  # do not leave them to the next test (nor what they start next)
        for pid in leftover:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.1)
    return found


def test_sigkill_leaves_no_validator_running(tmp_path):
    build, tag, _out = start_build(tmp_path)
    build.kill()
    build.communicate()
    assert not left_running(tag)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_signal_stops_the_validators_and_removes_the_temporary_tree(tmp_path, signum):
    # SIGINT as Ctrl-C sends it to moat alone: its validators are in groups of their own
    build, tag, out = start_build(tmp_path)
    assert list((out / "store").glob(".tmp-*")), "the build writes into a temporary tree while it validates"
    build.send_signal(signum)
    _stdout, stderr = build.communicate(timeout=60)
    assert build.returncode == 128 + signum, stderr
    assert "Traceback" not in stderr
    assert stderr.splitlines()[-1].startswith(f"moat: stopped by {signum.name}: "), stderr
    assert not left_running(tag)
    assert not list((out / "store").glob(".tmp-*")) and not list((out / "store").glob("*-example"))
    assert not (out / "current").exists()
