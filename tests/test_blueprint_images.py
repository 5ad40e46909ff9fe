"""The blueprint's `images`: each image VM gets its recipe and key, host/images.json lists the
images the VMs use, and anything that changes an image's key (its declaration, a file of one
of moat's elements) changes the bundle: the store hash, the VM's user-data and the apply script."""

from __future__ import annotations

import json
import shutil

import pytest

from compiler.images import recipe as recipe_module
from compiler.images.recipe import ImageRecipe
from compiler.load import load_text
from compiler.pipeline import compile_source

from .conftest import ROOT

EXAMPLE = (ROOT / "blueprints" / "example.yaml").read_text()
ELEMENTS = "    elements: [moat-nextcloud]\n"
OTHER_IMAGE = "  - {name: base, distribution: ubuntu, release: jammy, packages: [htop, curl]}\n"


def compile_text(text: str):
    return compile_source(load_text(text, "bp.yaml"))


def images_json(compiled) -> dict:
    return json.loads(compiled.files["host/images.json"].content)


def test_each_image_vm_gets_its_recipe_key_and_file():
    compiled = compile_text(EXAMPLE)
    nextcloud = compiled.plan.vm("nextcloud")
    want = ImageRecipe("nextcloud", "debian", "bookworm", ("moat-nextcloud",))
    assert nextcloud.image.recipe == want and nextcloud.image.key == want.key()
    assert nextcloud.image.file == want.file_name() == f"nextcloud-{want.key()}.qcow2"
    assert compiled.plan.vm("vpn").image is None and compiled.plan.vm("onion").image is None
    assert images_json(compiled) == {"images": [{"name": "nextcloud", "key": want.key(), "file": want.file_name(),
                                                 "inputs": want.inputs()}]}
    user_data = compiled.files["vms/nextcloud/cloud-init/user-data"].content.decode()
    assert f"golden image\n# nextcloud with key {want.key()}" in user_data
    apply = compiled.files["host/libvirt/moat-libvirt-apply"].content.decode()
    assert f"\ngolden_volume images nextcloud-os nextcloud nextcloud-{want.key()} raw\n" in apply
    assert 'GOLDEN_VOLUMES="images/nextcloud-os"' in apply


def test_images_json_lists_the_used_images_by_name():
    """Sorted by name, only images some VM uses (an unused one is a warning, and not baked)."""
    text = EXAMPLE.replace("images:\n", "images:\n" + OTHER_IMAGE + "  - {name: spare, distribution: debian, release: trixie}\n", 1)
    text = text.replace("    install: { method: kickstart, os: rocky9 }", "    install: { method: image, image: base }")
    compiled = compile_text(text)
    assert [i["name"] for i in images_json(compiled)["images"]] == ["base", "nextcloud"]
    base = images_json(compiled)["images"][0]
    assert base["inputs"]["packages"] == ["curl", "htop"] and base["inputs"]["elements"] == ["ubuntu-minimal", "moat-base"]
    assert [(d.rule, d.message) for d in compiled.warnings] == [
        ("unused", "no VM is installed from image 'spare': it is neither baked nor put on the media")]


def test_an_example_without_image_vms_has_an_empty_images_json():
    text = EXAMPLE.replace("    install: { method: image, image: nextcloud }", "    install: { method: kickstart, os: rocky9 }")
    compiled = compile_text(text)
    assert images_json(compiled) == {"images": []}
    assert "golden_volume" not in compiled.files["host/libvirt/moat-libvirt-apply"].content.decode()


CHANGES = {
    "packages": (ELEMENTS, ELEMENTS + "    packages: [htop]\n"),
    "snapshot": (ELEMENTS, ELEMENTS + "    snapshot: 20261201T000000Z\n"),
    "release": ("    release: bookworm\n", "    release: trixie\n"),
    "elements": (ELEMENTS, "    elements: []\n"),
}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_a_changed_declaration_is_a_new_key_and_bundle(change):
    old, new = CHANGES[change]
    assert EXAMPLE.count(old) == 1
    before, after = compile_text(EXAMPLE), compile_text(EXAMPLE.replace(old, new))
    assert before.plan.vm("nextcloud").image.key != after.plan.vm("nextcloud").image.key
    assert before.digest != after.digest
    for path in ("host/images.json", "host/libvirt/moat-libvirt-apply", "vms/nextcloud/cloud-init/user-data"):
        assert before.files[path].content != after.files[path].content, path


def test_a_changed_element_file_is_a_new_key_and_store_path(tmp_path, monkeypatch):
    """moat's elements are part of the key and of the compiler digest: editing one (here a copy
    of images/) gives the image VM a new key and the bundle a new store hash."""
    elements = tmp_path / "images"
    shutil.copytree(recipe_module.elements_dir(), elements)
    monkeypatch.setattr(recipe_module, "elements_dir", lambda: elements)
    monkeypatch.setattr("compiler.identity.elements_dir", lambda: elements)
    before = compile_text(EXAMPLE)
    readme = elements / "moat-nextcloud" / "README.rst"
    readme.write_text(readme.read_text() + "changed\n")
    after = compile_text(EXAMPLE)
    assert before.plan.vm("nextcloud").image.key != after.plan.vm("nextcloud").image.key
    assert before.digest != after.digest and before.meta["compiler"] != after.meta["compiler"]
    # an element no image uses changes no key, but still the compiler (it may be used tomorrow)
    (elements / "moat-unused").mkdir()
    (elements / "moat-unused" / "README.rst").write_text("unused\n")
    third = compile_text(EXAMPLE)
    assert third.plan.vm("nextcloud").image.key == after.plan.vm("nextcloud").image.key
    assert third.digest != after.digest
