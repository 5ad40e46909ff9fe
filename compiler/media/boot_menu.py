"""A remastered DVD's boot menus made unattended: a first entry, the default after TIMEOUT
seconds, that boots the DVD's own install entry with `inst.ks=` (isolinux.cfg and grub.cfg)."""

from __future__ import annotations

import re

TIMEOUT = 5                       # seconds before the unattended entry boots
_STAGE2 = "inst.stage2="


def _pick(candidates: list[tuple[int, str]]) -> int | None:
    """The install entry: the first whose kernel line has inst.stage2= and no media check or rescue."""
    plain = [i for i, text in candidates if _STAGE2 in text and "rd.live.check" not in text and "inst.rescue" not in text]
    any_stage2 = [i for i, text in candidates if _STAGE2 in text]
    return (plain or any_stage2 or [None])[0]


def _with_ks(args: str, ks_arg: str) -> str:
    """Kernel arguments without a media check or an earlier inst.ks, with `ks_arg` last; the rest as it was."""
    kept = re.sub(r"(^|\s)(rd\.live\.check|inst\.ks=\S*)(?=\s|$)", "", args).strip()
    return f"{kept} {ks_arg}".strip()


def unattended_isolinux(text: str, ks_arg: str, title: str) -> str:
    """isolinux.cfg with a first entry `moat` (the install entry + inst.ks), the menu default,
    booting after TIMEOUT seconds."""
    lines = text.splitlines()
    labels = [i for i, line in enumerate(lines) if re.match(r"\s*label\s", line, re.I)]
    blocks = []
    for n, start in enumerate(labels):
        end = labels[n + 1] if n + 1 < len(labels) else len(lines)
        for j in range(start + 1, end):  # a block ends where menu structure starts
            if re.match(r"\s*menu\s+(begin|end|separator)\b", lines[j], re.I):
                end = j
                break
        blocks.append((start, end))
    candidates = []
    for start, end in blocks:
        kernel = next((ln for ln in lines[start:end] if re.match(r"\s*(kernel|linux)\s", ln, re.I)), None)
        append = next((ln for ln in lines[start:end] if re.match(r"\s*append\s", ln, re.I)), None)
        candidates.append((start, f"{kernel or ''} {append or ''}" if kernel and append else ""))
    chosen = _pick(candidates)
    if chosen is None:
        raise ValueError("no entry whose kernel boots with inst.stage2=")
    start, end = next(b for b in blocks if b[0] == chosen)
    kernel = next(ln for ln in lines[start:end] if re.match(r"\s*(kernel|linux)\s", ln, re.I)).strip()
    append = next(ln for ln in lines[start:end] if re.match(r"\s*append\s", ln, re.I)).strip()
    append_args = append.split(None, 1)[1] if len(append.split(None, 1)) > 1 else ""
    entry = ["# moat: unattended install with the kickstart on this medium (the default)",
             "label moat",
             f"  menu label ^{title}",
             "  menu default",
             f"  {kernel}",
             f"  append {_with_ks(append_args, ks_arg)}",
             ""]
    out = []
    has_timeout = False
    menu_ui = False
    for i, line in enumerate(lines):
        if i == labels[0]:
            out.extend(entry)
        stripped = line.strip()
        if re.match(r"menu\s+default$", stripped, re.I):
            continue
        if re.match(r"timeout\s", stripped, re.I):
            out.append(f"timeout {TIMEOUT * 10}")
            has_timeout = True
            continue
        if re.match(r"ontimeout\s", stripped, re.I):
            out.append("ontimeout moat")
            continue
        if re.match(r"(ui\s|default\s+\S+\.c32\b)", stripped, re.I):
            menu_ui = True
        out.append(line)
    if not menu_ui:
        out = [("default moat" if re.match(r"\s*default\s", ln, re.I) else ln) for ln in out]
        if not any(re.match(r"\s*default\s", ln, re.I) for ln in out):
            out.insert(0, "default moat")
    if not has_timeout:
        out.insert(1 if out and re.match(r"\s*default\s", out[0], re.I) else 0, f"timeout {TIMEOUT * 10}")
    return "\n".join(out) + "\n"


def _braces(line: str) -> int:
    """{ minus } outside quotes and comments."""
    depth, quote = 0, None
    for ch in line:
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#":
            break
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
    return depth


def _grub_quote(word: str) -> str:
    return f"'{word}'" if re.search(r"[^A-Za-z0-9._:/=,+-]", word) else word


def unattended_grub(text: str, ks_arg: str, title: str) -> str:
    """grub.cfg with a first menuentry (the install entry + inst.ks), `set default="0"`,
    `set timeout=TIMEOUT`."""
    lines = text.splitlines()
    depth = 0
    entries = []  # (start, end) of top-level menuentry blocks
    start = None
    for i, line in enumerate(lines):
        if depth == 0 and re.match(r"\s*menuentry\s", line):
            start = i
        depth += _braces(line)
        if start is not None and depth == 0:
            entries.append((start, i + 1))
            start = None
    candidates = []
    for s, e in entries:
        kernel = next((ln for ln in lines[s:e] if re.match(r"\s*linux(efi|16)?\s", ln)), "")
        candidates.append((s, kernel))
    chosen = _pick(candidates)
    if chosen is None:
        raise ValueError("no menuentry whose linux line boots with inst.stage2=")
    s, e = next(b for b in entries if b[0] == chosen)
    body = []
    for ln in lines[s + 1:e]:
        m = re.match(r"(\s*)(linux(?:efi|16)?)\s+(\S+)\s*(.*)$", ln)
        if m:
            indent, cmd, kernel, args = m.groups()
            ln = f"{indent}{cmd} {kernel} {_with_ks(args, _grub_quote(ks_arg))}"
        body.append(ln)
    head = re.sub(r"^(\s*menuentry\s+)('[^']*'|\"[^\"]*\"|\S+)", lambda m: f"{m.group(1)}'{title}'", lines[s])
    entry = ["# moat: unattended install with the kickstart on this medium (the default)", head, *body, ""]
    out, has_default, has_timeout = [], False, False
    depth = 0
    for i, line in enumerate(lines):
        if i == entries[0][0]:
            if not has_default:
                out.append('set default="0"')
                has_default = True
            if not has_timeout:
                out.append(f"set timeout={TIMEOUT}")
                has_timeout = True
            out.extend(entry)
        if depth == 0 and re.match(r"\s*set\s+default=", line):
            out.append('set default="0"')
            has_default = True
        elif depth == 0 and re.match(r"\s*set\s+timeout=", line):
            out.append(f"set timeout={TIMEOUT}")
            has_timeout = True
        else:
            out.append(line)
        depth += _braces(line)
    return "\n".join(out) + "\n"

