"""Validated builds, cold and after a one-VM edit: prints figures, asserts nothing about time.

For each moat source tree (this checkout, and with --against REV that git revision checked out
beside it, so before and after are measured side by side in one run), with an empty validation
cache each time:
  start    `moat check` of blueprints/example.yaml (median of 5 whole-process runs);
  cold     a validated `moat build` of blueprints/example.yaml and of an N-VM synthetic blueprint
           (bench/synthetic.py) into a fresh out/, and the latter's --no-tools build (the issue's
           yardstick: validated <= 5x that);
  edit     the N-VM blueprint with one VM's memory changed, built again into the same out/;
  no-op    the same blueprint built once more.
`checks run` counts the validations that passed and were not taken from the cache (the
validation cache's new entries), i.e. the tool runs the build paid for.

  python bench/incremental.py [--vms 100] [--against 1dbff94]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

import synthetic  # noqa: E402


def moat(tree: Path, cache: Path, *args: str) -> float:
    env = {**os.environ, "MOAT_CACHE_DIR": str(cache), "PYTHONPATH": str(tree)}
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # a user's Python keeps its compiled modules
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "compiler.cli", *args], cwd=tree, env=env,
                          capture_output=True, text=True, timeout=3600)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"moat {' '.join(args)} in {tree} failed:\n{proc.stdout}{proc.stderr[-3000:]}")
    return elapsed


def entries(cache: Path) -> int:
    verified = cache / "verified"
    return sum(1 for _ in verified.iterdir()) if verified.is_dir() else 0


def measure(tree: Path, work: Path, vms: int) -> dict[str, tuple[float, int | None]]:
    cache = work / "cache"
    example = str(tree / "blueprints" / "example.yaml")
    moat(tree, cache, "check", example)  # warm what a second start finds (compiled templates)
    start = statistics.median(moat(tree, cache, "check", example) for _ in range(5))
    shutil.rmtree(cache, ignore_errors=True)
    figures: dict[str, tuple[float, int | None]] = {"moat check example (warm start)": (start, None)}

    def build(label: str, blueprint: Path, out: Path, *more: str) -> None:
        before = entries(cache)
        seconds = moat(tree, cache, "build", str(blueprint), "--out", str(out), *more)
        figures[label] = (seconds, entries(cache) - before)
        print(f"  {label}: {seconds:.2f} s", file=sys.stderr, flush=True)

    build("cold validated build, example", Path(example), work / "out-example")
    bp = work / f"synth{vms}.yaml"
    text = synthetic.blueprint(vms)
    bp.write_text(text)
    build(f"cold --no-tools build, {vms} VMs", bp, work / "out-no-tools", "--no-tools")
    build(f"cold validated build, {vms} VMs", bp, work / "out")
    first_vm_memory = f"memory: {synthetic.VM_MEMORY_GIB}GiB"
    if first_vm_memory not in text:
        raise SystemExit(f"bench/synthetic.py no longer writes {first_vm_memory!r}")
    bp.write_text(text.replace(first_vm_memory, f"memory: {synthetic.VM_MEMORY_GIB + 1}GiB", 1))
    build(f"one VM's memory changed, {vms} VMs", bp, work / "out")
    build(f"no-op build, {vms} VMs", bp, work / "out")
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vms", type=int, default=100)
    parser.add_argument("--against", metavar="REV", help="also measure this git revision, side by side")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="moat-bench-") as tmp:
        trees = {"this checkout": ROOT}
        if args.against:
            old = Path(tmp) / "against"
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(old), args.against],
                           check=True, capture_output=True)
            trees = {args.against: old, **trees}
        try:
            results = {}
            for label, tree in trees.items():
                print(f"{label}:", file=sys.stderr, flush=True)
                work = Path(tmp) / label.replace(" ", "-")
                work.mkdir()
                results[label] = measure(tree, work, args.vms)
        finally:
            if args.against:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old)], capture_output=True)
    labels = list(results)
    rows = list(next(iter(results.values())))
    width = max(map(len, rows))
    print(f"{'':{width}}  " + "  ".join(f"{label:>24}" for label in labels))
    for row in rows:
        cells = []
        for label in labels:
            seconds, checks = results[label][row]
            cells.append(f"{seconds:8.2f} s" + (f" {checks:5d} checks run" if checks is not None else " " * 17))
        print(f"{row:{width}}  " + "  ".join(f"{c:>24}" for c in cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
