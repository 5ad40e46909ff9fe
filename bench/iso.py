"""Benchmark of `moat iso`: remastering a big installer ISO. Prints figures, asserts nothing.

Run with `.venv/bin/python bench/iso.py [--size-mib 1024] [--runs 3] [--against REV]`.

The base is the stand-in installer DVD of the tests (tests/iso_standin.py) padded with one big
file to about --size-mib (like the DVD's package repositories). Three ways to turn it into a
new image, side by side, each run --runs times (median wall-clock time, peak RSS of the
process, VmHWM):
  moat iso   `moat iso --base-iso BASE` of the example bundle: remaster (ks.cfg, the bundle,
             the seeds, new boot menus, EFI image edited), GPT fix-up, the media-check MD5
             computed again (by a thread hashing behind the writer) and then the sha256 of the
             result (hashed in place from the page cache: the sum is written near the start), the
             fsync running meanwhile. The two hashes are a chain (the sha256 covers the MD5 field),
             so MD5 (~700 MB/s) then sha256 (~1.6 GB/s with SHA-NI) bound it from below: 2.2 s of a
             core for 1 GiB, whatever else overlaps
  xorriso    `xorriso -indev BASE -outdev OUT -boot_image any replay` adding the same ks.cfg
             and bundle (-map): a new image with the same boot setup, menus unchanged
  cp         `cp BASE OUT`: the floor, copying the bytes once (into the page cache)
  cp + sync  the same and `sync OUT`: the bytes on disk, as moat iso leaves them (fsync); the ratios
             are to this one (the peak RSS ones to cp's: here it is the shell's)
With --against REV, `moat iso` of that git revision too (checked out beside this one), so before
and after are measured side by side in one run. The example's golden images are stand-ins (small
empty qcow2 files in a cache of the run, as the tests make them): the bench is about the ISO.
The page cache is warm for all three (the base is read once before timing). The machine is
shared and noisy: compare the ratios, not the seconds.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests import iso_standin  # noqa: E402
from tests.conftest import stand_in_images  # noqa: E402

EXAMPLE = ROOT / "blueprints" / "example.yaml"


def measure(cmd: list[str], cleanup: Path, cwd: Path) -> tuple[float, int]:
    """(seconds, peak RSS in bytes) of one run of `cmd` in `cwd`; `cleanup` is removed first."""
    if cleanup.is_dir():
        shutil.rmtree(cleanup)
    elif cleanup.exists():
        cleanup.unlink()
    cleanup.parent.mkdir(parents=True, exist_ok=True)
    seconds, peak, _stderr = iso_standin.measure(cmd, cwd)
    return seconds, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="size of the base ISO (default: %(default)s)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each (default: %(default)s)")
    parser.add_argument("--against", metavar="REV", help="also measure moat iso of this git revision, side by side")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="moat-bench-iso-", dir=os.environ.get("TMPDIR", "/var/tmp")) as tmp:
        work = Path(tmp)
        old = work / "against"
        if args.against:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(old), args.against],
                           check=True, capture_output=True)
        try:
            run(args, work, old if args.against else None)
        finally:
            if args.against:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old)], capture_output=True)


def run(args: argparse.Namespace, work: Path, old: Path | None) -> None:
    os.environ["MOAT_IMAGES_DIR"] = str(work / "images")  # read by this process and every moat iso
    stand_in_images(work / "images")
    small = iso_standin.build()
    pad = max((args.size_mib << 20) - small.stat().st_size, 0)
    print(f"building a {args.size_mib} MiB stand-in installer ISO ...", file=sys.stderr)
    base = iso_standin.build(pad=pad, cache=work)
    bundle = iso_standin.build_bundle(EXAMPLE, work / "out")
    secrets = work / "secrets"
    iso_standin.write_test_secrets(bundle, secrets)
    with open(base, "rb") as fh:  # warm the page cache for every contender alike
        while fh.read(8 << 20):
            pass

    def moat_iso(tree: Path, output: Path) -> tuple[list[str], Path, Path]:
        return ([sys.executable, "-m", "compiler.cli", "iso", "--out", str(work / "out"), "--base-iso", str(base),
                 "--output", str(output / "host.iso"), "--secrets", str(secrets)], output, tree)

    contenders = {
        **({f"moat iso {args.against}": moat_iso(old, work / "moat-against")} if old else {}),
        "moat iso": moat_iso(ROOT, work / "moat"),
        "xorriso replay": (["xorriso", "-indev", str(base), "-outdev", str(work / "xorriso.iso"),
                            "-boot_image", "any", "replay",
                            "-map", str(bundle / "host/kickstart/ks.cfg"), "/ks.cfg",
                            "-map", str(bundle), "/moat/bundle", "-commit"], work / "xorriso.iso", ROOT),
        "cp": (["cp", str(base), str(work / "copy.iso")], work / "copy.iso", ROOT),
        "cp + sync": (["sh", "-c", 'cp "$1" "$2" && sync "$2"', "cp", str(base), str(work / "synced.iso")],
                      work / "synced.iso", ROOT),
    }
    times: dict[str, list[float]] = {name: [] for name in contenders}
    peaks: dict[str, int] = {name: 0 for name in contenders}
    for _ in range(args.runs):  # interleaved, so that noise hits every contender alike
        for name, (cmd, out, tree) in contenders.items():
            seconds, rss = measure(cmd, out, tree)
            times[name].append(seconds)
            peaks[name] = max(peaks[name], rss)
    size = base.stat().st_size
    median = {name: statistics.median(t) for name, t in times.items()}
    print(f"\nbase ISO: {size / (1 << 20):.0f} MiB, {args.runs} runs each: median time, highest peak RSS\n")
    width = max(map(len, contenders))
    print(f"{'':{width}} {'time':>9} {'MiB/s':>8} {'x cp+sync':>9} {'peak RSS':>12} {'x cp':>6}")
    for name in contenders:
        print(f"{name:{width}} {median[name]:8.2f}s {size / (1 << 20) / median[name]:8.0f} "
              f"{median[name] / median['cp + sync']:9.2f} {peaks[name] / (1 << 20):8.1f} MiB "
              f"{peaks[name] / peaks['cp']:6.1f}")
    print(f"\nmoat iso / xorriso replay: time {median['moat iso'] / median['xorriso replay']:.2f}x, "
          f"peak RSS {peaks['moat iso'] / peaks['xorriso replay']:.2f}x; moat's peak RSS is "
          f"{peaks['moat iso'] / size * 100:.1f}% of the base ISO")
    print("all runs (s): " + "; ".join(f"{n} {' '.join(f'{t:.2f}' for t in ts)}" for n, ts in times.items()))


if __name__ == "__main__":
    main()
