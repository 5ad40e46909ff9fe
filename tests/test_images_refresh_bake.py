"""`moat images --refresh`, for real: a tiny blueprint's image baked twice against the same
mirror. The first refresh writes the lock and keys the image by its packages; the second gets the
same packages: the same key, the lock untouched, the image of the first kept. A lock that says
other versions than the mirror gives makes a plain bake an error (image-lock-mismatch)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from compiler.images import lock as images_lock
from compiler.load import load_lock_text
from compiler.pipeline import check_file

from .conftest import ROOT

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGGYoGgelGlvc01Uok42rUekwV8r3Hc+IOAJ5gKyQNKh t"


def moat(env, *args, timeout=1800):
    return subprocess.run([sys.executable, "-m", "compiler.cli", *map(str, args)], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_refresh_twice_keeps_the_key_and_a_moved_lock_is_a_mismatch(tmp_path):
    env = {**os.environ, "MOAT_IMAGES_DIR": str(tmp_path / "images"), "PYTHONPATH": str(ROOT)}
    bp = tmp_path / "bp.yaml"
    bp.write_text((ROOT / "tests" / "boot" / "web.yaml").read_text().replace("@KEY@", KEY)
                  .replace("@PACKAGES@", "[]"))
    lock = tmp_path / "bp.images.lock"
    unlocked = json.loads(check_file(bp).files["host/images.json"].content)["images"][0]["key"]

    started = time.monotonic()
    first = moat(env, "images", "--refresh", bp)
    print(f"first refresh: {time.monotonic() - started:.0f} s")
    assert first.returncode == 0, first.stderr[-3000:]
    name, key1, path1 = first.stdout.strip().split("\t")
    assert name == "base" and key1 != unlocked and Path(path1).is_file()
    assert f"wrote {lock}" in first.stderr and "locked" in first.stderr
    text1 = lock.read_text()
    entry = images_lock.read(load_lock_text(text1, str(lock))).images["base"]
    assert any(p.startswith("openssh-server=") for p in entry.packages) and len(entry.packages) > 100
    assert (Path(path1).parent / "packages.txt").read_text().splitlines() == list(entry.packages)
    info = json.loads((Path(path1).parent / "image.json").read_text())
    assert info["key"] == key1 and info["recipe"] == entry.recipe and info["locked"] == entry.digest
    # the bundle now names the locked key
    assert json.loads(check_file(bp).files["host/images.json"].content)["images"][0]["key"] == key1

    started = time.monotonic()
    second = moat(env, "images", "--refresh", bp)
    print(f"second refresh: {time.monotonic() - started:.0f} s")
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stdout.strip().split("\t") == [name, key1, path1]
    assert "unchanged" in second.stderr and lock.read_text() == text1
    assert len(list((tmp_path / "images").glob("base-*/base.qcow2"))) == 1

    plain = moat(env, "images", bp, timeout=120)  # locked key in the cache: nothing baked
    assert plain.returncode == 0 and plain.stdout.strip().split("\t")[1] == key1 and "cached" in plain.stderr

    # a lock whose versions the mirror no longer gives: a plain bake says which, and keeps the image
    moved = re.sub(r'"openssh-server=([^"]+)"', r'"openssh-server=1:0.0-0"', text1)
    assert moved != text1
    lock.write_text(moved)
    key_moved = json.loads(check_file(bp).files["host/images.json"].content)["images"][0]["key"]
    assert key_moved not in (key1, unlocked)
    mismatch = moat(env, "images", bp)
    assert mismatch.returncode == 1
    assert re.search(r"error\[image-lock-mismatch\]: image base: .*openssh-server 1:0.0-0 -> ", mismatch.stderr), \
        mismatch.stderr[-3000:]
    assert key1 in mismatch.stderr and lock.read_text() == moved
