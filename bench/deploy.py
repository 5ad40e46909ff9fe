"""Benchmark of `moat deploy`: prints figures, asserts nothing about time.

    sudo .venv/bin/python bench/deploy.py

In the deploy test's lab (tests/deploy_lab.py: a real sshd, sudo, libvirtd and QEMU under TCG in
namespaces, the host's files under a directory), with its two-VM blueprint and stand-in images
(8 MiB qcow2 each), it times four deploys end to end, from `moat deploy` starting to its exit,
build included (validators on, their verdicts cached after the first build), and says how much
each sent over SSH:
1. the first deploy to an empty host (the whole store path, both images, both seeds);
2. a deploy that changes nothing;
3. a deploy that adds a forward onto a port the VM already serves (no VM restarts);
4. a deploy that changes one VM's image (that VM reinstalled: shut down, OS volume made again
   from the new image, started; the other VM untouched);
and prints the plan the last one showed. Needs root (namespaces, libvirtd).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.deploy_lab import DeployLab, Workspace  # noqa: E402


def deploy(lab: DeployLab, ws: Workspace) -> tuple[float, str, str]:
    started = time.monotonic()
    proc = lab.moat("deploy", str(ws.blueprint), "--yes", "--out", str(ws.dir / "out"), cwd=ws.dir)
    took = time.monotonic() - started
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        sys.exit(f"moat deploy failed ({proc.returncode}):\n{out}")
    sent = re.search(r"the host lacks (.*)", out).group(1)
    return took, sent, out


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="moat-bench-deploy-") as tmp:
        tmp = Path(tmp)
        # the stand-in images live here, never in the user's image cache
        os.environ["MOAT_IMAGES_DIR"] = str(tmp / "images")
        key = tmp / "id_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        with DeployLab(tmp, key) as lab:
            ws = Workspace(tmp, key)
            ws.run("build", str(ws.blueprint), "--out", str(ws.dir / "out"))
            lab.install_sshd(ws.dir / "out" / "current")
            rows = []
            rows.append(("first deploy (empty host)", *deploy(lab, ws)[:2]))
            rows.append(("no change", *deploy(lab, ws)[:2]))
            ids = {vm: lab.domid(vm) for vm in ("web", "db")}
            ws.write(ws.edit("forwards:\n", "forwards:\n  - {port: 8443, proto: tcp, to: web, to_port: 80}\n"))
            took, sent, _ = deploy(lab, ws)
            same = {vm: lab.domid(vm) for vm in ids} == ids
            rows.append((f"forward only ({'no VM restarted' if same else 'A VM RESTARTED'})", took, sent))
            ws.write(ws.edit("  - name: web\n    distribution: debian\n    release: bookworm\n    packages: []",
                             "  - name: web\n    distribution: debian\n    release: bookworm\n    packages: [tree]")
                     .replace("forwards:\n", "forwards:\n  - {port: 8443, proto: tcp, to: web, to_port: 80}\n"))
            took, sent, out = deploy(lab, ws)
            kept = lab.domid("db") == ids["db"]
            rows.append((f"one VM reinstalled, TCG ({'db untouched' if kept else 'DB RESTARTED'})", took, sent))
    width = max(len(r[0]) for r in rows)
    print(f"{'deploy':{width}}  {'seconds':>7}  sent")
    for what, took, sent in rows:
        print(f"{what:{width}}  {took:7.1f}  {sent}")
    print("\nthe plan the image change showed:")
    print("\n".join(line for line in out.splitlines() if "will " in line or line.startswith(("-/+", "  ~", "    "))))


if __name__ == "__main__":
    main()
