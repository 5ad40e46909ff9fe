"""Stage 8, verify: every generated artifact is checked by the tool that will consume it.

One table maps bundle paths to the command that validates them; `moat verify --tools`
and the test suite both use it.
"""

from __future__ import annotations

import fnmatch
import shutil
import subprocess
from pathlib import Path

import attrs


@attrs.frozen
class Validator:
    pattern: str          # glob on the bundle-relative path
    command: tuple[str, ...]  # {file} is replaced by the artifact's absolute path
    package: str          # Debian package providing the tool

    @property
    def tool(self) -> str:
        return self.command[0]


VALIDATORS = (
    Validator("host/libvirt/domains/*.xml", ("virt-xml-validate", "{file}", "domain"), "libvirt-clients"),
    Validator("host/libvirt/networks/*.xml", ("virt-xml-validate", "{file}", "network"), "libvirt-clients"),
    Validator("host/libvirt/pools/*.xml", ("virt-xml-validate", "{file}", "storagepool"), "libvirt-clients"),
    Validator("host/libvirt/volumes/*/*.xml", ("virt-xml-validate", "{file}", "storagevol"), "libvirt-clients"),
)


@attrs.frozen
class Finding:
    path: str
    validator: Validator
    ok: bool
    output: str


def validators_for(rel: str) -> list[Validator]:
    return [v for v in VALIDATORS if fnmatch.fnmatchcase(rel, v.pattern)]


def missing_tools() -> list[Validator]:
    return [v for v in VALIDATORS if shutil.which(v.tool) is None]


def run_validators(root: Path) -> list[Finding]:
    """Run every applicable validator on every file of a bundle directory."""
    findings = []
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = file.relative_to(root).as_posix()
        for v in validators_for(rel):
            cmd = [part.replace("{file}", str(file)) for part in v.command]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
            findings.append(Finding(rel, v, proc.returncode == 0, (proc.stdout + proc.stderr).strip()))
    return findings
