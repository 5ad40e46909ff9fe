"""moat deploy, moat rollback, moat generations, moat gc."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ..diagnostics import MoatError, format_diagnostic, sort_key

if TYPE_CHECKING:  # remote and the switch's path pull in the render stage: imported when a command runs
    from . import transfer
    from .remote import Target

EXIT_OK, EXIT_ERROR, EXIT_REFUSED = 0, 1, 3

DEPLOY_EPILOG = """\
what happens:
  1. the blueprint is built (as moat build; --out, default out/) and its images must be baked
  2. over SSH (the blueprint's host.uplink.address and host.sshd.port, as the first host user
     with sudo; your own ssh: keys, agent, ~/.ssh/config, known_hosts), the host says what it
     holds; only what it lacks is sent: store files by sha256, golden images, VM seeds
  3. the host's switch prints its plan, checked with the host's own tools (sshd -t, nft -c,
     firewall-offline-cmd, virt-xml-validate) and refused when it would lock you out or
     shrink or drop a data disk (--allow-data-loss VM accepts that for VM)
  4. you confirm (or --yes), and the switch installs the changed files, reloads only their
     services, reinstalls only the VMs whose image or seed changed (data disks are kept), and
     records the new generation as current only when every step succeeded

exit codes: 0 deployed (or nothing to change), 1 error, 3 refused by the host (nothing changed)

examples:
  moat deploy blueprints/example.yaml                      build, send, show the plan, ask, switch
  moat deploy --dry-run blueprints/example.yaml            send and show the plan; change nothing
  moat deploy --yes --host 192.0.2.10 blueprints/example.yaml
  moat deploy --allow-data-loss nextcloud blueprints/example.yaml
  moat deploy --ssh-option IdentityFile=~/.ssh/moat blueprints/example.yaml
"""

ROLLBACK_EPILOG = """\
The host switches back to the generation before its current one (or --to N): the files of that
generation, its services reloaded, VMs reinstalled from its image when the image differs. Its data
disks are kept. No new generation is made: `moat generations` shows which one is current.

examples:
  moat rollback blueprints/example.yaml                    back to the previous generation
  moat rollback --to 3 --yes blueprints/example.yaml
  moat rollback --dry-run blueprints/example.yaml          what it would do
"""

GENERATIONS_EPILOG = """\
examples:
  moat generations blueprints/example.yaml                 N, date, store path, commit; * = current
  moat generations --json blueprints/example.yaml
"""


GC_EPILOG = """\
Golden images take gigabytes, and every image update leaves the old one on the host for the
generations that still use it. This removes the generations older than the newest N (--keep N;
never the current one; without --keep, no generation), then whatever no remaining generation
uses: store paths, golden images, seeds. A rollback can only go to a generation that is kept.
Anything the host received in the last hour is kept (a deploy may be under way). The host says
what it would remove first, and removes exactly that, or nothing if it changed meanwhile.

examples:
  moat gc blueprints/example.yaml                          what no generation uses
  moat gc --keep 3 --yes blueprints/example.yaml           and the generations before the last 3
  moat gc --keep 1 --dry-run blueprints/example.yaml       what it would remove
"""


def add_parsers(sub: argparse._SubParsersAction) -> None:
    for name, help_, epilog, func in (
        ("deploy", "build the blueprint and switch its host to it over SSH (only what changed)", DEPLOY_EPILOG,
         cmd_deploy),
        ("rollback", "switch the host back to its previous generation", ROLLBACK_EPILOG, cmd_rollback),
        ("generations", "list the host's generations", GENERATIONS_EPILOG, cmd_generations),
        ("gc", "remove the host's old generations, and the store paths, images and seeds only they used",
         GC_EPILOG, cmd_gc),
    ):
        p = sub.add_parser(name, help=help_, description=help_[0].upper() + help_[1:] + ".", epilog=epilog,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("blueprint", metavar="BLUEPRINT", help="blueprint YAML file (names the host)")
        p.add_argument("--host", help="address of the host (default: the blueprint's host.uplink.address)")
        p.add_argument("--port", type=int, help="its sshd port (default: the blueprint's host.sshd.port)")
        p.add_argument("--user", help="log in as USER (default: the first host user with sudo)")
        p.add_argument("--ssh-option", action="append", default=[], metavar="OPTION",
                       help="passed to ssh as -o OPTION (repeatable)")
        if name != "generations":
            p.add_argument("--yes", action="store_true", help="do not ask first")
            p.add_argument("--dry-run", action="store_true", help="show the plan, change nothing")
        if name in ("deploy", "rollback"):
            p.add_argument("--allow-data-loss", action="append", default=[], metavar="VM",
                           help="accept shrinking or deleting VM's data disks (repeatable)")
        if name == "gc":
            p.add_argument("--keep", type=_at_least_zero, metavar="N",
                           help="also remove the generations before the newest N (the current one stays)")
        if name == "deploy":
            p.add_argument("--out", type=Path, default=Path("out"), help="where the bundle is built (default: out)")
            p.add_argument("--secrets", type=Path, default=Path("secrets"),
                           help="secrets directory for the VMs' seeds (default: ./secrets)")
            p.add_argument("--no-tools", action="store_true", help="build without running the validators")
        if name == "rollback":
            p.add_argument("--to", type=int, metavar="N", help="this generation instead of the previous one")
        if name == "generations":
            p.add_argument("--json", action="store_true", help="the host's answer as JSON")
        p.set_defaults(func=func)


def _at_least_zero(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of generations (0 or more)")
    return int(text)


def _fail(err: MoatError, command: str) -> int:
    for diag in sorted(err.diagnostics, key=lambda d: sort_key(d, err.source)):
        print(format_diagnostic(diag, err.source, command if err.source is None else None), file=sys.stderr)
    return EXIT_ERROR


def _say(line: str) -> None:
    print(f"moat deploy: {line}", file=sys.stderr, flush=True)


def _plan_of(blueprint: str):
    from ..pipeline import check_file
    return check_file(blueprint)


def _target(args: argparse.Namespace, plan) -> Target:
    from . import remote
    return remote.target_of(plan, args.host, args.user, args.port, tuple(args.ssh_option))


def _have(target: Target, program: bytes) -> dict:
    from . import remote
    proc = remote.run(target, remote.switch_argv(program, ["have"]), timeout=300)
    if proc.returncode != 0:
        raise remote.failure(target, "asking the host what it holds", proc)
    return json.loads(proc.stdout)


def _send(target: Target, payload: transfer.Payload, program: bytes) -> None:
    from . import remote, transfer
    cmd = remote.ssh_command(target, remote.switch_argv(program, ["receive"]))
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out: dict[str, bytes] = {}
    readers = [threading.Thread(target=lambda k=k, s=s: out.__setitem__(k, s.read()))
               for k, s in (("stdout", proc.stdout), ("stderr", proc.stderr))]
    for t in readers:
        t.start()
    last = [0.0]

    def progress(done: int, total: int) -> None:
        if time.monotonic() - last[0] > 2 or done == total:
            last[0] = time.monotonic()
            _say(f"sent {transfer.human(done)} of {transfer.human(total)}")
    try:
        transfer.write_tar(payload, proc.stdin, progress)
        proc.stdin.close()
    except BrokenPipeError:
        pass
    proc.wait()
    for t in readers:
        t.join()
    if proc.returncode != 0:
        raise remote.failure(target, "sending the bundle", subprocess.CompletedProcess(
            cmd, proc.returncode, out.get("stdout", b""), out.get("stderr", b"")))
    for line in out.get("stdout", b"").decode(errors="replace").splitlines():
        _say(line.removeprefix("moat-switch: "))


def _commit(blueprint: str) -> str | None:
    """The blueprint's git commit, `+dirty` when the file differs from it; None outside git."""
    where = Path(blueprint).resolve().parent
    head = subprocess.run(["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode != 0:
        return None
    dirty = subprocess.run(["git", "-C", str(where), "diff", "--quiet", "HEAD", "--", str(Path(blueprint).resolve())],
                           capture_output=True).returncode != 0
    return head.stdout.strip()[:12] + ("+dirty" if dirty else "")


def _confirm(args: argparse.Namespace, what: str) -> bool:
    if args.yes:
        return True
    if not sys.stdin.isatty():
        print(f"moat {args.command}: error[deploy-confirm]: nothing done without confirmation\n"
              f"  hint: run it in a terminal to answer, or add --yes once the plan above is what you want",
              file=sys.stderr)
        return False
    answer = input(f"{what} [y/N] ")
    return answer.strip().lower() in ("y", "yes")


PLAN_LINE = re.compile(r"moat-switch: plan ([0-9a-f]{16})")


def _switch(target: Target, program: str, args: list[str]) -> tuple[int, str | None]:
    """The host's switch, its output streamed: 0, or EXIT_REFUSED when it changed nothing; and the
    name of the plan it printed (a dry run), which the real switch is then held to (--plan)."""
    from . import remote
    shown: list[str] = []

    def named(line: str) -> None:
        found = PLAN_LINE.fullmatch(line)
        if found:
            shown.append(found.group(1))

    status = remote.streamed(target, remote.switch_argv(program, args), named)
    plan = shown[-1] if shown else None
    if status == 0:
        return EXIT_OK, plan
    return (EXIT_REFUSED if status == 3 else EXIT_ERROR), plan


def _as_shown(plan: str | None) -> list[str]:
    return [f"--plan={plan}"] if plan else []


def cmd_deploy(args: argparse.Namespace) -> int:
    from . import transfer
    from ..render.switch import PROGRAM as SWITCH
    from ..media.build import seed_media
    from ..media.bundle import load_bundle
    from ..media.images import baked_images
    from ..media.write import sha256
    from ..images.recipe import baked_path
    from ..pipeline import build_file

    started = time.monotonic()
    try:
        compiled, stored = build_file(args.blueprint, args.out, tools=not args.no_tools,
                                      progress=lambda line: print(f"moat tools: {line}", file=sys.stderr, flush=True))
        _say(f"bundle {stored.path}")
        target = _target(args, compiled.plan)
        bundle = load_bundle(stored.path)
        program = bundle.read(SWITCH)
        baked = baked_images(bundle)
        secrets = args.secrets if args.secrets.is_dir() else None
        seeds = [(m.vm, data, m.sha256) for m, data in seed_media(bundle, Path("."), secrets)]
        _say(f"connecting to {target}")
        have = _have(target, program)
        missing = [(i.file, baked_path(i.name, i.key)) for i in baked if i.file not in have.get("images", ())]
        images = [(file, path, sha256(path)) for file, path in missing]
        payload = transfer.payload(stored.path, have, images, seeds)
        _say(f"the host lacks {payload.describe()}")
        if payload.items:
            _send(target, payload, program)
    except MoatError as err:
        return _fail(err, "moat deploy")
    name = stored.path.name
    switch_args = ["switch", name, *(f"--seed={vm}={sha}" for vm, _, sha in seeds)]
    commit = _commit(args.blueprint)
    if commit:
        switch_args.append(f"--commit={commit}")
    switch_args += [f"--allow-data-loss={vm}" for vm in args.allow_data_loss]
    host_program = f"store/{name}/{SWITCH}"
    _show_analysis(args.out, have, stored.path)
    code, plan = _switch(target, host_program, [*switch_args, "--dry-run"])
    if code != EXIT_OK or args.dry_run:
        return code
    if not _confirm(args, f"switch {target.address} to {name}?"):
        return EXIT_ERROR
    code, _ = _switch(target, host_program, [*switch_args, *_as_shown(plan)])
    _say(f"{'done' if code == EXIT_OK else 'failed'} in {time.monotonic() - started:.1f} s "
         f"({transfer.human(payload.bytes)} sent)")
    return code


def _show_analysis(out: Path, have: dict, new: Path) -> None:
    """`moat plan`'s view of the change when the host's current bundle is in the local store."""
    from ..changes.analysis import analyze
    from ..changes.sides import from_bundle
    from ..changes.views import plan_text

    current = (have.get("current") or {}).get("store")
    old = out / "store" / current if current else None
    if old is None or not old.is_dir() or old.resolve() == new.resolve():
        return
    try:
        sys.stderr.write(plan_text(analyze(from_bundle(old, "the host"), from_bundle(new, "this bundle"))))
    except MoatError:
        pass


def cmd_rollback(args: argparse.Namespace) -> int:
    extra = ([f"--to={args.to}"] if args.to is not None else []) + [f"--allow-data-loss={vm}" for vm in args.allow_data_loss]
    return _on_current(args, ["rollback", *extra], "roll {address} back?")


def cmd_gc(args: argparse.Namespace) -> int:
    keep = [f"--keep={args.keep}"] if args.keep is not None else []
    return _on_current(args, ["gc", *keep], "remove that from {address}?")


def _on_current(args: argparse.Namespace, command: list[str], question: str) -> int:
    """A command of the host's current switch program: its dry run shown, then (confirmed) carried
    out as shown (--plan), or refused by the host if what it would do changed meanwhile."""
    from ..render.switch import PROGRAM as SWITCH
    try:
        target = _target(args, _plan_of(args.blueprint).plan)
    except MoatError as err:
        return _fail(err, f"moat {args.command}")
    program = f"current/{SWITCH}"
    code, plan = _switch(target, program, [*command, "--dry-run"])
    if code != EXIT_OK or args.dry_run:
        return code
    if not _confirm(args, question.format(address=target.address)):
        return EXIT_ERROR
    return _switch(target, program, [*command, *_as_shown(plan)])[0]


def cmd_generations(args: argparse.Namespace) -> int:
    from . import remote
    from ..render.switch import PROGRAM as SWITCH
    try:
        target = _target(args, _plan_of(args.blueprint).plan)
        proc = remote.run(target, remote.switch_argv(f"current/{SWITCH}", ["generations"]),
                          timeout=120)
        if proc.returncode != 0:
            raise remote.failure(target, "listing the generations", proc)
    except MoatError as err:
        return _fail(err, "moat generations")
    answer = json.loads(proc.stdout)
    if args.json:
        print(json.dumps(answer, indent=2, sort_keys=True))
        return EXIT_OK
    for g in answer["generations"]:
        mark = "*" if g["generation"] == answer["current"] else " "
        print(f"{mark} {g['generation']:>3}  {g.get('date', '?'):25}  {g['store']}  {g.get('commit') or ''}".rstrip())
    return EXIT_OK
