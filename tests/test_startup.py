"""What a start of moat keeps between runs (compiled templates) never changes what it says."""

from __future__ import annotations

import os
import subprocess
import sys

from .conftest import ROOT


def _check(cache: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MOAT_CACHE_DIR": cache}
    return subprocess.run([sys.executable, "-m", "compiler.cli", "check", "--format", "json",
                           str(ROOT / "blueprints" / "example.yaml")],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)


def test_compiled_templates_are_kept_and_a_broken_cache_is_only_slower(tmp_path):
    cache = tmp_path / "cache"
    first = _check(str(cache))
    assert first.returncode == 0 and first.stdout.strip(), first.stderr
    kept = sorted((cache / "jinja").iterdir())
    assert len(kept) >= 20, kept  # one per template the example renders
    for file in kept:  # truncated and garbled entries, as a crash or a full disk leaves them
        file.write_bytes(file.read_bytes()[: len(file.read_bytes()) // 2] + b"\xff garbage")
    again = _check(str(cache))
    assert again.returncode == 0, again.stderr
    assert again.stdout == first.stdout
    # a cache that cannot be written at all (a file where the directory should be)
    blocked = tmp_path / "blocked"
    blocked.write_text("not a directory")
    third = _check(str(blocked))
    assert third.returncode == 0, third.stderr
    assert third.stdout == first.stdout and third.stderr == first.stderr
