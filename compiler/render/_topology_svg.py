"""Draw topology.json (compiler/render/topology.py) as an SVG, by hand: no layout engine.

Top to bottom: the Internet, with the ports open there (the host's own above its uplink, each
forward above the VM it goes to, arrows down) and the VPS with its sites and tunnels; the host,
its uplink across the top; a row of VMs; one horizontal lane per network below them (bridge,
name, subnet), each VM joined to its networks by a line labelled with its address there. The
mirror network is dashed and fed from the uplink; the VMs listening on it are marked IDS.

Text is monospaced (DejaVu Sans Mono, advance 0.6 em), so widths are computed, not measured,
and every box is as wide as its longest line: nothing overlaps or is cut off. All coordinates
are integers and every list is in the JSON's (sorted) order: same JSON, same bytes. Every text
and attribute value is XML-escaped. Elements that stand for something carry a stable id:
`host`, `uplink`, `vm-NAME`, `net-NAME`, `nic-VM-NET`, `fwd-PROTO-PORT`, `port-PROTO-PORT`
(the host's own), `mirror`, `vps`, `site-HOST`, `tunnel-CLIENT`.
"""

from __future__ import annotations

import math
import re

FONT = "DejaVu Sans Mono, Menlo, Consolas, monospace"
SIZE, SMALL, TITLE = 12, 11, 15
LINE = 16            # text line pitch
MARGIN, GAP = 20, 24  # around the picture; between columns
PAD = 8               # inside boxes
PILL_H = 2 * LINE + 6
SEP = " · "  # SVG collapses runs of spaces
LANE_GAP = 46
COLOURS = {"nat": "#1f5fa8", "mirror": "#c0561b", "fwd": "#222222", "tunnel": "#2a8a3e", "host": "#555555",
           "vps": "#6b3fa0", "internet": "#eef3f8"}


def escape(text: str, quote: bool = False) -> str:
    """&, < and > as entities (and " with quote), as xml.sax.saxutils.escape does; that module
    would import urllib and http.client into every start of moat."""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return text.replace('"', "&quot;") if quote else text



def width(text: str, size: int = SIZE) -> int:
    """Advance of `text` in a monospaced font of `size` px (0.6 em a character, rounded up)."""
    return math.ceil(len(text) * size * 0.6) + 1


def ident(kind: str, *names: object) -> str:
    """A stable XML id: kind-name..., characters other than [A-Za-z0-9_.-] replaced by '_'."""
    return "-".join([kind, *(re.sub(r"[^A-Za-z0-9_.-]", "_", str(n)) for n in names)])


def attrs(**values: object) -> str:
    parts = []
    for key, value in values.items():
        if value is None:
            continue
        parts.append(f'{key.rstrip("_").replace("_", "-")}="{escape(str(value), quote=True)}"')
    return " ".join(parts)


class Canvas:
    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, item: str) -> None:
        self.items.append(item)

    def open(self, id_: str | None = None, class_: str | None = None) -> None:
        self.add(f"<g {attrs(id=id_, class_=class_)}>" if id_ or class_ else "<g>")

    def close(self) -> None:
        self.add("</g>")

    def element(self, tag: str, body: str | None = None, **values: object) -> None:
        """<tag attrs/> or <tag attrs>body</tag>; body is escaped here."""
        self.add(f"<{tag} {attrs(**values)}/>" if body is None else f"<{tag} {attrs(**values)}>{escape(body)}</{tag}>")

    def text(self, x: int, y: int, text: str, size: int = SIZE, bold: bool = False, fill: str = "#111111",
             id_: str | None = None, class_: str | None = None) -> None:
        self.element("text", text, id=id_, class_=class_, x=x, y=y, font_size=size, fill=fill,
                     font_weight="bold" if bold else None)

    def rect(self, x: int, y: int, w: int, h: int, stroke: str, fill: str = "#ffffff", dash: str | None = None,
             rx: int = 4, id_: str | None = None, class_: str | None = None, stroke_width: int = 1) -> None:
        self.element("rect", id=id_, class_=class_, x=x, y=y, width=w, height=h, rx=rx, fill=fill, stroke=stroke,
                     stroke_width=stroke_width, stroke_dasharray=dash)

    def line(self, x1: int, y1: int, x2: int, y2: int, stroke: str, width_: int = 1, dash: str | None = None,
             arrow: bool = False) -> None:
        self.element("line", x1=x1, y1=y1, x2=x2, y2=y2, stroke=stroke, stroke_width=width_, stroke_dasharray=dash,
                     marker_end=marker(stroke) if arrow else None)

    def path(self, points: list[tuple[int, int]], stroke: str, width_: int = 1, dash: str | None = None,
             arrow: bool = False, class_: str | None = None) -> None:
        d = " ".join(f"{'M' if i == 0 else 'L'} {x} {y}" for i, (x, y) in enumerate(points))
        self.element("path", class_=class_, d=d, fill="none", stroke=stroke, stroke_width=width_,
                     stroke_dasharray=dash, marker_end=marker(stroke) if arrow else None)

    def dot(self, x: int, y: int, fill: str) -> None:
        self.add(f"<circle {attrs(cx=x, cy=y, r=4, fill=fill)}/>")


def marker(colour: str) -> str:
    """The arrowhead of a colour (defined once each in <defs>)."""
    return "url(#arrow-" + next(k for k, v in COLOURS.items() if v == colour) + ")"


def _pill_lines(port: dict, forward: dict | None) -> list[str]:
    head = f"{port['port']}/{port['proto']}"
    if forward is not None:
        return [head, f"→ {forward['address']}:{forward['to_port']}"]
    return [head, port["why"] + (f" from {port['from']}" if port.get("from") else "")]


def _pill(canvas, id_: str, cls: str, x: int, y: int, w: int, lines, colour: str, width: int, to_y: int) -> None:
    """A port pill (two lines) with its arrow down to to_y: the host's own ports and the forwards."""
    canvas.open(id_, cls)
    canvas.rect(x, y, w, PILL_H, colour, rx=8)
    canvas.text(x + PAD, y + 15, lines[0], SMALL, bold=True)
    canvas.text(x + PAD, y + 15 + LINE, lines[1], SMALL)
    canvas.line(x + w // 2, y + PILL_H, x + w // 2, to_y, colour, width, arrow=True)
    canvas.close()


def _pill_width(lines: list[str]) -> int:
    return max(width(line, SMALL) for line in lines) + 2 * PAD


def _vm_lines(vm: dict, listening: bool) -> list[str]:
    lines = [vm["name"]]
    if vm.get("description"):
        lines.append(vm["description"])
    lines.append(f"{vm['install']['method']}: {vm['install']['from']}")
    if listening:
        lines.append("IDS: listens on the mirror")
    return lines


def _nic_label(nic: dict, mirror_network: str | None) -> str:
    if nic["address"]:
        return nic["address"]
    return "listening (no address)" if nic["network"] == mirror_network else "no address"


def _lane_label(net: dict, mirror: dict | None) -> str:
    parts = [net["bridge"], net["name"]]
    if net["subnet"]:
        parts.append(net["subnet"])
    if net["mode"] == "mirror":
        fed = mirror and mirror["network"] == net["name"]
        parts.append(f"copy of every packet on {mirror['interface']}" if fed else "mirror")
    else:
        parts.append(f"{net['mode']}, gateway {net['gateway']}" if net["gateway"] else net["mode"])
    return SEP.join(parts)


def svg(topo: dict) -> str:
    host, vms, nets, forwards = topo["host"], topo["vms"], topo["networks"], topo["forwards"]
    mirror, vps = topo["mirror"], topo["vps"]
    mirror_net = mirror["network"] if mirror else None
    listeners = set(mirror["listeners"]) if mirror else set()
    forwarded = {(f["proto"], f["port"]): f for f in forwards}
    own_ports = [p for p in host["public_ports"] if (p["proto"], p["port"]) not in forwarded]
    lane_of = {n["name"]: i for i, n in enumerate(nets)}
    canvas = Canvas()

    # -- widths: column 0 holds the host's labels and own ports, then one column per VM
    uplink = host["uplink"]
    uplink_text = SEP.join([f"uplink {uplink['interface']}", uplink["address"], f"gateway {uplink['gateway']}"])
    header_text = f"host {host['name']}.{host['domain']} ({host['os']})"
    own_pills = [(p, _pill_lines(p, None)) for p in own_ports]
    col0 = max([width(uplink_text), width(header_text, 13) + 12, *(width(_lane_label(n, mirror)) + 8 for n in nets),
                sum(_pill_width(lines) + 10 for _, lines in own_pills) - 10]) + 24
    columns = []  # (vm, box width, its forwards with pill lines, nics sorted deepest lane first)
    for vm in vms:
        fwds = [(f, _pill_lines({"port": f["port"], "proto": f["proto"]}, f)) for f in forwards if f["to"] == vm["name"]]
        nics = sorted(vm["nics"], key=lambda n: -lane_of[n["network"]])
        lines = _vm_lines(vm, vm["name"] in listeners)
        need = [max(width(line, 13 if i == 0 else SMALL) for i, line in enumerate(lines)) + 2 * PAD,
                sum(_pill_width(lines) + 10 for _, lines in fwds) - 10,
                *(16 + j * 14 + 6 + width(_nic_label(n, mirror_net), SMALL) + 4 for j, n in enumerate(nics))]
        columns.append((vm, max(need), fwds, nics))

    host_x = MARGIN
    content_right = host_x + col0 + sum(w + GAP for _, w, _, _ in columns)
    # -- the VPS sits in the Internet band, right of the host's columns; other homes right of it
    vps_lines: list[tuple[str, str | None, bool]] = []  # (text, id, bold)
    vps_w = vps_h = 0
    others: list[dict] = []
    me: dict | None = None
    if vps:
        vps_lines.append((f"VPS {vps['name']}{SEP}{vps['address']}", None, True))
        vps_lines.append(("ports " + ", ".join(f"{p['port']}/{p['proto']}" for p in vps["public_ports"]), None, False))
        vps_lines.append((f"OpenVPN server {vps['openvpn']['port']}/{vps['openvpn']['proto']}{SEP}{vps['openvpn']['subnet']}",
                          None, False))
        vps_lines.append(("sites (HAProxy, by Host name):", None, False))
        for s in vps["sites"]:
            if s["to"]:
                where = f"{s['client']} (this host) → {s['to']['vm']} {s['to']['address']}:{s['to']['port']}"
            else:
                where = f"{s['client']}:{s['port']}" + ("" if s["this_host"] else " (another host)")
            vps_lines.append((f"• {s['host']} → {where}", ident("site", s["host"]), False))
        vps_w = max(width(t, 13 if b else SMALL) for t, _, b in vps_lines) + 2 * PAD
        vps_h = len(vps_lines) * LINE + 2 * PAD
        me = next((t for t in vps["tunnels"] if t["this_host"]), None)
        others = [t for t in vps["tunnels"] if not t["this_host"]]
    vps_x = content_right + GAP
    other_w = max((width(f"{t['client']}{SEP}{t['address']}", SMALL) for t in others), default=0)
    other_w = max(other_w, width("another host", SMALL)) + 2 * PAD if others else 0
    right = content_right
    if vps:  # the VPS, the other homes and this host's tunnel port (under the VPS), inside the band
        tun_port = f"{me['interface'] or 'tunnel'}{SEP}{me['address']}" if me else ""
        right = max(right, vps_x + vps_w + (GAP + 24 + other_w if others else 0) + 12,
                    vps_x + 24 + width(tun_port, SMALL) + 2 * PAD + 12)
    total_w = right + MARGIN

    # -- vertical layout
    y = MARGIN + TITLE
    title = f"{topo['name']}" + (f" — {topo['description']}" if topo.get("description") else "")
    band_top = y + 16
    band_inner = band_top + 28
    band_bottom = max(band_inner + PILL_H + 12, band_inner + vps_h + 12 + (PILL_H + 8 if vps and me else 0))
    pills_y = band_bottom - 12 - PILL_H
    host_top = band_bottom + 40
    strip_h = 26
    strip_bottom = host_top + strip_h
    header_y = strip_bottom + 22
    vm_top = strip_bottom + 40
    vm_h = max((len(_vm_lines(vm, vm["name"] in listeners)) * LINE + 2 * PAD - 2 for vm in vms), default=0)
    lanes_top = vm_top + vm_h + 36
    lane_y = [lanes_top + i * LANE_GAP for i in range(len(nets))]
    host_bottom = (lane_y[-1] if lane_y else vm_top + vm_h) + 22
    legend_y = host_bottom + 26
    total_h = legend_y + 14 + MARGIN

    canvas.add(f'<rect x="0" y="0" width="{total_w}" height="{total_h}" fill="#ffffff"/>')
    canvas.text(MARGIN, MARGIN + 12, title, TITLE, bold=True, id_="title")

    # -- Internet band, the host's own ports
    canvas.open("internet")
    canvas.rect(MARGIN, band_top, total_w - 2 * MARGIN, band_bottom - band_top, "#9fb4c8", COLOURS["internet"], rx=10)
    canvas.text(MARGIN + 10, band_top + 18, "Internet", 13, bold=True)
    canvas.close()
    x = host_x + 24
    for port, lines in own_pills:
        w = _pill_width(lines)
        _pill(canvas, ident("port", port["proto"], port["port"]), "port", x, pills_y, w, lines, COLOURS["host"], 1, host_top - 2)
        x += w + 10

    # -- the host box and its uplink strip
    canvas.open("host", "host")
    canvas.rect(host_x, host_top, right - host_x, host_bottom - host_top, COLOURS["host"], "#fafafa", rx=6, stroke_width=2)
    canvas.rect(host_x, host_top, right - host_x, strip_h, COLOURS["host"], "#e4e4e4", rx=6, id_="uplink", stroke_width=2)
    canvas.text(host_x + 12, host_top + 17, uplink_text, SIZE, bold=True)
    canvas.text(host_x + 24, header_y, header_text, 13, bold=True)
    canvas.close()

    # -- networks: one lane each, below the VMs
    lane_left = host_x + 24
    for net, ly in zip(nets, lane_y):
        is_mirror = net["mode"] == "mirror"
        colour = COLOURS["mirror" if is_mirror else "nat"]
        canvas.open(ident("net", net["name"]), "network mirror" if is_mirror else "network")
        canvas.line(lane_left, ly, right - 12, ly, colour, 3, dash="8 5" if is_mirror else None)
        canvas.text(lane_left + 4, ly - 7, _lane_label(net, mirror), SIZE, fill=colour)
        canvas.close()
    if mirror and mirror_net in lane_of:
        my = lane_y[lane_of[mirror_net]]
        canvas.open("mirror", "mirror")
        fx = host_x + 12
        canvas.line(fx, strip_bottom, fx, my, COLOURS["mirror"], 2, dash="4 3")
        canvas.line(fx, my, lane_left - 2, my, COLOURS["mirror"], 2, arrow=True)
        canvas.close()

    # -- VMs, their NICs, and the forwards arriving at them
    x = host_x + col0
    tunnel_targets: list[tuple[str, int]] = []  # VMs that sites reach through the tunnel, arrow x
    for vm, w, fwds, nics in columns:
        listening = vm["name"] in listeners
        lines = _vm_lines(vm, listening)
        for nic_index, nic in enumerate(nics):
            if nic["network"] not in lane_of:
                continue
            cx = x + 16 + nic_index * 14
            ly = lane_y[lane_of[nic["network"]]]
            is_mirror = nic["network"] == mirror_net
            colour = COLOURS["mirror" if is_mirror else "nat"]
            canvas.open(ident("nic", vm["name"], nic["network"]), "nic")
            canvas.line(cx, vm_top + vm_h, cx, ly, colour, 2, dash="4 3" if is_mirror else None)
            canvas.dot(cx, ly, colour)
            canvas.text(cx + 6, ly - 7, _nic_label(nic, mirror_net), SMALL, fill=colour, bold=True)
            canvas.close()
        canvas.open(ident("vm", vm["name"]), "vm ids" if listening else "vm")
        canvas.rect(x, vm_top, w, vm_h, COLOURS["mirror"] if listening else "#333333", "#ffffff",
                    stroke_width=2, dash=None)
        for i, line in enumerate(lines):
            canvas.text(x + PAD, vm_top + PAD + 12 + i * LINE, line, 13 if i == 0 else SMALL, bold=i == 0,
                        fill=COLOURS["mirror"] if listening and i == len(lines) - 1 else "#111111")
        canvas.close()
        fx = x + max(0, (w - (sum(_pill_width(ls) + 10 for _, ls in fwds) - 10)) // 2)
        for fwd, plines in fwds:
            pw = _pill_width(plines)
            _pill(canvas, ident("fwd", fwd["proto"], fwd["port"]), "forward", fx, pills_y, pw, plines, COLOURS["fwd"], 2, vm_top - 2)
            fx += pw + 10
        if any(i["sites"] for f, _ in fwds for i in f["ingress"]):
            tunnel_targets.append((vm["name"], x + w - 14))
        x += w + GAP

    # -- the VPS, its sites, and the tunnels; from this host's tunnel port, the sites' requests
    # (DNATed like the forward with their port) go down to their VMs
    if vps:
        canvas.open("vps", "vps")
        canvas.rect(vps_x, band_inner, vps_w, vps_h, COLOURS["vps"], "#ffffff", stroke_width=2)
        for i, (line, id_, bold) in enumerate(vps_lines):
            canvas.text(vps_x + PAD, band_inner + PAD + 12 + i * LINE, line, 13 if bold else SMALL, bold=bold,
                        fill=COLOURS["vps"] if id_ else "#111111", id_=id_, class_="site" if id_ else None)
        canvas.close()
        if me:
            tx = vps_x + 40
            pw = width(tun_port, SMALL) + 2 * PAD
            canvas.open(ident("tunnel", me["client"]), "tunnel")
            canvas.line(tx, band_inner + vps_h, tx, host_top - 3, COLOURS["tunnel"], 2, dash="6 4")
            canvas.text(tx + 8, band_inner + vps_h + 15,
                        f"OpenVPN tunnel{SEP}{me['client']} (this host)", SMALL, fill=COLOURS["tunnel"], bold=True)
            canvas.text(tx + 8, band_inner + vps_h + 15 + LINE, "carries the sites of this host", SMALL,
                        fill=COLOURS["tunnel"])
            canvas.rect(tx - 16, host_top - 3, pw, strip_h + 6, COLOURS["tunnel"], "#e3f3e6", stroke_width=2)
            canvas.text(tx - 16 + PAD, host_top + 17, tun_port, SMALL, bold=True, fill=COLOURS["tunnel"])
            for name, target_x in tunnel_targets:
                canvas.path([(tx, strip_bottom + 3), (tx, vm_top - 14), (target_x, vm_top - 14), (target_x, vm_top - 2)],
                            COLOURS["tunnel"], 2, dash="6 4", arrow=True, class_=f"sites-to-{ident('vm', name)}")
            canvas.close()
        ox = vps_x + vps_w + GAP + 24
        for i, t in enumerate(others):
            oy = band_inner + i * (2 * LINE + 2 * PAD + 8)
            canvas.open(ident("tunnel", t["client"]), "tunnel other")
            canvas.line(vps_x + vps_w, oy + LINE + PAD, ox, oy + LINE + PAD, COLOURS["tunnel"], 2, dash="6 4")
            canvas.rect(ox, oy, other_w, 2 * LINE + 2 * PAD - 4, COLOURS["tunnel"], "#ffffff")
            canvas.text(ox + PAD, oy + PAD + 11, f"{t['client']}{SEP}{t['address']}", SMALL, bold=True)
            canvas.text(ox + PAD, oy + PAD + 11 + LINE, "another host", SMALL)
            canvas.close()

    # -- legend
    canvas.open("legend")
    lx, items = MARGIN, [("nat", None, "network (NAT)")]
    if mirror:
        items.append(("mirror", "8 5", "mirror network (IDS copies)"))
    if forwards:
        items.append(("fwd", None, "forward (DNAT on the uplink)"))
    if vps:
        items.append(("tunnel", "6 4", "OpenVPN tunnel"))
    for key, dash, label in items:
        canvas.line(lx, legend_y - 4, lx + 28, legend_y - 4, COLOURS[key], 3 if key in ("nat", "mirror") else 2,
                    dash=dash, arrow=key == "fwd")
        canvas.text(lx + 36, legend_y, label, SMALL)
        lx += 36 + width(label, SMALL) + 24
    canvas.close()

    markers = "".join(
        f'<marker id="arrow-{name}" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
        f'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="{colour}"/></marker>'
        for name, colour in sorted(COLOURS.items()) if name in ("fwd", "host", "mirror", "tunnel"))
    head = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{total_w}" height="{total_h}" '
            f'viewBox="0 0 {total_w} {total_h}" font-family="{escape(FONT)}">\n'
            f"<title>{escape('topology of ' + topo['name'])}</title>\n<defs>{markers}</defs>\n")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + head + "\n".join(canvas.items) + "\n</svg>\n"
