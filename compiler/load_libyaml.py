"""The load stage's fast path: a blueprint parsed by libyaml (C), read as ruamel.yaml reads it.

ruamel.yaml's round-trip loader (pure Python) keeps the line and column of every node, which
every error needs, and costs about 2.5 ms per VM: most of `moat check` for large blueprints.
libyaml's composer (PyYAML's CSafeLoader) gives the same nodes with the same positions, about
10x faster. Only the composer is used: each plain scalar's type is decided by the round-trip
loader's own resolver (YAML 1.2) and built by its own constructor, so the data is what the
round-trip loader makes of the text, and keys become str as load._plain makes them. The texts
a blueprint is made of (names, sizes, addresses, ports, true/false) are told without them
(known_scalar), so a blueprint that needs no more does not import ruamel.yaml at all (53 M of
the 822 M instructions of a `moat check` of the example).

`compose` gives up (None) on whatever this path does not read exactly like the round-trip
loader: explicit tags, merge keys (<<), timestamps, complex or duplicate keys, values left
empty (`key:`, placed differently by the two parsers), tabs (which they treat differently),
%YAML directives, alias loops, any libyaml error, or no libyaml at all; more than max_nodes
nodes is TooLarge. The round-trip loader then reads the text, and it is the one that explains what is wrong.
tests/test_load_libyaml.py holds the two paths to the same data and positions.
"""

from __future__ import annotations

import datetime
import re
from typing import Any

Position = tuple[int, int]
Path = tuple

_PLAIN, _QUOTED, _MAP, _SEQ = "moat:plain", "moat:quoted", "moat:map", "moat:seq"
_STR = "tag:yaml.org,2002:str"
_BUILT = {"tag:yaml.org,2002:int", "tag:yaml.org,2002:float", "tag:yaml.org,2002:bool", "tag:yaml.org,2002:null"}
_DIRECTIVE = re.compile(r"^%", re.M)


class _GiveUp(Exception):
    pass


# What ruamel.yaml's resolver (YAML 1.2: ruamel/yaml/resolver.py) makes of a plain scalar, told
# without it for the texts blueprints are made of. Its resolvers are looked up by the text's first
# character: for t T f F the bool words, for n N ~ the null words (all in _WORDS); for - + . and
# the digits the float, int and timestamp patterns; for < = ! & * merge keys, `=` and `!`.
# tests/test_load_libyaml.py holds known_scalar to the resolver and constructor on every text it answers.
_WORDS = {"true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False,
          "~": None, "null": None, "Null": None, "NULL": None}
_ONLY_WORDS = frozenset("tTfFnN~")  # first characters whose only resolvers are the bool and null words
_TYPED = frozenset("-+.0123456789<=!&*") | _ONLY_WORDS  # first characters some resolver is for
_NUMBER_FIRST = frozenset("-+.0123456789")
# every character the float, int and timestamp patterns match: a text with any other one (12GiB,
# 10.0.0.0/24) is none of them; nor is one with two dots (10.0.0.1, 1.2.3), which each allows once at most
_NUMBER_CHARACTERS = frozenset("0123456789-+_.:eEinfINFaAboxbcdBCDTtZ \t")
_DECIMAL = re.compile(r"[-+]?[0-9]+")  # an int, as int() reads it (012 is 12 in YAML 1.2)
UNKNOWN = object()


def known_scalar(text: str) -> Any:
    """The value the round-trip loader gives the plain scalar `text` (not empty), or UNKNOWN when
    only its resolver can tell (floats, 0x1F, 1_000, 1:20, dates, merge keys)."""
    try:
        return _WORDS[text]
    except KeyError:
        pass
    if text[-1] == "\n":
        return UNKNOWN  # the patterns' `$` matches before it (libyaml's plain scalars never end with one)
    first = text[0]
    if first not in _TYPED or first in _ONLY_WORDS:
        return text
    if _DECIMAL.fullmatch(text):
        return int(text)
    if first in _NUMBER_FIRST and (text.count(".") > 1 or not _NUMBER_CHARACTERS.issuperset(text)):
        return text
    return UNKNOWN


class TooLarge(Exception):
    """More than max_nodes nodes once aliases are expanded: the round-trip loader, pure Python and
    about 10x slower, would only come to the same verdict (a minute for a 4 MiB blueprint)."""


def _loader_class():
    try:
        import yaml
        from yaml import nodes
    except ImportError:
        return None
    base = getattr(yaml, "CSafeLoader", None)
    if base is None:  # PyYAML without libyaml
        return None

    class Loader(base):  # type: ignore[misc, valid-type]
        """libyaml's composer; types left to ruamel.yaml (the tags say only how a node was written)."""

        def resolve(self, kind, value, implicit):
            if kind is nodes.ScalarNode:
                return _PLAIN if implicit[0] else _QUOTED
            return _MAP if kind is nodes.MappingNode else _SEQ

    return Loader


_LOADER = _loader_class()


def compose(text: str, max_nodes: int) -> tuple[Any, dict[Path, Position], dict[Path, Position]] | None:
    """(data, value positions, key positions) of a one-document blueprint, or None (see above);
    TooLarge for more than max_nodes nodes."""
    if _LOADER is None or _DIRECTIVE.search(text) or "\t" in text:  # tabs: where the two parsers differ
        return None
    import yaml

    try:
        documents = list(yaml.compose_all(text, Loader=_LOADER))
    except (yaml.YAMLError, ValueError, RecursionError):
        return None
    if len(documents) != 1 or documents[0] is None:
        return None
    reader = _Reader(max_nodes)
    try:
        data = reader.plain(documents[0], (), (1, 1), ())
    except (_GiveUp, RecursionError, ValueError, TypeError, OverflowError):
        return None
    return data, reader.values, reader.keys


class _Reader:
    def __init__(self, max_nodes: int):
        self.max_nodes = max_nodes
        self.values: dict[Path, Position] = {}
        self.keys: dict[Path, Position] = {}
        self.round_trip: Any = None  # the round-trip loader, for its resolver and constructor
        self.seen: dict[str, Any] = {}  # plain scalar text -> its value

    def scalar(self, node) -> Any:
        if node.tag == _QUOTED:
            return node.value
        if node.tag != _PLAIN:
            raise _GiveUp  # an explicit tag
        if not node.value:
            raise _GiveUp  # nothing written (`key:`): the two parsers place it differently
        try:
            return self.seen[node.value]
        except KeyError:
            pass
        value = known_scalar(node.value)
        if value is UNKNOWN:
            value = self.resolved(node.value)
        # a plain scalar's value depends on its text alone, and is immutable (str, int, float,
        # bool, None): a blueprint repeats most of its scalars (sizes, protocols, pool names)
        self.seen[node.value] = value
        return value

    def resolved(self, text: str) -> Any:
        """A plain scalar typed by the round-trip loader's own resolver and built by its constructor."""
        from ruamel.yaml.nodes import ScalarNode

        if self.round_trip is None:
            from ruamel.yaml import YAML

            self.round_trip = YAML(typ="rt")
        tag = str(self.round_trip.resolver.resolve(ScalarNode, text, (True, False)))
        if tag == _STR:
            return text
        if tag not in _BUILT:
            raise _GiveUp  # timestamps, merge keys, `=`: the round-trip loader's business
        return self.round_trip.constructor.construct_object(ScalarNode(tag, text), deep=True)

    def plain(self, node, path: Path, here: Position, stack: tuple) -> Any:
        if len(self.values) > self.max_nodes:
            raise TooLarge
        position = (node.start_mark.line + 1, node.start_mark.column + 1)
        if node.tag == _MAP:
            if id(node) in stack:
                raise _GiveUp
            stack = stack + (id(node),)
            self.values.setdefault(path, position)
            out: dict[str, Any] = {}
            seen: set = set()
            for key_node, value_node in node.value:
                if key_node.tag not in (_PLAIN, _QUOTED):
                    raise _GiveUp  # a complex or tagged key
                key = self.scalar(key_node)
                name = str(key)
                if name in out or key in seen:
                    raise _GiveUp  # duplicate (as YAML compares keys: 1000 is 1e3): the round-trip loader names it
                seen.add(key)
                child = path + (name,)
                self.keys[child] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
                self.values[child] = (value_node.start_mark.line + 1, value_node.start_mark.column + 1)
                out[name] = self.plain(value_node, child, position, stack)
            return out
        if node.tag == _SEQ:
            if id(node) in stack:
                raise _GiveUp
            stack = stack + (id(node),)
            self.values.setdefault(path, position)
            items = []
            for i, item in enumerate(node.value):
                child = path + (i,)
                self.values[child] = (item.start_mark.line + 1, item.start_mark.column + 1)
                items.append(self.plain(item, child, position, stack))
            return items
        return plain_scalar(self.scalar(node))


def plain_scalar(value: Any) -> Any:
    """A scalar as ruamel.yaml built it (ScalarInt, ScalarFloat, TimeStamp...) as plain Python."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, (datetime.date, datetime.datetime)):
        return value.isoformat()
    return str(value)
