"""Shared helpers: paths of the examples and fixtures, and running the moat CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from compiler.images.recipe import cache_root as image_cache_root

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
EXAMPLES = sorted((ROOT / "blueprints").glob("*.yaml"))


def pytest_configure(config) -> None:
    """Each run starts with an empty validation cache, so that a pass remembered from an earlier
    run can never hide a validator that fails today. (Only the cache of verdicts: the tools
    tree, MOAT_TOOLS_DIR, is kept.)"""
    config._moat_cache_dir = tempfile.mkdtemp(prefix="moat-test-cache-")
    os.environ["MOAT_CACHE_DIR"] = config._moat_cache_dir
    stand_in_images(Path(config._moat_cache_dir) / "images")


# the machine's image cache, where tests that bake and boot real golden images keep them (keyed by
# their inputs, like any user's); every other test sees MOAT_IMAGES_DIR = stand-ins (below)
MACHINE_IMAGES = image_cache_root()


def without_images(blueprint: Path, tmp: Path) -> Path:
    """An example blueprint with no golden image: its images section gone, its Nextcloud VM
    installed by kickstart (written into tmp)."""
    import re
    text = blueprint.read_text()
    text = re.sub(r"^images:\n(?:(?:  .*|)\n)*", "", text, count=1, flags=re.M)
    text = text.replace("install: { method: image, image: nextcloud }", "install: { method: kickstart, os: rocky9 }")
    assert "images:" not in text and "method: image" not in text
    path = tmp / blueprint.name
    path.write_text(text)
    return path


def stand_in_images(cache: Path) -> None:
    """The examples' golden images, as small empty qcow2 files in a cache of this run only
    (MOAT_IMAGES_DIR): tests that write the examples' media need an image file per key, not a
    bake; the machine's real image cache is never written by them. tests/test_image_boot.py
    bakes and boots real ones."""
    os.environ["MOAT_IMAGES_DIR"] = str(cache)
    from compiler.images.recipe import baked_path
    from compiler.pipeline import check_file
    for blueprint in sorted((ROOT / "blueprints").glob("*.yaml")):
        listed = check_file(blueprint).files.get("host/images.json")
        for image in json.loads(listed.content)["images"] if listed else []:
            path = baked_path(image["name"], image["key"])
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), "64M"], check=True)
                (path.parent / "image.json").write_text(json.dumps(image) + "\n")


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
