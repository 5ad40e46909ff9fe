"""Stage 2's happy path: does a blueprint conform to the schema, yes or no, without importing
jsonschema (about a third of a `moat check`'s start).

`conforms(schema, formats)` turns the schema into nested closures once. It knows exactly the
JSON Schema 2020-12 keywords moat's schema uses, with jsonschema's meaning (types as its type
checker sees them, `equal` for enum/const/uniqueItems, `re.search` for patterns, formats only
where a checker is given); a keyword it does not know is refused when it is built, so a schema
edit cannot make it quietly lenient. A "no" says nothing more: compiler.schema then asks
jsonschema for every error and its path. tests/test_schema_quick.py holds the two to the same
verdicts on attacked blueprints.
"""

from __future__ import annotations

import re
from typing import Any, Callable

Check = Callable[[Any], bool]

# Keywords that annotate and never fail a value.
ANNOTATIONS = frozenset({"$schema", "$id", "$defs", "$comment", "title", "description", "default", "examples",
                         "deprecated", "readOnly", "writeOnly"})

_TYPES: dict[str, Check] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "integer": lambda v: not isinstance(v, bool) and (isinstance(v, int) or isinstance(v, float) and v.is_integer()),
}


def identity(value: Any) -> Any:
    """A hashable stand-in under which two values are the same exactly when jsonschema's `equal`
    says so: true is not 1, 1 is 1.0, lists and mappings compare by content."""
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, (int, float)):
        return ("number", value)
    if isinstance(value, str):
        return ("string", value)
    if isinstance(value, list):
        return ("array", tuple(identity(v) for v in value))
    if isinstance(value, dict):
        return ("object", frozenset((k, identity(v)) for k, v in value.items()))
    return ("other", value)


def conforms(schema: dict, formats: dict[str, Callable[[Any], bool]]) -> Check:
    """A check of `schema` (its `$ref`s point into its own `$defs`); `formats` name -> a function
    that says whether a value conforms (it may raise ValueError for no). Unknown formats pass, as
    they do for jsonschema."""
    defs = schema.get("$defs", {})
    built: dict[str, Check] = {}

    def ref(target: str) -> Check:
        name = target.removeprefix("#/$defs/")
        if name == target or name not in defs:
            raise ValueError(f"$ref {target!r}: only #/$defs/NAME is known here")
        if name not in built:
            built[name] = lambda v: built[name](v)  # a cycle reaches itself through this until it is built
            built[name] = node(defs[name])
        return built[name]

    def node(s: Any) -> Check:
        if s is True:
            return lambda v: True
        if s is False:
            return lambda v: False
        unknown = set(s) - ANNOTATIONS - set(KEYWORDS)
        if unknown:
            raise ValueError(f"schema keyword(s) {', '.join(sorted(unknown))} unknown to the quick check")
        checks = [KEYWORDS[k](s, node, ref, formats) for k in s if k in KEYWORDS]
        checks = [c for c in checks if c is not None]
        if len(checks) == 1:
            return checks[0]
        return lambda v: all(c(v) for c in checks)

    return node(schema)


def _type(s, node, ref, formats) -> Check:
    wanted = s["type"] if isinstance(s["type"], list) else [s["type"]]
    tests = [_TYPES[t] for t in wanted]
    return lambda v: any(t(v) for t in tests)


def _properties(s, node, ref, formats) -> Check:
    props = {k: node(sub) for k, sub in s["properties"].items()}
    return lambda v: not isinstance(v, dict) or all(props[k](v[k]) for k in props.keys() & v.keys())


def _additional(s, node, ref, formats) -> Check:
    known = frozenset(s.get("properties", {}))  # patternProperties is refused by node()
    extra = node(s["additionalProperties"])
    return lambda v: not isinstance(v, dict) or all(extra(v[k]) for k in v.keys() - known)


def _required(s, node, ref, formats) -> Check:
    names = frozenset(s["required"])
    return lambda v: not isinstance(v, dict) or names <= v.keys()


def _items(s, node, ref, formats) -> Check:
    if not isinstance(s["items"], (dict, bool)):
        raise ValueError("items as a list is not 2020-12 (prefixItems) and unknown to the quick check")
    each = node(s["items"])
    return lambda v: not isinstance(v, list) or all(each(x) for x in v)


def _bound(kind: str, test: Callable[[Any], bool], measure: Callable[[Any], Any], compare) -> Callable:
    def build(s, node, ref, formats) -> Check:
        limit = s[kind]
        return lambda v: not test(v) or compare(measure(v), limit)
    return build


def _is_string(v: Any) -> bool:
    return isinstance(v, str)


def _is_list(v: Any) -> bool:
    return isinstance(v, list)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _pattern(s, node, ref, formats) -> Check:
    search = re.compile(s["pattern"]).search
    return lambda v: not isinstance(v, str) or search(v) is not None


def _format(s, node, ref, formats) -> Check | None:
    test = formats.get(s["format"])
    if test is None:
        return None

    def check(v: Any) -> bool:
        try:
            return bool(test(v))
        except ValueError:
            return False
    return check


def _enum(s, node, ref, formats) -> Check:
    allowed = frozenset(identity(x) for x in s["enum"])
    return lambda v: identity(v) in allowed


def _const(s, node, ref, formats) -> Check:
    wanted = identity(s["const"])
    return lambda v: identity(v) == wanted


def _unique(s, node, ref, formats) -> Check | None:
    if not s["uniqueItems"]:
        return None
    return lambda v: not isinstance(v, list) or len({identity(x) for x in v}) == len(v)


def _ref(s, node, ref, formats) -> Check:
    return ref(s["$ref"])


def _not(s, node, ref, formats) -> Check:
    inner = node(s["not"])
    return lambda v: not inner(v)


def _any_of(s, node, ref, formats) -> Check:
    options = [node(x) for x in s["anyOf"]]
    return lambda v: any(o(v) for o in options)


def _all_of(s, node, ref, formats) -> Check:
    parts = [node(x) for x in s["allOf"]]
    return lambda v: all(p(v) for p in parts)


def _if(s, node, ref, formats) -> Check:
    cond = node(s["if"])
    then = node(s.get("then", True))
    other = node(s.get("else", True))
    return lambda v: then(v) if cond(v) else other(v)


def _with_if(s, node, ref, formats) -> None:
    if "if" not in s:
        raise ValueError("then/else without if")
    return None


KEYWORDS: dict[str, Callable] = {
    "type": _type,
    "properties": _properties,
    "additionalProperties": _additional,
    "required": _required,
    "items": _items,
    "pattern": _pattern,
    "format": _format,
    "enum": _enum,
    "const": _const,
    "uniqueItems": _unique,
    "$ref": _ref,
    "not": _not,
    "anyOf": _any_of,
    "allOf": _all_of,
    "if": _if,
    "then": _with_if,
    "else": _with_if,
    "maxLength": _bound("maxLength", _is_string, len, lambda n, limit: n <= limit),
    "minLength": _bound("minLength", _is_string, len, lambda n, limit: n >= limit),
    "maxItems": _bound("maxItems", _is_list, len, lambda n, limit: n <= limit),
    "minItems": _bound("minItems", _is_list, len, lambda n, limit: n >= limit),
    "maximum": _bound("maximum", _is_number, lambda v: v, lambda n, limit: n <= limit),
    "minimum": _bound("minimum", _is_number, lambda v: v, lambda n, limit: n >= limit),
}
