"""Every rule has a fixture under fixtures/invalid/; each marked line must be reported with its rule.

A line marked `# error: RULE` must be reported as an error of RULE, `# warning: RULE` as a warning.
A fixture that marks warnings must give exactly those warnings (and, without errors, compile);
one that marks only errors is not held to its warnings."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from compiler.diagnostics import MoatError, position_of
from compiler.pipeline import check_file

from .conftest import FIXTURES

INVALID = sorted((FIXTURES / "invalid").glob("*.yaml"))
MARK = re.compile(r"(error|warning): ([a-z][a-zA-Z-]+)")


def expected(path: Path, severity: str | None = "error") -> set[tuple[str, int]]:
    """(rule, line) of every mark of `severity` (None: of both)."""
    found = set()
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if "#" in line:
            for kind, rule in MARK.findall(line.split("#", 1)[1]):
                if severity in (None, kind):
                    found.add((rule, number))
    return found


def reported(diagnostics, source, errors: bool) -> set[tuple[str, int]]:
    return {(d.rule, position_of(d, source)[0]) for d in diagnostics if d.is_error == errors}


def test_base_fixture_is_valid():
    assert check_file(FIXTURES / "base.yaml").files


@pytest.mark.parametrize("path", INVALID, ids=[p.stem for p in INVALID])
def test_fixture_reports_exactly_its_marked_errors(path):
    want, warnings = expected(path), expected(path, "warning")
    assert want or warnings, f"{path.name} marks no expected error or warning"
    if want:
        with pytest.raises(MoatError) as info:
            check_file(path)
        diagnostics, source = info.value.diagnostics, info.value.source
    else:
        compiled = check_file(path)
        diagnostics, source = compiled.warnings, compiled.source
    assert reported(diagnostics, source, errors=True) == want
    if warnings:
        assert reported(diagnostics, source, errors=False) == warnings
    assert all(d.hint for d in diagnostics), "every diagnostic carries a hint"


def test_fixture_name_is_its_rule():
    for path in INVALID:
        rule = path.stem.split(".")[0]
        if rule != "multiple-errors":
            assert rule in {r for r, _ in expected(path, None)}, path.name


def test_every_check_rule_has_a_fixture():
    """Rule ids used in compiler/checks must each appear in a fixture."""
    source = "\n".join(p.read_text() for p in (FIXTURES.parent.parent / "compiler" / "checks").glob("*.py"))
    rules = set(re.findall(r'Diagnostic\(\s*"([a-z-]+)"', source)) | set(re.findall(r'"([a-z]+(?:-[a-z]+)+)", "', source))
    covered = {r for p in INVALID for r, _ in expected(p, None)}
    assert rules, "no rule ids found"
    assert rules <= covered, f"rules without a fixture: {sorted(rules - covered)}"
