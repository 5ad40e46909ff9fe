"""`moat iso` killed (SIGKILL) while it writes leaves no temporary ISO for good: each is named
.moat-iso-tmp.<output name>.<pid> beside its output and flocked while written, and the next run
removes those whose lock is free (compiler/media/temporary.py). A temporary ISO is 0600 and may be
hundreds of MB holding the disk passphrases: one left behind for ever is a leak."""

from __future__ import annotations

import fcntl
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from .conftest import ROOT, run_moat

EXAMPLE = ROOT / "blueprints" / "example.yaml"


def _hidden(media: Path) -> list[str]:
    return sorted(p.name for p in media.iterdir() if p.name.startswith(".")) if media.is_dir() else []


def _start(out: Path, secrets: Path, target: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "compiler.cli", "iso", "--out", str(out), "--secrets", str(secrets),
                             "--output", str(target)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _writing(media: Path, proc: subprocess.Popen) -> float:
    """Wait until the run creates a file in `media` (reading the bundle and the images comes
    before); when that was (monotonic)."""
    before = set(media.iterdir()) if media.is_dir() else set()
    while proc.poll() is None and not (media.is_dir() and set(media.iterdir()) - before):
        time.sleep(0.001)
    return time.monotonic()


def test_temporary_isos_of_killed_runs_are_removed_by_the_next_run(tmp_path):
    runs, rng = 20, random.Random(13)
    out, secrets, media = tmp_path / "out", tmp_path / "secrets", tmp_path / "media"
    assert run_moat("build", EXAMPLE, "--out", out, "--no-tools").returncode == 0
    assert run_moat("secrets", "init", EXAMPLE, "--dir", secrets).returncode == 0
    target = media / "host.iso"
    probe = _start(out, secrets, tmp_path / "probe" / "host.iso")
    began = _writing(tmp_path / "probe", probe)
    assert probe.wait(timeout=300) == 0
    window = time.monotonic() - began
    left = 0
    for _ in range(runs):
        before = set(_hidden(media))
        proc = _start(out, secrets, target)
        _writing(media, proc)
        time.sleep(rng.uniform(0, window))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        left += bool(set(_hidden(media)) - before)
    print(f"{left} of {runs} killed runs left a temporary ISO behind")
    r = run_moat("iso", "--out", out, "--secrets", secrets, "--output", target)
    assert r.returncode == 0, r.stderr
    assert _hidden(media) == [], f"{left} of {runs} killed runs left temporary ISOs; the next run kept {_hidden(media)}"


def test_a_temporary_being_written_is_kept_and_a_free_one_removed(tmp_path):
    from compiler.media.temporary import ISO_PREFIX, sweep, temporary

    output = tmp_path / "host.iso"
    stale = tmp_path / f"{ISO_PREFIX}host.iso.999999"
    stale.write_bytes(b"secret")
    with temporary(output) as mine:
        assert not stale.exists()  # its lock is free: removed
        assert mine.name == f"{ISO_PREFIX}host.iso.{os.getpid()}"
        assert oct(mine.stat().st_mode & 0o777) == oct(0o600)
        # another run's sweep keeps it: it is locked while written
        child = subprocess.run([sys.executable, "-c", "import sys; from pathlib import Path; "
                                "from compiler.media.temporary import sweep; print(len(sweep(Path(sys.argv[1]))))",
                                str(tmp_path)], cwd=ROOT, capture_output=True, text=True)
        assert child.stdout.strip() == "0" and mine.exists(), child.stderr
        # and a file whose lock is held elsewhere too
        held = tmp_path / f"{ISO_PREFIX}seed.iso.1"
        held.write_bytes(b"")
        fd = os.open(held, os.O_RDONLY)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            assert sweep(tmp_path) == [] and held.exists()
        finally:
            os.close(fd)
    assert not mine.exists()
