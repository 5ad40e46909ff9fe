"""`moat images --refresh`, for real, with one bake: a tiny blueprint's image (the one
tests/test_image_boot.py boots, so the machine's image cache holds its plain bake) gets a lock
whose openssh-server version the mirror never gave. The refresh bakes against the mirror, names
that package's change, rewrites the lock with what the image really holds and keys the image by
it; a plain `moat images` then finds it baked. (The unchanged path, the key logic, the lock's
errors and a plain bake against a moved lock are tests/test_images_lock.py's, without a bake.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from compiler.images import lock as images_lock
from compiler.load import load_lock_text
from compiler.pipeline import check_file

from .conftest import MACHINE_IMAGES, ROOT

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGGYoGgelGlvc01Uok42rUekwV8r3Hc+IOAJ5gKyQNKh t"
STALE = "openssh-server=1:0.0-0"


def moat(env, *args, timeout=1800):
    return subprocess.run([sys.executable, "-m", "compiler.cli", *map(str, args)], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def key_of(bp: Path) -> str:
    return json.loads(check_file(bp).files["host/images.json"].content)["images"][0]["key"]


@pytest.mark.slow
def test_refresh_rebakes_names_what_moved_rewrites_the_lock_and_rekeys_the_image(tmp_path):
    bp = tmp_path / "bp.yaml"
    bp.write_text((ROOT / "tests" / "boot" / "web.yaml").read_text().replace("@KEY@", KEY)
                  .replace("@PACKAGES@", "[]"))
    lock = tmp_path / "bp.images.lock"
    recipe = key_of(bp)

    # the plain bake, from the machine's cache (baked there once per recipe, like a user's)
    machine = {**os.environ, "MOAT_IMAGES_DIR": str(MACHINE_IMAGES), "PYTHONPATH": str(ROOT)}
    plain = moat(machine, "images", bp)
    assert plain.returncode == 0, plain.stderr[-3000:]
    _, _, path = plain.stdout.strip().split("\t")
    packages = images_lock.parse_packages((Path(path).parent / "packages.txt").read_text())
    assert any(p.startswith("openssh-server=") for p in packages) and len(packages) > 100
    stale = tuple(sorted(STALE if p.startswith("openssh-server=") else p for p in packages))
    images_lock.write(lock, images_lock.text({"base": images_lock.LockedImage("base", recipe, stale)}))
    stale_key = key_of(bp)
    assert stale_key != recipe

    env = {**os.environ, "MOAT_IMAGES_DIR": str(tmp_path / "images"), "PYTHONPATH": str(ROOT)}
    started = time.monotonic()
    refresh = moat(env, "images", "--refresh", bp)
    print(f"refresh: {time.monotonic() - started:.0f} s")
    assert refresh.returncode == 0, refresh.stderr[-3000:]
    assert "openssh-server 1:0.0-0 -> " in refresh.stderr and f"wrote {lock}" in refresh.stderr
    entry = images_lock.read(load_lock_text(lock.read_text(), str(lock))).images["base"]
    assert STALE not in entry.packages and entry.recipe == recipe
    name, key, image = refresh.stdout.strip().split("\t")
    assert name == "base" and key == key_of(bp) and key not in (recipe, stale_key) and Path(image).is_file()
    assert (Path(image).parent / "packages.txt").read_text().splitlines() == list(entry.packages)
    info = json.loads((Path(image).parent / "image.json").read_text())
    assert info["key"] == key and info["locked"] == entry.digest

    again = moat(env, "images", bp, timeout=120)  # the locked key is baked: nothing to do
    assert again.returncode == 0 and again.stdout.strip().split("\t")[1] == key and "cached" in again.stderr
