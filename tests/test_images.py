"""Golden images: the key names exactly the inputs (compiler/images/recipe.py), and a bake is
atomic: killed while DIB has the image's loop devices attached, it leaves no image, no mount,
no loop device once the next bake ran, and that next bake converges (compiler/images/bake.py)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from compiler.images.recipe import ImageRecipe, element_closure, elements_dir, moat_elements

from .conftest import ROOT

BASE = ImageRecipe("base", "debian", "bookworm", ())


def copy_elements(tmp_path: Path) -> Path:
    dest = tmp_path / "images"
    shutil.copytree(elements_dir(), dest)
    return dest


def test_the_key_is_stable_and_names_every_input(tmp_path):
    root = copy_elements(tmp_path)
    key = BASE.key(root)
    assert key == BASE.key(root) and len(key) == 32
    # the same packages in another order, or twice, are the same image
    assert ImageRecipe("base", "debian", "bookworm", (), ("tree", "jq")).key(root) == \
        ImageRecipe("base", "debian", "bookworm", (), ("jq", "tree", "jq")).key(root)
    others = [
        ImageRecipe("base", "debian", "trixie", ()),
        ImageRecipe("base", "ubuntu", "jammy", ()),
        ImageRecipe("base", "debian", "bookworm", ("moat-nextcloud",)),
        ImageRecipe("base", "debian", "bookworm", (), ("tree",)),
        ImageRecipe("base", "debian", "bookworm", (), (), "20261201T000000Z"),
    ]
    keys = {o.key(root) for o in others}
    assert key not in keys and len(keys) == len(others)
    # a changed file of an element in the closure, or its mode, is a new image
    script = root / "moat-base" / "post-install.d" / "80-moat-harden"
    script.write_text(script.read_text() + "# changed\n")
    changed = BASE.key(root)
    assert changed != key
    script.chmod(0o644)
    assert BASE.key(root) not in (key, changed)
    # an element outside the closure is not part of the key
    before = BASE.key(root)
    (root / "moat-nextcloud" / "README.rst").write_text("changed\n")
    assert BASE.key(root) == before


def test_the_recipe_comes_back_from_what_the_bundle_records():
    r = ImageRecipe("nc", "debian", "bookworm", ("moat-nextcloud",), ("tree",), None)
    assert ImageRecipe.from_inputs("nc", json.loads(json.dumps(r.inputs()))) == r
    assert r.all_elements == ("debian-minimal", "moat-base", "moat-nextcloud")


def test_every_element_is_complete():
    """A directory of images/ is an element with a README; its scripts are executable (DIB runs
    only those) and its dependencies exist (moat's or DIB's own)."""
    import diskimage_builder
    dib = Path(diskimage_builder.__file__).parent / "elements"
    elements = moat_elements()
    assert {"moat-base", "moat-nextcloud"} <= set(elements)
    for name, path in elements.items():
        for phase in path.glob("*.d"):
            for script in phase.iterdir():
                if phase.name != "environment.d":
                    assert os.access(script, os.X_OK), f"{script} is not executable: DIB skips it"
        deps = (path / "element-deps").read_text().split() if (path / "element-deps").exists() else []
        for dep in deps:
            assert dep in elements or (dib / dep).is_dir(), f"{name} depends on unknown element {dep}"
    assert element_closure(("moat-nextcloud",)) == ["moat-nextcloud", "moat-base"]


def loops_under(path: Path) -> list[str]:
    out = subprocess.run(["losetup", "--list", "--noheadings", "--output", "NAME,BACK-FILE"],
                         capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if str(path) in line]


@pytest.mark.slow
def test_a_bake_killed_with_its_loop_devices_attached_leaves_nothing_and_the_next_converges(tmp_path):
    """SIGKILL to `moat images` while DIB's block-device phase holds loop devices (the worst
    instant: partitions mapped, file systems mounted): no image appears, no mount survives (the
    bake's mount namespace died with it), and the next bake detaches the leftover loop devices,
    removes the leftover and bakes the whole image."""
    cache = tmp_path / "images"
    env = {**os.environ, "MOAT_IMAGES_DIR": str(cache)}
    bp = tmp_path / "bp.yaml"
    bp.write_text((ROOT / "tests" / "boot" / "web.yaml").read_text()
                  .replace("@KEY@", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGGYoGgelGlvc01Uok42rUekwV8r3Hc+IOAJ5gKyQNKh t")
                  .replace("@PACKAGES@", '["jq"]'))
    proc = subprocess.Popen([sys.executable, "-m", "compiler.cli", "images", str(bp)], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    seen = []
    try:
        for line in proc.stderr:
            seen.append(line)
            if "finalise.d" in line or "cleanup.d" in line:  # after block-device: loops attached, root mounted
                break
        else:
            pytest.fail("the bake ended before its block-device phase:\n" + "".join(seen[-20:]))
        assert loops_under(cache), "DIB holds no loop device at this point: the kill point is wrong"
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    time.sleep(1)  # the kernel tears the namespaces down asynchronously
    assert not list(cache.glob("base-*/base.qcow2")), "a killed bake left an image"
    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(cache) not in mounts, "a mount of the killed bake survived it"

    again = subprocess.run([sys.executable, "-m", "compiler.cli", "images", str(bp)], env=env, cwd=ROOT,
                           capture_output=True, text=True, timeout=1800)
    assert again.returncode == 0, again.stderr[-3000:]
    name, key, path = again.stdout.split("\t")
    assert Path(path.strip()).is_file() and json.loads((Path(path.strip()).parent / "image.json").read_text())["key"] == key
    assert not list(cache.glob(".tmp-*")), "the leftover of the killed bake is still there"
    assert not loops_under(cache), "loop devices of the killed bake are still attached"
    status = subprocess.run([sys.executable, "-m", "compiler.cli", "images", "--status", str(bp)], env=env,
                            cwd=ROOT, capture_output=True, text=True)
    assert status.returncode == 0 and status.stdout.split("\t")[1] == key


SUDO = ROOT / "compiler" / "images" / "as_root" / "sudo"


def test_the_bakes_sudo_passes_commands_on_as_debian_sudo_would():
    """The bake is root: as_root/sudo runs the command, adds nothing to its output (the real
    sudo's warnings became a loop device's name), and without -E resets the environment (a bake's
    TMPDIR must not reach a chroot) while keeping itself first on PATH for nested calls."""
    env = {**os.environ, "TMPDIR": "/nonexistent", "http_proxy": "http://127.0.0.1:9"}
    reset = subprocess.run([str(SUDO), "env"], env=env, capture_output=True, text=True, check=True)
    got = dict(line.split("=", 1) for line in reset.stdout.splitlines())
    assert "TMPDIR" not in got and "http_proxy" not in got and got["HOME"] == "/root"
    assert got["PATH"].split(":")[0] == str(SUDO.parent) and reset.stderr == ""
    kept = subprocess.run([str(SUDO), "-E", "env"], env=env, capture_output=True, text=True, check=True)
    assert "TMPDIR=/nonexistent" in kept.stdout.splitlines()
    device = subprocess.run([str(SUDO), "--", "X=1", "sh", "-c", "echo /dev/loop$X"], capture_output=True, text=True)
    assert (device.stdout, device.stderr, device.returncode) == ("/dev/loop1\n", "", 0)
    failed = subprocess.run([str(SUDO), "sh", "-c", "exit 3"], capture_output=True, text=True)
    assert failed.returncode == 3
    odd = subprocess.run([str(SUDO), "-u", "nobody", "true"], capture_output=True, text=True)
    assert odd.returncode == 1 and "unsupported option -u" in odd.stderr
