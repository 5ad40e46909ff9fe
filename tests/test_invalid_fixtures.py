"""Every rule has a fixture under fixtures/invalid/; each marked line must be reported with its rule."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from compiler.diagnostics import MoatError, position_of
from compiler.pipeline import check_file

from .conftest import FIXTURES

INVALID = sorted((FIXTURES / "invalid").glob("*.yaml"))
MARK = re.compile(r"error: ([a-z][a-zA-Z-]+)")


def expected(path: Path) -> set[tuple[str, int]]:
    found = set()
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if "#" in line:
            for rule in MARK.findall(line.split("#", 1)[1]):
                found.add((rule, number))
    return found


def test_base_fixture_is_valid():
    assert check_file(FIXTURES / "base.yaml").files


@pytest.mark.parametrize("path", INVALID, ids=[p.stem for p in INVALID])
def test_fixture_reports_exactly_its_marked_errors(path):
    want = expected(path)
    assert want, f"{path.name} marks no expected error"
    with pytest.raises(MoatError) as info:
        check_file(path)
    got = {(d.rule, position_of(d, info.value.source)[0]) for d in info.value.diagnostics if d.is_error}
    assert got == want
    assert all(d.hint for d in info.value.diagnostics), "every diagnostic carries a hint"


def test_fixture_name_is_its_rule():
    for path in INVALID:
        rule = path.stem.split(".")[0]
        if rule != "multiple-errors":
            assert rule in {r for r, _ in expected(path)}, path.name


def test_every_check_rule_has_a_fixture():
    """Rule ids used in compiler/checks must each appear in a fixture."""
    source = "\n".join(p.read_text() for p in (FIXTURES.parent.parent / "compiler" / "checks").glob("*.py"))
    rules = set(re.findall(r'Diagnostic\(\s*"([a-z-]+)"', source)) | set(re.findall(r'"([a-z]+(?:-[a-z]+)+)", "', source))
    covered = {r for p in INVALID for r, _ in expected(p)}
    assert rules, "no rule ids found"
    assert rules <= covered, f"rules without a fixture: {sorted(rules - covered)}"
