"""The schema is complete and strict, and docs/blueprint.md is generated from it."""

from __future__ import annotations

from compiler.docs import render_markdown
from compiler.schema import load_schema, validator

from .conftest import ROOT


def walk(node, path="#"):
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            yield from walk(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from walk(value, f"{path}/{i}")


def test_schema_is_valid_2020_12():
    schema = load_schema()
    assert schema["$schema"].endswith("2020-12/schema")
    # moat trusts its own schema at run time (checking it cost 0.14 s a start); here it is checked
    type(validator()).check_schema(schema)
    assert schema["required"][0] == "version" and schema["properties"]["version"] == {
        "description": schema["properties"]["version"]["description"], "const": 1}


def test_every_object_is_closed_and_every_property_documented():
    for path, node in walk(load_schema()):
        if node.get("type") == "object":
            assert node.get("additionalProperties") is False, path
        if path.endswith("/properties") and "/if/" not in path:
            for key, prop in node.items():
                described = "description" in prop or (
                    "$ref" in prop and "description" in load_schema()["$defs"][prop["$ref"].rsplit("/", 1)[1]])
                assert described, f"{path}/{key} has no description"


def test_docs_are_generated_from_the_schema():
    assert (ROOT / "docs" / "blueprint.md").read_text() == render_markdown(), "run: make docs"


def test_docs_mention_every_property():
    text = render_markdown()
    for path, node in walk(load_schema()):
        if path.endswith("/properties") and "/if/" not in path:
            for key in node:
                assert f"`{key}`" in text, key


def test_examples_name_their_schema_for_editors_and_the_id_claims_no_domain():
    """yaml-language-server reads `$schema=` from the first comment, relative to the YAML file."""
    import json
    from urllib.parse import urlsplit

    import jsonschema
    from ruamel.yaml import YAML

    from .conftest import EXAMPLES

    for example in EXAMPLES:
        first = example.read_text().splitlines()[0]
        assert first.startswith("# yaml-language-server: $schema="), example.name
        schema_file = (example.parent / first.split("$schema=", 1)[1]).resolve()
        assert schema_file == ROOT / "schema" / "blueprint.schema.json"
        data = json.loads(json.dumps(YAML(typ="safe").load(example.read_text())))
        jsonschema.Draft202012Validator(json.loads(schema_file.read_text())).validate(data)
    # no hostname we do not own (moat.invalid was one): a URN names the schema; files find it by path
    schema_id = urlsplit(load_schema()["$id"])
    assert schema_id.scheme == "urn" and not schema_id.netloc and schema_id.path.startswith("moat:")
