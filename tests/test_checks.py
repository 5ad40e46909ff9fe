"""Semantic checks beyond the one-fixture-per-rule table: the examples' headroom, messages that
compare like with like, and the decisions behind the rule classes (what stays legal)."""

from __future__ import annotations

import pytest

from compiler.diagnostics import MoatError, format_diagnostic
from compiler.load import load_text
from compiler.model import in_one_unit
from compiler.pipeline import compile_source

from .conftest import ROOT

EXAMPLE = (ROOT / "blueprints" / "example.yaml").read_text()

FOURTH_VM = """
  - name: git
    cpus: 1
    memory: 4GiB
    os_disk: { size: 40GiB, pool: images }
    nics:
      - { network: default, address: 192.168.122.60 }
    install: { method: image, image: nextcloud }
"""


def compile_text(text: str):
    return compile_source(load_text(text, "bp.yaml"))


def errors(text: str) -> list[str]:
    try:
        compile_text(text)
    except MoatError as err:
        return [format_diagnostic(d, err.source) for d in err.diagnostics if d.is_error]
    return []


def with_vm(text: str, vm: str) -> str:
    return text.replace("\nforwards:", vm + "\nforwards:", 1)


def test_the_example_has_room_for_another_vm():
    compiled = compile_text(with_vm(EXAMPLE, FOURTH_VM))
    assert "host/libvirt/domains/git.xml" in compiled.files
    assert not {d.rule for d in compiled.warnings} & {"overcommit-memory", "overcommit-disk"}


def test_resource_messages_print_sizes_in_one_unit():
    big = FOURTH_VM.replace("40GiB", "300GiB").replace("4GiB", "40GiB")
    found = errors(with_vm(EXAMPLE, big))
    memory = next(e for e in found if "overcommit-memory" in e)
    disk = next(e for e in found if "overcommit-disk" in e)
    assert "VMs need 68GiB + 4GiB reserved for the host, the host has 64GiB" in memory
    # the volume group is not a whole number of GiB: both sides in GiB with decimals, no MiB
    assert "take 1957.00GiB" in disk and "has 1824.00GiB" in disk and "MiB" not in disk


@pytest.mark.parametrize("sizes, texts", [
    ((1024, 2048), ["1GiB", "2GiB"]),
    ((1024 * 1024, 512 * 1024), ["1024GiB", "512GiB"]),
    ((2 * 1024 * 1024, 1024 * 1024), ["2TiB", "1TiB"]),
    ((1827 * 1024, 1867781), ["1827.00GiB", "1824.00GiB"]),
    ((100, 2048), ["100MiB", "2048MiB"]),
    ((1867777, 1867776), ["1867777MiB", "1867776MiB"]),  # GiB with decimals would read the same
])
def test_in_one_unit(sizes, texts):
    assert in_one_unit(*sizes) == texts


def test_image_releases_are_the_schemas():
    """checks/images.RELEASES pairs each distribution with its releases; the schema lists their union."""
    from compiler.checks.images import RELEASES
    from compiler.schema import load_schema

    image = load_schema()["$defs"]["image"]["properties"]
    assert sorted(image["distribution"]["enum"]) == sorted(RELEASES)
    assert sorted(image["release"]["enum"]) == sorted(r for rs in RELEASES.values() for r in rs)


def test_every_image_problem_is_reported_at_once():
    """An Ubuntu release on Debian, an element that is not moat's, a VM naming an undeclared image:
    three errors in one run, each at its line, the element's hint listing moat's elements."""
    from compiler.images.recipe import moat_elements

    text = EXAMPLE.replace("    release: bookworm\n    elements: [moat-nextcloud]",
                           "    release: noble\n    elements: [moat-nextcloud, moat-nginx]", 1)
    text = with_vm(text, FOURTH_VM.replace("image: nextcloud", "image: gitea"))
    messages = errors(text)
    assert len(messages) == 3, messages
    lines = text.splitlines()

    def line_of(message: str) -> str:
        return lines[int(message.split(":")[1]) - 1].strip()

    release = next(m for m in messages if "error[image-release]" in m)
    assert "'noble' is a release of ubuntu, not of debian" in release and line_of(release) == "release: noble"
    element = next(m for m in messages if "moat-nginx" in m)
    assert "error[unknown-reference]" in element and "moat-nginx" in line_of(element)
    assert all(name in element.split("hint:")[1] for name in moat_elements())
    image = next(m for m in messages if "'gitea'" in m)
    assert "error[unknown-reference]: unknown image 'gitea'" in image and "image: gitea" in line_of(image)
