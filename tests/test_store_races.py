"""Builds running at once into one out/ (issue 13): all of them succeed, each distinct build gets
exactly one generation, and `current` names one of them.

Each round forks `moat build` (compiler.cli.main, imported once) into two processes released at
the same instant by a barrier, into a fresh out/. Before the fix (store rename onto an existing
entry, generation numbers picked without a lock), most rounds of both tests failed: the second
rename of the same store path with `error[store-write] ... Directory not empty`, and two distinct
builds both writing generation 1."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from .conftest import FIXTURES, ROOT

# argv: ROUNDS WORKDIR BLUEPRINT... ; one process per blueprint per round, released together
RACER = r"""
import json, multiprocessing, os, sys
from pathlib import Path
import compiler.pipeline  # noqa: F401  imported once, before the forks
from compiler.cli import main

if os.environ.get("SLOW_LINK"):  # a slow file system: each symlink swap takes this long
    import time
    from compiler import store
    swap = store._swap_symlink
    store._swap_symlink = lambda link, target: time.sleep(float(os.environ["SLOW_LINK"])) or swap(link, target)

rounds, work, blueprints = int(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
fork = multiprocessing.get_context("fork")

def build(barrier, blueprint, out, log):
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    barrier.wait()
    try:
        code = main(["build", blueprint, "--out", out, "--no-tools"])
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)

report = []
for r in range(rounds):
    out = work / f"out-{r}"
    barrier = fork.Barrier(len(blueprints))
    logs = [work / f"round-{r}-{i}.log" for i in range(len(blueprints))]
    procs = [fork.Process(target=build, args=(barrier, bp, str(out), str(log)))
             for bp, log in zip(blueprints, logs)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(300)
    gens = out / "generations"
    report.append({
        "codes": [p.exitcode for p in procs],
        "logs": [log.read_text() for log in logs],
        "generations": {g.name: os.path.basename(os.readlink(g)) for g in gens.iterdir()} if gens.is_dir() else {},
        "current": os.path.basename(os.readlink(out / "current")) if (out / "current").is_symlink() else None,
        "store": sorted(p.name for p in (out / "store").iterdir() if not p.name.startswith(".")),
        "leftovers": sorted(p.name for p in (out / "store").glob(".tmp-*")),
    })
print(json.dumps(report))
"""


def race(tmp_path, rounds: int, *blueprints, env: dict | None = None) -> list[dict]:
    proc = subprocess.run([sys.executable, "-c", RACER, str(rounds), str(tmp_path), *map(str, blueprints)],
                          cwd=ROOT, capture_output=True, text=True, timeout=1800,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def failures(report: list[dict], distinct: int) -> list[str]:
    """What went wrong in each round: a failed build, a generation too many or lost, `current`
    naming no build of the round, a temporary tree left behind."""
    found = []
    for r, round_ in enumerate(report):
        problems = [f"build exited {code}: {log.strip()[-300:]}"
                    for code, log in zip(round_["codes"], round_["logs"]) if code != 0]
        built = set(round_["store"])
        if len(built) != distinct:
            problems.append(f"{len(built)} store paths, expected {distinct}: {sorted(built)}")
        gens = round_["generations"]
        if sorted(gens.values()) != sorted(built) or sorted(gens) != [str(n) for n in range(1, len(built) + 1)]:
            problems.append(f"generations {gens} are not one per build of {sorted(built)}")
        if round_["current"] not in built:
            problems.append(f"current -> {round_['current']}, not one of the builds")
        if round_["leftovers"]:
            problems.append(f"left behind: {round_['leftovers']}")
        found += [f"round {r}: {p}" for p in problems]
    return found


def test_the_same_blueprint_built_twice_at_once_stores_it_once(tmp_path):
    # the two builds rename the same store path into place: the second finds it there, intact
    report = race(tmp_path, 30, FIXTURES / "base.yaml", FIXTURES / "base.yaml")
    found = failures(report, distinct=1)
    rounds = len({line.split(":")[0] for line in found})
    assert not found, f"{rounds} of {len(report)} rounds failed:\n" + "\n".join(found[:10])


@pytest.mark.slow  # 40 rounds of 0.1 s symlink swaps: ~35 s
def test_two_blueprints_built_at_once_each_get_a_generation(tmp_path):
    other = tmp_path / "other.yaml"
    other.write_text((FIXTURES / "base.yaml").read_text() + "# another blueprint text, another store path\n")
    # the two compile for slightly different times: symlink swaps of 0.1 s (a slow disk) make
    # their generation linking overlap, which a lock has to order whatever the timing
    report = race(tmp_path, 40, FIXTURES / "base.yaml", other, env={"SLOW_LINK": "0.1"})
    found = failures(report, distinct=2)
    rounds = len({line.split(":")[0] for line in found})
    assert not found, f"{rounds} of {len(report)} rounds failed:\n" + "\n".join(found[:10])
