"""Load a large nftables ruleset in pieces, in the empty network namespace this runs in.

nft sends a file to the kernel as one netlink batch. In a user namespace (how moat checks as a
user that is not root) nft cannot raise its socket buffer past the machine's default, and a valid
ruleset of ~1000 VMs fails "Message too long", while the host, as root, loads it whole. So the
ruleset is loaded here as the same statements in several transactions: the first is the file with
each chain cut after the rules that fit, the others append the rest of each chain's rules in order
(`add rule FAMILY TABLE CHAIN RULE`). The namespace ends up with the ruleset the file describes,
or nft says which statement it refuses; the messages name the file's own lines.

  python3 nft-pieces.py FILE [RULES]    exit 0: loaded; nft's status and message otherwise;
                                       3: the file has a form this does not cut (nothing loaded)

RULES (default 150) rules per transaction: a batch of `add rule` statements fails here from
about 500 (each message carries its table and chain), so a third of that.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile

TABLE = re.compile(r"^\s*table\s+(\S+)\s+(\S+)\s*\{\s*$")
CHAIN = re.compile(r"^\s*chain\s+(\S+)\s*\{\s*$")
CLOSE = re.compile(r"^\s*\}\s*$")
# statements of a chain that are not rules: they stay with the chain's definition
HEADER = re.compile(r"^\s*(type|policy|comment|devices)\b")
MESSAGE = re.compile(r"^(?P<file>[^:\n]+):(?P<line>\d+):(?P<rest>.*)$")


class Uncut(Exception):
    pass


def pieces(lines: list[str], budget: int) -> list[list[tuple[int, str]]]:
    """[(line number in the file, text)] per transaction, each with at most `budget` rules."""
    first: list[tuple[int, str]] = []
    later: list[tuple[int, str]] = []
    table = chain = None
    rules = 0
    for number, line in enumerate(lines, 1):
        text = line.rstrip("\n")
        if chain is not None:
            if CLOSE.match(text):
                chain = None
            elif text.count("{") != text.count("}") or text.rstrip().endswith("\\"):
                raise Uncut(f"line {number}: a statement over several lines")
            elif text.lstrip().startswith("#") and (later or rules >= budget):
                continue  # the rules it explains are added later
            elif text.strip() and not text.lstrip().startswith("#") and not HEADER.match(text):
                if later or rules >= budget:
                    later.append((number, f"add rule {table[0]} {table[1]} {chain} {text.strip()}\n"))
                    continue
                rules += 1
        elif table is not None:
            match = CHAIN.match(text)
            if match:
                chain = match.group(1)
            elif CLOSE.match(text):
                table = None
        else:
            match = TABLE.match(text)
            if match:
                table = match.groups()
            elif text.count("{") != text.count("}"):
                raise Uncut(f"line {number}: a block other than a table")
        first.append((number, line if line.endswith("\n") else line + "\n"))
    return [first] + [later[i:i + budget] for i in range(0, len(later), budget)]


def main(argv: list[str]) -> int:
    path = argv[1]
    budget = int(argv[2]) if len(argv) > 2 else 150
    with open(path, encoding="utf-8") as fh:
        lines = fh.readlines()
    try:
        parts = pieces(lines, budget)
    except Uncut as why:
        print(f"{path}: not cut into pieces ({why}): loaded whole", file=sys.stderr)
        return 3
    with tempfile.TemporaryDirectory(prefix="moat-nft-") as tmp:
        for index, part in enumerate(parts, 1):
            piece = os.path.join(tmp, f"{index}.nft")
            with open(piece, "w", encoding="utf-8") as fh:
                fh.writelines(text for _, text in part)
            said = subprocess.run(["nft", "--file", piece], capture_output=True, text=True)
            if said.returncode != 0:
                origin = [number for number, _ in part]
                for line in (said.stdout + said.stderr).splitlines():
                    match = MESSAGE.match(line)
                    if match and match.group("file") == piece and 0 < int(match.group("line")) <= len(origin):
                        line = f"{path}:{origin[int(match.group('line')) - 1]}:{match.group('rest')}"
                    print(line, file=sys.stderr)
                return said.returncode
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
