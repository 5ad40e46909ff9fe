"""Input limits (issue 13): how big a blueprint, how long a string, which characters.

- a blueprint over load.MAX_BYTES is refused before it is parsed, at 1:1, with a hint;
- every string of the schema has a maxLength, and an over-long value is a located error whose
  message quotes the value shortened (diagnostics.quote), never the whole of it;
- a character that is invisible or changes the text's direction (what str.isprintable() refuses),
  inserted anywhere (a value, a key, a comment, or written by an escape), is a located
  invisible-character error naming its code point.
"""

from __future__ import annotations

import re
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compiler.diagnostics import MoatError, format_diagnostic, position_of, quote
from compiler.load import MAX_BYTES, MAX_INVISIBLE, load_text
from compiler.pipeline import check_file, compile_source
from compiler.schema import _UNSAFE, load_schema

from . import strategies as S
from .conftest import EXAMPLES, FIXTURES, run_moat
from .test_docs_and_schema import walk

BASE = (FIXTURES / "base.yaml").read_text()


def refused(text: str, name: str = "limits.yaml") -> MoatError:
    with pytest.raises(MoatError) as info:
        compile_source(load_text(text, name))
    return info.value


def padded(size: int) -> str:
    """base.yaml grown with comment lines to exactly `size` bytes."""
    line = "# " + "x" * 77 + "\n"
    text = BASE + line * ((size - len(BASE)) // len(line))
    return text + "#" * (size - len(text.encode()) - 1) + "\n"


# --- 1. size -------------------------------------------------------------------------------------


def test_a_blueprint_over_max_bytes_is_refused_before_it_is_parsed(tmp_path):
    path = tmp_path / "huge.yaml"
    path.write_text(padded(MAX_BYTES + 1))
    started = time.monotonic()
    with pytest.raises(MoatError) as info:
        check_file(path)
    assert time.monotonic() - started < 1.0, "refused without parsing 4 MiB"
    [diag] = info.value.diagnostics
    assert diag.rule == "blueprint-too-large" and diag.hint
    assert position_of(diag, info.value.source) == (1, 1)
    assert f"{MAX_BYTES + 1} bytes" in diag.message
    # the same from text (a git revision's blueprint: moat diff, moat plan)
    assert refused(padded(MAX_BYTES + 1)).diagnostics[0].rule == "blueprint-too-large"
    proc = run_moat("check", path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith(f"{path}:1:1: error[blueprint-too-large]: ")
    assert "\n  hint: " in proc.stderr


def test_a_blueprint_of_max_bytes_is_read():
    text = padded(MAX_BYTES)
    assert len(text.encode()) == MAX_BYTES
    assert compile_source(load_text(text, "big.yaml")).files


def test_a_too_large_image_lock_is_refused_too(tmp_path):
    blueprint = tmp_path / "tiny.yaml"
    blueprint.write_text(BASE)
    (tmp_path / "tiny.images.lock").write_text("{}" + " " * MAX_BYTES)
    with pytest.raises(MoatError) as info:
        check_file(blueprint)
    assert [d.rule for d in info.value.diagnostics] == ["blueprint-too-large"]
    assert "image lock" in info.value.diagnostics[0].message


# --- quoting values in messages --------------------------------------------------------------------


def test_quote_shortens_long_values_and_keeps_short_ones():
    assert quote("web") == "'web'"
    long = quote("x" * 20_000)
    assert len(long) < 100 and long.startswith("'xxx") and "20000 characters" in long
    assert "\u202e" not in quote("a\u202eb"), "a quoted value shows its invisible characters escaped"


HUGE = "x" * 20_000  # not digits: YAML would read an integer (and refuse one of 20,000 digits)
HUGE_VALUES = {
    "description (maxLength)": ("    cpus: 2\n", f"    description: {HUGE}\n    cpus: 2\n"),
    "address (format)": ("address: 192.168.10.5", f"address: {HUGE}"),
    "unknown key": ("    cpus: 2\n", f"    ? k{HUGE}\n    : 1\n    cpus: 2\n"),  # explicit: a plain key is 1024 at most
    "proto (enum)": ("proto: tcp", f"proto: x{HUGE}"),
    "size (pattern)": ("memory: 2GiB", f"memory: {HUGE}GiB"),
    "list (maxItems)": ("    nics:\n", f"    data_disks: [{', '.join([f'{{name: d, size: 1GiB, mount: /m{HUGE[:200]}}}'] * 30)}]\n"
                                       "    nics:\n"),
    "list (type)": ("    cpus: 2\n", f"    cpus: [{', '.join(['2'] * 5000)}]\n"),
}


@pytest.mark.parametrize("case", sorted(HUGE_VALUES))
def test_an_error_about_a_huge_value_is_one_short_line(case):
    old, new = HUGE_VALUES[case]
    assert old in BASE
    err = refused(BASE.replace(old, new, 1))
    assert not any(d.rule.startswith("yaml-") for d in err.diagnostics)
    text = "\n".join(format_diagnostic(d, err.source) for d in err.diagnostics)
    assert len(text) < 600, text[:600]


def test_the_cli_does_not_echo_a_huge_value(tmp_path):
    path = tmp_path / "huge-value.yaml"
    path.write_text(BASE.replace("    cpus: 2\n", f"    description: {HUGE}\n    cpus: 2\n", 1))
    proc = run_moat("check", path)
    assert proc.returncode == 1 and f"{path}:24:18: error[schema-length]: " in proc.stderr
    assert len(proc.stderr) < 600, proc.stderr[:600]


def test_a_check_quotes_a_long_path_short():
    """The semantic checks run on schema-valid data, where a path is still up to 4095 characters."""
    mount = "/etc/" + "/".join(["e" * 200] * 19)
    err = refused(BASE.replace("    os_disk: {size: 20GiB}\n", "    os_disk: {size: 20GiB}\n    data_disks: [{name: d, "
                               f"size: 1GiB, mount: {mount}}}]\n"))
    assert [d.rule for d in err.diagnostics] == ["mount-collision"]
    assert len(err.diagnostics[0].message) < 200, err.diagnostics[0].message[:300]


# --- 2. lengths --------------------------------------------------------------------------------------


def test_every_string_in_the_schema_has_a_max_length():
    """A field added without one fails here: its consumer has a limit, say it."""
    for path, node in walk(load_schema()):
        kind = node.get("type")
        if kind == "string" or (isinstance(kind, list) and "string" in kind):
            assert isinstance(node.get("maxLength"), int), f"{path} has no maxLength"


VPS = """vps:
  name: front
  address: 198.51.100.20
  openvpn:
    subnet: 172.28.0.0/24
    clients: [{{name: home1, address: 172.28.0.10}}]
  client: home1
  acme:
    email: {email}
  sites: [{{host: cloud.example.org, client: home1}}]
"""
LONG = 20_000
OVER_LONG = {  # field: (blueprint, what the line of the error holds, rule)
    "mount point": (BASE.replace("    os_disk: {size: 20GiB}\n", "    os_disk: {size: 20GiB}\n    data_disks: [{name: d, "
                                 f"size: 1GiB, mount: /{'/'.join(['m' * 200] * (LONG // 201))}}}]\n"), "mount:",
                    "schema-length"),
    "mount point, one part": (BASE.replace("    os_disk: {size: 20GiB}\n", "    os_disk: {size: 20GiB}\n    "
                                           f"data_disks: [{{name: d, size: 1GiB, mount: /srv/{'m' * 256}}}]\n"),
                              "mount:", "schema-format"),
    "pool path": (BASE.replace("    - {name: images, type: logical}\n", "    - {name: images, type: logical}\n"
                               f"    - {{name: isos, type: dir, path: /{'p' * LONG}}}\n"), "path:", "schema-length"),
    "acme e-mail": (BASE + VPS.format(email="a@" + "m" * LONG + ".org"), "email:", "schema-length"),
    "ssh key": (BASE.replace("ops@laptop", "ops@laptop" + "A" * LONG), "ssh-ed25519", "schema-length"),
    "domain": (BASE.replace("domain: example.com", f"domain: {'d' * LONG}.com"), "domain:", "schema-length"),
    "interface": (BASE.replace("interface: eth0", "interface: eth0123456789abcd"), "interface:", "schema-length"),
}


@pytest.mark.parametrize("field", sorted(OVER_LONG))
def test_an_over_long_value_is_a_located_error(field):
    text, holds, rule = OVER_LONG[field]
    line = text[:text.index(holds)].count("\n") + 1
    err = refused(text)
    assert [(d.rule, position_of(d, err.source)[0]) for d in err.diagnostics] == [(rule, line)]
    assert all(len(d.message) < 200 and d.hint for d in err.diagnostics)


# --- 3. invisible characters ----------------------------------------------------------------------


NAMED = ["\u202e", "\u202d", "\u2066", "\u2067", "\u2068", "\u2069", "\ufeff", "\u200b", "\u200c", "\u200d",
         "\u200e", "\u200f", "\u061c", "\u00ad", "\u00a0", "\u2060", "\u2028", "\u3000", "\ue000", "\x00", "\x1b",
         "\x7f", "\x85", "\U000e0041"]
# classes, not a list: named offenders, any format character, any non-printable character
invisible = st.one_of(st.sampled_from(NAMED),
                      st.characters(whitelist_categories=("Cf", "Zl", "Zp", "Co")),
                      st.characters(blacklist_categories=("Cs",)).filter(
                          lambda c: not c.isprintable() and c not in "\t\n\r"))
TEXTS = [BASE] + [p.read_text() for p in EXAMPLES]
LIMITS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def where(text: str, index: int) -> tuple[int, int]:
    return text.count("\n", 0, index) + 1, index - (text.rfind("\n", 0, index) + 1) + 1


def spans(text: str, kind: str) -> list[tuple[int, int]]:
    """(start, end) of every key, value or comment written in `text`."""
    pattern = {"key": r"^[ -]*([A-Za-z_]+):", "value": r"^[ -]*[A-Za-z_]+: ([^#{\[\n]+?)\s*(?:#.*)?$",
               "comment": r"(#[^\n]*)$"}[kind]
    return [m.span(1) for m in re.finditer(pattern, text, re.M) if m.end(1) > m.start(1)]


def assert_located(text: str, char: str, index: int) -> None:
    err = refused(text)
    located = [(d.rule, position_of(d, err.source)) for d in err.diagnostics]
    assert ("invisible-character", where(text, index)) in located, located
    found = next(d for d in err.diagnostics if position_of(d, err.source) == where(text, index))
    assert f"U+{ord(char):04X}" in found.message and f"column {where(text, index)[1]}" in found.message


@LIMITS
@given(data=st.data(), char=invisible, kind=st.sampled_from(["key", "value", "comment", "anywhere"]))
def test_an_invisible_character_written_anywhere_is_located(data, char, kind):
    """Pasted into a key, a value or a comment, or anywhere at all (even where it breaks the
    YAML): the error is at its own line and column, and names its code point."""
    text = data.draw(st.sampled_from(TEXTS))
    if kind == "anywhere":
        index = data.draw(st.integers(0, len(text)))
    else:
        start, end = data.draw(st.sampled_from(spans(text, kind)))
        index = data.draw(st.integers(start, end))
    assert_located(text[:index] + char + text[index:], char, index)


def test_a_file_full_of_invisible_characters_lists_the_first_hundred_and_counts_the_rest():
    text = BASE.replace("  cpus: 8\n", "  cpus: 8\n" + "#\u200b\n" * 150)
    diags = refused(text).diagnostics
    assert [d.rule for d in diags] == ["invisible-character"] * (MAX_INVISIBLE + 1)
    assert diags[-1].message == f"{150 - MAX_INVISIBLE} more invisible characters from line {12 + MAX_INVISIBLE} on"


@LIMITS
@given(data=st.data(), chars=st.lists(invisible, min_size=2, max_size=6))
def test_several_invisible_characters_are_each_located_at_once(data, chars):
    """A Trojan-Source-like line (an override and its pop) or several pastes: every one reported."""
    text = data.draw(st.sampled_from(TEXTS))
    spots = sorted(data.draw(st.lists(st.integers(0, len(text)), min_size=len(chars), max_size=len(chars))))
    out, last, placed = [], 0, []
    for n, (spot, char) in enumerate(zip(spots, chars)):
        out += [text[last:spot], char]
        placed.append(spot + n)
        last = spot
    written = "".join(out) + text[last:]
    err = refused(written)
    located = {position_of(d, err.source) for d in err.diagnostics if d.rule == "invisible-character"}
    assert {where(written, i) for i in placed} == located
    assert len(err.diagnostics) == len(chars)


def string_paths(data, path=()):
    """(path, is_key) of every key and string value."""
    if isinstance(data, dict):
        for key, value in data.items():
            yield path + (key,), True
            yield from string_paths(value, path + (key,))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            yield from string_paths(value, path + (i,))
    elif isinstance(data, str):
        yield path, False


def inserted(data, path, is_key, char, at):
    """A copy of `data` with `char` put into the key or string value at `path`."""
    if not path:
        return data[:at] + char + data[at:]
    head, rest = path[0], path[1:]
    if isinstance(data, list):
        return [inserted(v, rest, is_key, char, at) if i == head else v for i, v in enumerate(data)]
    out = {}
    for key, value in data.items():
        if key == head and is_key and not rest:
            out[key[:at] + char + key[at:]] = value
        elif key == head:
            out[key] = inserted(value, rest, is_key, char, at)
        else:
            out[key] = value
    return out


@LIMITS
@given(data=st.data(), char=invisible)
def test_an_invisible_character_in_any_key_or_value_is_located_however_written(data, char):
    """The same character in the data of a valid blueprint, dumped as YAML dumps it (raw, or as a
    `\\u....` escape in a quoted string): refused at that key's or value's line."""
    text = data.draw(st.sampled_from(TEXTS))
    source = load_text(text, "valid.yaml")
    path, is_key = data.draw(st.sampled_from(list(string_paths(source.data))))
    name = path[-1] if is_key else source.data
    for part in ([] if is_key else path):
        name = name[part]
    at = data.draw(st.integers(0, len(name)))
    dumped = S.dump_yaml(inserted(source.data, path, is_key, char, at))
    line = load_text(S.dump_yaml(source.data), "clean.yaml").locate(path, key=is_key)[0]  # the same layout
    err = refused(dumped)
    rules = {(d.rule, position_of(d, err.source)[0]) for d in err.diagnostics}
    # characters that could also break out of a config (controls, U+2028) keep their older rule
    wanted = {"invisible-character", "unsafe-string"} if _UNSAFE.search(char) else {"invisible-character"}
    assert any((rule, line) in rules for rule in wanted), (rules, line)
    if not _UNSAFE.search(char):
        assert any(f"U+{ord(char):04X}" in d.message for d in err.diagnostics)
