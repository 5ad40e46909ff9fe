"""What a change means for security, read the way a reviewer must: a new public port or forward, a
firewall opening, outbound filtering widened (egress), sshd or TLS weakened, encryption removed, a
VM joining or leaving the mirror bridge, a new login user, key or sudo right. Each finding either
widens what is exposed (`widens`, the reason a diff is "security-relevant") or narrows it (listed,
not alarming).

Ports, forwards, egress, encryption, the mirror and logins come from the two derived plans; sshd
and TLS settings from the generated files themselves, so a weaker config from any cause (a
blueprint field, a new compiler) is caught.
"""

from __future__ import annotations

from collections.abc import Iterator

import attrs

from ..derive import EgressPlan, EgressRule, Plan
from .sides import Side


@attrs.frozen
class Finding:
    kind: str     # port-opened, forward-added, sshd-weakened, tls-weakened, encryption-removed, ...
    subject: str  # host, a VM, the VPS
    message: str
    widens: bool = True


def _exposure(plan: Plan) -> dict[tuple[str, str, int], str]:
    """(machine, proto, port) -> what it is, for everything reachable from the Internet."""
    found = {("host", o.proto, o.port): o.why + (f" (from {o.source} only)" if o.source else "") for o in plan.openings}
    if plan.blueprint.host.disk.encryption is not None:
        found[("host", "tcp", plan.blueprint.host.disk.encryption.unlock_port)] = "disk unlock (dropbear, at boot)"
    vps = plan.blueprint.vps
    if vps is not None:
        found[("vps", "tcp", vps.sshd.port)] = "sshd"
        found[("vps", vps.openvpn.proto, vps.openvpn.port)] = "OpenVPN"
        if vps.sites:
            found[("vps", "tcp", 443)] = "HTTPS (haproxy)"
            found[("vps", "tcp", 80)] = "HTTP (redirect, ACME)"
    return found


def _ports(a: Plan, b: Plan) -> Iterator[Finding]:
    old, new = _exposure(a), _exposure(b)
    for key in sorted(set(old) | set(new)):
        machine, proto, port = key
        if key not in old:
            yield Finding("port-opened", machine, f"{proto}/{port} opens to the Internet on the {machine}: {new[key]}")
        elif key not in new:
            yield Finding("port-closed", machine, f"{proto}/{port} closes on the {machine} (was: {old[key]})", False)
        elif old[key] != new[key]:
            widens = "only)" in old[key] and "only)" not in new[key]
            yield Finding("port-changed", machine, f"{proto}/{port} on the {machine}: {old[key]} -> {new[key]}", widens)


def _forwards(a: Plan, b: Plan) -> Iterator[Finding]:
    def table(plan: Plan) -> dict[tuple[str, int], str]:  # by VM and port: a VM's new address is no new exposure
        return {(f.forward.proto, f.forward.port): f"{f.forward.to} port {f.to_port}" for f in plan.forwards}
    old, new = table(a), table(b)
    for key in sorted(set(old) | set(new)):
        proto, port = key
        if key not in old:
            yield Finding("forward-added", "host", f"public {proto}/{port} now reaches VM {new[key]}")
        elif key not in new:
            yield Finding("forward-removed", "host", f"public {proto}/{port} no longer reaches VM {old[key]}", False)
        elif old[key] != new[key]:
            yield Finding("forward-retargeted", "host", f"public {proto}/{port}: {old[key]} -> {new[key]}")
    old_sites = {s.host: s for s in a.blueprint.vps.sites} if a.blueprint.vps else {}
    new_sites = {s.host: s for s in b.blueprint.vps.sites} if b.blueprint.vps else {}
    for host in sorted(set(new_sites) - set(old_sites)):
        s = new_sites[host]
        yield Finding("site-added", "vps", f"https://{host} is published, through the tunnel to {s.client} port {s.port}")
    for host in sorted(set(old_sites) - set(new_sites)):
        yield Finding("site-removed", "vps", f"https://{host} is no longer published", False)


def _destination(r: EgressRule) -> str:
    where = f" to {r.to.network_address if r.to.prefixlen == 32 else r.to}" if r.to else " anywhere"
    return f"{r.proto}/{r.port}{where}" + (f" through {r.interface}" if r.interface else "") + f" ({r.why})"


def _covers(old: EgressRule, new: EgressRule) -> bool:
    """`old` already let out everything `new` does."""
    return ((old.port, old.proto) == (new.port, new.proto) and old.interface in (None, new.interface)
            and (old.to is None or (new.to is not None and new.to.subnet_of(old.to))))


def _egress(a: Plan, b: Plan) -> Iterator[Finding]:
    """Outbound filtering of each machine: turned off (egress.open) or a destination added to its
    egress.allow is egress-widened, unless an old one already let that out. moat's own defaults
    (resolvers, NTP, mirrors, its services) follow other changes, which are findings of their own.
    A new machine is compared with the secure default: filtered, nothing declared."""
    old_plans = {e.machine: e for e in a.egress}
    for new in b.egress:
        old = old_plans.get(new.machine) or EgressPlan(new.machine, False, ())
        who = new.machine
        if new.open and not old.open:
            yield Finding("egress-widened", who, f"outbound filtering is off on {who}: it may connect anywhere (egress.open)")
            continue
        if old.open and not new.open:
            yield Finding("egress-narrowed", who, f"{who} filters its outbound traffic again: only its egress rules go out", False)
            continue
        if new.open:
            continue
        before, after = old.declared(), new.declared()
        for r in after:
            if not any(_covers(o, r) for o in before):
                yield Finding("egress-widened", who, f"{who} may now connect out: {_destination(r)}")
        for r in before:
            if not any(_covers(n, r) for n in after):
                yield Finding("egress-narrowed", who, f"{who} may no longer connect out: {_destination(r)}", False)


def _encryption(a: Plan, b: Plan) -> Iterator[Finding]:
    if a.blueprint.host.disk.encryption is not None and b.blueprint.host.disk.encryption is None:
        yield Finding("encryption-removed", "host", "the host's disk is no longer encrypted (LUKS) at its next install")
    old = {(rv.name, v.data.name): v.data.encrypted for rv in a.vms for v in rv.volumes if v.data}
    for rv in b.vms:
        for v in rv.volumes:
            if v.data and old.get((rv.name, v.data.name)) and not v.data.encrypted:
                yield Finding("encryption-removed", rv.name, f"data disk {v.data.name} is no longer encrypted")
            elif v.data and (rv.name, v.data.name) not in old and not v.data.encrypted:
                yield Finding("unencrypted-disk", rv.name, f"new data disk {v.data.name} is not encrypted")


def _mirror(a: Plan, b: Plan) -> Iterator[Finding]:
    def listeners(plan: Plan) -> set[str]:
        return {rv.name for rv in plan.vms for n in rv.nics if n.network.mode == "mirror"}
    if a.mirror is not None and b.mirror is None:
        yield Finding("mirror-removed", "host", "the traffic mirror is off: the IDS no longer sees the uplink's traffic")
    elif a.mirror is None and b.mirror is not None:
        yield Finding("mirror-added", "host", f"{b.mirror.interface}'s traffic is copied to bridge {b.mirror.bridge}", False)
    old, new = listeners(a), listeners(b)
    for vm in sorted(new - old):
        yield Finding("mirror-joined", vm, f"VM {vm} joins the mirror bridge: it sees a copy of all uplink traffic")
    for vm in sorted(old - new):
        # the VM that listens there is the IDS: leaving, it goes blind
        yield Finding("mirror-left", vm, f"VM {vm} leaves the mirror bridge: it no longer sees the uplink's traffic")


def _logins(plan: Plan) -> dict[tuple[str, str], tuple[frozenset[str], bool]]:
    """(machine, user) -> (keys, sudo) for every machine moat provisions logins on."""
    found = {("host", u.name): (frozenset(u.ssh_keys), u.sudo) for u in plan.host_users}
    for rv in plan.vms:
        found.update({(rv.name, u.name): (frozenset(u.ssh_keys), u.sudo) for u in rv.users})
    vps = plan.blueprint.vps
    if vps is not None:
        users = {u.name: u for u in plan.blueprint.users}
        names = vps.users if vps.users is not None else tuple(users)
        found.update({("vps", n): (frozenset(users[n].ssh_keys), users[n].sudo) for n in names if n in users})
    return found


def _key_name(key: str) -> str:
    parts = key.split()
    return parts[2] if len(parts) > 2 else parts[0] + " " + parts[1][-12:] if len(parts) > 1 else key


def _users(a: Plan, b: Plan) -> Iterator[Finding]:
    old, new = _logins(a), _logins(b)
    machines = {m for m, _ in old}
    for key in sorted(set(old) | set(new)):
        machine, user = key
        if key not in old:
            # on a new machine, the blueprint's users as before: shown, not a widening of its own
            yield Finding("login-added", machine, f"user {user} can log in to {machine}" + (" (sudo)" if new[key][1] else "")
                          + ("" if machine in machines else " (a new machine)"), machine in machines)
        elif key not in new:
            yield Finding("login-removed", machine, f"user {user} can no longer log in to {machine}", False)
        else:
            for k in sorted(new[key][0] - old[key][0]):
                yield Finding("key-added", machine, f"user {user} on {machine}: new SSH key {_key_name(k)}")
            for k in sorted(old[key][0] - new[key][0]):
                yield Finding("key-removed", machine, f"user {user} on {machine}: SSH key {_key_name(k)} removed", False)
            if new[key][1] and not old[key][1]:
                yield Finding("sudo-granted", machine, f"user {user} on {machine} gets sudo")


# sshd directives whose change weakens a server, and how to compare them
SSHD_YES_IS_WEAK = ("PasswordAuthentication", "PermitEmptyPasswords", "KbdInteractiveAuthentication",
                    "HostbasedAuthentication", "PermitUserEnvironment", "X11Forwarding", "AllowTcpForwarding",
                    "AllowAgentForwarding", "PermitTunnel", "GatewayPorts")
SSHD_ALGORITHMS = ("Ciphers", "KexAlgorithms", "MACs", "HostKeyAlgorithms", "PubkeyAcceptedAlgorithms")
# TLS settings of the VPS's haproxy and OpenVPN: any change is shown; these weaken when lowered/added
# (or removed: the library's defaults accept more, e.g. OpenSSL's groups include X448 and secp521r1)
TLS_KEYS = ("ssl-default-bind-ciphers", "ssl-default-bind-ciphersuites", "ssl-default-bind-curves",
            "ssl-default-bind-options", "ssl-default-server-options", "tls-version-min", "data-ciphers", "cipher",
            "tls-cipher", "auth")


def _directives(text: bytes) -> dict[str, str]:
    found: dict[str, str] = {}
    for line in text.decode("utf-8", "replace").splitlines():
        words = line.strip().split(None, 1)
        if words and not words[0].startswith("#") and words[0] not in found:  # sshd: first one wins
            found[words[0]] = words[1].strip() if len(words) > 1 else ""
    return found


def _machine(path: str) -> str:
    return path.split("/")[1] if path.startswith("vms/") else path.split("/")[0]


def _sshd(old: Side, new: Side) -> Iterator[Finding]:
    for path in sorted(p for p in set(old.files) & set(new.files) if p.endswith("ssh/sshd_config")):
        a, b = _directives(old.files[path]), _directives(new.files[path])
        who = _machine(path)
        for key in SSHD_YES_IS_WEAK:
            if a.get(key, "no") == "no" and b.get(key, "no") != "no":
                yield Finding("sshd-weakened", who, f"sshd {key} {a.get(key, 'unset')} -> {b.get(key)} ({path})")
        if a.get("PermitRootLogin", "no") == "no" and b.get("PermitRootLogin", "no") != "no":
            yield Finding("sshd-weakened", who, f"sshd PermitRootLogin no -> {b['PermitRootLogin']} ({path})")
        old_methods = set(a.get("AuthenticationMethods", "").replace(",", " ").split())
        new_methods = set(b.get("AuthenticationMethods", "").replace(",", " ").split())
        if "keyboard-interactive" in old_methods and "keyboard-interactive" not in new_methods:
            yield Finding("sshd-weakened", who, f"sshd no longer asks for a TOTP code: AuthenticationMethods "
                          f"{a.get('AuthenticationMethods')} -> {b.get('AuthenticationMethods', 'unset')} ({path})")
        elif "keyboard-interactive" in new_methods and "keyboard-interactive" not in old_methods:
            yield Finding("sshd-hardened", who, f"sshd asks for a TOTP code after the key ({path})", False)
        for key in SSHD_ALGORITHMS:
            more = set(b.get(key, "").split(",")) - set(a.get(key, "").split(",")) - {""}
            if more and key in a:
                yield Finding("sshd-weakened", who, f"sshd {key} now also accepts {', '.join(sorted(more))} ({path})")


def _tls(old: Side, new: Side) -> Iterator[Finding]:
    for path in sorted(p for p in set(old.files) & set(new.files)
                       if p.startswith("vps/haproxy/") or p.startswith("vps/openvpn/server")):
        a, b = _directives(old.files[path]), _directives(new.files[path])
        for key in TLS_KEYS:
            if key in a and a.get(key) != b.get(key):
                yield Finding("tls-weakened" if _weaker(key, a[key], b.get(key)) else "tls-changed", "vps",
                              f"{key} {a[key]} -> {b.get(key, 'unset')} ({path})", _weaker(key, a[key], b.get(key)))


def _weaker(key: str, old: str, new: str | None) -> bool:
    """A TLS setting is weaker when removed, when it accepts something the old did not, or when a
    minimum version goes down."""
    if new is None:
        return True
    versions = ("TLSv1.0", "TLSv1.1", "TLSv1.2", "TLSv1.3", "1.0", "1.1", "1.2", "1.3")
    old_v = [v for v in old.replace(",", " ").split() if v in versions]
    new_v = [v for v in new.replace(",", " ").split() if v in versions]
    if old_v and new_v:
        return new_v[0].removeprefix("TLSv") < old_v[0].removeprefix("TLSv")
    if old_v and not new_v:
        return True
    split = (lambda t: set(t.replace(":", " ").replace(",", " ").split()))
    return bool(split(new) - split(old))


def findings(old: Side, new: Side) -> list[Finding]:
    """Every security finding, widening ones first."""
    a, b = old.plan, new.plan
    found = [*_ports(a, b), *_forwards(a, b), *_egress(a, b), *_sshd(old, new), *_tls(old, new), *_encryption(a, b),
             *_mirror(a, b), *_users(a, b)]
    return sorted(found, key=lambda f: not f.widens)
