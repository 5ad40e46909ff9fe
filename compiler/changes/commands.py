"""`moat plan` and `moat diff`: argument parsing and exit codes (like kubectl diff: 0 no change,
1 changes, 2 an error, 3 a plan refused because it would lose data)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..diagnostics import Diagnostic, MoatError, format_diagnostic, sort_key
from . import MARKDOWN_LIMIT

if TYPE_CHECKING:  # the analysis and its views are imported when a plan or diff runs, not on every moat start
    from .analysis import Analysis

EXIT_SAME, EXIT_CHANGES, EXIT_ERROR, EXIT_REFUSED = 0, 1, 2, 3

SIDES_HELP = """\
OLD and NEW are each one of:
  a blueprint file           compiled now (blueprints/example.yaml)
  a bundle directory         as moat built it (out/current, out/generations/3, /var/lib/moat/current)
  a generation number        of --out (2 is out/generations/2)
  a git revision             of the blueprint named after -- (main, HEAD, v1.2, a1b2c3d)
NEW left out with a blueprint after --: that blueprint as it is in the working tree."""

PLAN_EPILOG = SIDES_HELP + """

examples:
  moat plan out/current blueprints/example.yaml     what deploying the edited blueprint does
  moat plan 1 2                                     generation 1 -> 2 of out/
  moat plan main -- blueprints/example.yaml         main's blueprint -> the working tree's
  moat plan out/current bp.yaml --allow-data-loss nextcloud
                                                    accept losing nextcloud's data disks
  moat plan out/current bp.yaml --expect-no-changes
                                                    a change is an error (exit 2)

actions, most disruptive first: destroy, destroyed/shrunk/reformatted (data disks: data loss,
refused unless --allow-data-loss VM), reinstall (the OS disk is made again from image + seed),
restart, redefine (a network), create, created/grown (data disks), restart-service, reload,
install-only (read when the host is installed next), kept/unchanged.
exit codes: 0 no change, 1 changes, 2 error, 3 refused (data loss not allowed)."""

DIFF_EPILOG = SIDES_HELP + """

examples:
  moat diff main HEAD -- blueprints/example.yaml    a pull request's change, for review
  moat diff main -- blueprints/example.yaml --format markdown > comment.md
                                                    one pull-request comment (docs/ci/)
  moat diff out/current blueprints/example.yaml --stat
                                                    the sections and the file list, no file diffs
  moat diff 1 2 --format json                       for tools: format_version 1 (docs/review.md)

sections, most important first: security (new public ports or forwards, firewall openings, sshd or
TLS weakened, encryption removed, the mirror bridge, new logins, keys, sudo), data at risk, the
plan, what changed in the blueprint's meaning, then the files (those that differ only in hashes
are counted, not shown). The first line is the verdict: no change, additive, disruptive or
security-relevant.
exit codes: 0 no change, 1 changes, 2 error."""


def add_parsers(sub: argparse._SubParsersAction) -> None:
    for name, help_, epilog, func in (
        ("plan", "what going from OLD to NEW does to the server: every action and why",
         PLAN_EPILOG, cmd_plan),
        ("diff", "review a change: security meaning, data at risk, the plan, the changes, the files",
         DIFF_EPILOG, cmd_diff),
    ):
        p = sub.add_parser(name, help=help_, usage=f"moat {name} [options] OLD [NEW] [-- BLUEPRINT]", description=help_[0].upper() + help_[1:] + ".", epilog=epilog,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("old", metavar="OLD", help="what the server has (see below)")
        p.add_argument("new", metavar="NEW", nargs="?", help="what it gets (see below)")
        p.add_argument("--blueprint-after-dashes", help=argparse.SUPPRESS)  # what follows --: split_blueprint
        p.add_argument("--format", choices=("text", "markdown", "json"), default="text",
                       help="text (default), markdown (one pull-request comment) or json (format_version 1)")
        p.add_argument("--out", type=Path, default=Path("out"), help="where generation numbers are (default: out)")
        if name == "plan":
            p.add_argument("--allow-data-loss", action="append", default=[], metavar="VM",
                           help="accept destroying, shrinking or reformatting VM's data disks (repeatable)")
            p.add_argument("--expect-no-changes", action="store_true",
                           help="any change is an error (exit 2): the server already runs NEW")
        else:
            p.add_argument("--stat", action="store_true", help="text: list the changed files, without their diffs")
            p.add_argument("--max-chars", type=int, default=MARKDOWN_LIMIT, metavar="N",
                           help="markdown: cut the file diffs to stay under N characters (default %(default)s: "
                                "one GitHub comment holds 65536); the other sections are never cut")
        p.set_defaults(func=func)


def split_blueprint(argv: list[str]) -> list[str]:
    """`moat diff A B -- PATH`: argparse would take PATH for the first free positional; what
    follows `--` becomes the blueprint, whatever stands before it."""
    if len(argv) < 1 or argv[0] not in ("plan", "diff") or "--" not in argv:
        return argv
    at = argv.index("--")
    if len(argv) - at < 2:
        return argv  # argparse reports the missing blueprint
    # options after the blueprint (moat diff main -- bp.yaml --format markdown) are still options
    return argv[:at] + argv[at + 2:] + ["--blueprint-after-dashes", argv[at + 1]]


def _analysis(args: argparse.Namespace) -> Analysis:
    from .analysis import analyze
    from .sides import resolve

    blueprint = args.blueprint_after_dashes
    new_spec = args.new
    if new_spec is None:
        if blueprint is None:
            raise MoatError([Diagnostic("usage", f"moat {args.command}: name NEW, or a blueprint after --",
                                        hint=f"moat {args.command} out/current blueprints/example.yaml")])
        new_spec, new_blueprint = blueprint, None  # the working tree's blueprint
    else:
        new_blueprint = None if Path(new_spec).exists() else blueprint
    old = resolve(args.old, args.out, blueprint)
    new = resolve(new_spec, args.out, new_blueprint)
    return analyze(old, new)


def _run(args: argparse.Namespace, show) -> int:
    try:
        analysis = _analysis(args)
    except MoatError as err:
        for diag in sorted(err.diagnostics, key=lambda d: sort_key(d, err.source)):
            print(format_diagnostic(diag, err.source, f"moat {args.command}" if err.source is None else None),
                  file=sys.stderr)
        return EXIT_ERROR
    return show(analysis)


def cmd_plan(args: argparse.Namespace) -> int:
    allowed = frozenset(args.allow_data_loss)

    from . import views

    def show(analysis: Analysis) -> int:
        text = {"text": views.plan_text, "markdown": views.plan_markdown}.get(args.format)
        sys.stdout.write(text(analysis, allowed) if text else views.as_json(analysis, "plan", allowed))
        if args.expect_no_changes and analysis.changed:
            print(f"moat plan: error[unexpected-changes]: {analysis.new.label} differs from {analysis.old.label}: "
                  f"{analysis.verdict}\n  hint: the server was expected to run NEW already; deploy it, or build "
                  "what it runs", file=sys.stderr)
            return EXIT_ERROR
        if analysis.refused(allowed):
            return EXIT_REFUSED
        return EXIT_CHANGES if analysis.changed else EXIT_SAME
    return _run(args, show)


def cmd_diff(args: argparse.Namespace) -> int:
    from . import views

    def show(analysis: Analysis) -> int:
        if args.format == "markdown":
            sys.stdout.write(views.diff_markdown(analysis, args.max_chars))
        elif args.format == "json":
            sys.stdout.write(views.as_json(analysis, "diff"))
        else:
            sys.stdout.write(views.diff_text(analysis, files=not args.stat))
        return EXIT_CHANGES if analysis.changed else EXIT_SAME
    return _run(args, show)
