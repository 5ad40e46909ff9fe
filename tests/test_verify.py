"""The verify stage: validators come from the families, run in parallel, passes are cached by content."""

from __future__ import annotations

import os
import shutil

from compiler.pipeline import build_file
from compiler.render import families
from compiler.verify import run_validators, validators

from .conftest import FIXTURES


def test_every_family_declares_validators_that_match_its_files():
    from compiler.pipeline import check_file
    from .conftest import ROOT

    compiled = check_file(ROOT / "blueprints" / "example.yaml")
    for family in families():
        for v in getattr(family, "VALIDATORS", ()):
            assert v.package, v
    checked = {p for p in compiled.files if any(__import__("fnmatch").fnmatchcase(p, v.pattern) for v in validators())}
    unchecked = sorted(set(compiled.files) - checked - {"blueprint.yaml"})
    # meta-data: two keys cloud-init reads verbatim; host/images.json: read by moat iso alone, which
    # refuses any entry it cannot use (compiler/media/images.py listed(), tests/test_media_images.py);
    # topology.json: json.dumps of plain data, the source topology.svg is drawn from (that one is
    # checked by xmllint and rsvg-convert; tests/test_topology.py checks what the JSON says);
    # host/moat/switch.json: json.dumps of the install table, read by the switch (tests/test_deploy.py)
    assert not unchecked or all(p.endswith(("meta-data", "host/images.json", "host/moat/switch.json"))
                                or p == "topology.json" for p in unchecked), \
        f"files no tool checks: {unchecked}"


def test_passed_validations_are_cached_by_content(tmp_path, monkeypatch):
    monkeypatch.setenv("MOAT_CACHE_DIR", str(tmp_path / "cache"))
    _, stored = build_file(FIXTURES / "base.yaml", tmp_path / "out", tools=False)
    tree = tmp_path / "tree"
    shutil.copytree(stored.path, tree)
    for dirpath, _dirs, _files in os.walk(tree):
        os.chmod(dirpath, 0o755)
    first = run_validators(tree)
    assert first and all(f.ok and f.output != "(cached)" for f in first)
    second = run_validators(tree)
    assert [f.path for f in second] == [f.path for f in first]
    assert all(f.output == "(cached)" for f in second)
    # any change to the tree runs everything again, and a failure is never cached
    domain = tree / "host/libvirt/domains/web.xml"
    os.chmod(domain, 0o644)
    domain.write_text(domain.read_text().replace("<vcpu", "<vcpus"))
    third = [f for f in run_validators(tree) if f.path == "host/libvirt/domains/web.xml"]
    assert third and not third[0].ok and third[0].output != "(cached)"
    again = [f for f in run_validators(tree) if f.path == "host/libvirt/domains/web.xml"]
    assert not again[0].ok and again[0].output != "(cached)"
