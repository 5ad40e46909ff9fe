"""moat's command line: thin wrappers that parse arguments and call pipeline stages."""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from pathlib import Path

from . import __version__
from .diagnostics import Diagnostic, MoatError, format_diagnostic, sort_key

DESCRIPTION = """\
Compile a server blueprint (YAML) into an immutable, checked bundle.

The blueprint declares a KVM host, its networks and VMs, the ports it exposes and
an optional VPS front (docs/blueprint.md). Every build is content-addressed:
the same blueprint always gives the same store path and the same bytes.
"""

EPILOG = """\
examples:
  moat check blueprints/example.yaml        validate only, write nothing
  moat build blueprints/example.yaml        compile into out/store/, point out/current at it
  moat build bp.yaml --out /srv/moat         use another output directory
  moat verify out/current                   check a bundle against its manifest
  moat verify --tools out/current           ... and run every artifact's real validator

exit codes: 0 success (warnings allowed), 1 the blueprint has errors, 2 internal error.
errors read  FILE:LINE:COL: error[RULE]: message  followed by a hint.
"""


def _print_diagnostics(diags: list[Diagnostic], source) -> None:
    for diag in sorted(diags, key=lambda d: sort_key(d, source)):
        print(format_diagnostic(diag, source), file=sys.stderr)


def _summary(diags: list[Diagnostic]) -> str:
    errors = sum(d.is_error for d in diags)
    warnings = len(diags) - errors
    return f"{errors} error{'s' * (errors != 1)}, {warnings} warning{'s' * (warnings != 1)}"


def cmd_check(args: argparse.Namespace) -> int:
    from .pipeline import check_file

    status = 0
    for path in args.blueprints:
        try:
            compiled = check_file(path)
        except MoatError as err:
            _print_diagnostics(err.diagnostics, err.source)
            print(f"{path}: {_summary(err.diagnostics)}", file=sys.stderr)
            status = 1
            continue
        _print_diagnostics(compiled.warnings, compiled.source)
        print(f"{path}: ok ({len(compiled.files)} files, {_summary(compiled.warnings)})")
    return status


def cmd_build(args: argparse.Namespace) -> int:
    from .pipeline import build_file

    try:
        compiled, stored = build_file(args.blueprint, Path(args.out), tools=not args.no_tools)
    except MoatError as err:
        _print_diagnostics(err.diagnostics, err.source)
        print(f"{args.blueprint}: {_summary(err.diagnostics)}; nothing written", file=sys.stderr)
        return 1
    _print_diagnostics(compiled.warnings, compiled.source)
    state = "built" if stored.created else "unchanged"
    gen = f"generation {stored.generation}" + (" (new)" if stored.generation_created else "")
    print(f"{state}: {stored.path} ({len(compiled.files) + 1} files, {gen})")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from .store import verify
    from .verify import missing_tools, run_validators

    path = Path(args.path).resolve()
    problems = verify(path)
    for problem in problems:
        print(f"{path}: error[store-corrupt]: {problem}", file=sys.stderr)
    if problems:
        print("  hint: store paths are read-only; rebuild the blueprint into a fresh out/ directory", file=sys.stderr)
        return 1
    print(f"{path}: intact")
    if not args.tools:
        return 0
    missing = missing_tools()
    if missing:
        for v in missing:
            print(f"error[tool-missing]: {v.tool} is not installed\n  hint: apt-get install {v.package}", file=sys.stderr)
        return 1
    failed = 0
    for finding in run_validators(path):
        if finding.ok:
            print(f"ok    {finding.path} ({finding.validator.tool})")
        else:
            failed += 1
            print(f"{path / finding.path}: error[tool-rejected]: {finding.validator.tool} rejected it\n"
                  f"  {finding.output}", file=sys.stderr)
    return 1 if failed else 0


def cmd_docs(args: argparse.Namespace) -> int:
    from .docs import render_markdown

    text = render_markdown()
    if args.check:
        current = Path(args.output).read_text() if Path(args.output).exists() else ""
        if current != text:
            print(f"{args.output} is out of date with the schema; run: moat docs", file=sys.stderr)
            return 1
        return 0
    Path(args.output).write_text(text)
    print(f"wrote {args.output}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="moat", description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"moat {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check = sub.add_parser("check", help="validate blueprints without writing anything",
                           description="Run every stage up to rendering and report all errors and warnings.")
    check.add_argument("blueprints", nargs="+", metavar="BLUEPRINT", help="blueprint YAML files")
    check.set_defaults(func=cmd_check)

    build = sub.add_parser("build", help="compile a blueprint into the content-addressed store",
                           description="Compile BLUEPRINT into OUT/store/<hash>-<name>/ (read-only, with a manifest), "
                                       "then point OUT/current and a new OUT/generations/N at it. An unchanged "
                                       "blueprint reuses its store path; a failed build writes nothing.")
    build.add_argument("blueprint", metavar="BLUEPRINT", help="blueprint YAML file")
    build.add_argument("--out", default="out", help="output directory (default: %(default)s)")
    build.add_argument("--no-tools", action="store_true",
                       help="skip the real validators (virt-xml-validate, ...) normally run before storing")
    build.set_defaults(func=cmd_build)

    verify = sub.add_parser("verify", help="check a bundle against its manifest",
                            description="Re-hash every file of a store path and compare with its manifest.json; "
                                        "with --tools, run the validator of every artifact too.")
    verify.add_argument("path", nargs="?", default="out/current", help="store path (default: %(default)s)")
    verify.add_argument("--tools", action="store_true",
                        help="also run each artifact's real validator (virt-xml-validate, ...)")
    verify.set_defaults(func=cmd_verify)

    docs = sub.add_parser("docs", help="write the blueprint reference generated from the schema",
                          description="Generate docs/blueprint.md from schema/blueprint.schema.json.")
    docs.add_argument("--output", default="docs/blueprint.md", help="file to write (default: %(default)s)")
    docs.add_argument("--check", action="store_true", help="fail if the file differs from the schema")
    docs.set_defaults(func=cmd_docs)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except MoatError as err:  # errors outside a blueprint (e.g. the store)
        _print_diagnostics(err.diagnostics, err.source)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - last resort: no traceback for users
        if os.environ.get("MOAT_DEBUG"):
            traceback.print_exc()
        print(f"moat: internal error: {type(exc).__name__}: {exc}\n"
              "  hint: this is a bug in moat, not in your blueprint; rerun with MOAT_DEBUG=1 and report the traceback",
              file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
