"""One change analysis, the source of every view (`moat plan`, `moat diff`, JSON): the actions,
the security findings, the semantic notes and the changed files of going from one side to the
other, with a one-word verdict."""

from __future__ import annotations

import difflib
import re

import attrs

from .actions import DISRUPTIVE, Action, actions, informational
from .security import Finding, findings
from .semantic import Note, notes
from .sides import Side

# store hashes (base32), sha256 and image keys (hex), UUIDs: a file whose lines differ only in
# these moved with a hash, which the plan shows where it matters (image keys, instance-ids)
HASHES = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|\b[0-9a-f]{12,}\b|\b[a-z2-7]{32}\b")
VERDICTS = ("no change", "additive", "disruptive", "security-relevant")


@attrs.frozen
class FileChange:
    path: str
    status: str  # added, removed, modified
    diff: str    # unified diff ("" when not text)
    hashes_only: bool = False


@attrs.frozen
class Analysis:
    old: Side
    new: Side
    actions: tuple[Action, ...]
    findings: tuple[Finding, ...]
    notes: tuple[Note, ...]
    files: tuple[FileChange, ...]

    @property
    def changes(self) -> tuple[Action, ...]:
        """The actions that do something."""
        return tuple(a for a in self.actions if a.action not in ("unchanged", "kept"))

    @property
    def data_at_risk(self) -> tuple[Action, ...]:
        return tuple(a for a in self.actions if a.data_loss)

    @property
    def verdict(self) -> str:
        if any(f.widens for f in self.findings):
            return "security-relevant"
        if any(a.action in DISRUPTIVE for a in self.actions):
            return "disruptive"
        if self.changes or self.findings or self.notes or any(not f.hashes_only and not informational(f.path) for f in self.files):
            return "additive"
        return "no change"

    @property
    def changed(self) -> bool:
        return self.verdict != "no change"

    def refused(self, allowed: frozenset[str] = frozenset()) -> tuple[Action, ...]:
        """Data-loss actions not allowed by naming their VM."""
        return tuple(a for a in self.data_at_risk if a.vm not in allowed)

    def counts(self) -> dict[str, int]:
        found: dict[str, int] = {}
        for a in self.changes:
            found[a.action] = found.get(a.action, 0) + 1
        return found


def _text(content: bytes | None) -> list[str] | None:
    if content is None:
        return []
    try:
        return content.decode("utf-8").splitlines(keepends=True)
    except UnicodeDecodeError:
        return None


def file_changes(old: Side, new: Side) -> list[FileChange]:
    found = []
    for path in sorted(set(old.files) | set(new.files)):
        a, b = old.files.get(path), new.files.get(path)
        if a == b:
            continue
        status = "added" if a is None else "removed" if b is None else "modified"
        la, lb = _text(a), _text(b)
        if la is None or lb is None:
            found.append(FileChange(path, status, ""))
            continue
        diff = "".join(difflib.unified_diff(la, lb, f"a/{path}", f"b/{path}", n=2))
        hashes_only = status == "modified" and [HASHES.sub("#", x) for x in la] == [HASHES.sub("#", x) for x in lb]
        found.append(FileChange(path, status, diff, hashes_only))
    return found


def analyze(old: Side, new: Side) -> Analysis:
    return Analysis(old, new, tuple(actions(old, new)), tuple(findings(old, new)),
                    tuple(notes(old.plan, new.plan)), tuple(file_changes(old, new)))
