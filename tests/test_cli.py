"""The command line as a user meets it: messages, exit codes, nothing written on error."""

from __future__ import annotations

import json
import re

from .conftest import FIXTURES, ROOT, run_moat

LINE = re.compile(r"^(?P<file>[^:\s]+):(?P<line>\d+):(?P<col>\d+): (?P<sev>error|warning)\[(?P<rule>[a-z-]+)\]: .+$")


def test_help_teaches_the_commands():
    proc = run_moat("--help")
    assert proc.returncode == 0
    for word in ("check", "build", "verify", "docs", "examples:", "exit codes"):
        assert word in proc.stdout


def test_check_accepts_the_examples(example):
    proc = run_moat("check", example)
    assert proc.returncode == 0, proc.stderr
    assert "ok (" in proc.stdout


def test_errors_are_located_hinted_all_at_once_and_exit_1():
    path = FIXTURES / "invalid" / "multiple-errors.yaml"
    proc = run_moat("check", path)
    assert proc.returncode == 1
    lines = proc.stderr.splitlines()
    located = [LINE.match(line) for line in lines if LINE.match(line)]
    assert {m["rule"] for m in located} == {"ip-outside-subnet", "unknown-reference", "overcommit-memory"}
    assert all(m["file"] == str(path) for m in located)
    # every error line is followed by its hint
    for i, line in enumerate(lines):
        if LINE.match(line):
            assert lines[i + 1].startswith("  hint: ")
    assert "Traceback" not in proc.stderr
    assert lines[-1].endswith("3 errors, 0 warnings")


def test_errors_are_sorted_by_line():
    proc = run_moat("check", FIXTURES / "invalid" / "multiple-errors.yaml")
    numbers = [int(m["line"]) for m in map(LINE.match, proc.stderr.splitlines()) if m]
    assert numbers == sorted(numbers)


def test_build_with_errors_writes_nothing(tmp_path):
    out = tmp_path / "out"
    proc = run_moat("build", FIXTURES / "invalid" / "port-collision.yaml", "--out", out)
    assert proc.returncode == 1
    assert "nothing written" in proc.stderr
    assert not out.exists()


def test_missing_file_is_a_clear_error(tmp_path):
    proc = run_moat("check", tmp_path / "nope.yaml")
    assert proc.returncode == 1
    assert "error[input-unreadable]" in proc.stderr and "hint:" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_not_utf8_and_empty_and_non_mapping(tmp_path):
    cases = {"bin.yaml": b"version: 1\nname: \xff\xfe\n", "empty.yaml": b"", "list.yaml": b"- 1\n- 2\n",
             "two.yaml": b"a: 1\n---\nb: 2\n", "tab.yaml": b"version: 1\n\tname: x\n",
             "cycle.yaml": b"a: &a\n  b: *a\n", "seqcycle.yaml": b"&a [*a]\n",
             "bomb.yaml": b"a: &a [x,x,x,x,x,x,x,x,x,x]\n" + b"".join(
                 f"{c}: &{c} [{', '.join(['*' + p] * 10)}]\n".encode() for p, c in zip("abcdef", "bcdefg"))}
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        proc = run_moat("check", tmp_path / name)
        assert proc.returncode == 1, name
        assert "error[" in proc.stderr and "Traceback" not in proc.stderr, (name, proc.stderr)


def test_warning_does_not_fail(tmp_path):
    text = (FIXTURES / "base.yaml").read_text().replace("    cpus: 2\n", "    cpus: 7\n", 1)
    text = text.replace("forwards:\n", "  - name: db\n    cpus: 7\n    memory: 1GiB\n    os_disk: {size: 10GiB}\n"
                        "    nics: [{network: lan, address: 192.168.10.6}]\n    install: {method: image, image: debian}\n"
                        "forwards:\n")
    (tmp_path / "warn.yaml").write_text(text)
    proc = run_moat("check", tmp_path / "warn.yaml")
    assert proc.returncode == 0, proc.stderr
    assert "warning[overcommit-cpu]" in proc.stderr
    assert "1 warning" in proc.stdout


def test_internal_error_exits_70_without_traceback(tmp_path, monkeypatch, capsys):
    from compiler import cli, pipeline

    def broken(_source):
        raise RuntimeError("boom")

    monkeypatch.setattr(pipeline, "check_source", broken)
    status = cli.main(["check", str(FIXTURES / "base.yaml")])
    err = capsys.readouterr().err
    assert status == 70  # EX_SOFTWARE: not argparse's 2, which is a usage error
    assert "internal error: RuntimeError: boom" in err and "Traceback" not in err


def test_usage_errors_exit_2_and_show_the_usage():
    for args in (("check",), ("check", "--format", "xml", "bp.yaml"), ("frobnicate",), ("secrets", "rotate", "bp.yaml")):
        proc = run_moat(*args)
        assert proc.returncode == 2, args
        assert proc.stderr.startswith("usage: moat") and "internal error" not in proc.stderr
    assert "2 usage error" in run_moat("--help").stdout and "70 internal error" in run_moat("--help").stdout


def test_check_format_json_has_every_diagnostic_of_the_text_output(example):
    bad = FIXTURES / "invalid" / "multiple-errors.yaml"
    text = run_moat("check", bad)
    proc = run_moat("check", "--format", "json", bad, example)
    assert proc.returncode == text.returncode == 1  # same exit codes as the text output
    assert proc.stderr == ""
    doc = json.loads(proc.stdout)
    assert doc["format_version"] == 1
    first, second = doc["blueprints"]
    assert (first["file"], first["ok"], first["errors"], first["warnings"]) == (str(bad), False, 3, 0)
    assert (second["file"], second["ok"], second["errors"]) == (str(example), True, 0)
    keys = {"rule", "severity", "file", "line", "column", "message", "hint"}
    assert all(set(d) == keys for d in first["diagnostics"])
    lines = text.stderr.splitlines()
    expected = [(m["file"], int(m["line"]), int(m["col"]), m["sev"], m["rule"], lines[i + 1].removeprefix("  hint: "))
                for i, m in enumerate(map(LINE.match, lines)) if m]
    assert [(d["file"], d["line"], d["column"], d["severity"], d["rule"], d["hint"]) for d in first["diagnostics"]] \
        == expected
    assert json.loads(run_moat("check", "--format", "json", example).stdout)["blueprints"][0]["ok"] is True


def test_verify_tools_on_built_example(tmp_path):
    out = tmp_path / "out"
    assert run_moat("build", ROOT / "blueprints" / "example.yaml", "--out", out).returncode == 0
    proc = run_moat("verify", "--tools", out / "current")
    assert proc.returncode == 0, proc.stderr
    assert "intact" in proc.stdout and "ok    host/libvirt/domains/onion.xml" in proc.stdout


# --- every command teaches by example -----------------------------------------------------------

def _commands(p=None, path=()):
    """(words, parser) of moat and of every subcommand, nested ones (moat secrets init) included."""
    import argparse

    from compiler.cli import parser

    p = p or parser()
    yield path, p
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, path + (name,))


def _examples(help_text: str) -> list[str]:
    """The example command lines of a help text: in its `examples:` block, each line that starts
    with `moat ` (or `sudo moat `), up to the two spaces before its explanation."""
    import re

    block = help_text.split("\nexamples:\n", 1)[1]
    lines = []
    for line in block.splitlines():
        if not line.strip():
            break
        command = re.split(r"\s{2,}", line.strip())[0]
        if re.match(r"(sudo )?moat ", command):
            lines.append(command.removeprefix("sudo "))
    return lines


def test_every_command_help_has_examples():
    """A new subcommand without an `examples:` epilog fails here: --help is where users learn."""
    missing = []
    for words, p in _commands():
        text = p.format_help()
        if "\nexamples:\n" not in text or not _examples(text):
            missing.append(" ".join(("moat",) + words))
    assert not missing, f"add an epilog 'examples:' with `moat ...` lines to: {', '.join(missing)}"


def test_help_examples_parse():
    """Every example shown in a help text is a command line moat accepts."""
    import shlex

    from compiler.changes.commands import split_blueprint
    from compiler.cli import parser

    broken = set()
    for _, p in _commands():
        for example in _examples(p.format_help()):
            argv = shlex.split(example.split(" > ")[0].split(" && ")[0])[1:]
            try:
                parser().parse_args(split_blueprint(argv))
            except SystemExit:
                broken.add(example)
    assert not broken, f"examples that do not parse: {sorted(broken)}"


def test_moat_check_parses_with_the_check_parser_alone_as_with_the_whole():
    """main builds only moat's and check's parsers for `moat check ...` (cli.parser): the same
    arguments, help, usage lines and errors as the parser of every command."""
    import contextlib
    import io

    from compiler.cli import parser

    def parsed(p, argv: list[str]) -> tuple:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                result = vars(p.parse_args(argv))
            except SystemExit as exit_:
                result = exit_.code
        return result, out.getvalue(), err.getvalue()

    for argv in (["check", "a.yaml"], ["check", "a.yaml", "b.yaml", "--format", "json"], ["check", "--format=text", "a"],
                 ["check"], ["check", "--help"], ["check", "-h", "a.yaml"], ["check", "--format", "xml", "a.yaml"],
                 ["check", "a.yaml", "--bogus"], ["check", "a.yaml", "--version"], ["check", "--", "a.yaml"],
                 ["check", "-"], ["check", "a.yaml", "build"]):
        assert parsed(parser("check"), argv) == parsed(parser(), argv), argv
