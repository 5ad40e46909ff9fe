"""Rule egress-contradiction: `egress.open: true` lets everything out, so an `allow` list beside it
would mean nothing; one of the two is a mistake, and which one only the author knows.

Rule egress-unenforced (a warning): a VM installed from an `iso` is set up by hand, moat writes
no firewall into it, so an `egress` written for it is not enforced by anything moat generates."""

from __future__ import annotations

from typing import Iterator

from ..diagnostics import Diagnostic
from . import Context


def check(ctx: Context) -> Iterator[Diagnostic]:
    bp = ctx.bp
    machines = [("the host", bp.host.egress), *((f"VM '{vm.name}'", vm.egress) for vm in bp.vms)]
    if bp.vps is not None:
        machines.append(("the VPS", bp.vps.egress))
    for who, egress in machines:
        if egress.open and egress.allow:
            yield Diagnostic("egress-contradiction", f"egress of {who} is open (everything may go out) and also lists "
                             f"{len(egress.allow)} allowed destination(s)", egress.at + ("allow",), at_key=True,
                             hint="remove `open: true` to filter outbound traffic, or remove `allow`")
    for vm in bp.vms:
        if vm.install.method == "iso" and (vm.egress.open or vm.egress.allow):
            yield Diagnostic("egress-unenforced", f"VM '{vm.name}' is installed from an ISO by hand: moat writes no "
                             "firewall into it, so its egress is not enforced", vm.egress.at, severity="warning",
                             at_key=True, hint="filter its outbound traffic in the system you install, or remove egress")
