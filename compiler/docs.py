"""docs/blueprint.md, generated from the schema so the two never drift."""

from __future__ import annotations

import json

from .load import MAX_BYTES
from .schema import load_schema

HEADER = """\
<!-- generated from schema/blueprint.schema.json by `moat docs`; do not edit -->
# Blueprint format, version 1

{description}

Every mapping rejects unknown keys. Sizes are written with a binary unit (`512MiB`,
`12GiB`, `2TiB`). No string may contain control characters, quotes, backslashes,
backticks or `$` (rule `unsafe-string`): such values could break out of a generated
config. No character anywhere in the file, in a value, a key or a comment, may be invisible
or change the text's direction (rule `invisible-character`: what Python's `str.isprintable()`
refuses, such as U+202E RIGHT-TO-LEFT OVERRIDE, U+200B ZERO WIDTH SPACE or a byte order mark;
tabs and line breaks are allowed where YAML allows them): the text would read differently
from what the file says. Every string has a maximum length, that of what reads it (a Linux
path 4095 characters, each part 255; a DNS name 253; an interface name 15). A blueprint is
at most {max_bytes} bytes ({max_mib} MiB, rule `blueprint-too-large`), refused before it is read
further. Errors point at the blueprint line, e.g.

    blueprints/home.yaml:42:7: error[port-collision]: host port 443/tcp for the forward to 'web' is already used by ...
      hint: a public port reaches one service: pick another port for one of them

See `blueprints/example.yaml` and `blueprints/vps-front.yaml` for complete examples.
"""


def _resolve(node: dict) -> tuple[dict, str | None]:
    defs = load_schema()["$defs"]
    name = None
    while "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[1]
        merged = {**defs[name], **{k: v for k, v in node.items() if k != "$ref"}}
        node = merged
    return node, name


def _type(node: dict) -> str:
    node, name = _resolve(node)
    if name in _value_types():
        return f"[{name}](#{name})"
    if "const" in node:
        return f"`{json.dumps(node['const'])}`"
    if "enum" in node:
        return " \\| ".join(f"`{e}`" for e in node["enum"])
    kind = node.get("type", "")
    if kind == "array":
        return f"list of {_type(node.get('items', {}))}"
    if kind == "object":
        return "mapping"
    if "format" in node:
        return f"{kind} ({node['format']})" + _at_most(node)
    if "minimum" in node or "maximum" in node:
        return f"{kind} {node.get('minimum', '')}..{node.get('maximum', '')}"
    return kind + _at_most(node)


def _at_most(node: dict) -> str:
    return f", at most {node['maxLength']} characters" if "maxLength" in node else ""


def _one_line(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _section(title: str, node: dict, out: list[str], seen: set[str]) -> None:
    node, _ = _resolve(node)
    out.append(f"\n## `{title}`\n")
    if node.get("description"):
        out.append(node["description"] + "\n")
    required = set(node.get("required", []))
    props = node.get("properties", {})
    if props:
        out.append("| key | type | required | default | description |")
        out.append("|---|---|---|---|---|")
    children = []
    for key, sub in props.items():
        resolved, _ = _resolve(sub)
        default = f"`{json.dumps(resolved['default'])}`" if "default" in resolved else ""
        out.append(f"| `{key}` | {_type(sub)} | {'yes' if key in required else ''} | {default} | "
                   f"{_one_line(resolved.get('description', ''))} |")
        item = resolved.get("items", {}) if resolved.get("type") == "array" else resolved
        item, _ = _resolve(item)
        if item.get("type") == "object":
            children.append((f"{title}.{key}" + ("[]" if resolved.get("type") == "array" else ""), item))
    rules = [r for r in node.get("allOf", [])]
    for rule in rules:
        cond = rule["if"]["properties"]
        key, value = next(iter(cond.items()))
        then = rule["then"]
        needs = ", ".join(f"`{k}`" for k in then.get("required", []))
        forbids = ", ".join(f"`{k}`" for alt in then.get("not", {}).get("anyOf", []) for k in alt.get("required", []))
        parts = [f"requires {needs}" if needs else "", f"forbids {forbids}" if forbids else ""]
        out.append(f"\n- when `{key}` is `{value['const']}`: " + "; ".join(p for p in parts if p))
    for child_title, child in children:
        _section(child_title, child, out, seen)


def _value_types() -> dict[str, dict]:
    """Named scalar types ($defs that are strings or integers), documented once in a table."""
    return {name: node for name, node in load_schema()["$defs"].items()
            if node.get("type") in ("string", "integer") and "description" in node}


def _formats(out: list[str]) -> None:
    out.append("\n## Value types\n")
    out.append("| type | meaning |")
    out.append("|---|---|")
    for name, node in _value_types().items():
        length = f" At most {node['maxLength']} characters." if node.get("type") == "string" else ""
        out.append(f"| <a id=\"{name}\"></a>`{name}` | {_one_line(node['description'])}{length} |")


def render_markdown() -> str:
    schema = load_schema()
    out = [HEADER.format(description=schema["description"], max_bytes=MAX_BYTES, max_mib=MAX_BYTES >> 20)]
    _section("blueprint", schema, out, set())
    _formats(out)
    return "\n".join(out).rstrip() + "\n"
