"""The views of one analysis: `plan` (the operator's: every action and why, most disruptive first)
and `diff` (the reviewer's: security first, then data at risk, the plan, what changed, the files),
each as text, markdown (one pull-request comment) or JSON (docs/review.md documents its shape)."""

from __future__ import annotations

import json

from .actions import Action
from . import MARKDOWN_LIMIT
from .analysis import Analysis

FORMAT_VERSION = 1
SYMBOL = {"destroy": "-", "destroyed": "!", "shrunk": "!", "reformatted": "!", "reinstall": "-/+",
          "restart": "~", "redefine": "~", "create": "+", "created": "+", "grown": "~", "restart-service": "~",
          "reload": "~", "install-only": "~", "kept": " ", "unchanged": " "}
KIND = {"vm": "VM", "data-disk": "data disk", "network": "network", "service": "service",
        "vps-service": "VPS service"}


def summary(analysis: Analysis) -> str:
    counts = analysis.counts()
    parts = [f"{n} {action}" for action, n in counts.items()]
    widening = sum(f.widens for f in analysis.findings)
    if widening:
        parts.insert(0, f"{widening} security finding{'s' * (widening != 1)}")
    if analysis.data_at_risk:
        parts.insert(0, f"{len(analysis.data_at_risk)} data disk{'s' * (len(analysis.data_at_risk) != 1)} at risk")
    return ", ".join(parts) or "nothing to do"


def _action_line(a: Action, allowed: frozenset[str] = frozenset()) -> str:
    flag = ""
    if a.data_loss:
        flag = "  [DATA LOSS: allowed]" if a.vm in allowed else "  [DATA LOSS: refused]"
    why = f": {'; '.join(a.reasons)}" if a.reasons else ""
    return f"{SYMBOL[a.action]:>3} {a.action} {KIND[a.kind]} {a.subject}{why}{flag}"


def plan_text(analysis: Analysis, allowed: frozenset[str] = frozenset()) -> str:
    lines = [f"moat plan: {analysis.old.label} -> {analysis.new.label}: {analysis.verdict} ({summary(analysis)})"]
    lines += [_action_line(a, allowed) for a in analysis.changes]
    for action in ("unchanged", "kept"):
        quiet = [a.subject for a in analysis.actions if a.action == action]
        if quiet:
            lines.append(f"    {action}: {', '.join(quiet)}")
    refused = analysis.refused(allowed)
    if refused:
        vms = sorted({a.vm for a in refused if a.vm})
        lines.append(f"refused: this plan loses data on {', '.join(a.subject for a in refused)}; "
                     f"to accept that: {' '.join(f'--allow-data-loss {v}' for v in vms)}")
    return "\n".join(lines) + "\n"


def diff_text(analysis: Analysis, files: bool = True) -> str:
    lines = [f"moat diff: {analysis.old.label} -> {analysis.new.label}: {analysis.verdict} ({summary(analysis)})"]
    if analysis.findings:
        lines += ["", "security:"]
        lines += [f"  {'!' if f.widens else ' '} [{f.kind}] {f.message}" for f in analysis.findings]
    if analysis.data_at_risk:
        lines += ["", "data at risk:"] + [f"  ! {a.subject}: {a.action}: {'; '.join(a.reasons)}" for a in analysis.data_at_risk]
    if analysis.changes:
        lines += ["", "plan:"] + [" " + _action_line(a) for a in analysis.changes]
    if analysis.notes:
        lines += ["", "changes:"] + [f"  - {n.message}" for n in analysis.notes]
    if _topology_changed(analysis):
        lines += ["", f"topology: the picture changed ({_topology_where(analysis)})"]
    shown = [f for f in analysis.files if not f.hashes_only]
    hidden = len(analysis.files) - len(shown)
    if shown or hidden:
        lines += ["", f"files: {len(shown)} changed" + (f", {hidden} differ only in hashes (not shown)" if hidden else "")]
        for f in shown:
            lines.append(f"  {f.status[0].upper()} {f.path}")
        if files:
            lines += [""] + [f.diff.rstrip("\n") for f in shown if f.diff and not _picture(f.path)]
    return "\n".join(lines) + "\n"


def _picture(path: str) -> bool:
    """Files listed, never diffed: the topology picture (its own section says it changed) and the
    switch's table (derived from the files above it; its diff would repeat theirs)."""
    return path in ("topology.svg", "topology.json", "host/moat/switch.json")


def _topology_changed(analysis: Analysis) -> bool:
    return analysis.old.files.get("topology.svg") != analysis.new.files.get("topology.svg") \
        and "topology.svg" in analysis.new.files


def _topology_where(analysis: Analysis) -> str:
    return f"{analysis.new.label}/topology.svg" if analysis.new.label.endswith(("current", "/")) or \
        "generation" in analysis.new.label else "topology.svg in the bundle `moat build` makes"


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("<", "&lt;")


def diff_markdown(analysis: Analysis, limit: int = MARKDOWN_LIMIT) -> str:
    """One pull-request comment: the verdict first, then sections; only the file diffs are cut to
    keep it under `limit` characters."""
    icon = {"no change": "✅", "additive": "➕", "disruptive": "⚠️", "security-relevant": "🔐"}[analysis.verdict]
    out = [f"{icon} **moat diff: {analysis.verdict}** (`{analysis.old.label}` → `{analysis.new.label}`): {summary(analysis)}", ""]
    if analysis.findings:
        out += ["### Security", ""]
        out += [f"- {'**' if f.widens else ''}{f.kind}{'**' if f.widens else ''}: {_md_escape(f.message)}" for f in analysis.findings]
        out.append("")
    if analysis.data_at_risk:
        out += ["### Data at risk", ""]
        out += [f"- 🛑 **{a.subject}: {a.action}**: {_md_escape('; '.join(a.reasons))}" for a in analysis.data_at_risk]
        out += ["", "`moat plan` refuses this unless the VM is named with `--allow-data-loss`.", ""]
    if analysis.changes:
        out += ["### Plan", "", "| action | what | why |", "|---|---|---|"]
        out += [f"| {a.action} | {KIND[a.kind]} `{a.subject}` | {_md_escape('; '.join(a.reasons))} |" for a in analysis.changes]
        out.append("")
    if analysis.notes:
        out += ["### Changes", ""] + [f"- {_md_escape(n.message)}" for n in analysis.notes] + [""]
    if _topology_changed(analysis):
        out += ["### Topology", "", f"The picture changed: {_topology_where(analysis)}.", ""]
    shown = [f for f in analysis.files if not f.hashes_only]
    hidden = len(analysis.files) - len(shown)
    if shown or hidden:
        budget = limit - len("\n".join(out)) - 400
        body, cut = [], 0
        for f in shown:
            if _picture(f.path):  # its own section says so; its source's diff is unreadable here
                continue
            block = f"```diff\n{f.diff}```\n" if f.diff else f"_{f.path}: {f.status} (not text)_\n"
            if len(block) > budget:
                cut += 1
                continue
            body.append(block)
            budget -= len(block)
        heading = f"Files: {len(shown)} changed" + (f", {hidden} differ only in hashes" if hidden else "")
        out += [f"<details><summary>{heading}</summary>", ""] + [f"- {f.status} `{f.path}`" for f in shown] + [""]
        out += body
        if cut:
            out += [f"_{cut} file diff{'s' * (cut != 1)} left out to fit one comment: run `moat diff` locally._", ""]
        out += ["</details>", ""]
    return "\n".join(out)


def plan_markdown(analysis: Analysis, allowed: frozenset[str] = frozenset()) -> str:
    out = [f"**moat plan: {analysis.verdict}** (`{analysis.old.label}` → `{analysis.new.label}`): {summary(analysis)}", ""]
    if analysis.changes:
        out += ["| action | what | why |", "|---|---|---|"]
        for a in analysis.changes:
            flag = (" **(data loss: allowed)**" if a.vm in allowed else " **(data loss: refused)**") if a.data_loss else ""
            out.append(f"| {a.action} | {KIND[a.kind]} `{a.subject}` | {_md_escape('; '.join(a.reasons))}{flag} |")
    return "\n".join(out) + "\n"


def document(analysis: Analysis, command: str, allowed: frozenset[str] = frozenset()) -> dict:
    """The JSON view (format_version 1): the same for both commands, `files` carrying diffs for diff."""
    return {
        "format_version": FORMAT_VERSION,
        "command": command,
        "old": analysis.old.label,
        "new": analysis.new.label,
        "verdict": analysis.verdict,
        "counts": analysis.counts(),
        "security": [{"kind": f.kind, "subject": f.subject, "message": f.message, "widens": f.widens}
                     for f in analysis.findings],
        "data_at_risk": [a.subject for a in analysis.data_at_risk],
        "refused": [a.subject for a in analysis.refused(allowed)] if command == "plan" else [],
        "actions": [{"kind": a.kind, "subject": a.subject, "action": a.action, "reasons": list(a.reasons),
                     "paths": list(a.paths), "data_loss": a.data_loss, **({"vm": a.vm} if a.vm else {})}
                    for a in analysis.actions],
        "changes": [{"subject": n.subject, "message": n.message} for n in analysis.notes],
        "files": [{"path": f.path, "status": f.status, "hashes_only": f.hashes_only,
                   **({"diff": f.diff} if command == "diff" else {})} for f in analysis.files],
    }


def as_json(analysis: Analysis, command: str, allowed: frozenset[str] = frozenset()) -> str:
    return json.dumps(document(analysis, command, allowed), indent=2, sort_keys=False) + "\n"
