"""The host's switch (host/moat/switch) on its own, without a host: what `moat deploy` sends
(compiler/deploy/transfer.py) received into a host root (MOAT_ROOT, a temporary directory),
content-addressed, checked, never half-landed, also when killed; the lock; the validator that
holds the program to the host's Python 3.9. tests/test_deploy.py runs it for real on a host."""

from __future__ import annotations

import fcntl
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from compiler.deploy import transfer
from compiler.pipeline import build_file
from compiler.render.switch import SOURCE, VERIFY_TOOLS

from .conftest import ROOT

BLUEPRINT = ROOT / "blueprints" / "example.yaml"


def switch(host: Path, *args: str, stdin: bytes | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SOURCE), *args], input=stdin, capture_output=True, timeout=120,
                          env={**os.environ, "MOAT_ROOT": str(host), **(env or {})})


def have(host: Path) -> dict:
    proc = switch(host, "have")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def tar_of(payload: transfer.Payload) -> bytes:
    buf = io.BytesIO()
    transfer.write_tar(payload, buf)
    return buf.getvalue()


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    """The example and the example with one more forward: two store paths sharing most files."""
    tmp = tmp_path_factory.mktemp("switch")
    _, first = build_file(BLUEPRINT, tmp / "out", tools=False)
    changed = tmp / "example.yaml"
    changed.write_text(BLUEPRINT.read_text().replace(
        "forwards:\n", "forwards:\n  - { port: 8443, proto: tcp, to: nextcloud, to_port: 443 }\n", 1))
    _, second = build_file(changed, tmp / "out", tools=False)
    return first.path, second.path


def test_a_host_receives_a_bundle_then_only_the_files_it_lacks(bundles, tmp_path):
    first, second = bundles
    host = tmp_path / "host"
    empty = have(host)
    assert empty["stores"] == [] and empty["current"] is None
    payload = transfer.payload(first, empty, [], [])
    manifest = json.loads((first / "manifest.json").read_text())
    assert len([i for i in payload.items if i.name.startswith("store/")]) == len(
        {e["sha256"] for e in manifest["files"].values()}) + 1  # each distinct file once, and the manifest
    proc = switch(host, "receive", stdin=tar_of(payload))
    assert proc.returncode == 0, proc.stderr
    stored = host / "var/lib/moat/store" / first.name
    for rel in manifest["files"]:
        assert (stored / rel).read_bytes() == (first / rel).read_bytes()
    assert have(host)["stores"] == [first.name]

    # the second bundle: only the files no store path on the host holds
    delta = transfer.payload(second, have(host), [], [])
    sent = {i.name.split("/", 2)[2] for i in delta.items}
    differing = {rel for rel, e in json.loads((second / "manifest.json").read_text())["files"].items()
                 if manifest["files"].get(rel, {}).get("sha256") != e["sha256"]}
    assert sent - {"manifest.json"} <= differing and "host/nftables/moat.nft" in sent
    assert delta.bytes < payload.bytes / 2
    proc = switch(host, "receive", stdin=tar_of(delta))
    assert proc.returncode == 0, proc.stderr
    assert "already on the host" in proc.stdout.decode()
    assert sorted(have(host)["stores"]) == sorted([first.name, second.name])
    # nothing left to send
    assert transfer.payload(second, have(host), [], []).items == ()


def test_a_damaged_image_or_seed_never_lands(bundles, tmp_path):
    first, _ = bundles
    host = tmp_path / "host"
    image = tmp_path / "web-0123.qcow2"
    image.write_bytes(b"qcow2 bytes" * 1000)
    payload = transfer.payload(first, have(host), [("web-0123.qcow2", image, "0" * 64)],
                               [("web", b"seed bytes", "1" * 64)])
    proc = switch(host, "receive", stdin=tar_of(payload))
    assert proc.returncode == 1 and b"arrived damaged" in proc.stderr
    assert not (host / "var/lib/moat/images/web-0123.qcow2").exists()
    assert not list((host / "var/lib/moat").glob(".incoming-*"))


def test_a_receive_killed_midway_leaves_nothing_and_the_next_one_lands(bundles, tmp_path):
    first, _ = bundles
    host = tmp_path / "host"
    data = tar_of(transfer.payload(first, have(host), [], []))
    proc = subprocess.Popen([sys.executable, str(SOURCE), "receive"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "MOAT_ROOT": str(host)})
    proc.stdin.write(data[:len(data) // 2])
    proc.stdin.flush()
    time.sleep(1)
    proc.kill()
    proc.wait()
    proc.stdin.close()
    assert have(host)["stores"] == []
    assert list((host / "var/lib/moat").glob(".incoming-*")), "the killed receive left nothing to clean"
    done = switch(host, "receive", stdin=data)
    assert done.returncode == 0, done.stderr
    assert have(host)["stores"] == [first.name]
    assert not list((host / "var/lib/moat").glob(".incoming-*"))


def test_a_truncated_transfer_is_refused(bundles, tmp_path):
    first, _ = bundles
    host = tmp_path / "host"
    data = tar_of(transfer.payload(first, have(host), [], []))
    proc = switch(host, "receive", stdin=data[:len(data) // 2])
    assert proc.returncode == 1
    assert have(host)["stores"] == []


def test_one_switch_at_a_time(bundles, tmp_path):
    first, _ = bundles
    host = tmp_path / "host"
    assert switch(host, "receive", stdin=tar_of(transfer.payload(first, have(host), [], []))).returncode == 0
    lock = host / "var/lib/moat/lock"
    with open(lock, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        proc = switch(host, "switch", first.name, "--dry-run")
    assert proc.returncode == 3 and b"another switch is running" in proc.stderr


def test_a_switch_carries_out_the_plan_its_dry_run_named_or_nothing(bundles, tmp_path):
    first, second = bundles
    host = tmp_path / "host"
    for bundle in (first, second):
        assert switch(host, "receive", stdin=tar_of(transfer.payload(bundle, have(host), [], []))).returncode == 0
    plans = {}
    for bundle in (first, second):
        shown = switch(host, "switch", bundle.name, "--dry-run")
        assert shown.returncode == 0, shown.stderr
        lines = shown.stdout.decode().splitlines()
        assert "moat-switch: will create VM nextcloud" in lines and lines[-1].startswith("moat-switch: plan ")
        plans[bundle] = lines[-1].split()[-1]
    assert plans[first] != plans[second]  # one more forward: one more file to install
    # held to the plan shown: the lines are not printed again
    again = switch(host, "switch", first.name, "--dry-run", f"--plan={plans[first]}")
    assert again.returncode == 0 and b"will " not in again.stdout, again.stdout
    assert f"carrying out plan {plans[first]}".encode() in again.stdout
    # another plan than the one shown (the host or the bundle changed since): refused, nothing done
    before = sorted(p.relative_to(host) for p in host.rglob("*"))
    refused = switch(host, "switch", second.name, f"--plan={plans[first]}")
    assert refused.returncode == 3 and b"not the one shown" in refused.stderr, refused.stderr
    assert sorted(p.relative_to(host) for p in host.rglob("*")) == before
    assert have(host).get("current") is None


def test_a_switch_to_a_store_path_the_host_lacks_is_refused(tmp_path):
    proc = switch(tmp_path / "host", "switch", "abc-missing")
    assert proc.returncode == 3 and b"is not intact" in proc.stderr


def test_the_validator_holds_the_program_to_python_3_9(tmp_path):
    check = VERIFY_TOOLS / "switch.sh"
    assert subprocess.run([str(check), str(SOURCE)], capture_output=True).returncode == 0
    newer = tmp_path / "switch"
    newer.write_text(SOURCE.read_text().replace("def main(argv=None):\n",
                                                "def main(argv=None):\n    match argv:\n        case _: pass\n", 1))
    proc = subprocess.run([str(check), str(newer)], capture_output=True, text=True)
    assert proc.returncode == 1 and "not Python 3.9" in proc.stderr, proc.stderr


def test_the_program_stops_itself_where_a_test_asks(tmp_path):
    """MOAT_SWITCH_KILL_AT is how tests/test_deploy.py cuts the power: SIGKILL, no clean-up."""
    code = ("import runpy, sys; sys.argv = ['switch']; "
            f"ns = runpy.run_path({str(SOURCE)!r}); ns['stop_point']('journal'); print('not killed')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "MOAT_SWITCH_KILL_AT": "journal"})
    assert proc.returncode == -signal.SIGKILL and "not killed" not in proc.stdout


def _host_with_generations(bundles, host: Path) -> dict:
    """A host as two deploys leave it: both store paths received, generation 1 (first, its seed
    a...) and 2 (second, seed b..., current), their golden image; and what nothing uses any more:
    an older image and seed, a store path received but never switched to."""
    first, second = bundles
    for bundle in (first, second):
        assert switch(host, "receive", stdin=tar_of(transfer.payload(bundle, have(host), [], []))).returncode == 0
    state = host / "var/lib/moat"
    spare = state / "store" / f"{'0' * 32}-spare"
    shutil.copytree(first, spare, symlinks=True)
    gens = state / "generations"
    gens.mkdir()
    seeds = {1: "a" * 64, 2: "b" * 64}
    for n, bundle in ((1, first), (2, second)):
        (gens / f"{n}.json").write_text(json.dumps({"store": bundle.name, "seeds": {"nextcloud": seeds[n]}}))
        (gens / str(n)).symlink_to(f"../store/{bundle.name}")
    (state / "current").symlink_to("generations/2")
    used = {i["file"] for i in json.loads((second / "host/images.json").read_text())["images"]}
    (state / "images").mkdir()
    (state / "seeds").mkdir()
    for name in (*used, "nextcloud-0000.qcow2"):
        (state / "images" / name).write_bytes(b"image " + name.encode())
    for sha in (*seeds.values(), "c" * 64):
        (state / "seeds" / f"{sha}.iso").write_bytes(b"seed " + sha.encode())
    return {"state": state, "used": used, "spare": spare.name}


def _aged(state: Path, seconds: float = 7200) -> None:
    """Everything under the state directory received `seconds` ago."""
    then = time.time() - seconds
    for path in [state, *state.rglob("*")]:
        os.utime(path, (then, then), follow_symlinks=False)


def _holds(state: Path) -> dict:
    return {"generations": sorted(p.name for p in (state / "generations").iterdir()),
            "stores": sorted(p.name for p in (state / "store").iterdir()),
            "images": sorted(p.name for p in (state / "images").iterdir()),
            "seeds": sorted(p.name[:4] for p in (state / "seeds").iterdir())}


def test_gc_removes_what_no_kept_generation_uses_and_nothing_received_lately(bundles, tmp_path):
    first, second = bundles
    host = tmp_path / "host"
    made = _host_with_generations(bundles, host)
    state = made["state"]
    # received a moment ago (a deploy may be under way): only what is older than an hour goes
    fresh = switch(host, "gc", "--keep=1")
    assert fresh.returncode == 0, fresh.stderr
    assert _holds(state)["generations"] == ["2", "2.json"] and _holds(state)["seeds"] == ["aaaa", "bbbb", "cccc"]
    assert len(_holds(state)["stores"]) == 3 and len(_holds(state)["images"]) == len(made["used"]) + 1
    # ... and what the first deploy left, hours later
    made = _host_with_generations(bundles, tmp_path / "host2")
    host, state = tmp_path / "host2", made["state"]
    _aged(state)
    shown = switch(host, "gc", "--dry-run")
    assert shown.returncode == 0, shown.stderr
    said = shown.stdout.decode()
    assert f"will remove store path {made['spare']}" in said and "will remove image nextcloud-0000.qcow2" in said
    assert f"will remove seed {'c' * 64}.iso" in said and "will remove generation" not in said, said
    assert _holds(state)["seeds"] == ["aaaa", "bbbb", "cccc"]  # a dry run removes nothing
    plan = said.splitlines()[-1].split()[-1]
    done = switch(host, "gc", f"--plan={plan}")
    assert done.returncode == 0 and b"freed " in done.stdout, done.stderr
    assert _holds(state) == {"generations": ["1", "1.json", "2", "2.json"], "stores": sorted([first.name, second.name]),
                             "images": sorted(made["used"]), "seeds": ["aaaa", "bbbb"]}
    # the generations before the newest one: generation 1, its seed; its store path too, unless a
    # switch killed on its way there needs it (its journal)
    (state / "switch.journal").write_text(json.dumps({"to": first.name}))
    assert switch(host, "gc", "--keep=1").returncode == 0
    assert _holds(state)["generations"] == ["2", "2.json"] and first.name in _holds(state)["stores"]
    (state / "switch.journal").unlink()
    stale = switch(host, "gc", f"--plan={plan}")  # what was shown is not what there is now: nothing removed
    assert stale.returncode == 3 and b"not what was shown" in stale.stderr and first.name in _holds(state)["stores"]
    assert switch(host, "gc", "--keep=0").returncode == 0
    assert _holds(state) == {"generations": ["2", "2.json"], "stores": [second.name], "images": sorted(made["used"]),
                             "seeds": ["bbbb"]}
    assert have(host)["current"] == {"generation": 2, "store": second.name}


@pytest.mark.parametrize("point", ["gc-link", "gc-aside", "gc-removed"])
def test_gc_killed_at_any_step_leaves_the_host_whole_and_the_next_gc_finishes(bundles, tmp_path, point):
    first, second = bundles
    host = tmp_path / "host"
    state = _host_with_generations(bundles, host)["state"]
    _aged(state)
    runs = 0
    while True:
        proc = switch(host, "gc", "--keep=1", env={"MOAT_SWITCH_KILL_AT": point})
        runs += 1
        if proc.returncode == 0:
            break
        assert proc.returncode == -signal.SIGKILL and runs < 20, proc.stderr
        held = have(host)  # what a deploy sees meanwhile: whole store paths, the current generation
        assert held["current"] == {"generation": 2, "store": second.name}
        assert all(not s.startswith(".") for s in held["stores"]), held["stores"]
        assert [g["generation"] for g in held["generations"]] in ([1, 2], [2])
        for name in held["stores"]:
            check = subprocess.run([sys.executable, str(SOURCE), "switch", name, "--dry-run"], capture_output=True,
                                   env={**os.environ, "MOAT_ROOT": str(host)})
            assert b"is not intact" not in check.stderr, (name, check.stderr)
    assert runs > 1, "the switch was never killed"
    assert _holds(state)["stores"] == [second.name] and _holds(state)["generations"] == ["2", "2.json"]
    assert _holds(state)["seeds"] == ["bbbb"]
