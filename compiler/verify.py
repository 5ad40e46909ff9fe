"""Stage 8, verify: every generated artifact is checked by the tool that will consume it.

Each render family declares VALIDATORS beside the code that makes the files. A build runs
them on the bundle before it enters the store; a rejection is reported at the blueprint
line that produced the offending value (provenance, see render/_trace.py).
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import attrs

from .diagnostics import Diagnostic
from .tools_tree import build as tree_build
from .tools_tree import enter as tree_enter
from .tools_tree.recipe import Recipe, recipe

if TYPE_CHECKING:
    from .render import Output


SBIN = "/usr/local/sbin:/usr/sbin:/sbin"
VERIFY_TOOLS = Path(__file__).resolve().parent / "verify_tools"


def which(program: str) -> str | None:
    """A program on PATH, or in the sbin directories a normal user's PATH lacks on Debian."""
    return shutil.which(program) or shutil.which(program, path=SBIN)


@attrs.frozen
class Validator:
    pattern: str              # glob on the bundle-relative path
    command: tuple[str, ...]  # {file} is replaced by the artifact's absolute path
    package: str              # Debian package providing the tool
    needs: str = ""           # the real program, when command[0] is a wrapper script around it

    @property
    def tool(self) -> str:
        return self.needs or self.command[0]


@attrs.frozen
class Finding:
    path: str
    validator: Validator
    ok: bool
    output: str

    def lines(self, file: Path) -> list[int]:
        """Line numbers of the generated file that the tool's message names."""
        name = re.escape(str(file))
        found = re.findall(rf"{name}:(\d+)", self.output) + re.findall(r"\bline (\d+)\b", self.output)
        return sorted({int(n) for n in found})


def install_hint(v: Validator) -> str:
    if v.package.startswith("pypi:"):
        return f"pip install {v.package[5:]} (make test installs it into .venv)"
    return f"apt-get install {v.package} (make test installs what the tests need, as root)"


def validators() -> tuple[Validator, ...]:
    """The VALIDATORS declared by every render family."""
    from .render import families

    return tuple(v for family in families() for v in getattr(family, "VALIDATORS", ()))


def validators_for(rel: str) -> list[Validator]:
    return [v for v in validators() if fnmatch.fnmatchcase(rel, v.pattern)]


def missing_tools() -> list[Validator]:
    seen: dict[str, Validator] = {}
    for v in validators():
        seen.setdefault(v.tool, v)
    return [v for v in seen.values() if which(v.tool) is None]


def cache_dir() -> Path:
    """Where passed validations are remembered: $MOAT_CACHE_DIR, else $XDG_CACHE_HOME/moat, else ~/.cache/moat."""
    if os.environ.get("MOAT_CACHE_DIR"):
        return Path(os.environ["MOAT_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "moat"


def _fingerprint(path: str | None) -> bytes:
    """Identity of an executable or wrapper script: a new tool version invalidates the cache."""
    if not path or not os.path.exists(path):
        return b"-"
    st = os.stat(path)
    if st.st_size < 1 << 20:
        return Path(path).read_bytes()
    return f"{os.path.realpath(path)}:{st.st_size}:{st.st_mtime_ns}".encode()


def _cache_key(v: Validator, rel: str, bundle_digest: str, tree: Path | None) -> str:
    h = hashlib.sha256(bundle_digest.encode() + b"\0" + rel.encode())
    for part in v.command:
        h.update(b"\0" + part.encode())
    if Path(v.command[0]).parent == VERIFY_TOOLS:  # wrappers may source their neighbours
        for helper in sorted(VERIFY_TOOLS.iterdir()):
            h.update(_fingerprint(str(helper)))
    if tree is not None:  # the tree's key names every tool version in it
        h.update(b"\0tree:" + tree.name.encode())
        return h.hexdigest()
    h.update(_fingerprint(which(v.command[0]) or v.command[0]))
    if v.tool != v.command[0]:
        h.update(_fingerprint(which(v.tool)))
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


def _bundle_digest(files: list[Path], root: Path) -> str:
    """Validators may read a file's neighbours (a unit's script, say): key on the whole tree."""
    h = hashlib.sha256()
    for file in files:
        h.update(file.relative_to(root).as_posix().encode() + b"\0" + hashlib.sha256(file.read_bytes()).digest())
    return h.hexdigest()


def run_validators(root: Path, cache: bool = True, tree: Path | None = None) -> list[Finding]:
    """Run every applicable, installed validator on every file of a bundle directory, in parallel.

    With a tools tree, each runs inside it (every tool is there by construction); without, the
    validators whose tool this machine lacks are left out (check_bundle names them). A validation that passed on exactly the same tree with the same tool is not run again
    (Nix-style: unchanged inputs are not rebuilt); failures are never cached.
    """
    files = sorted(p for p in root.rglob("*") if p.is_file())
    digest = _bundle_digest(files, root)
    store = cache_dir() / "verified"
    jobs = [(f, f.relative_to(root).as_posix(), v) for f in files
            for v in validators_for(f.relative_to(root).as_posix()) if tree is not None or which(v.tool)]

    def run(job: tuple[Path, str, Validator]) -> Finding:
        file, rel, v = job
        marker = store / _cache_key(v, rel, digest, tree)
        if cache and marker.exists():
            return Finding(rel, v, True, "(cached)")
        if tree is not None:
            cmd = tree_enter.command(tree, root, VERIFY_TOOLS, list(v.command), rel)
        else:
            cmd = [part.replace("{file}", str(file)) for part in v.command]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
        output = (proc.stdout + proc.stderr).strip()
        finding = Finding(rel, v, proc.returncode == 0, tree_enter.outside(output, root) if tree else output)
        if cache and finding.ok:
            try:
                store.mkdir(parents=True, exist_ok=True)
                marker.touch()
            except OSError:
                pass  # a read-only cache only costs time
        return finding

    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        return list(pool.map(run, jobs))


def check_bundle(root: Path, outputs: dict[str, Output], mode: str | None = None,
                 progress=lambda line: None) -> list[Diagnostic]:
    """Validate a bundle tree; rejections become errors at the blueprint line behind them.
    mode and progress: see toolset()."""
    from .render._trace import trace

    tools = toolset(mode, progress)
    diags = list(tools.notes)
    if tools.tree is None:
        diags += [Diagnostic("tool-missing", f"{v.tool} is not installed: files it checks were not validated",
                             severity="warning", hint=install_hint(v)) for v in missing_tools()]
    for finding in run_validators(root, tree=tools.tree):
        if finding.ok:
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
