"""Stage 2, validate: JSON Schema (2020-12) -> diagnostics at the blueprint line; schema defaults."""

from __future__ import annotations

import copy
import functools
import ipaddress
import json
import re
from pathlib import Path as FsPath
from typing import TYPE_CHECKING, Any, Iterator

from .diagnostics import QUOTE_LIMIT, Diagnostic, Path, codepoint, invisible_characters, quote
from .identity import schema_path
from .schema_quick import conforms

if TYPE_CHECKING:  # jsonschema is imported only when a blueprint does not conform (see schema_quick)
    from jsonschema import Draft202012Validator, FormatChecker
    from jsonschema.exceptions import ValidationError

SCHEMA_PATH = schema_path()

_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
_MAC = re.compile(r"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$")


def _ipv4(value: object) -> bool:
    return not isinstance(value, str) or bool(ipaddress.IPv4Address(value))


def _ipv4_network(value: object) -> bool:
    return not isinstance(value, str) or "/" in value and bool(ipaddress.IPv4Network(value, strict=True))


def _ipv4_address_or_network(value: object) -> bool:
    return not isinstance(value, str) or bool(ipaddress.IPv4Network(value, strict=True))


def _ipv4_interface(value: object) -> bool:
    return not isinstance(value, str) or "/" in value and bool(ipaddress.IPv4Interface(value))


def _mac(value: object) -> bool:
    return not isinstance(value, str) or bool(_MAC.match(value))


def _hostname_label(value: object) -> bool:
    return not isinstance(value, str) or bool(_LABEL.match(value))


def _fqdn(value: object) -> bool:
    if not isinstance(value, str):
        return True
    labels = value.rstrip(".").split(".")
    return len(value) <= 253 and len(labels) >= 2 and all(_LABEL.match(x) for x in labels) and not labels[-1].isdigit()


# Every format the schema uses is checked here (jsonschema silently accepts formats it cannot
# check); a ValueError from one means "does not conform".
FORMATS = {"ipv4": _ipv4, "ipv4-network": _ipv4_network, "ipv4-address-or-network": _ipv4_address_or_network,
           "ipv4-interface": _ipv4_interface, "mac": _mac, "hostname-label": _hostname_label, "fqdn": _fqdn}


@functools.cache
def format_checker() -> FormatChecker:
    from jsonschema import FormatChecker

    checker = FormatChecker(formats=())
    for name, test in FORMATS.items():
        checker.checks(name, raises=ValueError)(test)
    return checker


@functools.cache
def load_schema() -> dict:
    return json.loads(SCHEMA_PATH.read_text())


@functools.cache
def validator() -> Draft202012Validator:
    # the schema is moat's own and checked by its tests (test_schema_is_valid_2020_12), not on every start
    from jsonschema import Draft202012Validator

    return Draft202012Validator(load_schema(), format_checker=format_checker())


@functools.cache
def quick():
    return conforms(load_schema(), FORMATS)


# Characters that no blueprint value needs and that break out of a quoted or line-based config.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff\ufffe\uffff\"'`\\\\$]")


def unsafe_strings(data: Any, path: Path = ()) -> Iterator[Diagnostic]:
    """Reject control characters and quoting characters in every string, key or value, and the
    invisible ones a YAML escape (\\u202e) put there (the text itself is checked by load.invisible)."""
    if isinstance(data, dict):
        for key, value in data.items():
            yield from _string(key, path + (key,), at_key=True)
            yield from unsafe_strings(value, path + (key,))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            yield from unsafe_strings(value, path + (i,))
    elif isinstance(data, str):
        yield from _string(data, path)


def _string(text: str, path: Path, at_key: bool = False) -> Iterator[Diagnostic]:
    if _UNSAFE.search(text):
        yield _unsafe(text, path, at_key)
        return
    hidden = list(invisible_characters(text, allowed=frozenset()))
    if hidden:
        what = "key" if at_key else "value"
        where = ", ".join(f"{codepoint(c)} at character {i + 1}" for i, c in hidden[:5])
        more = f" and {len(hidden) - 5} more" if len(hidden) > 5 else ""
        yield Diagnostic("invisible-character", f"{what} {quote(text)} contains {where}{more}: invisible or "
                         "direction-changing, so it reads differently from what it says", path, at_key=at_key,
                         hint="remove the escape (\\u...) that writes it")


def _unsafe(text: str, path: Path, at_key: bool = False) -> Diagnostic:
    bad = sorted({repr(c) for c in _UNSAFE.findall(text)})
    return Diagnostic(
        "unsafe-string",
        f"{'key' if at_key else 'value'} contains {', '.join(bad)}, which could inject into a generated config",
        path, at_key=at_key,
        hint="blueprint strings are single lines without quotes, backslashes, backticks or `$`",
    )


def _describe(schema: dict) -> str:
    ref = schema.get("$ref")
    if ref:
        return _describe(load_schema()["$defs"][ref.rsplit("/", 1)[1]]) or ""
    return schema.get("description", "")


def _subschema(path: Path) -> dict:
    """The schema node that governs a data path (following $ref and properties/items)."""
    node = load_schema()
    defs = node["$defs"]
    for part in path:
        while "$ref" in node:
            node = defs[node["$ref"].rsplit("/", 1)[1]]
        if isinstance(part, int):
            node = node.get("items", {})
        else:
            node = node.get("properties", {}).get(part, {})
    while "$ref" in node:
        node = defs[node["$ref"].rsplit("/", 1)[1]]
    return node


# JSON Schema keyword -> stable rule id
RULES = {
    "required": "schema-required", "additionalProperties": "schema-unknown-key", "type": "schema-type",
    "enum": "schema-enum", "const": "schema-enum", "pattern": "schema-format", "format": "schema-format",
    "minimum": "schema-range", "maximum": "schema-range", "minItems": "schema-length",
    "maxItems": "schema-length", "maxLength": "schema-length", "minLength": "schema-length",
    "not": "schema-conflict",
}


@functools.cache
def _conditions() -> dict[int, str]:
    """id(then-schema) -> ' when KEY is VALUE', for every if/then in the schema."""
    found: dict[int, str] = {}

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "if" in node and "then" in node:
                key, cond = next(iter(node["if"]["properties"].items()))
                found[id(node["then"])] = f" when {key} is {json.dumps(cond['const'])}"
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(load_schema())
    return found


def _condition(err: ValidationError) -> str:
    """' when method is "image"' for errors raised inside an if/then branch of the schema."""
    return _conditions().get(id(err.schema), "")


def _where(path: Path) -> str:
    return ".".join(str(p) if isinstance(p, str) else f"[{p}]" for p in path).replace(".[", "[") or "the blueprint"


def _diagnostics(err: ValidationError) -> list[Diagnostic]:
    path: Path = tuple(err.absolute_path)
    kind = err.validator
    rule = RULES.get(kind, f"schema-{kind}")
    value = err.instance
    if kind == "required":
        missing = re.search(r"'([^']+)' is a required property", err.message)
        name = missing.group(1) if missing else err.message
        about = _describe(_subschema(path + (name,)))
        return [Diagnostic(rule, f"{_where(path)} is missing '{name}'{_condition(err)}", path,
                          hint=f"add {name}: ({about})" if about else f"add {name}:", at_key=True)]
    if kind == "additionalProperties":
        import difflib  # for a blueprint that breaks the schema only (as jsonschema is)

        allowed = sorted(err.schema.get("properties", {}))
        extra = [k for k in value if k not in allowed]
        diags = []
        for key in extra:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"allowed here: {', '.join(allowed)}"
            diags.append(Diagnostic(rule, f"unknown property {quote(key)}", path + (key,), hint=hint, at_key=True))
        return diags
    if kind == "type":
        expected = err.validator_value
        got = {dict: "mapping", list: "list", str: "string", bool: "boolean", int: "integer",
               float: "number", type(None): "nothing"}.get(type(value), type(value).__name__)
        return [Diagnostic(rule, f"expected {_type_name(expected)}, got {got}", path, hint=_describe(_subschema(path)) or None)]
    if kind in ("enum", "const"):
        choices = err.validator_value if kind == "enum" else [err.validator_value]
        return [Diagnostic(rule, f"{quote(value)} is not one of: {', '.join(json.dumps(c) for c in choices)}", path,
                          hint=_describe(_subschema(path)) or None)]
    if kind in ("pattern", "format"):
        return [Diagnostic(rule, f"{quote(value)} is not valid here", path, hint=_describe(_subschema(path)) or None)]
    if kind in ("maxLength", "minLength") and isinstance(value, str):
        bound = "at most" if kind == "maxLength" else "at least"
        return [Diagnostic(rule, f"{quote(value, sized=False)} is {len(value)} characters long; {bound} "
                          f"{err.validator_value} fit here", path, hint=_describe(_subschema(path)) or None)]
    if kind in ("maxItems", "minItems") and isinstance(value, list):
        bound = "at most" if kind == "maxItems" else "at least"
        return [Diagnostic(rule, f"{len(value)} items; {bound} {err.validator_value} fit here", path,
                          hint=_describe(_subschema(path)) or None)]
    if kind == "not":
        present = [k for k in _not_required(err.validator_value) if isinstance(value, dict) and k in value]
        if present:
            return [Diagnostic(rule, f"'{present[0]}' does not apply{_condition(err) or ' here'}",
                              path + (present[0],), at_key=True, hint=f"remove {present[0]}: ({_describe(_subschema(path))})")]
    # jsonschema's own message repeats the whole value: say the rule and show the value shortened
    message = f"{quote(value)} breaks the schema's {kind}: {quote(err.validator_value)}" \
        if len(err.message) > 2 * QUOTE_LIMIT else err.message
    return [Diagnostic(rule, message, path, hint=_describe(_subschema(path)) or None)]


def _type_name(expected: Any) -> str:
    names = {"object": "a mapping", "array": "a list", "string": "a string", "integer": "an integer",
             "number": "a number", "boolean": "true or false", "null": "nothing"}
    if isinstance(expected, list):
        return " or ".join(names.get(e, e) for e in expected)
    return names.get(expected, expected)


def _not_required(schema: dict) -> list[str]:
    return [k for alt in schema.get("anyOf", []) for k in alt.get("required", [])]


def validate(data: Any) -> list[Diagnostic]:
    """All schema violations and unsafe strings, each once, at the most precise path."""
    unsafe = list(unsafe_strings(data))
    flagged = {d.path for d in unsafe}
    diags: list[Diagnostic] = list(unsafe)
    if quick()(data):
        return diags
    errors = list(validator().iter_errors(data))
    # a value too long for its field is that; its pattern or format (often failing too) is not also reported
    too_long = {tuple(e.absolute_path) for e in errors if e.validator == "maxLength"}
    for err in errors:
        if err.validator in ("pattern", "format") and tuple(err.absolute_path) in too_long:
            continue
        for diag in _diagnostics(err):
            if diag.path not in flagged:
                diags.append(diag)
    return diags


def with_defaults(data: Any) -> Any:
    """A copy of valid data with every schema `default` filled in, recursively."""
    return _fill(copy.deepcopy(data), load_schema())


def _fill(data: Any, node: dict) -> Any:
    defs = load_schema()["$defs"]
    while "$ref" in node:
        node = defs[node["$ref"].rsplit("/", 1)[1]]
    if isinstance(data, dict):
        for key, sub in node.get("properties", {}).items():
            target = sub
            while "$ref" in target and "default" not in target:
                target = defs[target["$ref"].rsplit("/", 1)[1]]
            if key not in data and "default" in target:
                data[key] = copy.deepcopy(target["default"])
            if key in data:
                data[key] = _fill(data[key], sub)
    elif isinstance(data, list) and "items" in node:
        return [_fill(item, node["items"]) for item in data]
    return data
