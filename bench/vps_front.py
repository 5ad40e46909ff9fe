"""Setup B figures: what TLS the generated HAProxy offers, and how long the end-to-end test takes.

Run as root (network namespaces): `.venv/bin/python bench/vps_front.py`. Prints, asserts nothing.

1. TLS scan: blueprints/vps-front.yaml's haproxy.cfg runs in a network namespace made here, on
   the blueprint's VPS address, with one ECDSA (P-256, what cli.ini asks Let's Encrypt for) and
   one RSA-2048 certificate per site. From a second namespace, `openssl s_client` tries every
   protocol version and every cipher (TLS 1.2: each of `openssl ciphers ALL`, TLS 1.3: each
   suite) and every key-exchange group; the accepted ones are printed.
2. tests/test_vps_tunnel.py (client -> HAProxy -> OpenVPN -> home host DNAT -> VM in namespaces)
   run by pytest, wall-clock time of the whole module and of each test, three runs.
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from compiler.pipeline import check_file  # noqa: E402

ADDRESS, CLIENT = "198.51.100.20", "198.51.100.2"
SITE = "cloud.example.org"
GROUPS = ("X25519", "P-256", "P-384", "P-521", "X448", "ffdhe2048", "ffdhe3072")


def sh(*args: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, check=check, timeout=60, **kw)


def cert(d: Path, name: str, key_args: list[str]) -> Path:
    key, crt = d / f"{name}.key", d / f"{name}.crt"
    sh("openssl", "req", "-x509", "-newkey", *key_args, "-nodes", "-keyout", str(key), "-out", str(crt),
       "-days", "2", "-subj", f"/CN={SITE}", "-addext", f"subjectAltName=DNS:{SITE}")
    pem = d / f"{name}.pem"
    pem.write_text(crt.read_text() + key.read_text())
    return pem


def tls_scan() -> None:
    files = check_file(ROOT / "blueprints" / "vps-front.yaml").files
    pid = os.getpid()
    ns = {"vps": f"moat-bench-vps-{pid}", "cli": f"moat-bench-cli-{pid}"}
    proc = None
    with tempfile.TemporaryDirectory(prefix="moat-bench-tls-") as tmp_name:
        tmp = Path(tmp_name)
        certs = tmp / "certs"
        certs.mkdir()
        cert(tmp, "ecdsa", ["ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]).rename(certs / f"{SITE}.ecdsa.pem")
        cert(tmp, "rsa", ["rsa:2048"]).rename(certs / f"{SITE}.rsa.pem")
        cfg = tmp / "haproxy.cfg"
        cfg.write_text(files["vps/haproxy/haproxy.cfg"].content.decode().replace("/etc/haproxy/certs", str(certs))
                       .replace("log /dev/log local0", "log stdout format raw local0"))
        try:
            for name in ns.values():
                sh("ip", "netns", "add", name)
                sh("ip", "-n", name, "link", "set", "lo", "up")
            sh("ip", "link", "add", f"b{pid}"[:15], "netns", ns["cli"], "type", "veth", "peer", "name", "eth0",
               "netns", ns["vps"])
            sh("ip", "-n", ns["cli"], "addr", "add", f"{CLIENT}/24", "dev", f"b{pid}"[:15])
            sh("ip", "-n", ns["vps"], "addr", "add", f"{ADDRESS}/24", "dev", "eth0")
            sh("ip", "-n", ns["cli"], "link", "set", f"b{pid}"[:15], "up")
            sh("ip", "-n", ns["vps"], "link", "set", "eth0", "up")
            haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
            proc = subprocess.Popen(["ip", "netns", "exec", ns["vps"], haproxy, "-db", "-f", str(cfg)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + 10
            while not ok(ns["cli"], "-tls1_3"):
                if time.monotonic() > deadline:
                    raise SystemExit("haproxy did not start")
                time.sleep(0.1)
            t0 = time.perf_counter()
            print("protocols:", " ".join(v for v, flag in (("TLSv1", "-tls1"), ("TLSv1.1", "-tls1_1"),
                                                            ("TLSv1.2", "-tls1_2"), ("TLSv1.3", "-tls1_3"))
                                          if ok(ns["cli"], flag, "-cipher", "ALL:@SECLEVEL=0")))
            tls12 = sh("openssl", "ciphers", "ALL:COMPLEMENTOFALL:@SECLEVEL=0").stdout.strip().split(":")
            print("TLSv1.2 ciphers:", " ".join(c for c in tls12 if ok(ns["cli"], "-tls1_2", "-cipher",
                                                                      f"{c}:@SECLEVEL=0")))
            suites = ("TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256",
                      "TLS_AES_128_CCM_SHA256", "TLS_AES_128_CCM_8_SHA256")
            print("TLSv1.3 suites:", " ".join(s for s in suites if ok(ns["cli"], "-tls1_3", "-ciphersuites", s)))
            print("groups (TLSv1.3):", " ".join(g for g in GROUPS if ok(ns["cli"], "-tls1_3", "-groups", g)))
            print(f"  ({len(tls12) + len(suites) + len(GROUPS) + 4} handshakes tried in "
                  f"{time.perf_counter() - t0:.1f} s)")
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait()
            for name in ns.values():
                subprocess.run(["ip", "netns", "del", name], capture_output=True)


def ok(ns: str, *args: str) -> bool:
    r = subprocess.run(["ip", "netns", "exec", ns, "openssl", "s_client", "-connect", f"{ADDRESS}:443",
                        "-servername", SITE, *args], stdin=subprocess.DEVNULL, capture_output=True, timeout=10)
    return r.returncode == 0


def end_to_end(runs: int = 3) -> None:
    totals, per_test = [], {}
    for _ in range(runs):
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--durations=0",
                            "--durations-min=0", "tests/test_vps_tunnel.py"], cwd=ROOT, capture_output=True, text=True)
        totals.append(time.perf_counter() - t0)
        if r.returncode != 0:
            raise SystemExit(r.stdout[-3000:])
        for secs, phase, test in re.findall(r"^([\d.]+)s (setup|call|teardown)\s+\S+::(\S+)", r.stdout, re.M):
            per_test.setdefault(test, []).append(float(secs))
    print(f"tests/test_vps_tunnel.py, {runs} runs: median {statistics.median(totals):.1f} s wall "
          f"(pytest start-up included), min {min(totals):.1f} s")
    for test, secs in per_test.items():
        print(f"  {test}: {sum(secs) / runs:.1f} s (set-up, test, tear-down)")


if __name__ == "__main__":
    if os.geteuid() != 0:
        raise SystemExit("run as root: network namespaces")
    tls_scan()
    end_to_end()
