"""`moat check` as the blueprint grows: prints figures, asserts nothing about time.

Synthetic blueprints (bench/synthetic.py) of about 1 MB and 8 MB (the issue's yardstick: the
8 MB one within 8x the 1 MB one), and with --sizes any others, each checked by the real CLI as a
subprocess (--runs times, the median; and the peak RSS, which grows with the nodes kept with
their positions). The machine is shared and noisy: compare the ratios, not the seconds.

  python bench/check_size.py [--sizes 1,8] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

import synthetic  # noqa: E402


def vms_for(megabytes: float) -> int:
    """How many VMs make a synthetic blueprint of about `megabytes` (10^6 bytes)."""
    per_vm = (len(synthetic.blueprint(1000)) - len(synthetic.blueprint(100))) / 900
    return max(1, round(megabytes * 1e6 / per_vm))


def check(path: Path) -> tuple[float, int]:
    """Seconds and peak RSS (KiB) of one `moat check` of `path`."""
    env = {**os.environ}
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # a user's Python keeps its compiled modules
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "compiler.cli", "check", str(path)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=1800)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"moat check {path} failed:\n{proc.stderr[-3000:]}")
    return seconds, max(before, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1,8", help="megabytes, comma-separated (default 1,8)")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    sizes = [float(s) for s in args.sizes.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="moat-bench-size.") as tmp:
        for mb in sizes:
            n = vms_for(mb)
            path = Path(tmp) / f"synth{n}.yaml"
            path.write_text(synthetic.blueprint(n))
            runs = [check(path) for _ in range(args.runs)]
            seconds = statistics.median(s for s, _ in runs)
            rows.append((mb, n, path.stat().st_size, seconds, max(k for _, k in runs)))
            print(f"  {n} VMs: {seconds:.2f} s", file=sys.stderr, flush=True)
    base = rows[0]
    print(f"{'blueprint':>12} {'VMs':>7} {'check':>9} {'x first':>8} {'size x':>7} {'peak RSS':>10}")
    for mb, n, size, seconds, rss in rows:
        print(f"{size / 1e6:9.2f} MB {n:7d} {seconds:7.2f} s {seconds / base[3]:7.1f}x "
              f"{size / base[2]:6.1f}x {rss / 1024:7.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
