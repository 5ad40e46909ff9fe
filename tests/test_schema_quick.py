"""The schema's quick yes/no (compiler/schema_quick.py) says yes exactly when jsonschema finds no
error: on every blueprint and fixture of the project, and on generated blueprints attacked one
value at a time with the mistakes a hand-written validator gets wrong (true for 1, 2.0 for 2,
a key too many or too few, a string one character too long, a repeated list item, ...)."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compiler import schema
from compiler.diagnostics import MoatError
from compiler.load import load_file
from compiler.schema_quick import conforms

from .conftest import FIXTURES, ROOT
from . import strategies as S

SCALE = float(os.environ.get("MOAT_PROPERTY_SCALE", "1"))


def jsonschema_says_valid(data: Any) -> bool:
    return next(iter(schema.validator().iter_errors(data)), None) is None


def quick_says_valid(data: Any) -> bool:
    return schema.quick()(data)


def documents() -> list[Path]:
    """Every blueprint and fixture that loads (the others never reach the schema)."""
    found = []
    for path in sorted([*(ROOT / "blueprints").glob("*.yaml"), *FIXTURES.rglob("*.yaml")]):
        try:
            load_file(path)
        except MoatError:
            continue
        found.append(path)
    return found


@pytest.mark.parametrize("path", documents(), ids=lambda p: str(p.relative_to(ROOT)))
def test_same_verdict_on_every_blueprint_and_fixture(path):
    data = load_file(path).data
    assert quick_says_valid(data) == jsonschema_says_valid(data)


def test_the_fixtures_include_schema_errors_so_the_comparison_above_can_fail():
    verdicts = [jsonschema_says_valid(load_file(path).data) for path in documents()]
    assert verdicts.count(False) >= 10 and verdicts.count(True) >= 2


def paths(data: Any) -> list[tuple]:
    return [()] + S.paths_of(data)


get = S._get


# Values that sit on the edges jsonschema draws: bool is not an integer, 2.0 is, 1 equals 1.0 in
# enum and uniqueItems but true does not, a format is checked only on strings.
EDGES = st.sampled_from([True, False, None, 0, 1, -1, 2.0, 2.5, 1e300, -(2**63), 2**64, "", " ", "1",
                         "true", "null", "x" * 300, "é", "10.0.0.1", "10.0.0.0/24", "10.0.0.1/24",
                         "02:00:00:00:00:01", "secret:a", [], {}, [1, 1], [True, 1], {"a": 1}])


def boundaries(path: tuple, value: Any) -> list[Any]:
    """Values on each side of the limits the schema sets at `path` (its lengths, ranges, counts);
    a string is stretched with its own last character, so that it keeps its pattern."""
    node = schema._subschema(path)
    found: list[Any] = []
    for key in ("maxLength", "minLength"):
        if key in node:
            fill = value[-1] if isinstance(value, str) and value else "a"
            base = value if isinstance(value, str) else ""
            found += [(base + fill * node[key])[: max(0, node[key] + d)] for d in (-1, 0, 1)]
    for key in ("maximum", "minimum"):
        if key in node:
            found += [node[key] + d for d in (-1, 0, 1)] + [float(node[key]), True]
    for key in ("maxItems", "minItems"):
        if key in node:
            found += [[None] * max(0, node[key] + d) for d in (-1, 0, 1)]
    for choice in node.get("enum", []):
        found += [choice, True if choice == 1 else choice]
    return found


def mutations(value: Any, path: tuple) -> st.SearchStrategy:
    options = [EDGES]
    edges = boundaries(path, value)
    if edges:
        options.append(st.sampled_from(edges))
    if isinstance(value, str):
        options += [st.just(value + "x"), st.just(value * 2), st.just(value[:-1]), st.just(value.upper()),
                    st.just(value + "\u00e9"), st.just(" " + value)]
    if isinstance(value, bool):
        options.append(st.just(int(value)))
    elif isinstance(value, int):
        options += [st.just(value + 1), st.just(value - 1), st.just(float(value)), st.just(value + 0.5),
                    st.just(str(value)), st.just(value == 1)]
    if isinstance(value, list):
        if value:
            options += [st.just(value + value[:1]), st.just(value[1:]), st.just([value[0]] * 2 + value)]
        options.append(st.just([]))
    if isinstance(value, dict):
        keys = sorted(value)
        if keys:
            options.append(st.sampled_from(keys).map(lambda k: {x: v for x, v in value.items() if x != k}))
        options.append(st.just({**value, "extra": 1}))
        options.append(st.just({**value, "from": "x"}))
    return st.one_of(options)


def kind(value: Any) -> str:
    return type(value).__name__


@st.composite
def attacked(draw) -> Any:
    data = draw(S.blueprints(max_vms=3))
    for _ in range(draw(st.integers(1, 3))):
        # first what kind of value to attack, so that the rarer kinds (integers, booleans) are hit
        every = paths(data)
        kinds = sorted({kind(get(data, p)) for p in every})
        wanted = draw(st.sampled_from(kinds))
        path = draw(st.sampled_from([p for p in every if kind(get(data, p)) == wanted]))
        new = draw(mutations(get(data, path), path))
        if not path:
            data = new
            continue
        data = copy.deepcopy(data)
        get(data, path[:-1])[path[-1]] = new
    return data


@given(attacked())
@settings(max_examples=int(300 * SCALE), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
def test_same_verdict_on_attacked_blueprints(data):
    assert quick_says_valid(data) == jsonschema_says_valid(data)


@given(S.blueprints(max_vms=4))
@settings(max_examples=int(40 * SCALE), deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_generated_blueprints_are_valid_for_both(data):
    assert quick_says_valid(data) and jsonschema_says_valid(data)


@pytest.mark.parametrize("node, says", [
    ({"type": "object", "patternProperties": {"^a": {}}}, "patternProperties"),
    ({"prefixItems": [{}]}, "prefixItems"),
    ({"$ref": "other.json#/x"}, r"only #/\$defs/NAME"),
    ({"$ref": "#/$defs/missing"}, r"only #/\$defs/NAME"),
    ({"then": {}}, "without if"),
])
def test_a_keyword_it_does_not_know_is_refused_when_built(node, says):
    with pytest.raises(ValueError, match=says):
        conforms(node, {})


def test_formats_are_checked_on_strings_only_and_a_raising_check_means_no():
    def ipv4(value: object) -> bool:
        return not isinstance(value, str) or bool(__import__("ipaddress").IPv4Address(value))

    check = conforms({"format": "ipv4"}, {"ipv4": ipv4})
    assert check("10.0.0.1") and check(7) and not check("10.0.0.300")
    assert conforms({"format": "unheard-of"}, {})("anything")


def test_same_verdict_at_every_limit_of_every_value_of_the_example():
    """Each value of the example blueprint in turn set to each side of its field's limits."""
    base = load_file(ROOT / "blueprints" / "example.yaml").data
    compared = disagreements = 0
    for path in paths(base)[1:]:
        for new in boundaries(path, get(base, path)):
            data = copy.deepcopy(base)
            get(data, path[:-1])[path[-1]] = new
            compared += 1
            disagreements += quick_says_valid(data) != jsonschema_says_valid(data)
    assert compared > 100 and disagreements == 0
