"""The image lock (compiler/images/lock.py): a locked image's key is the hash of its recipe's key
and of its packages, the same in Python and in the bake's own script (moat-base's cleanup.d, run
here on a small dpkg database), the bundle names it, and a malformed lock is an error located in
the lock. The real bake twice: tests/test_images_refresh_bake.py (slow)."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from compiler.diagnostics import MoatError, format_diagnostic
from compiler.images import lock as images_lock
from compiler.images.recipe import ImageRecipe, elements_dir, locked_key, packages_digest
from compiler.load import load_file, load_lock_text, load_text, lock_path
from compiler.pipeline import BUNDLE_LOCK, check_file, compile_source

from .conftest import ROOT, run_moat

EXAMPLE = ROOT / "blueprints" / "example.yaml"
PACKAGES = ("adduser=3.134", "libc6=2.36-9+deb12u9", "openssh-server=1:9.2p1-2+deb12u3", "zlib1g=1:1.2.13.dfsg-1")
SCRIPT = elements_dir() / "moat-base" / "cleanup.d" / "95-moat-image-packages"


def nextcloud_recipe_key() -> str:
    return ImageRecipe("nextcloud", "debian", "bookworm", ("moat-nextcloud",)).key()


def lock_text(packages=PACKAGES, recipe=None) -> str:
    entry = images_lock.LockedImage("nextcloud", recipe or nextcloud_recipe_key(), tuple(packages))
    return images_lock.text({"nextcloud": entry})


def with_lock(tmp_path, text: str):
    bp = tmp_path / "example.yaml"
    bp.write_text(EXAMPLE.read_text())
    lock_path(bp).write_text(text)
    return bp


def images_json(compiled) -> dict:
    return json.loads(compiled.files["host/images.json"].content)["images"][0]


def test_the_lock_sits_beside_the_blueprint_and_is_deterministic():
    assert lock_path("blueprints/example.yaml").as_posix() == "blueprints/example.images.lock"
    shuffled = images_lock.text({"nextcloud": images_lock.LockedImage("nextcloud", "a" * 32, tuple(reversed(PACKAGES)))})
    assert shuffled == lock_text(recipe="a" * 32)
    data = json.loads(shuffled)
    assert data == {"images": {"nextcloud": {"packages": list(PACKAGES), "recipe": "a" * 32}}, "version": 1}
    assert shuffled.count("\n") > len(PACKAGES)  # one package a line: a review shows each version


def test_a_locked_image_is_keyed_by_its_packages(tmp_path):
    unlocked = check_file(EXAMPLE)
    compiled = check_file(with_lock(tmp_path, lock_text()))
    recipe_key = nextcloud_recipe_key()
    want = locked_key(recipe_key, packages_digest(PACKAGES))
    golden = compiled.plan.vm("nextcloud").image
    assert golden.key == want != recipe_key and golden.recipe.recipe_key() == recipe_key
    listed = images_json(compiled)
    assert listed["key"] == want and listed["inputs"]["locked"] == packages_digest(PACKAGES)
    assert ImageRecipe.from_inputs("nextcloud", listed["inputs"]).key() == want  # moat images reads it back
    assert f"nextcloud with key {want}" in compiled.files["vms/nextcloud/cloud-init/user-data"].content.decode()
    assert compiled.files[BUNDLE_LOCK].content.decode() == lock_text()
    assert compiled.digest != unlocked.digest and not [d for d in compiled.warnings if d.rule.startswith("image-lock")]
    # the same packages: the same key and bundle; one version moved: a new key and bundle
    assert check_file(with_lock(tmp_path, lock_text())).digest == compiled.digest
    moved = PACKAGES[:2] + ("openssh-server=1:9.2p1-2+deb12u4",) + PACKAGES[3:]
    again = check_file(with_lock(tmp_path, lock_text(moved)))
    assert images_json(again)["key"] not in (want, recipe_key) and again.digest != compiled.digest
    for path in ("host/images.json", "host/libvirt/moat-libvirt-apply", "vms/nextcloud/cloud-init/user-data"):
        assert again.files[path].content != compiled.files[path].content, path


def test_a_lock_made_for_another_recipe_is_stale_and_not_used(tmp_path):
    compiled = check_file(with_lock(tmp_path, lock_text(recipe="0" * 32)))
    assert images_json(compiled)["key"] == nextcloud_recipe_key() and "locked" not in images_json(compiled)["inputs"]
    [warning] = [d for d in compiled.warnings if d.rule == "image-lock-stale"]
    assert not warning.is_error and warning.hint.startswith("sudo moat images --refresh")
    line = format_diagnostic(warning, compiled.source).splitlines()[0]
    images_line = EXAMPLE.read_text().splitlines().index("  - name: nextcloud") + 1
    assert line.startswith(f"{tmp_path}/example.yaml:{images_line}:") and "warning[image-lock-stale]" in line


def test_a_bundles_lock_and_the_blueprints_give_the_same_plan(tmp_path):
    """A bundle carries its lock beside blueprint.yaml: compiled again from the bundle (moat diff
    of two generations), the keys are the bundle's."""
    from compiler.changes.sides import from_bundle
    compiled = check_file(with_lock(tmp_path, lock_text()))
    bundle = tmp_path / "bundle"
    for path, out in compiled.files.items():
        (bundle / path).parent.mkdir(parents=True, exist_ok=True)
        (bundle / path).write_bytes(out.content)
    side = from_bundle(bundle, "b")
    assert side.plan.vm("nextcloud").image.key == compiled.plan.vm("nextcloud").image.key


@pytest.mark.parametrize("text, rule, position, words", [
    ('{"images": {}, "version": 1,}\n', "image-lock-syntax", (1, 29), "JSON"),
    ('{\n<<<<<<< HEAD\n', "image-lock-syntax", (2, 1), "JSON"),
    ('{"images": {}, "version": 2}\n', "image-lock-invalid", (1, 27), "version 2"),
    ('{\n  "images": {\n    "nextcloud": {\n      "packages": ["adduser=3.134", "adduser 3.135"],\n'
     '      "recipe": "' + "a" * 32 + '"\n    }\n  },\n  "version": 1\n}\n', "image-lock-invalid", (4, 37),
     "'adduser 3.135' is not NAME=VERSION"),
    ('{"images": {"nextcloud": {"packages": ["a=1", "a=2"], "recipe": "' + "a" * 32 + '"}}, "version": 1}',
     "image-lock-invalid", (1, 47), "listed twice"),
    ('{"images": {"nextcloud": {"recipe": "xyz", "packages": ["a=1"]}}, "version": 1}',
     "image-lock-invalid", (1, 37), "32 hexadecimal"),
    ('[1]', "image-lock-invalid", (1, 1), "JSON object"),
])
def test_a_malformed_lock_is_an_error_in_the_lock(tmp_path, text, rule, position, words):
    bp = with_lock(tmp_path, text)
    with pytest.raises(MoatError) as info:
        check_file(bp)
    [diag] = info.value.diagnostics
    line = format_diagnostic(diag, info.value.source)
    assert line.startswith(f"{lock_path(bp)}:{position[0]}:{position[1]}: error[{rule}]: "), line
    assert words in line and "\n  hint: " in line
    cli = run_moat("check", bp)
    assert cli.returncode == 1 and f"{lock_path(bp)}:{position[0]}:{position[1]}: error[{rule}]" in cli.stderr


def test_the_bakes_script_and_moat_agree_on_the_list_and_the_key(tmp_path):
    """moat-base's cleanup.d/95-moat-image-packages, run by hand on a root holding a small dpkg
    database (the real dpkg-query reads it): installed packages only, sorted bytewise, and the
    locked key it writes into the image is recipe.locked_key of the same list."""
    root = tmp_path / "root"
    (root / "var/lib/dpkg").mkdir(parents=True)
    (root / "etc/moat").mkdir(parents=True)
    status = []
    for pkg, state in [("zlib1g=1:1.2.13.dfsg-1", "install ok installed"), ("lib-x=2", "install ok installed"),
                       ("lib=1.0~rc1", "install ok installed"), ("gone=1", "deinstall ok config-files"),
                       ("adduser=3.134", "install ok installed")]:
        name, version = pkg.split("=")
        status.append(f"Package: {name}\nStatus: {state}\nArchitecture: amd64\nVersion: {version}\n"
                      f"Description: x\n")
    (root / "var/lib/dpkg/status").write_text("\n".join(status))
    (root / "etc/moat/image.json").write_text('{"key": "@MOAT_LOCKED_KEY@", "locked": "@MOAT_PACKAGES_SHA256@"}\n')
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "TARGET_ROOT": str(root), "DIB_MOAT_OUT": str(out), "DIB_MOAT_RECIPE_KEY": "b" * 32}
    subprocess.run([str(SCRIPT)], env=env, check=True)
    packages = images_lock.parse_packages((out / "packages.txt").read_text())
    assert list(packages) == (out / "packages.txt").read_text().splitlines()  # sorted as written
    assert packages == ("adduser=3.134", "lib-x=2", "lib=1.0~rc1", "zlib1g=1:1.2.13.dfsg-1")
    assert (root / "etc/moat/image-packages.txt").read_text() == (out / "packages.txt").read_text()
    key = locked_key("b" * 32, packages_digest(packages))
    assert (out / "key").read_text().strip() == key
    assert json.loads((root / "etc/moat/image.json").read_text()) == {"key": key, "locked": packages_digest(packages)}
    # unlocked: the list, no key, image.json as written
    (out / "key").unlink()
    subprocess.run([str(SCRIPT)], env={**env, "DIB_MOAT_RECIPE_KEY": ""}, check=True)
    assert not (out / "key").exists() and (out / "packages.txt").is_file()


def test_the_lock_is_replaced_whole(tmp_path):
    path = tmp_path / "bp.images.lock"
    path.write_text("old\n")
    images_lock.write(path, lock_text())
    assert path.read_text() == lock_text() and [p.name for p in tmp_path.iterdir()] == ["bp.images.lock"]


def test_changes_name_each_package():
    old = ("a=1", "b=1", "c=1")
    assert images_lock.changes(old, ("a=1", "b=2", "d=1")) == ["b 1 -> 2", "-c=1", "+d=1"]
    assert images_lock.changes(old, old) == []


def test_a_lock_is_read_with_the_blueprint_and_a_text_source_has_none(tmp_path):
    bp = with_lock(tmp_path, lock_text())
    assert load_file(bp).lock.text == lock_text() and load_text(bp.read_text(), "x").lock is None
    source = load_text(bp.read_text(), "x")
    assert compile_source(source).plan.vm("nextcloud").image.key == nextcloud_recipe_key()
    assert load_lock_text(lock_text(), "l").locate(("images", "nextcloud", "packages", 1)) == (6, 9)
