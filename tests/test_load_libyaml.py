"""The load stage's fast path (libyaml's composer, compiler/load_libyaml.py) reads every text
as the round-trip loader does: the same data, the same line and column of every key and value,
or it gives up and the round-trip loader reads it."""

from __future__ import annotations

import io
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML
from ruamel.yaml.nodes import ScalarNode

from compiler import load, load_libyaml
from compiler.diagnostics import MoatError

from .conftest import EXAMPLES, FIXTURES, ROOT

TEXTS = sorted(EXAMPLES) + sorted(FIXTURES.rglob("*.yaml"))


def round_trip(text: str, monkeypatch) -> load.Source | MoatError:
    with monkeypatch.context() as m:
        m.setattr(load_libyaml, "compose", lambda *_: None)
        try:
            return load.load_text(text, "b.yaml")
        except MoatError as err:
            return err


def same_as_round_trip(text: str, monkeypatch) -> bool:
    """Whether the fast path took `text`; asserts it read it as the round-trip loader does."""
    if load.invisible(text):  # refused before any parser sees it
        return False
    fast = load_libyaml.compose(text, load.MAX_NODES)
    if fast is None:
        return False
    slow = round_trip(text, monkeypatch)
    assert isinstance(slow, load.Source), f"the fast path read what the round-trip loader refuses: {slow}"
    data, values, keys = fast
    assert data == slow.data
    assert values == slow.value_positions
    assert keys == slow.key_positions
    return True


def test_libyaml_is_there():
    assert load_libyaml._LOADER is not None, "pyyaml with libyaml is a dependency: pip install pyyaml"


@pytest.mark.parametrize("path", TEXTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_blueprint_and_fixture_reads_the_same(path, monkeypatch):
    text = path.read_text(encoding="utf-8", errors="replace")
    took = same_as_round_trip(text, monkeypatch)
    if path in EXAMPLES or path == FIXTURES / "base.yaml":
        assert took, "the examples take the fast path"


GIVE_UP = {
    "explicit tag": "a: !!str 5\n",
    "merge key": "base: &b {x: 1}\nother:\n  <<: *b\n  y: 2\n",
    "timestamp": "when: 2024-01-02\n",
    "duplicate key": "a: 1\na: 2\n",
    "YAML 1.1 directive": "%YAML 1.1\n---\na: yes\n",
    "complex key": "? [a, b]\n: 1\n",
    "two documents": "a: 1\n---\nb: 2\n",
    "syntax error": "a: [1, 2\n",
    "alias loop": "a: &x [*x]\n",
}


@pytest.mark.parametrize("text", GIVE_UP.values(), ids=GIVE_UP.keys())
def test_what_the_fast_path_does_not_read_goes_to_the_round_trip_loader(text, monkeypatch):
    assert load_libyaml.compose(text, load.MAX_NODES) is None
    fast_first = load.load_text(text, "b.yaml") if not isinstance(round_trip(text, monkeypatch), MoatError) else None
    if fast_first is not None:  # the same result as the round-trip loader alone
        assert fast_first.data == round_trip(text, monkeypatch).data


# documents made of the scalars YAML resolves differently across versions and loaders
TRICKY = ["yes", "no", "on", "off", "y", "n", "true", "True", "FALSE", "null", "Null", "~", "", "0", "-0",
          "0o17", "017", "0755", "08", "0x1F", "0b101", "1_000", "1e3", "1.5e-3", ".5", "1.", ".inf", "-.Inf",
          ".NaN", "+12", "12:30", "1:20:30", "=", "<<x", "a b", "a: b", "- x", "#x", "x #y", "'q'", '"d"',
          "\\n", "tab\there", "é", "ü-ß", "0.0.0.0/0", "2001:db8::1", "10GiB", "1e", "0x", "-", "--", "?x"]
scalars = (st.sampled_from(TRICKY) | st.text(string.ascii_letters + string.digits + " .:-_/#'\"", max_size=12)
           | st.integers(-10**6, 10**6) | st.floats(allow_nan=False, width=32) | st.booleans() | st.none())
keys = st.sampled_from(TRICKY[:40]) | st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True) | st.integers(0, 99)
documents = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                         | st.dictionaries(keys, inner, min_size=1, max_size=4), max_leaves=20)


def dumped(data, flow: bool | None, width: int) -> str:
    yaml = YAML(typ="rt")
    yaml.default_flow_style = flow
    yaml.width = width
    stream = io.StringIO()
    yaml.dump({"doc": data}, stream)
    return stream.getvalue()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(documents, st.sampled_from([False, True, None]), st.sampled_from([20, 80, 4096]))
def test_generated_documents_read_the_same(monkeypatch, data, flow, width):
    same_as_round_trip(dumped(data, flow, width), monkeypatch)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(TRICKY), st.sampled_from(TRICKY)), min_size=1, max_size=6),
       st.sampled_from(["{k}: {v}\n", "- {k}: {v}\n", "{k}:\n  - {v}\n", "x: [{k}, {v}]\n", "x: {{{k}: {v}}}\n"]))
def test_hand_written_scalars_read_the_same(monkeypatch, pairs, form):
    """Plain scalars as a person types them, unquoted: whatever YAML makes of them, both paths agree
    (or the text is no YAML and the fast path gives up)."""
    text = "".join(form.format(k=k or "k", v=v) for k, v in pairs)
    same_as_round_trip(text, monkeypatch)


# the texts whose type only ruamel.yaml's resolver knows, and those known_scalar tells by itself
EDGES = ["012", "0o17", "0x1F", "0b11", "1_000", "1_", "_1", "+1", "-0", "00", "-", "+", ".", "0.", ".5", "1.0",
         "1e3", "1E5", "1e", "1e+3", "-1e-3", ".inf", "-.Inf", "+.INF", ".NaN", ".nan", "~", "~x", "null", "Null",
         "NULL", "nULL", "nil", "true", "tRUE", "TRUE", "yes", "no", "on", "off", "y", "n", "Y", "N", "1:20",
         "1:20:30", "12:30:00.5", "2001-12-14", "2001-12-14t21:59:43.10-05:00", "2001-12-14 21:59:43.10 -5",
         "=", "==", "<<", "<<x", "<", "!", "&", "*", "1.2.3", "1.2.3.4.5", "10GiB", "200MiB", "192.168.1.1",
         "10.0.0.0/24", "0.0.0.0/0", "fe80::1", "::1", "2001:db8::1", "1 2", "1\t2", "1\n", "true\n", "~\n",
         "1\n2", "٣", "１２", "1" * 5000, "-" + "9" * 4300, "+" + "9" * 4301, "0xG", "0o8", "0b2", "1__0", "e1",
         "Infinity", "inf", "NaN", "0e0", "0x", "0o", "-0x1", "+0o7", "1.5e-3", "5.", "--1", "+-1", "1-1"]
# what a plain scalar's text is made of: numbers' and dates' characters, and a few others
number_texts = st.text("0123456789-+_.:eEinfINFaAboxXbcdBCDTtZ \t\n/Gi~", min_size=1, max_size=14)


def round_trip_scalar(text: str):
    """What the round-trip loader makes of the plain scalar `text`: (its value as plain data, its type),
    or None for a tag the fast path leaves to it (timestamps, merge keys, `=`)."""
    rt = YAML(typ="rt")
    tag = str(rt.resolver.resolve(ScalarNode, text, (True, False)))
    if tag == "tag:yaml.org,2002:str":
        return text, str
    if tag not in load_libyaml._BUILT:
        return None
    try:
        value = load_libyaml.plain_scalar(rt.constructor.construct_object(ScalarNode(tag, text), deep=True))
    except ValueError as err:  # int() of more than 4300 digits
        return type(err), ValueError
    return value, type(value)


def known(text: str):
    try:
        value = load_libyaml.known_scalar(text)
    except ValueError as err:
        return type(err), ValueError
    return value if value is load_libyaml.UNKNOWN else (value, type(value))


def assert_known_as_round_trip(text: str) -> bool:
    """Whether known_scalar answered for `text`; asserts the round-trip loader's value and type when it did."""
    fast = known(text)
    if fast is load_libyaml.UNKNOWN:
        return False
    assert fast == round_trip_scalar(text), text
    return True


@pytest.mark.parametrize("text", EDGES + [t for t in TRICKY if t])  # "": compose gives an empty scalar up
def test_a_plain_scalar_known_without_ruamel_is_what_the_round_trip_loader_makes_of_it(text):
    assert_known_as_round_trip(text)


def test_the_scalars_of_blueprints_are_known_without_ruamel():
    for text in ["vm1", "tcp", "12GiB", "200MiB", "192.168.122.5", "192.168.1.20/24", "0.0.0.0/0", "2222", "0",
                 "-7", "true", "false", "null", "~", "nextcloud-01", "/var/lib/data", "1.2.3"]:
        assert assert_known_as_round_trip(text), text


@settings(max_examples=2000, deadline=None)
@given(st.sampled_from(EDGES) | number_texts | st.text(min_size=1, max_size=10)
       | st.from_regex(r"[-+]?[0-9_]{1,6}(\.[0-9_]{0,4})?([eE][-+]?[0-9]{1,3})?", fullmatch=True)
       | st.integers().map(str) | st.floats().map(str))
def test_generated_plain_scalars_known_without_ruamel_are_what_the_round_trip_loader_makes_of_them(text):
    assert_known_as_round_trip(text)


BOMB = "a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n" + "".join(
    f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n" for p, c in zip("abcde", "bcdef"))


LIMIT = 200_000  # the node limit here: the round-trip loader takes about 10 s per 200,000 nodes


@pytest.mark.parametrize("text", [BOMB, "[" + "0, " * LIMIT + "0]\n"], ids=["alias bomb", "long list"])
def test_too_many_nodes_is_refused_by_the_fast_path_itself_as_the_round_trip_loader_refuses_it(text, monkeypatch):
    assert LIMIT < load.MAX_NODES
    monkeypatch.setattr(load, "MAX_NODES", LIMIT)
    with pytest.raises(load_libyaml.TooLarge):  # not None: the slow loader would take ~10x as long to say the same
        load_libyaml.compose(text, load.MAX_NODES)
    with pytest.raises(MoatError) as fast:
        load.load_text(text, "b.yaml")
    slow = round_trip(text, monkeypatch)
    assert isinstance(slow, MoatError)
    assert [(d.rule, d.message, d.position) for d in fast.value.diagnostics] == \
        [(d.rule, d.message, d.position) for d in slow.diagnostics] == \
        [("yaml-too-large", f"blueprint expands to more than {load.MAX_NODES} nodes", (1, 1))]
