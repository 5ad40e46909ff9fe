"""Processes in network namespaces that a test creates: start them, run listeners and probes in
them, stop them all and delete the namespaces, also when the test fails. A lab subclasses
Namespaces, creates its namespaces and links, and names them in `namespaces()`; `where()` maps
what the lab's methods are called with (a namespace name, or a role the lab keeps a name for)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys


class Namespaces:
    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def namespaces(self) -> tuple[str, ...]:
        raise NotImplementedError

    def where(self, ns: str) -> str:
        return ns

    def spawn(self, ns: str, *cmd: str, env: dict | None = None) -> subprocess.Popen:
        proc = subprocess.Popen(["ip", "netns", "exec", self.where(ns), *cmd], stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        self.procs.append(proc)
        return proc

    def serve(self, ns: str, name: str, ports: list[tuple[str, int]]) -> None:
        proc = self.spawn(ns, sys.executable, "-c", SERVER, name, json.dumps(ports))
        assert proc.stdout.readline().strip() == "ready", f"listener in {ns} did not start"

    def probe(self, ns: str, probes: list[dict], timeout: float = 1.5) -> dict[str, str]:
        proc = subprocess.run(["ip", "netns", "exec", self.where(ns), sys.executable, "-c", PROBE, json.dumps(probes),
                               str(timeout)], capture_output=True, text=True, timeout=120, check=True)
        return json.loads(proc.stdout)

    def drops_counted(self, ns: str, chain: str = "output") -> int:
        """Packets the last rule of `chain` in table inet moat counted (moat's `counter drop`)."""
        out = subprocess.run(["ip", "netns", "exec", self.where(ns), "nft", "list", "chain", "inet", "moat", chain],
                             capture_output=True, text=True, timeout=60, check=True).stdout
        counted = re.findall(r"counter packets (\d+) bytes \d+ drop", out)
        assert len(counted) == 1, out
        return int(counted[0])

    def close(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            if proc.stdout:
                proc.stdout.close()
        for ns in self.namespaces():
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)

    def __exit__(self, *exc) -> None:
        self.close()


class Pair(Namespaces):
    """Two namespaces, a machine (`inside`) and the world around it (`outside`), joined by veth
    links (inside name, its addresses, outside name, its addresses); the machine's default route
    goes via `gateway`. Names are the machine's own (eth0, tun-moat), so its rules apply unchanged."""

    def __init__(self, tag: str, links: list[tuple[str, list[str], str, list[str]]], gateway: str) -> None:
        super().__init__()
        self.inside, self.outside = f"{tag}-in-{os.getpid()}", f"{tag}-out-{os.getpid()}"
        self.links, self.gateway = links, gateway

    def namespaces(self) -> tuple[str, ...]:
        return (self.inside, self.outside)

    def __enter__(self) -> Pair:
        def ip(*args: str) -> None:
            subprocess.run(["ip", *args], check=True, capture_output=True, timeout=60)
        try:
            for ns in (self.inside, self.outside):
                ip("netns", "add", ns)
                ip("-n", ns, "link", "set", "lo", "up")
            for dev, addrs, peer, peer_addrs in self.links:
                # created inside the namespaces, so the names never meet this machine's interfaces
                ip("-n", self.inside, "link", "add", dev, "type", "veth", "peer", "name", peer, "netns", self.outside)
                for ns, name, addresses in ((self.inside, dev, addrs), (self.outside, peer, peer_addrs)):
                    for addr in addresses:
                        ip("-n", ns, "addr", "add", addr, "dev", name)
                    ip("-n", ns, "link", "set", name, "up")
            ip("-n", self.inside, "route", "add", "default", "via", self.gateway)
        except BaseException:
            self.close()
            raise
        return self


# Listens on the given ports (all addresses); answers "<name>:<what it got>", a UDP answer from the
# address the datagram was sent to (IP_PKTINFO), as a server bound to that address would.
SERVER = r"""
import json, selectors, socket, sys
name, ports = sys.argv[1], json.loads(sys.argv[2])
sel = selectors.DefaultSelector()
for proto, port in ports:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    if proto == "tcp":
        s.listen(8)
    else:
        s.setsockopt(socket.IPPROTO_IP, getattr(socket, "IP_PKTINFO", 8), 1)
    sel.register(s, selectors.EVENT_READ, proto)
print("ready", flush=True)
while True:
    for key, _ in sel.select():
        s = key.fileobj
        if key.data == "tcp":
            conn, _ = s.accept()
            conn.settimeout(2)
            try:
                conn.sendall(name.encode() + b":" + conn.recv(64))
            except OSError:
                pass
            conn.close()
        else:
            data, ancillary, _, peer = s.recvmsg(64, socket.CMSG_SPACE(12))
            s.sendmsg([name.encode() + b":" + data], ancillary, 0, peer)
"""

# Runs probes in parallel; prints {id: "open:<reply>" | "dropped" | "refused" | "rejected:<errno>"}.
# "dropped" means no answer at all within the timeout: no RST, no ICMP error.
PROBE = r"""
import errno, json, os, socket, struct, sys, threading, time
probes, timeout = json.loads(sys.argv[1]), float(sys.argv[2])
results = {}

def checksum(data):
    data += b"\0" * (len(data) % 2)
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    total = (total >> 16) + (total & 0xFFFF)
    return ~(total + (total >> 16)) & 0xFFFF

def icmp(kind, body, code=0):
    head = struct.pack("!BBH", kind, code, 0) + body
    return struct.pack("!BBH", kind, code, checksum(head)) + body

def stream(p):
    proto = socket.SOCK_STREAM if p["proto"] == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, proto) as s:
        s.settimeout(timeout)
        s.bind((p["src"], 0))
        try:
            s.connect((p["dst"], p["port"]))
            s.send(b"hi")
            return "open:" + s.recv(64).decode()
        except socket.timeout:
            return "dropped"
        except ConnectionRefusedError:
            return "refused"
        except OSError as e:
            return "rejected:" + errno.errorcode.get(e.errno, str(e.errno))

def ping(p):
    # ICMP echo (8 -> 0) or timestamp (13 -> 14) request; answered or not
    ident = (os.getpid() + p["type"]) & 0xFFFF
    body = struct.pack("!HH", ident, 1) + (struct.pack("!III", 0, 0, 0) if p["type"] == 13 else b"moat")
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as s:
        s.bind((p["src"], 0))
        s.sendto(icmp(p["type"], body), (p["dst"], 0))
        end = time.monotonic() + timeout
        while (left := end - time.monotonic()) > 0:
            s.settimeout(left)
            try:
                packet, (peer, _) = s.recvfrom(2048)
            except socket.timeout:
                break
            reply = packet[(packet[0] & 0x0F) * 4:]
            if peer == p["dst"] and reply[0] == {8: 0, 13: 14}[p["type"]] and reply[4:6] == struct.pack("!H", ident):
                return "open:icmp"
        return "dropped"

def mtu(p):
    # open a UDP flow to dst:port, then tell dst (as a router on the path would) that its
    # answers need fragmentation: ICMP 3/4 quoting the header of dst's reply to us
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.bind((p["src"], 0))
        s.connect((p["dst"], p["port"]))
        s.send(b"hi")
        s.recv(64)
        sport = s.getsockname()[1]
    inner = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28 + 8, 1, 0, 64, 17, 0,
                        socket.inet_aton(p["dst"]), socket.inet_aton(p["src"]))
    inner += struct.pack("!HHHH", p["port"], sport, 8 + 8, 0) + b"\0" * 8
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as s:
        s.bind((p["src"], 0))
        s.sendto(icmp(3, struct.pack("!HH", 0, p["mtu"]) + inner, code=4), (p["dst"], 0))
    return "sent"

def worker(p):
    results[p["id"]] = {"tcp": stream, "udp": stream, "icmp": ping, "mtu": mtu}[p["proto"]](p)

threads = [threading.Thread(target=worker, args=(p,)) for p in probes]
for t in threads: t.start()
for t in threads: t.join()
print(json.dumps(results))
"""
