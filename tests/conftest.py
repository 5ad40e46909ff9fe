"""Shared helpers: paths of the examples and fixtures, and running the moat CLI."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
EXAMPLES = sorted((ROOT / "blueprints").glob("*.yaml"))


def pytest_configure(config) -> None:
    """Each run starts with an empty validation cache, so that a pass remembered from an earlier
    run can never hide a validator that fails today. (Only the cache of verdicts: the tools
    tree, MOAT_TOOLS_DIR, is kept.)"""
    config._moat_cache_dir = tempfile.mkdtemp(prefix="moat-test-cache-")
    os.environ["MOAT_CACHE_DIR"] = config._moat_cache_dir


def pytest_unconfigure(config) -> None:
    if getattr(config, "_moat_cache_dir", None):
        shutil.rmtree(config._moat_cache_dir, ignore_errors=True)


def run_moat(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `python -m compiler.cli` as a user would, in a separate process."""
    return subprocess.run([sys.executable, "-m", "compiler.cli", *map(str, args)], cwd=cwd or ROOT,
                          capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=120)


@pytest.fixture(params=EXAMPLES, ids=[p.stem for p in EXAMPLES])
def example(request) -> Path:
    return request.param
