"""Stage 8, verify: every generated artifact is checked by the tool that will consume it.

Each render family declares VALIDATORS beside the code that makes the files. A build runs
them on the bundle before it enters the store; a rejection is reported at the blueprint
line that produced the offending value (provenance, see render/_trace.py).
"""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import attrs

from .diagnostics import Diagnostic

if TYPE_CHECKING:
    from .render import Output


@attrs.frozen
class Validator:
    pattern: str              # glob on the bundle-relative path
    command: tuple[str, ...]  # {file} is replaced by the artifact's absolute path
    package: str              # Debian package providing the tool

    @property
    def tool(self) -> str:
        return self.command[0]


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
    return [v for v in seen.values() if shutil.which(v.tool) is None]


def run_validators(root: Path) -> list[Finding]:
    """Run every applicable, installed validator on every file of a bundle directory."""
    findings = []
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = file.relative_to(root).as_posix()
        for v in validators_for(rel):
            if shutil.which(v.tool) is None:
                continue
            cmd = [part.replace("{file}", str(file)) for part in v.command]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
            findings.append(Finding(rel, v, proc.returncode == 0, (proc.stdout + proc.stderr).strip()))
    return findings


def check_bundle(root: Path, outputs: dict[str, Output]) -> list[Diagnostic]:
    """Validate a bundle tree; rejections become errors at the blueprint line behind them."""
    from .render._trace import trace

    diags = [Diagnostic("tool-missing", f"{v.tool} is not installed: files it checks were not validated",
                        severity="warning", hint=f"apt-get install {v.package}") for v in missing_tools()]
    for finding in run_validators(root):
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
