"""moat's command line: thin wrappers that parse arguments and call pipeline stages."""

from __future__ import annotations

import argparse
import gc
import json
import os
import signal
import sys
from pathlib import Path

from . import __version__, children
from .changes import commands as changes
from .diagnostics import Diagnostic, MoatError, diagnostic_record, format_diagnostic, sort_key

EXIT_INTERNAL = 70  # EX_SOFTWARE (sysexits.h): 2 stays argparse's usage error

DESCRIPTION = """\
Compile a server blueprint (YAML) into an immutable, checked bundle.

The blueprint declares a KVM host, its networks and VMs, the ports it exposes and
an optional VPS front (docs/blueprint.md). Every build is content-addressed:
the same blueprint always gives the same store path and the same bytes.
"""

EPILOG = """\
examples:
  moat check blueprints/example.yaml        validate only, write nothing
  moat check --format json bp.yaml          ... and report as JSON on stdout, for editors and CI
  moat build blueprints/example.yaml        compile into out/store/, point out/current at it
  moat build bp.yaml --out /srv/moat         use another output directory
  moat verify out/current                   check a bundle against its manifest
  moat verify --tools out/current           ... and run every artifact's real validator
  moat diff --format markdown main HEAD -- blueprints/example.yaml
                                            review a change (docs/review.md)
  moat plan out/current blueprints/example.yaml
                                            what installing the edited blueprint does
  moat vps-archive bp.yaml --secrets secrets -o front.tar.gz
                                            the VPS's files + keys; on it: tar xzf front.tar.gz &&
                                            sudo moat-vps/moat-install

every command has examples: moat COMMAND --help.
exit codes: 0 success (warnings allowed), 1 the blueprint has errors, 2 usage error (bad arguments),
            70 internal error (a bug in moat); moat plan and moat diff: 0 no change, 1 changes, 2 error,
            3 plan refused (data loss not allowed).
errors read  FILE:LINE:COL: error[RULE]: message  followed by a hint.
"""


def _print_diagnostics(diags: list[Diagnostic], source, command: str | None = None) -> None:
    """In blueprint order; a diagnostic without a blueprint (source None) is headed by `command`."""
    for diag in sorted(diags, key=lambda d: sort_key(d, source)):
        print(format_diagnostic(diag, source, command if source is None else None), file=sys.stderr)


def _summary(diags: list[Diagnostic]) -> str:
    errors = sum(d.is_error for d in diags)
    warnings = len(diags) - errors
    return f"{errors} error{'s' * (errors != 1)}, {warnings} warning{'s' * (warnings != 1)}"


CHECK_FORMAT_VERSION = 1


def cmd_check(args: argparse.Namespace) -> int:
    from .pipeline import checked_file

    status = 0
    report = []
    for path in args.blueprints:
        try:  # check stops after derive: rendering files is a build's work (and a build's bug)
            checked = checked_file(path)
            diags, source, vms = checked.warnings, checked.source, len(checked.plan.blueprint.vms)
        except MoatError as err:
            diags, source, vms = err.diagnostics, err.source, None
            status = 1
        if args.format == "json":
            errors = sum(d.is_error for d in diags)
            report.append({"file": str(path), "ok": vms is not None, "errors": errors, "warnings": len(diags) - errors,
                           "diagnostics": [diagnostic_record(d, source, None if source else str(path))
                                           for d in sorted(diags, key=lambda d: sort_key(d, source))]})
            continue
        _print_diagnostics(diags, source)
        if vms is None:
            print(f"{path}: {_summary(diags)}", file=sys.stderr)
        else:
            print(f"{path}: ok ({vms} VM{'s' * (vms != 1)}, {_summary(diags)})")
    if args.format == "json":
        json.dump({"format_version": CHECK_FORMAT_VERSION, "blueprints": report}, sys.stdout, indent=2)
        print()
    return status


def _input_keys(blueprint: str, text: bytes | None = None, lock: bytes | None = None) -> dict[bool, str] | None:
    """identity.input_key of a build, validated (True) and not (False), from the files' bytes as
    they are now, or from the text a build compiled."""
    from .identity import input_key
    from .load import lock_path

    if text is None:
        try:
            text = Path(blueprint).read_bytes()
            lock = lock_path(blueprint).read_bytes() if lock_path(blueprint).is_file() else None
        except OSError:
            return None
    return {validated: input_key(text, lock, validated) for validated in (True, False)}


def _built(stored, files: int, out: str, compiled=None) -> None:
    state = "built" if stored.created else "unchanged"
    gen = f"generation {stored.generation}" + (" (new)" if stored.generation_created else "")
    print(f"{state}: {stored.path} ({files} files, {gen})")
    previous = Path(out) / "generations" / str(stored.generation - 1)
    if stored.generation_created and previous.is_dir():
        _what_changed(previous, stored.path, stored.generation, "" if out == "out" else f" --out {out}", compiled)


def cmd_build(args: argparse.Namespace) -> int:
    from . import store

    validated = not args.no_tools
    keys = _input_keys(args.blueprint)
    # Nix-style: inputs built before (and vetted, if this build would vet) name their store path
    hit = store.recall(Path(args.out), keys[validated]) if keys else None
    if hit is not None:
        files = len(json.loads((hit / store.MANIFEST).read_text())["files"]) + 1
        _built(store.link(Path(args.out), hit), files, args.out)
        return 0

    from .pipeline import build_file

    try:
        compiled, stored = build_file(args.blueprint, Path(args.out), tools=validated,
                                      tools_mode=_tools_mode(args), progress=_tools_progress)
    except MoatError as err:
        _print_diagnostics(err.diagnostics, err.source)
        print(f"{args.blueprint}: {_summary(err.diagnostics)}; nothing written", file=sys.stderr)
        return 1
    _print_diagnostics(compiled.warnings, compiled.source)
    if not compiled.warnings:  # a build with warnings says them again next time
        lock = compiled.source.lock.text.encode() if compiled.source.lock is not None else None
        built = _input_keys(args.blueprint, compiled.source.text.encode(), lock)
        for key in {built[validated], built[False]}:
            store.remember(Path(args.out), key, stored.path)
    _built(stored, len(compiled.files) + 1, args.out, compiled)
    return 0


def _what_changed(previous: Path, new: Path, generation: int, out: str, compiled=None) -> None:
    """One line on what the new generation changes, and the command that says more (the new
    side is the build's own compiled files and plan when there is one: not read and compiled again)."""
    from .changes.analysis import analyze
    from .changes.sides import Side, from_bundle
    from .changes.views import summary

    try:
        now = Side("new", {p: o.content for p, o in compiled.files.items()}, compiled.plan, compiled.source.text) \
            if compiled is not None else from_bundle(new, "new")
        found = analyze(from_bundle(previous, "previous"), now)
    except MoatError:  # the previous generation's blueprint no longer compiles: nothing to compare
        return
    print(f"changes from generation {generation - 1}: {found.verdict} ({summary(found)}); "
          f"moat plan {generation - 1} {generation}{out} says what and why")


def _tools_mode(args: argparse.Namespace) -> str | None:
    """--host-tools, else $MOAT_TOOLS, else auto (verify.toolset)."""
    return "host" if args.host_tools else None


def _tools_progress(line: str) -> None:
    print(f"moat tools: {line}", file=sys.stderr, flush=True)


def cmd_tools(args: argparse.Namespace) -> int:
    from .tools_tree import build as tree_build
    from .tools_tree.recipe import cache_root, mirror
    from .verify import tools_recipe

    r = tools_recipe()
    if args.action == "build":
        try:
            path = tree_build.build(r, _tools_progress)
        except MoatError as err:
            _print_diagnostics(err.diagnostics, None, "moat tools")
            return 1
        print(path)
        return 0
    tree = tree_build.current(r)
    print(f"recipe   {r.key} (Debian {r.release}; mirror {mirror()})")
    print(f"packages {' '.join(r.debs)}")
    print(f"pypi     {' '.join(f'{n}=={v}' for n, v in r.pypi)}")
    print(f"tree     {tree if tree else 'not built (moat tools build)'}")
    problem = tree_build.unbuildable()
    if tree is None and problem:
        print(f"note     {problem}: builds use this machine's tools")
    print(f"cache    {cache_root()}")
    return 0 if tree else 1


def cmd_images(args: argparse.Namespace) -> int:
    from .images import lock as images_lock
    from .images.bake import bake, refresh
    from .images.recipe import ImageRecipe, baked
    from .load import lock_path
    from .pipeline import check_file

    try:
        compiled = check_file(args.blueprint)
    except MoatError as err:
        _print_diagnostics(err.diagnostics, err.source)
        return 1
    _print_diagnostics([d for d in compiled.warnings if d.rule.startswith("image-lock")], compiled.source)
    listed = compiled.files.get("host/images.json")
    images = json.loads(listed.content)["images"] if listed else []
    wanted = [i for i in images if not args.only or i["name"] in args.only]
    unknown = sorted(set(args.only or ()) - {i["name"] for i in images})
    if unknown:
        print(f"moat images: {args.blueprint} uses no image named {', '.join(unknown)} "
              f"(it uses: {', '.join(i['name'] for i in images) or 'none'})", file=sys.stderr)
        return 2
    if not images:
        print(f"moat images: {args.blueprint}: no VM is installed from an image (install: {{method: image}})",
              file=sys.stderr)
        return 0
    lock = images_lock.read(compiled.source.lock)
    entries = dict(lock.images) if lock else {}
    failed = []
    for image in wanted:
        name = image["name"]
        recipe = ImageRecipe.from_inputs(name, image["inputs"])
        if args.status:
            path = baked(recipe)
            print(f"{name}\t{image['key']}\t{path if path else 'not baked'}")
            failed += [] if path else [name]
            continue
        progress = lambda line: print(f"moat images: {line}", file=sys.stderr, flush=True)  # noqa: E731
        try:
            if args.refresh:
                done = refresh(recipe, progress)
            else:
                done = bake(recipe, progress, entries[name].packages if recipe.locked else ())
        except MoatError as err:
            _print_diagnostics(err.diagnostics, None, f"moat images ({name})")
            failed.append(name)
            continue
        if args.refresh:
            old = entries.get(name)
            current = old is not None and old.recipe == recipe.recipe_key()
            if current and old.packages == done.packages:
                progress(f"{name}: unchanged: the mirror gives the locked packages (key {done.key})")
            else:
                changed = images_lock.changes(old.packages if current else (), done.packages)
                what = (f"{len(changed)} package(s) changed: {', '.join(changed[:12])}"
                        f"{f' and {len(changed) - 12} more' if len(changed) > 12 else ''}" if current
                        else f"locked {len(done.packages)} packages" + (" (its recipe changed)" if old else ""))
                progress(f"{name}: {what}; new key {done.key} (was {image['key']})")
            entries[name] = images_lock.LockedImage(name, recipe.recipe_key(), done.packages)
        print(f"{name}\t{done.key}\t{done.path}")
    if args.refresh:
        if not args.only:  # a lock lists the images the blueprint uses, no other
            entries = {n: e for n, e in entries.items() if n in {i["name"] for i in images}}
        path = lock_path(args.blueprint)
        text = images_lock.text(entries)
        if compiled.source.lock is not None and compiled.source.lock.text == text:
            print(f"moat images: {path} unchanged", file=sys.stderr)
        elif entries or compiled.source.lock is not None:
            images_lock.write(path, text)
            print(f"moat images: wrote {path}: review and commit it; moat build gives the bundle its keys",
                  file=sys.stderr)
    return 1 if failed else 0


def cmd_verify(args: argparse.Namespace) -> int:
    from .store import verify
    from .verify import install_hint, missing_tools, run_validators, toolset

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
    try:  # the same tools a build uses: the tools tree, else (and then said) this machine's
        tools = toolset(_tools_mode(args), _tools_progress)
    except MoatError as err:
        _print_diagnostics(err.diagnostics, None, "moat verify")
        return 1
    _print_diagnostics(list(tools.notes), None, "moat verify")
    print(f"tools: {f'tools tree {tools.tree}' if tools.tree else 'this machine'}")
    missing = {} if tools.tree else missing_tools()
    if missing:
        for packages, why in missing.items():
            print(f"error[tool-missing]: {packages} missing or unusable: {why}\n  hint: {install_hint(packages)}",
                  file=sys.stderr)
        return 1
    failed = 0
    for finding in run_validators(path, tree=tools.tree):
        if finding.ok:
            print(f"ok    {finding.path} ({finding.validator.tool})")
        elif finding.missing:
            failed += 1
            print(f"{path / finding.path}: error[tool-missing]: {finding.missing} missing or unusable: "
                  f"{finding.output}\n  hint: {install_hint(finding.missing)}", file=sys.stderr)
        else:
            failed += 1
            print(f"{path / finding.path}: error[tool-rejected]: {finding.validator.tool} rejected it\n"
                  f"  {finding.output}", file=sys.stderr)
    return 1 if failed else 0


def _secrets_dir(given: str | None) -> Path | None:
    """--secrets DIR, else the directory `moat secrets` writes by default when it exists (as `make iso`
    does); the choice is printed, since the media then carry its files."""
    from .secrets import DEFAULT_DIR

    if given:
        print(f"moat iso: secrets from {given}", file=sys.stderr)
        return Path(given)
    if DEFAULT_DIR.is_dir():
        print(f"moat iso: secrets from {DEFAULT_DIR} (found; --secrets DIR for another)", file=sys.stderr)
        return DEFAULT_DIR
    print(f"moat iso: no secrets directory ({DEFAULT_DIR} does not exist; --secrets DIR to give one)", file=sys.stderr)
    return None


def cmd_iso(args: argparse.Namespace) -> int:
    import time

    from .media.build import build_media, default_output
    from .media.bundle import blueprint_base_iso, load_bundle

    tty = sys.stderr.isatty()
    state = {"what": None, "step": -1, "at": 0.0}

    def progress(what: str, done: int, total: int) -> None:
        """Long writes on stderr: one updating line on a terminal, else a line every 10%."""
        if total < 64 << 20:  # small ISOs are written in a blink
            return
        pct = 100 * done // total
        if what != state["what"]:
            state.update(what=what, step=-1, at=0.0)
        if tty:
            now = time.monotonic()
            if pct < 100 and now - state["at"] < 0.2:
                return
            state["at"] = now
            print(f"\rmoat iso: {what}: {pct:3d}% ({done >> 20}/{total >> 20} MiB)",
                  end="\n" if pct >= 100 else "", file=sys.stderr, flush=True)
        elif pct // 10 != state["step"]:
            state["step"] = pct // 10
            print(f"moat iso: {what}: {pct}% ({done >> 20}/{total >> 20} MiB)", file=sys.stderr, flush=True)

    out = Path(args.out)
    try:
        if not (out / "current").exists():
            raise MoatError([Diagnostic("iso-no-bundle", f"{out / 'current'} does not exist: no bundle to put on media",
                                        hint=f"build one first: moat build BLUEPRINT --out {out}")])
        bundle = load_bundle(out / "current")
        base = args.base_iso or blueprint_base_iso(bundle)
        output = Path(args.output) if args.output else default_output(out, bundle)
        print(f"moat iso: bundle {bundle.root}" + (f", base ISO {base}" if base else ", no base ISO (OEMDRV medium)"),
              file=sys.stderr)
        secrets_dir = _secrets_dir(args.secrets)
        result = build_media(bundle.root, output, Path(base) if base else None, secrets_dir, progress=progress)
    except MoatError as err:
        _print_diagnostics(err.diagnostics, err.source, "moat iso")
        print("moat iso: nothing written", file=sys.stderr)
        return 1
    _print_diagnostics(result.warnings, None, "moat iso")
    for medium in result.media:
        what = f"{medium.kind} {medium.vm}" if medium.vm else medium.kind
        secrets = f", secrets: {' '.join(medium.secrets)}" if medium.secrets else ""
        print(f"{what}: {medium.path} (label {medium.label}, {medium.size} bytes, sha256 {medium.sha256}{secrets})")
        if medium.boot_menus:
            print(f"  unattended by default in: {', '.join(medium.boot_menus)}")
        if medium.images:
            print(f"  golden images: {', '.join(medium.images)}")
    return 0


def cmd_vps_archive(args: argparse.Namespace) -> int:
    from .secrets import DEFAULT_DIR
    from .vps_archive import vps_archive

    try:
        result = vps_archive(args.blueprint, Path(args.secrets) if args.secrets else DEFAULT_DIR,
                             Path(args.output) if args.output else None, Path(args.out), tools=not args.no_tools,
                             tools_mode=_tools_mode(args), progress=_tools_progress)
    except MoatError as err:
        _print_diagnostics(err.diagnostics, err.source, "moat vps-archive")
        print(f"moat vps-archive: {_summary(err.diagnostics)}; nothing written", file=sys.stderr)
        return 1
    print(f"bundle {result.store}")
    print(f"wrote {result.path} ({result.size} bytes, sha256 {result.sha256}, {len(result.members)} members)")
    print(f"on the VPS {result.vps}: tar xzf {result.path.name} && sudo moat-vps/moat-install")
    print("note: it holds the VPS's OpenVPN private key (mode 0600): delete it and moat-vps/ once installed")
    return 0


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


def _colour() -> bool:
    """Colour (ANSI escapes) only on a terminal, and never with NO_COLOR set (https://no-color.org)."""
    return not os.environ.get("NO_COLOR") and sys.stdout.isatty()


def _totp_enroll(enrollments: list) -> int:
    """Print each otpauth URI, and its QR code when qrencode is installed (no Python dependency)."""
    import shutil
    import subprocess

    qrencode = shutil.which("qrencode")
    for e in enrollments:
        print(f"{e.secret.name}: {e.secret.label} (TOTP, {e.path})")
        if qrencode:
            sys.stdout.flush()
            subprocess.run([qrencode, "-t", "ANSIUTF8" if _colour() else "UTF8", "-o", "-", e.uri], check=False)
        print(e.uri)
    if not qrencode:
        print("(install qrencode to see a QR code here; or type the URI's secret into the app)", file=sys.stderr)
    return 0


def cmd_secrets(args: argparse.Namespace) -> int:
    from . import secrets

    directory = Path(args.dir) if args.dir else None
    try:
        if args.action == "totp":
            return _totp_enroll(secrets.totp_enrollments(args.blueprint, args.name, args.machine, directory))
        if args.action == "init":
            report = secrets.init(args.blueprint, directory)
        elif args.action == "rotate":
            report = secrets.rotate(args.blueprint, args.name, directory)
        else:
            d, rows, diags = secrets.status(args.blueprint, directory)
            for row in rows:
                flag = f"  ({row.problem})" if row.problem else ""
                print(f"{row.state:8} {row.secret.name:28} {d / row.file}{flag}")
            missing = sum(r.state == "missing" for r in rows)
            _print_diagnostics(diags, None, "moat secrets")
            if missing:
                print(f"{missing} file{'s' * (missing != 1)} missing: moat secrets init {args.blueprint}"
                      + (f" --dir {args.dir}" if args.dir else ""), file=sys.stderr)
            return 1 if diags else 0
    except MoatError as err:
        _print_diagnostics(err.diagnostics, err.source, "moat secrets")
        print(f"moat secrets: {_summary(err.diagnostics)}; nothing changed", file=sys.stderr)
        return 1
    for rel in report.created:
        print(f"created  {report.directory / rel}")
    for rel in report.existing:
        print(f"exists   {report.directory / rel}")
    for note in report.notes:
        print(f"note: {note}")
    if args.action == "init":
        print(f"{report.directory}: {len(report.created)} created, {len(report.existing)} already there")
    return 0


SECRETS_DESCRIPTION = (
    "Keep the secrets directory that `moat iso --secrets DIR` reads: one file per secret:NAME (and <vm>-luks for "
    "encrypted data disks), plus the OpenVPN PKI under DIR/openvpn/ when the blueprint has a vps, and one TOTP "
    "secret per user under DIR/totp/host/ and DIR/totp/vps/ when host.sshd.totp or vps.sshd.totp asks for a code "
    "after the key. Directories 0700, files 0600; nothing is overwritten (a value replaced by rotate is kept as "
    "NAME.old), except the CRL, which rotating a client's certificate re-signs.")

# action: (one-line help, description, extra positional arguments (METAVAR, help))
SECRETS_ACTIONS = {
    "init": ("create the secrets the blueprint names that are missing",
             "Create every secret BLUEPRINT names that DIR lacks (passphrases, the OpenVPN PKI, TOTP secrets); "
             "existing files are kept as they are.", ()),
    "list": ("show present/missing secrets and unsafe modes (exit 1 on a problem)",
             "List each secret BLUEPRINT needs with its file: present or missing, and files or directories "
             "others can read. Exit 1 when one is missing or unsafe.", ()),
    "rotate": ("replace one secret; the old value is kept as NAME.old",
               "Replace the secret NAME with a new value; the old one is kept as NAME.old. An OpenVPN client's "
               "certificate is re-issued and the old one revoked in the CRL.",
               (("NAME", "the secret to replace, as `moat secrets list` names it"),)),
    "totp": ("print a user's TOTP enrollment (otpauth URI and QR code)",
             "Print USER's otpauth://totp/ URI for an authenticator app, with a QR code when qrencode is "
             "installed (no colours with NO_COLOR or when stdout is not a terminal).",
             (("USER", "the user who enrolls"),)),
}

SECRETS_EXAMPLES = (
    ("init", "moat secrets init blueprints/vps-front.yaml", "create what is missing in secrets/"),
    ("init", "moat secrets init blueprints/example.yaml --dir /media/usb/secrets", "... or in another directory"),
    ("list", "moat secrets list blueprints/vps-front.yaml", "present/missing, unsafe modes (exit 1)"),
    ("rotate", "moat secrets rotate blueprints/example.yaml host-luks", "new passphrase, old one kept as host-luks.old"),
    ("rotate", "moat secrets rotate blueprints/vps-front.yaml openvpn-client-home1", "re-issue one client certificate"),
    ("totp", "moat secrets totp blueprints/vps-front.yaml alice", "alice's TOTP enrollment (URI + QR code)"),
    ("totp", "moat secrets totp blueprints/vps-front.yaml alice --machine vps", "... for the VPS's sshd only"),
    ("rotate", "moat secrets rotate blueprints/vps-front.yaml totp-host-alice", "new TOTP secret: enroll again"),
    ("", "moat iso --secrets secrets", "put them on the install media"),
)


def _examples(action: str | None = None) -> str:
    rows = [(cmd, what) for a, cmd, what in SECRETS_EXAMPLES if action in (None, a)]
    width = max(len(cmd) for cmd, _ in rows) + 2
    return "\n".join(f"  {cmd:{width}}{what}" for cmd, what in rows)


ROTATED_LUKS = "a rotated LUKS passphrase must also be changed on the machine: cryptsetup luksChangeKey DEVICE."

TOTP_ENROLLMENT = """\
TOTP enrollment: with host.sshd.totp (vps.sshd.totp), sshd asks for a code after the key, and
moat's installs put each user's secret in place as ~/.google_authenticator (the kickstart from
the medium, moat-install from the VPS archive). Before the first login, each user enrolls: run
  moat secrets totp BLUEPRINT USER [--machine host|vps] [--dir DIR]
and scan the QR code (shown when qrencode is installed) or the otpauth://totp/ URI it prints
into an authenticator app (issuer moat, account USER@MACHINE, SHA1, 6 digits, 30 s). Without
--machine: every machine that asks USER for a code. The URI is the secret: show it only to USER."""


def _host_tools_option(command: argparse.ArgumentParser) -> None:
    command.add_argument("--host-tools", action="store_true",
                         help="run the validators installed on this machine instead of moat's tools tree "
                              "(see `moat tools`; also MOAT_TOOLS=host)")


def parser(command: str | None = None) -> argparse.ArgumentParser:
    """moat's command line. With `command` "check" (the first argument), only moat and check, which
    parse `moat check ...` as the whole does (same usage lines, same help, same errors): moat check
    runs at every edit and in CI, and the parsers of the other commands are 4% of it."""
    p = argparse.ArgumentParser(prog="moat", description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"moat {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check = sub.add_parser("check", help="validate blueprints without writing anything",
                           formatter_class=argparse.RawDescriptionHelpFormatter,
                           description="Run every stage up to rendering (load, schema, model, checks, derive) and report\n"
                           "all errors and warnings. Rendering the files and running the real validators\n"
                           "on them is `moat build`'s work.",
                           epilog="""\
examples:
  moat check blueprints/example.yaml            validate, write nothing (exit 1 on errors)
  moat check blueprints/*.yaml                  every blueprint, as CI does (docs/review.md)
  moat check --format json bp.yaml              the diagnostics as one JSON document on stdout
""")
    check.add_argument("blueprints", nargs="+", metavar="BLUEPRINT", help="blueprint YAML files")
    check.add_argument("--format", choices=("text", "json"), default="text",
                       help="text: FILE:LINE:COL lines on stderr (default); json: one document on stdout, per "
                            "blueprint its diagnostics (rule, severity, file, line, column, message, hint); "
                            "same exit codes")
    check.set_defaults(func=cmd_check)
    if command == "check":
        return p
    import textwrap  # for the other commands' descriptions: 4.6 M instructions moat check does without

    from .deploy import commands as deploy

    build = sub.add_parser("build", help="compile a blueprint into the content-addressed store",
                           description=textwrap.fill("Compile BLUEPRINT into OUT/store/<hash>-<name>/ (read-only, with a manifest), "
                                       "then point OUT/current and a new OUT/generations/N at it. An unchanged "
                                       "blueprint reuses its store path; a failed build writes nothing.", 100),
                           formatter_class=argparse.RawDescriptionHelpFormatter,
                           epilog="""\
examples:
  moat build blueprints/example.yaml            into out/store/, out/current points at it
  moat build bp.yaml --out /srv/moat            another output directory
  moat build bp.yaml --no-tools                 skip the validators (quick, unchecked)
""")
    build.add_argument("blueprint", metavar="BLUEPRINT", help="blueprint YAML file")
    build.add_argument("--out", default="out", help="output directory (default: %(default)s)")
    build.add_argument("--no-tools", action="store_true",
                       help="skip the real validators (virt-xml-validate, ...) normally run before storing")
    _host_tools_option(build)
    build.set_defaults(func=cmd_build)

    verify = sub.add_parser("verify", help="check a bundle against its manifest",
                            description=textwrap.fill("Re-hash every file of a store path and compare with its manifest.json; "
                                        "with --tools, run the validator of every artifact too.", 100),
                            formatter_class=argparse.RawDescriptionHelpFormatter,
                            epilog="""\
examples:
  moat verify                                   out/current intact against its manifest?
  moat verify --tools out/generations/2         ... and every file accepted by its validator
""")
    verify.add_argument("path", nargs="?", default="out/current", help="store path (default: %(default)s)")
    verify.add_argument("--tools", action="store_true",
                        help="also run each artifact's real validator (virt-xml-validate, ...)")
    _host_tools_option(verify)
    verify.set_defaults(func=cmd_verify)

    iso = sub.add_parser("iso", help="write install media: the host's installer ISO and the VMs' seed ISOs",
                         description=textwrap.fill("Write the VMs' seed ISOs (CIDATA for cloud-init, OEMDRV for kickstart) and the "
                                     "host's install medium from the bundle at OUT/current. With --base-iso, the "
                                     "Rocky/Alma 9 installer DVD remastered to install unattended (BIOS and UEFI, DVD "
                                     "and USB stick); without, an OEMDRV ISO to attach beside the stock DVD. Same "
                                     "inputs and SOURCE_DATE_EPOCH, same bytes.", 100),
                         formatter_class=argparse.RawDescriptionHelpFormatter,
                         epilog="""\
examples:
  moat iso                                      OEMDRV host medium + seeds from out/current, ./secrets
  moat iso --base-iso Rocky-9-x86_64-dvd.iso --secrets secrets
                                                the DVD remastered to install unattended
  moat iso --output /tmp/host.iso               the host ISO elsewhere, the seeds beside it

the golden images must be baked first (sudo moat images BLUEPRINT); docs/install-media.md.
""")
    iso.add_argument("--out", default="out", help="output directory of moat build (default: %(default)s)")
    iso.add_argument("--base-iso", metavar="PATH",
                     help="installer ISO to remaster (default: host.install.base_iso of the blueprint, else none)")
    iso.add_argument("--output", metavar="FILE",
                     help="host ISO to write; the seeds go beside it (default: OUT/iso/<blueprint>/<blueprint>-host.iso)")
    iso.add_argument("--secrets", metavar="DIR",
                     help="directory with one file per secret name (secret:NAME), put on the media that read them "
                          "(default: secrets/ beside the Makefile, else ./secrets, when it exists)")
    iso.set_defaults(func=cmd_iso)

    secrets = sub.add_parser("secrets", help="make, list and rotate the secrets a blueprint needs (never in the bundle); "
                                             "enroll a user's TOTP",
                             formatter_class=argparse.RawDescriptionHelpFormatter,
                             description=textwrap.fill(SECRETS_DESCRIPTION, 100),
                             epilog=f"examples:\n{_examples()}\n\n{ROTATED_LUKS}\n\n{TOTP_ENROLLMENT}\n\n"
                                    "each action has its own help: moat secrets ACTION --help")
    actions = secrets.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, (summary, description, arguments) in SECRETS_ACTIONS.items():
        notes = {"rotate": f"\n\n{ROTATED_LUKS}", "totp": f"\n\n{TOTP_ENROLLMENT}"}.get(action, "")
        one = actions.add_parser(action, help=summary, description=textwrap.fill(description, 100),
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=f"examples:\n{_examples(action)}{notes}")
        one.add_argument("blueprint", metavar="BLUEPRINT", help="blueprint YAML file")
        for metavar, text in arguments:
            one.add_argument("name", metavar=metavar, help=text)
        if action == "totp":
            one.add_argument("--machine", choices=("host", "vps"),
                             help="the machine whose code to enroll (default: every one asking USER)")
        one.add_argument("--dir", metavar="DIR",
                         help="secrets directory (default: secrets/ beside the Makefile, else ./secrets; never under out/)")
        one.set_defaults(func=cmd_secrets, **({} if action == "totp" else {"machine": None}),
                         **({} if arguments else {"name": None}))

    vps = sub.add_parser("vps-archive", help="write the VPS front's install archive (files, script, its OpenVPN keys)",
                         formatter_class=argparse.RawDescriptionHelpFormatter,
                         description="Build BLUEPRINT as `moat build` does, then write a tar.gz for its VPS (the "
                                     "blueprint's vps:, a Debian 12 machine): moat-vps/ with the bundle's vps/ "
                                     "files, their manifest entries, the install script moat-install and the VPS's "
                                     "OpenVPN files from the secrets directory (ca.crt, crl.pem, server.crt, "
                                     "server.key, tls-crypt.key; never the CA key or a client's key). The archive "
                                     "is written 0600; same bundle, secrets and SOURCE_DATE_EPOCH, same bytes.",
                         epilog="""\
examples:
  moat secrets init blueprints/vps-front.yaml --dir secrets        once: the OpenVPN PKI
  moat vps-archive blueprints/vps-front.yaml --secrets secrets -o front.tar.gz
  scp front.tar.gz root@VPS:                                         copy it to the VPS, then on the VPS:
  tar xzf front.tar.gz && sudo moat-vps/moat-install                 install, check, start (idempotent)
  moat-vps/moat-install --help                                       what the script does
  MOAT_ROOT=/tmp/stage moat-vps/moat-install                         only the files, under /tmp/stage

the script checks every file against its sha256, installs packages (apt-get), the files (atomically),
the first Let's Encrypt certificates (the sites' DNS must point at the VPS) and starts nftables,
OpenVPN, HAProxy, fail2ban and sshd; running it again changes nothing. Delete the archive and
moat-vps/ from the VPS afterwards: they hold the server's private key.
""")
    vps.add_argument("blueprint", metavar="BLUEPRINT", help="blueprint YAML file with a vps")
    vps.add_argument("--secrets", metavar="DIR",
                     help="secrets directory of `moat secrets init` (default: secrets/ beside the Makefile)")
    vps.add_argument("-o", "--output", metavar="FILE",
                     help="archive to write (default: OUT/vps/<blueprint name>/<vps name>.tar.gz)")
    vps.add_argument("--out", default="out", help="output directory of the build (default: %(default)s)")
    vps.add_argument("--no-tools", action="store_true", help="skip the real validators when building")
    _host_tools_option(vps)
    vps.set_defaults(func=cmd_vps_archive)

    tools = sub.add_parser("tools", help="the tools tree: the Debian root whose validators every build runs",
                           formatter_class=argparse.RawDescriptionHelpFormatter,
                           description="moat checks every generated file with the program that will read it "
                                       "(sshd -t, nft -c, haproxy -c, virt-xml-validate, ksvalidator, ...). So that "
                                       "every user checks with the same versions, those programs live in a tools "
                                       "tree: a Debian 12 root built once per machine with debootstrap (as root, "
                                       "from the mirror of apt's sources or $MOAT_MIRROR), kept under "
                                       "~/.cache/moat/tools/<recipe hash> ($MOAT_TOOLS_DIR), and entered in private "
                                       "namespaces for each check. Nothing is installed on the machine itself.",
                           epilog="""\
examples:
  sudo moat tools build      build the tree now (a few minutes, once; `moat build` does it when needed)
  moat tools status          the recipe, its packages, and whether its tree is built (exit 1 if not)
  moat build bp.yaml --host-tools   validate with this machine's programs instead (MOAT_TOOLS=host)

without root or debootstrap, builds use the programs installed on the machine and say so.
""")
    tools.add_argument("action", choices=("build", "status"), help="what to do")
    tools.set_defaults(func=cmd_tools)

    images = sub.add_parser("images", help="bake the golden VM images a blueprint uses (diskimage-builder)",
                            formatter_class=argparse.RawDescriptionHelpFormatter,
                            description="A VM with `install: {method: image, image: NAME}` is installed as a copy of "
                                        "the golden image NAME (blueprint images:) plus its cloud-init seed; an update "
                                        "bakes a new image and reinstalls the VM from it, its data disks untouched. "
                                        "Each image is baked once with diskimage-builder (as root) and kept under "
                                        "~/.cache/moat/images/NAME-KEY ($MOAT_IMAGES_DIR), KEY being the hash of its "
                                        "inputs (distribution, release, elements and their files, packages, snapshot, "
                                        "diskimage-builder's version): unchanged inputs are never baked again. The "
                                        "mirrors come from apt's sources ($MOAT_MIRROR, $MOAT_SECURITY_MIRROR, "
                                        "$MOAT_UBUNTU_MIRROR). `moat iso` puts the baked images on the host's medium. "
                                        "The mirror's package versions are not among those inputs: --refresh rebakes "
                                        "every image against the mirror as it is now and records its installed "
                                        "packages in the lock beside the blueprint (NAME.images.lock, to commit); a "
                                        "locked image's key is also the hash of its packages, so any changed version "
                                        "is a new key (and the next deploy reinstalls exactly the VMs of that image), "
                                        "no change keeps the key.",
                            epilog="""\
examples:
  sudo moat images blueprints/example.yaml             bake what is not baked yet (minutes each; progress on stderr)
  moat images --status blueprints/example.yaml         NAME, KEY and path or `not baked` (exit 1 if any is not)
  sudo moat images --only nextcloud blueprints/example.yaml
  sudo moat images --refresh blueprints/example.yaml   rebake against today's mirror, update example.images.lock

stdout: one line per image, NAME<TAB>KEY<TAB>PATH. Inside each image, /etc/moat/image.json says its key
and /etc/moat/image-packages.txt its packages. With a lock, a bake that gets other versions than the lock
is an error (image-lock-mismatch): --refresh is the step that moves the lock.
""")
    images.add_argument("blueprint", metavar="BLUEPRINT", help="blueprint YAML file")
    images.add_argument("--only", action="append", metavar="NAME", help="only this image (repeatable)")
    mode = images.add_mutually_exclusive_group()
    mode.add_argument("--status", action="store_true", help="bake nothing: say which images are baked")
    mode.add_argument("--refresh", action="store_true",
                      help="bake afresh (ignore the cache) and write the packages each image got to the lock "
                           "beside the blueprint; an image whose packages did not change keeps its key")
    images.set_defaults(func=cmd_images)

    docs = sub.add_parser("docs", help="write the blueprint reference generated from the schema",
                          description=textwrap.fill("Generate docs/blueprint.md from schema/blueprint.schema.json.", 100),
                          formatter_class=argparse.RawDescriptionHelpFormatter,
                          epilog="""\
examples:
  moat docs                                     rewrite docs/blueprint.md after a schema change
  moat docs --check                             exit 1 if it is out of date (CI)
""")
    docs.add_argument("--output", default="docs/blueprint.md", help="file to write (default: %(default)s)")
    docs.add_argument("--check", action="store_true", help="fail if the file differs from the schema")
    docs.set_defaults(func=cmd_docs)
    changes.add_parsers(sub)
    deploy.add_parsers(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    own_process = argv is None  # the console script, python -m compiler.cli; not a test's call
    if own_process:
        # A run allocates mostly what it keeps to its end (modules, classes, the model) and few
        # cycles of garbage: the collector's default pass every 700 allocations examined the same
        # young objects 28 times in a moat check (7 M of its 708 M instructions).
        gc.set_threshold(100_000, *gc.get_threshold()[1:])
    argv = changes.split_blueprint(sys.argv[1:] if argv is None else list(argv))
    if own_process and argv[:1] == ["check"]:
        # moat check keeps all it builds until it exits: the collection the pipeline's pause would
        # end with walks the whole graph for nothing (0.4 s of an 8 MB blueprint's 8 s)
        gc.disable()
    args = parser(argv[0] if argv else None).parse_args(argv)
    previous = children.handle_signals()  # SIGTERM as Ctrl-C: the validators stopped, temporary trees removed
    try:
        return args.func(args)
    except MoatError as err:  # errors outside a blueprint (e.g. the store)
        _print_diagnostics(err.diagnostics, err.source)
        return 1
    except (KeyboardInterrupt, children.Terminated) as stopped:
        signum = stopped.signum if isinstance(stopped, children.Terminated) else signal.SIGINT
        print(f"moat: stopped by {signal.Signals(signum).name}: its validators were killed, "
              "nothing half-written was kept", file=sys.stderr)
        return 128 + signum
    except Exception as exc:  # noqa: BLE001 - last resort: no traceback for users
        if os.environ.get("MOAT_DEBUG"):
            import traceback

            traceback.print_exc()
        print(f"moat: internal error: {type(exc).__name__}: {exc}\n"
              "  hint: this is a bug in moat, not in your blueprint; rerun with MOAT_DEBUG=1 and report the traceback",
              file=sys.stderr)
        return EXIT_INTERNAL
    finally:
        children.restore(previous)


if __name__ == "__main__":
    sys.exit(main())
