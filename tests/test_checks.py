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
    install: { method: image, image: debian }
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
