"""A value that passes the schema but not the real tool is reported at its blueprint line."""

from __future__ import annotations

import copy

import pytest
from jsonschema import Draft202012Validator

from compiler import schema
from compiler.diagnostics import MoatError, position_of
from compiler.pipeline import build_file

from .conftest import FIXTURES


def test_tool_rejection_points_at_the_blueprint_line(tmp_path, monkeypatch):
    # loosen the schema so a bridge name with a space gets through to virt-xml-validate
    loose = copy.deepcopy(schema.load_schema())
    loose["$defs"]["ifname"]["pattern"] = "^.+$"
    monkeypatch.setattr(schema, "validator", lambda: Draft202012Validator(loose, format_checker=schema.format_checker()))
    text = (FIXTURES / "base.yaml").read_text()
    text = text.replace("bridge: virbr0, subnet", "bridge: vir br0, subnet")
    bp = tmp_path / "bp.yaml"
    bp.write_text(text)
    bridge_line = next(i for i, line in enumerate(text.splitlines(), 1) if "vir br0" in line)

    with pytest.raises(MoatError) as info:
        build_file(bp, tmp_path / "out")
    errors = [d for d in info.value.diagnostics if d.is_error]
    assert [d.rule for d in errors] == ["tool-rejected"]
    assert "virt-xml-validate rejected host/libvirt/networks/lan.xml" in errors[0].message
    assert errors[0].path[-1] == "bridge"
    assert position_of(errors[0], info.value.source)[0] == bridge_line
    # nothing entered the store
    assert not any(p for p in (tmp_path / "out" / "store").iterdir())
    assert not (tmp_path / "out" / "current").exists()
