"""Stage 8, verify: every generated artifact is checked by the tool that will consume it.

Each render family declares VALIDATORS beside the code that makes the files. A build runs
them on the bundle before it enters the store; a rejection is reported at the blueprint
line that produced the offending value (provenance, see render/_trace.py).

A validator that cannot run (its program, or anything its wrapper needs, is absent or
unusable) did not judge the file: wrappers say so with exit status 69 and a line
"moat-tool-missing: PACKAGE..." (verify_tools/lib.sh), a command that is not there at all
cannot be started, and a shell that cannot find a program exits 126/127. All of these are a
tool-missing warning naming what to install, never a rejection of the file.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import attrs

from . import children
from .cached_build import moat_cache
from .diagnostics import Diagnostic
from .tools_tree import build as tree_build
from .tools_tree import enter as tree_enter
from .tools_tree.recipe import BUNDLE_MOUNT, Recipe, recipe

if TYPE_CHECKING:
    from .render import Output


SBIN = "/usr/local/sbin:/usr/sbin:/sbin"
VERIFY_TOOLS = Path(__file__).resolve().parent / "verify_tools"
TOOL_MISSING = 69        # EX_UNAVAILABLE, the wrappers' status for "cannot run" (lib.sh)
SHELL_NOT_FOUND = (126, 127)  # a shell could not execute / find a program
MISSING_MARK = re.compile(r"^moat-tool-missing: *(.+?) *$", re.M)


def which(program: str) -> str | None:
    """A program on PATH, or in the sbin directories a normal user's PATH lacks on Debian."""
    return shutil.which(program) or shutil.which(program, path=SBIN)


@attrs.frozen
class Validator:
    pattern: str              # glob on the bundle-relative path
    command: tuple[str, ...]  # {file} is replaced by the artifact's absolute path
    package: str              # Debian package providing the tool (pypi:NAME for Python's)
    # the real program named in messages, when command[0] is a wrapper script around it; whether
    # it (and all else the wrapper runs) is usable is the wrapper's own check, see MISSING_MARK
    needs: str = ""
    # other bundle files the tool reads besides its own, as globs relative to the file's
    # directory (firewalld.conf reads zones/*.xml); bundle files named in the command (an
    # argument PATH or NAME=PATH) count without being listed. A passed check is remembered
    # by the content of exactly these files (see inputs()).
    reads: tuple[str, ...] = ()
    # the command takes many files at once (`{file}`, a whole argument, stands for all of them)
    # and exits 0 only when it passes every one: a build starts it once per batch of files, not
    # once per file, and judges the files of a failed batch one by one (see run_validators)
    batch: bool = attrs.field(default=False)

    @batch.validator
    def _whole_file_argument(self, _attribute, value: bool) -> None:
        if value and "{file}" not in self.command:
            raise ValueError(f"a batch validator's command takes {{file}} as a whole argument: {self.command}")

    @property
    def tool(self) -> str:
        return self.needs or self.command[0]

    @property
    def is_wrapper(self) -> bool:
        return Path(self.command[0]).parent == VERIFY_TOOLS


@attrs.frozen
class Finding:
    path: str
    validator: Validator
    ok: bool
    output: str
    missing: str = ""  # the packages to install when the tool could not run (the file was not judged)

    @property
    def rejected(self) -> bool:
        return not self.ok and not self.missing

    def lines(self, file: Path) -> list[int]:
        """Line numbers of the generated file that the tool's message names."""
        name = re.escape(str(file))
        found = re.findall(rf"{name}:(\d+)", self.output) + re.findall(r"\bline (\d+)\b", self.output)
        return sorted({int(n) for n in found})


def install_hint(packages: str) -> str:
    pypi = [p[5:] for p in packages.split() if p.startswith("pypi:")]
    debian = [p for p in packages.split() if not p.startswith("pypi:")]
    hints = []
    if debian:
        hints.append(f"apt-get install {' '.join(debian)} (make system-deps installs what the tests need, as root)")
    if pypi:
        hints.append(f"pip install {' '.join(pypi)} (into the environment moat runs in)")
    return "; ".join(hints)


def validators() -> tuple[Validator, ...]:
    """The VALIDATORS declared by every render family."""
    from .render import families

    return tuple(v for family in families() for v in getattr(family, "VALIDATORS", ()))


def validators_for(rel: str) -> list[Validator]:
    return [v for v in validators() if fnmatch.fnmatchcase(rel, v.pattern)]


def missing_packages(proc: subprocess.CompletedProcess, v: Validator) -> str:
    """The packages a validator run says are missing ("" when it judged the file)."""
    marks = MISSING_MARK.findall(proc.stdout + proc.stderr)
    if marks:
        return " ".join(dict.fromkeys(" ".join(marks).split()))
    if proc.returncode == TOOL_MISSING or proc.returncode in SHELL_NOT_FOUND:
        return v.package
    return ""


def run_command(cmd: list[str], v: Validator, env: dict[str, str] | None = None,
                cwd: Path | None = None, session: tree_enter.Session | None = None) -> tuple[bool, str, str]:
    """Run one validator command, here or in a tools tree `session`: (passed, output, missing packages)."""
    try:  # in a process group of its own that dies with moat (children.py)
        proc = session.run(cmd, timeout=300) if session else children.run(cmd, timeout=300, env=env, cwd=cwd)
    except OSError as err:  # not installed, or not executable
        return False, f"{cmd[0]}: {err.strerror or err}", v.package
    output = (proc.stdout + proc.stderr).strip()
    missing = missing_packages(proc, v)
    return proc.returncode == 0 and not missing, output, missing


def missing_tools() -> dict[str, str]:
    """Packages whose tools cannot run here -> why, as each wrapper itself checks (MOAT_NEEDS_ONLY=1)."""
    probes = {v.command[0]: v for v in validators()}
    found: dict[str, str] = {}

    def probe(v: Validator) -> None:
        if not v.is_wrapper:
            if which(v.command[0]) is None:
                found.setdefault(v.package, f"{v.command[0]} is not installed")
            return
        args = [part.replace("{file}", os.devnull) for part in v.command]
        _, output, missing = run_command(args, v, env={**os.environ, "MOAT_NEEDS_ONLY": "1"})
        if missing:
            found.setdefault(missing, _reason(output, v))

    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        list(pool.map(probe, probes.values()))
    return dict(sorted(found.items()))


def _reason(output: str, v: Validator) -> str:
    lines = [line for line in output.splitlines() if line.strip() and not MISSING_MARK.match(line)]
    return lines[0] if lines else f"{v.tool} cannot run"


def cache_dir() -> Path:
    """Where passed validations are remembered (under verified/)."""
    return moat_cache()


def _fingerprint(path: str | None) -> bytes:
    """Identity of an executable or wrapper script: a new tool version invalidates the cache."""
    if not path or not os.path.exists(path):
        return b"-"
    st = os.stat(path)
    if st.st_size < 1 << 20:
        return Path(path).read_bytes()
    return f"{os.path.realpath(path)}:{st.st_size}:{st.st_mtime_ns}".encode()


def inputs(v: Validator, rel: str, root: Path) -> list[str]:
    """The bundle files a validator's verdict on `rel` depends on: the file, the files it
    declares it reads, and the bundle files its command names."""
    found = [rel]
    folder = Path(rel).parent
    for pattern in v.reads:
        found += sorted((folder / p.relative_to(root / folder)).as_posix()
                        for p in (root / folder).glob(pattern) if p.is_file())
    for part in v.command[1:]:
        named = part.rsplit("=", 1)[-1]
        if named != rel and "/" in named and not named.startswith("/") and (root / named).is_file():
            found.append(named)
    return list(dict.fromkeys(found))


def _tool_identity(v: Validator, tree: Path | None) -> bytes:
    """What a validator's verdict depends on besides the files: the command, the wrapper scripts
    (which may source their neighbours), and the programs (or the tools tree naming them all)."""
    h = hashlib.sha256()
    for part in v.command:
        h.update(b"\0" + part.encode())
    if v.is_wrapper:
        for helper in sorted(VERIFY_TOOLS.iterdir()):
            h.update(_fingerprint(str(helper)))
    if tree is not None:  # the tree's key names every tool version in it
        h.update(b"\0tree:" + tree.name.encode())
        return h.digest()
    h.update(_fingerprint(which(v.command[0]) or v.command[0]))
    if v.tool != v.command[0]:
        h.update(_fingerprint(which(v.tool)))
    return h.digest()


SHEBANG = re.compile(rb"#!.*\n")
PLAIN_COMMENT = re.compile(rb"[ \t]*#[ -~\t]*")  # printable ASCII only: no carriage return, no Unicode quotes


def judged_content(v: Validator, data: bytes) -> bytes:
    """The part of a file a validator's verdict depends on. sshd ignores comment lines
    (_sshd_judged). The kickstart checks do not judge the digits of the sums the host kickstart
    checks each bundle file against (INSTALL_SUM), so an edit of one VM does not check the
    host kickstart again. shellcheck reads comments only for
    its directives (`# shellcheck ...`) and shebangs (`#!`, misplaced or not): the other comment
    lines that open a script, before any code (so never inside a here-document or a string),
    count as empty comments, unless they hold what shellcheck warns of anywhere (a carriage
    return, a character beyond ASCII). Line numbers stay as they are, so a verdict with its messages
    holds for every file of the same judged content (scripts made per VM that name their VM in
    their header are checked once)."""
    if Path(v.command[0]).name == "sshd.sh":
        return _sshd_judged(data)
    if Path(v.command[0]).name == "kickstart.sh":
        return INSTALL_SUM.sub(rb"\g<1>" + b"0" * 64, data)
    if v.command[0] != "shellcheck":
        return data
    shebang = SHEBANG.match(data)
    head = shebang.end() if shebang else 0
    lines = data[head:].split(b"\n")
    for n, line in enumerate(lines):
        text = line.strip()
        if text and not text.startswith(b"#"):
            break
        if (PLAIN_COMMENT.fullmatch(line) and not text.startswith(b"#!")
                and b"shellcheck" not in text.lower()):
            lines[n] = b"#"
    return data[:head] + b"\n".join(lines)


# a bundle file's sha256 where the host kickstart installs it (render/kickstart.py): a word of 64
# hex digits in a plain command, which neither ksvalidator (a %post body is not its business), nor
# `sh -n`, nor shellcheck judges by its digits. Any edit changes one; the verdict holds for all.
INSTALL_SUM = re.compile(rb"^(install_file [^ \n]+ [^ \n]+ [0-7]{3,4} )[0-9a-f]{64}$", re.MULTILINE)


def _sshd_judged(data: bytes) -> bytes:
    """sshd_config without its comments: sshd skips every line whose first non-blank character
    is `#` (servconf.c), whatever it holds. Each becomes `#`, so line numbers stay: the
    sshd_config of 1000 VMs, alike but for the VM named in two comments, is checked once."""
    lines = data.split(b"\n")
    for n, line in enumerate(lines):
        if line.lstrip(b" \t").startswith(b"#"):
            lines[n] = b"#"
    return b"\n".join(lines)


def _cache_key(v: Validator, rel: str, root: Path, tree: Path | None, tools: dict | None = None) -> str:
    """A validation's identity: the tool (command, wrapper scripts, program or tools tree), the
    file's name, and the content of every file it reads, as far as the tool judges it
    (judged_content). Not the rest of the bundle: a change elsewhere re-runs nothing here, and
    files the tool cannot tell apart are judged once. `tools` memoizes _tool_identity in one run."""
    h = hashlib.sha256(b"moat-validation-v3\0" + Path(rel).name.encode())
    for name in inputs(v, rel, root):
        data = (root / name).read_bytes()
        h.update(b"\0" + (name.encode() if name != rel else b"") + b"\0"
                 + hashlib.sha256(judged_content(v, data) if name == rel else data).digest())
    if tools is None:
        tools = {}
    if v not in tools:
        tools[v] = _tool_identity(v, tree)
    h.update(tools[v])
    return h.hexdigest()


@attrs.frozen
class Toolset:
    """Where the validators come from: a tools tree (compiler/tools_tree), else this machine."""
    tree: Path | None
    notes: tuple[Diagnostic, ...] = ()


def tools_recipe() -> Recipe:
    return recipe(validators())


def toolset(mode: str | None = None, progress=lambda line: None) -> Toolset:
    """Pick the validators' tools. mode (default $MOAT_TOOLS, else auto):
    tree: the tools tree, built now if missing (an error when it cannot be);
    host: the programs installed on this machine;
    auto: the tree when it exists or can be built here, else this machine's tools with a note."""
    mode = mode or os.environ.get("MOAT_TOOLS") or "auto"
    if mode == "host":
        return Toolset(None)
    r = tools_recipe()
    tree = tree_build.current(r)
    if tree is not None:
        return Toolset(tree)
    problem = tree_build.unbuildable()
    if mode == "tree" or problem is None:
        return Toolset(tree_build.build(r, progress))
    return Toolset(None, (Diagnostic(
        "tools-tree", f"validating with this machine's tools, not moat's tools tree: {problem}",
        severity="warning", hint="run `sudo moat tools build` once (Debian/Ubuntu with debootstrap), "
        "then every build validates with the same tool versions"),))


BATCH_MAX = 200  # files per run of a batch validator: bounded command lines, and some parallelism
# fewer files than this are one run, not one per worker: each run pays the tool's start again (a
# Python tool's is a fifth of a second), and the other validators keep the workers busy meanwhile
BATCH_MIN = 16


def expand(command: tuple[str, ...], paths: list[str]) -> list[str]:
    """A validator's command for `paths`: a whole `{file}` argument becomes one argument per path;
    `{file}` inside an argument (NAME={file}) names the one file of a single-file run."""
    argv: list[str] = []
    for part in command:
        if part == "{file}":
            argv += paths
        else:
            argv.append(part.replace("{file}", paths[0]))
    return argv


def run_validators(root: Path, cache: bool = True, tree: Path | None = None) -> list[Finding]:
    """Run every applicable, installed validator on every file of a bundle directory, in parallel.

    With a tools tree, each runs inside it (every tool is there by construction); without, on
    this machine, where a validator that cannot run comes back with Finding.missing set. A
    validation whose tool and inputs (the files it reads, _cache_key) passed before is not run
    again (Nix-style: unchanged inputs are not rebuilt), and of several with the same key in
    one bundle only one runs; failures are never cached.
    """
    root = Path(os.path.abspath(root))  # tools get absolute paths, whatever the working directory
    files = sorted(p for p in root.rglob("*") if p.is_file())
    store = cache_dir() / "verified"
    jobs = [(f, f.relative_to(root).as_posix(), v) for f in files
            for v in validators_for(f.relative_to(root).as_posix())]
    tools: dict[Validator, bytes] = {}
    keys = [_cache_key(v, rel, root, tree, tools) for _f, rel, v in jobs]
    first: dict[str, int] = {}
    for index, key in enumerate(keys):
        first.setdefault(key, index)

    workers = int(os.environ.get("MOAT_VERIFY_WORKERS") or max(2, os.cpu_count() or 2))
    # with a tools tree, each worker enters it once and runs its validators there one by one
    local = threading.local()
    sessions: list[tree_enter.Session] = []

    def session() -> tree_enter.Session:
        if getattr(local, "session", None) is None:
            local.session = tree_enter.Session(tree, root, VERIFY_TOOLS)
            sessions.append(local.session)
        return local.session

    def judge(v: Validator, rels: list[str]) -> tuple[bool, str, str]:
        """One run of `v` on the files `rels` (several only for a batch validator)."""
        started = time.perf_counter()
        if tree is not None:
            argv = expand(v.command, [f"{BUNDLE_MOUNT}/{rel}" for rel in rels])
            ok, output, missing = run_command(argv, v, session=session())
            output = tree_enter.outside(output, root)
        else:
            ok, output, missing = run_command(expand(v.command, [str(root / rel) for rel in rels]), v)
        seconds = time.perf_counter() - started
        if ok:
            took[" ".join(v.command)] = seconds / len(rels)
        if os.environ.get("MOAT_VERIFY_TIMES") == "1":
            print(f"moat-verify-time {seconds:7.3f} s  {Path(v.command[0]).name}"
                  f" {rels[0]}{f' (+{len(rels) - 1})' if len(rels) > 1 else ''}", file=sys.stderr)
        return ok, output, missing

    def remember(index: int) -> None:
        if cache:
            try:
                store.mkdir(parents=True, exist_ok=True)
                (store / keys[index]).touch()
            except OSError:
                pass  # a read-only cache only costs time

    def run(index: int) -> Finding:
        _file, rel, v = jobs[index]
        ok, output, missing = judge(v, [rel])
        if ok:
            remember(index)
        return Finding(rel, v, ok, output, missing)

    def run_batch(indexes: list[int]) -> dict[int, Finding]:
        ok, output, missing = judge(jobs[indexes[0]][2], [jobs[i][1] for i in indexes])
        if ok or missing:  # passed, or could not run: the same for every file of the batch
            if ok:
                for i in indexes:
                    remember(i)
            note = f"(passed in one run for {len(indexes)} files)\n{output}".strip() if ok else output
            return {i: Finding(jobs[i][1], jobs[i][2], ok, note, missing) for i in indexes}
        return {i: run(i) for i in indexes}  # which file it rejected, and the tool's words for it

    pending = [i for i in first.values() if not (cache and (store / keys[i]).exists())]
    tasks: list[list[int]] = []
    # one batch for the files of every batch validator with the same command (the zones and the
    # policies of firewalld, the sshd_config of the host and of each VM), whatever their patterns
    batched: dict[tuple[str, ...], list[int]] = {}
    for i in pending:
        v = jobs[i][2]
        if v.batch:
            batched.setdefault(v.command, []).append(i)
        else:
            tasks.append([i])
    for group in batched.values():  # as many batches as workers, each BATCH_MIN to BATCH_MAX files
        size = min(BATCH_MAX, max(BATCH_MIN, -(-len(group) // workers)))
        tasks += [group[n:n + size] for n in range(0, len(group), size)]
    # the longest runs first, the short ones fill in around them (on few CPUs the last one to
    # start decides when all are done): as long as the same validator took per file last time
    times = store.parent / "verify-times.json"
    try:
        before = json.loads(times.read_text())
    except (OSError, ValueError):
        before = {}
    took: dict[str, float] = {}

    def expected(task: list[int]) -> float:
        return before.get(" ".join(jobs[task[0]][2].command), 0.1) * len(task)

    tasks.sort(key=expected, reverse=True)
    done = {i: Finding(jobs[i][1], jobs[i][2], True, "(cached)") for i in first.values() if i not in pending}
    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for result in pool.map(lambda task: run_batch(task) if len(task) > 1 else {task[0]: run(task[0])}, tasks):
                done.update(result)
    finally:
        for entered in sessions:
            entered.close()
    if cache and took:
        try:  # whole or not at all, whichever build writes last
            partial = times.with_name(f"{times.name}.{os.getpid()}.tmp")
            partial.write_text(json.dumps({**before, **took}, sort_keys=True, indent=0))
            os.replace(partial, times)
        except OSError:
            pass  # a read-only cache only costs time
    findings = []
    for index, (_file, rel, v) in enumerate(jobs):
        judged = done[first[keys[index]]]
        if judged.path != rel:  # the same tool on the same content: the verdict, named for this file
            judged = attrs.evolve(judged, path=rel, output=judged.output.replace(judged.path, rel))
        findings.append(judged)
    return findings


def check_bundle(root: Path, outputs: dict[str, Output], mode: str | None = None,
                 progress=lambda line: None) -> list[Diagnostic]:
    """Validate a bundle tree; rejections become errors at the blueprint line behind them, tools
    that could not run one warning per missing package set. mode and progress: see toolset()."""
    from .render._trace import trace

    root = Path(os.path.abspath(root))
    tools = toolset(mode, progress)
    findings = run_validators(root, tree=tools.tree)
    diags = list(tools.notes) + tool_missing(findings)
    for finding in findings:
        if not finding.rejected:
            continue
        out = outputs.get(finding.path)
        traced = trace(out) if out is not None else {}
        origins = [p for n in finding.lines(root / finding.path) for p in traced.get(n, [])]
        message = " ".join(finding.output.replace(str(root / finding.path), finding.path).split())
        diags.append(Diagnostic(
            "tool-rejected", f"{finding.validator.tool} rejected {finding.path}: {message[:400]}",
            origins[0] if origins else (), hint="this value passes the blueprint schema but not the tool that "
            "reads the generated file; change it, and report the gap so the schema can catch it"))
    return diags


def tool_missing(findings: list[Finding]) -> list[Diagnostic]:
    """One tool-missing warning per set of missing packages, counting the files left unchecked."""
    by_package: dict[str, list[Finding]] = {}
    for finding in findings:
        if finding.missing:
            by_package.setdefault(finding.missing, []).append(finding)
    diags = []
    for packages, group in sorted(by_package.items()):
        first = group[0]
        diags.append(Diagnostic(
            "tool-missing", f"{packages} missing or unusable ({_reason(first.output, first.validator)}): "
            f"{len({f.path for f in group})} file(s) not validated by it, such as {first.path}",
            severity="warning", hint=install_hint(packages)))
    return diags
