"""`pagewalk map -o map.html`: the address space of one view as one self-contained HTML file.

No server, no network: the data is embedded as compact columnar JSON and drawn on a canvas.
The axis is the VA space with the empty stretches longer than GAP_PAGES pages shrunk to that
size (a dashed line marks each when there is room), so a sparse 2^57-byte space fits one band and every position is an
exact integer below 2^53: zooming goes down to single pages. Each range is coloured by its
rights; hovering shows its VA range, PA, size, level, rights and the VA and PA of the page under
the pointer. Drawing skips to the next pixel column once a column is painted, so a frame costs
O(width · log n), not O(n): 100 000 ranges stay responsive. Beyond MAX_RANGES ranges (a
2^24-page image has 14 million) the page gets an aggregate (`axis()`): VA-adjacent ranges of one
colour merge first, then runs of consecutive ranges are drawn as one, coloured by their largest
member, and the tooltip says how many ranges it stands for; positions stay exact.
`axis()` is also the layout of the PNG map (`pngmap.py`).

Opening `map.html#selftest` runs a self-check in the page (zoom into a range, hover it, time a
frame) and writes the result as JSON into `<pre id="selftest">`, which tests read back with a
headless browser.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass

import numpy as np

from .mappings import MAPPED, STATUS_NAMES, Mappings, mappings

U64 = np.uint64

GAP_PAGES = 2  # empty stretches longer than this many pages are drawn this long

# rights text -> colour (kernel / user, read / write / execute)
COLOURS = {
    "kernel r--": "#8aa4c8", "kernel rw-": "#4caf50", "kernel r-x": "#ff9800", "kernel rwx": "#e53935",
    "kernel --x": "#ffb74d", "kernel -w-": "#81c784", "kernel -wx": "#e53935", "kernel ---": "#b0bec5",
    "kernel r-X": "#ff5722", "kernel rwX": "#b71c1c", "kernel rw-X": "#b71c1c",
    "user r--": "#b39ddb", "user rw-": "#7e57c2", "user r-x": "#fdd835", "user rwx": "#d81b60",
    "user ---": "#d1c4e9", "user --x": "#fff176", "user -w-": "#9575cd", "user -wx": "#d81b60",
    "fault": "#000000", "missing": "#616161", "unwalked": "#795548",
}


MAX_RANGES = 100_000  # beyond this many ranges the map aggregates (the page stays responsive)


@dataclass
class Axis:
    """The ranges of a view laid out on the compressed axis (gaps longer than `gap` drawn `gap`
    long), at most `max_ranges` of them: numpy columns, shared by the HTML and the PNG map.

    `pos`, `size` (uint64, exact integers), `va`, `pa`, `key` (index into `palette`), `n` (ranges
    aggregated into each drawn range, 1 when exact), `seg_pos`/`seg_va` (where a collapsed gap
    ends: positions map back to VAs exactly), `palette` [(label, level, repeat)], `total`.
    """

    pos: np.ndarray
    size: np.ndarray
    va: np.ndarray
    pa: np.ndarray
    key: np.ndarray
    n: np.ndarray
    seg_pos: np.ndarray
    seg_va: np.ndarray
    palette: list[tuple[str, str, bool]]
    total: int
    gap: int
    page: int
    ranges: int  # ranges before aggregation

    def pos_of_va(self, vas) -> np.ndarray:
        """Positions of VAs (a VA in a collapsed gap: the end of the segment before it)."""
        vas = np.asarray(vas, U64)
        if not len(self.seg_va):
            return np.zeros(len(vas), U64)
        j = np.searchsorted(self.seg_va, vas, side="right") - 1
        i = np.maximum(j, 0)
        seg_end = np.append(self.seg_pos[1:] - U64(self.gap), U64(self.total))
        with np.errstate(over="ignore"):
            p = np.minimum(self.seg_pos[i] + (vas - self.seg_va[i]), seg_end[i])
        return np.where(j < 0, U64(0), p)

    def colours(self) -> list[str]:
        return [COLOURS.get(label.replace(" G", ""), "#9e9e9e") for label, _, _ in self.palette]


def axis(m: Mappings, max_ranges: int = MAX_RANGES) -> Axis:
    """Lay the ranges of `m` out on the compressed axis, aggregating beyond `max_ranges`:
    first VA-adjacent ranges of the same colour key merge (PAs no longer exact), then runs of
    consecutive ranges take the key of their largest member. All whole-array numpy."""
    n_in = len(m)
    order = None if n_in < 2 or bool(np.all(m.va_start[1:] >= m.va_start[:-1])) else np.argsort(m.va_start, kind="stable")
    col = (lambda a: a if order is None else a[order])
    va, size, pa = col(m.va_start), col(m.size), col(m.pa_start)
    status, level, rep = col(m.status), col(m.level), col(m.repeat)
    code = col(m.perms.code()) if n_in else np.zeros(0, U64)
    kc = np.where(status == MAPPED, code.astype(np.int64), 64 + status.astype(np.int64))
    kc = (kc * 16 + level.astype(np.int64)) * 2 + rep.astype(np.int64)
    present = np.bincount(kc, minlength=1) > 0  # keys are small integers: a table, not a sort
    uk = np.flatnonzero(present)
    key = (np.cumsum(present) - 1)[kc]
    names = [lvl.name for lvl in m.mode.levels]
    palette = []
    for k in uk.tolist():
        r, lv, c = k & 1, (k >> 1) & 15, k >> 5
        label = _perm_label(c) if c < 64 else STATUS_NAMES[c - 64]
        palette.append((label, names[lv], bool(r)))
    nagg = np.ones(n_in, np.int64)
    with np.errstate(over="ignore"):
        end = va + size
    if n_in > max_ranges:  # 1. VA-adjacent ranges of one key
        first = np.ones(n_in, bool)
        first[1:] = (key[1:] != key[:-1]) | (va[1:] != end[:-1])
        va, size, pa, key, nagg, end = _merge_runs(first, va, size, pa, key, nagg, end)
    gap = GAP_PAGES * m.page_size
    n = len(va)
    g = np.zeros(n, U64)
    if n > 1:
        with np.errstate(over="ignore"):
            g[1:] = va[1:] - end[:-1]
    collapsed = g > U64(gap)
    collapsed[0] = True
    step = np.where(collapsed, U64(gap), g)
    step[0] = 0
    pos = np.cumsum(step + np.append(U64(0), size[:-1]).astype(U64), dtype=U64) if n else np.zeros(0, U64)
    seg_idx = np.flatnonzero(collapsed)
    seg_pos, seg_va = pos[seg_idx], va[seg_idx]
    total = int(pos[-1] + size[-1]) if n else 0
    if n > max_ranges:  # 2. runs of consecutive ranges, coloured by their largest member
        per = -(-n // max_ranges)
        first = np.zeros(n, bool)
        first[::per] = True
        pad = (-n) % per
        sz = np.concatenate([size, np.zeros(pad, U64)]).reshape(-1, per)
        kk = np.concatenate([key, np.zeros(pad, key.dtype)]).reshape(-1, per)
        bkey = kk[np.arange(len(sz)), np.argmax(sz, axis=1)]
        lastp = np.minimum(np.arange(len(sz)) * per + per, n) - 1
        fi = np.flatnonzero(first)
        pos_b = pos[fi]
        size_b = pos[lastp] + size[lastp] - pos_b
        va, pa, key = va[fi], pa[fi], bkey
        nagg = np.add.reduceat(nagg, fi)
        pos, size = pos_b, size_b
    return Axis(pos, size, va, pa, key, nagg, seg_pos, seg_va, palette, total, gap, m.page_size, n_in)


def _merge_runs(first: np.ndarray, va, size, pa, key, nagg, end):
    fi = np.flatnonzero(first)
    li = np.append(fi[1:], len(first)) - 1
    with np.errstate(over="ignore"):
        new_size = end[li] - va[fi]
    return va[fi], new_size, pa[fi], key[fi], np.add.reduceat(nagg, fi), end[li]


def _perm_label(code: int) -> str:
    from .mappings import _perm_text

    return _perm_text(code)


def map_data(m: Mappings, markers: list[tuple[int, str]] | None = None, *, max_ranges: int = MAX_RANGES) -> dict:
    """The compact document the page draws: columns of positions, sizes, PAs, palette indices,
    the segments that map positions back to VAs, and the markers."""
    ax = axis(m, max_ranges)
    spans = {lvl.name: lvl.entry_span for lvl in m.mode.levels}
    mk = []
    if markers and len(ax.pos):
        named = [(v, name) for v, name in markers if name]
        if named:
            mp = ax.pos_of_va(np.array([v % (1 << 64) for v, _ in named], U64)).tolist()
            mk = [[p, name] for p, (_, name) in zip(mp, named)]
    doc = {
        "mode": m.mode.name,
        "view": m.view,
        "page": m.page_size,
        "total": ax.total,
        "gap": ax.gap,
        "pos": ax.pos.tolist(),
        "size": ax.size.tolist(),
        "pa": ax.pa.tolist(),
        "k": ax.key.tolist(),
        "palette": [[label, lv, r, COLOURS.get(label.replace(" G", ""), "#9e9e9e"), spans[lv]]
                    for (label, lv, r) in ax.palette],
        "segs": [[p, f"{v:x}"] for p, v in zip(ax.seg_pos.tolist(), ax.seg_va.tolist())],
        "markers": mk,
    }
    if ax.ranges != len(ax.pos):
        doc["agg"] = ax.n.tolist()  # ranges drawn as one (zoomed-out view of a huge space)
        doc["ranges"] = ax.ranges
    return doc


def write_map(target, path: str, view: str = "kernel", *, m: Mappings | None = None) -> int:
    """Write the HTML map of `view` to `path`; returns the number of ranges drawn.

    >>> write_map(resolve(open_image("core.elf")), "map.html")  # doctest: +SKIP
    65942
    """
    if m is None:
        m = mappings(target, view)
    markers = []
    layout = getattr(target, "layout", None)
    if layout is not None and hasattr(layout, "markers"):
        try:
            markers = sorted((x[0], x[1] or "") for x in layout.markers())
        except (TypeError, ValueError):
            markers = []
    doc = map_data(m, markers)
    title = f"pagewalk map: {m.mode.name} {view}"
    data = json.dumps(doc, separators=(",", ":")).replace("</", "<\\/")
    with open(path, "w") as f:
        f.write(_TEMPLATE.replace("__TITLE__", html.escape(title)).replace("__DATA__", data))
    return len(m)


_TEMPLATE = r"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>__TITLE__</title>
<meta name="viewport" content="width=device-width,initial-scale=1">
<style>
body{font:13px/1.4 system-ui,sans-serif;margin:0;background:#fafafa;color:#222}
header{padding:6px 10px;background:#263238;color:#eceff1;display:flex;gap:12px;align-items:center;flex-wrap:wrap}
header input{font:12px monospace;width:18em}
#wrap{position:relative;margin:8px 10px}
canvas{display:block;width:100%;border:1px solid #bbb;background:#fff;cursor:crosshair}
#tip{position:absolute;pointer-events:none;background:#fffde7;border:1px solid #999;padding:4px 6px;font:12px monospace;white-space:pre;display:none;z-index:2}
#legend span{display:inline-block;margin-right:10px}#legend i{display:inline-block;width:12px;height:12px;margin-right:3px;vertical-align:-2px}
#info{font:12px monospace;margin:0 10px}
</style></head><body>
<header><b>__TITLE__</b><span id="range"></span>
<label>go to VA <input id="goto" placeholder="ffffffff81000000"></label>
<button id="out">whole space</button><span>wheel: zoom, drag: pan, double-click: zoom in</span></header>
<div id="wrap"><canvas id="ov" height="28"></canvas><canvas id="cv" height="220"></canvas><div id="tip"></div></div>
<div id="legend" style="margin:0 10px"></div><pre id="info"></pre><pre id="selftest"></pre>
<script id="data" type="application/json">__DATA__</script>
<script>
"use strict";
const D = JSON.parse(document.getElementById("data").textContent);
const N = D.pos.length, POS = Float64Array.from(D.pos), SIZE = Float64Array.from(D.size), K = Int32Array.from(D.k);
const PAL = D.palette, SEGP = D.segs.map(s => s[0]), SEGV = D.segs.map(s => BigInt("0x" + s[1]));
const cv = document.getElementById("cv"), ov = document.getElementById("ov"), tip = document.getElementById("tip");
const ctx = cv.getContext("2d"), octx = ov.getContext("2d");
let x0 = 0, x1 = Math.max(D.total, D.page * 16), lastFrameMs = 0;
function hex(b) { return "0x" + b.toString(16).padStart(16, "0"); }
function size(n) { const u = ["B", "K", "M", "G", "T", "P"]; let i = 0; while (n >= 1024 && n % 1024 === 0 && i < 5) { n /= 1024; i++; }
  if (n >= 1024 && i < 5) { while (n >= 1024 && i < 5) { n /= 1024; i++; } return n.toFixed(1) + u[i]; } return n + u[i]; }
function upper(a, x) { let lo = 0, hi = a.length; while (lo < hi) { const m = (lo + hi) >> 1; if (a[m] <= x) lo = m + 1; else hi = m; } return lo; }
function vaAt(p) { const i = Math.max(0, upper(SEGP, p) - 1); return SEGV[i] + BigInt(Math.floor(p - SEGP[i])); }
function posOfVa(v) {  // exact: the VA's offset in its segment (BigInt compare)
  let lo = 0, hi = SEGV.length; while (lo < hi) { const m = (lo + hi) >> 1; if (SEGV[m] <= v) lo = m + 1; else hi = m; }
  const j = lo - 1; if (j < 0) return 0; return SEGP[j] + Number(v - SEGV[j]); }
function rangeAt(p) { const i = upper(POS, p) - 1; return (i >= 0 && p < POS[i] + SIZE[i]) ? i : -1; }
function resize() { const w = cv.clientWidth; cv.width = w * devicePixelRatio; ov.width = w * devicePixelRatio; draw(); }
function draw() {
  const t0 = performance.now(), W = cv.width, H = cv.height, span = x1 - x0, sc = W / span;
  ctx.clearRect(0, 0, W, H);
  let i = Math.max(0, upper(POS, x0) - 1), lastCol = -1;
  while (i < N && POS[i] < x1) {
    const a = (POS[i] - x0) * sc, b = (POS[i] + SIZE[i] - x0) * sc;
    const col = Math.floor(a);
    if (b - a < 1 && col === lastCol) {  // this pixel column is painted: jump to the next one
      i = Math.max(i + 1, upper(POS, x0 + (col + 1) / sc) - 1); continue; }
    ctx.fillStyle = PAL[K[i]][3];
    ctx.fillRect(Math.max(0, a), 20, Math.max(1, Math.min(W, b) - Math.max(0, a)), H - 40);
    lastCol = Math.floor(b - 1e-9); i++;
  }
  const pw = D.page * sc;  // page grid when a page is wider than 6 px
  if (pw > 6) { ctx.strokeStyle = "rgba(0,0,0,.25)"; ctx.beginPath();
    for (let p = Math.floor(x0 / D.page) * D.page; p < x1; p += D.page) { const x = (p - x0) * sc; ctx.moveTo(x, 20); ctx.lineTo(x, H - 20); }
    ctx.stroke(); }
  ctx.strokeStyle = "#333"; ctx.setLineDash([3, 3]); ctx.beginPath();  // collapsed gaps
  for (let s = upper(SEGP, x0), lx = -9; s < SEGP.length && SEGP[s] < x1; s++) { const x = (SEGP[s] - D.gap / 2 - x0) * sc;
    if (x - lx < 4) { s = Math.max(s, upper(SEGP, x0 + (lx + 4) / sc) - 1); continue; } ctx.moveTo(x, 0); ctx.lineTo(x, H); lx = x; }
  ctx.stroke(); ctx.setLineDash([]);
  ctx.fillStyle = "#222"; ctx.font = (11 * devicePixelRatio) + "px sans-serif";
  let lastLabel = -1e9;
  for (const [p, name] of D.markers) if (p >= x0 && p <= x1) { const x = (p - x0) * sc; ctx.fillRect(x, 0, 1, H);
    if (x > lastLabel) { ctx.fillText(name, x + 3, 12 * devicePixelRatio); lastLabel = x + ctx.measureText(name).width + 8; } }
  ctx.fillText(hex(vaAt(x0)), 2, H - 4); const e = hex(vaAt(x1)); ctx.fillText(e, W - ctx.measureText(e).width - 2, H - 4);
  const OW = ov.width, os = OW / D.total; octx.clearRect(0, 0, OW, ov.height);
  for (let j = 0, lc = -1; j < N; ) { const a = POS[j] * os, c = Math.floor(a);
    if (c === lc) { j = Math.max(j + 1, upper(POS, (c + 1) / os) - 1); continue; }
    octx.fillStyle = PAL[K[j]][3]; octx.fillRect(a, 4, Math.max(1, SIZE[j] * os), ov.height - 8); lc = c; j++; }
  octx.strokeStyle = "#000"; octx.strokeRect(x0 * os, 1, Math.max(2, (x1 - x0) * os), ov.height - 2);
  document.getElementById("range").textContent = size(Math.round(span)) + " shown of " + size(D.total) + ", " + N + " ranges";
  lastFrameMs = performance.now() - t0;
}
function clamp() { const minSpan = D.page * 8, span = Math.max(minSpan, Math.min(x1 - x0, D.total || minSpan));
  if (x0 < 0) x0 = 0; x1 = x0 + span; if (x1 > D.total && D.total > span) { x1 = D.total; x0 = x1 - span; } }
function zoom(f, p) { x0 = p - (p - x0) * f; x1 = p + (x1 - p) * f; clamp(); draw(); }
function posAtClient(cx) { const r = cv.getBoundingClientRect(); return x0 + (cx - r.left) / r.width * (x1 - x0); }
function describe(p) {
  const i = rangeAt(p); if (i < 0) return null;
  const pal = PAL[K[i]], va = vaAt(POS[i]), off = Math.floor(p - POS[i]), pg = Math.floor(off / D.page) * D.page;
  const pa = pal[2] ? D.pa[i] + (pg % pal[4]) : D.pa[i] + pg, agg = D.agg ? D.agg[i] : 1;
  return { index: i, va_start: hex(va), va_end: hex(vaAt(POS[i] + SIZE[i])), size: SIZE[i], perm: pal[0], level: pal[1],
    repeat: pal[2], pa: "0x" + D.pa[i].toString(16), page_va: hex(va + BigInt(pg)),
    page_pa: agg > 1 ? `(${agg} ranges drawn as one)` : "0x" + pa.toString(16), agg };
}
function showTip(ev) {
  const d = describe(posAtClient(ev.clientX));
  if (!d) { tip.style.display = "none"; return; }
  tip.textContent = `${d.va_start}-${d.va_end} (${size(d.size)})\n${d.perm}  ${d.level}${d.repeat ? "  (one page, repeated)" : ""}\npa ${d.pa}\npage ${d.page_va} -> pa ${d.page_pa}`;
  const r = document.getElementById("wrap").getBoundingClientRect();
  tip.style.left = Math.min(ev.clientX - r.left + 12, r.width - 330) + "px"; tip.style.top = (ev.clientY - r.top + 12) + "px"; tip.style.display = "block";
}
let drag = null;
cv.addEventListener("wheel", ev => { ev.preventDefault(); zoom(ev.deltaY > 0 ? 1.25 : 0.8, posAtClient(ev.clientX)); }, { passive: false });
cv.addEventListener("mousedown", ev => { drag = { x: ev.clientX, a: x0, b: x1 }; });
window.addEventListener("mouseup", () => { drag = null; });
cv.addEventListener("mousemove", ev => { if (drag) { const d = (ev.clientX - drag.x) / cv.getBoundingClientRect().width * (drag.b - drag.a);
  x0 = drag.a - d; x1 = drag.b - d; clamp(); draw(); } showTip(ev); });
cv.addEventListener("mouseleave", () => { tip.style.display = "none"; });
cv.addEventListener("dblclick", ev => zoom(0.25, posAtClient(ev.clientX)));
ov.addEventListener("click", ev => { const r = ov.getBoundingClientRect(), p = (ev.clientX - r.left) / r.width * D.total, s = x1 - x0; x0 = p - s / 2; x1 = p + s / 2; clamp(); draw(); });
document.getElementById("out").onclick = () => { x0 = 0; x1 = D.total; clamp(); draw(); };
function goTo(v, span) { const p = posOfVa(v); x0 = p - span / 2; x1 = p + span / 2; clamp(); draw(); return p; }
document.getElementById("goto").addEventListener("change", ev => { try { goTo(BigInt("0x" + ev.target.value.replace(/^0x/, "")), D.page * 64); } catch (e) {} });
document.getElementById("legend").innerHTML = [...new Set(PAL.map(p => p[0].replace(" G", "") + "|" + p[3]))].map(s => { const [n, c] = s.split("|");
  return `<span><i style="background:${c}"></i>${n}</span>`; }).join("");
document.getElementById("info").textContent = `${D.mode}, view ${D.view}: ${D.ranges || N} ranges${D.agg ? " (drawn as " + N + ": neighbours merged, a run of small ones coloured by its largest)" : ""}; empty stretches longer than ${size(D.gap)} are drawn ${size(D.gap)} long (dashed lines)`;
window.pagewalkMap = { D, describe, goTo, zoom, draw, vaAt, posOfVa, get view() { return [x0, x1]; }, get frameMs() { return lastFrameMs; } };
window.addEventListener("resize", resize); resize();
if (location.hash === "#selftest") {
  const out = { ranges: N };
  x0 = 0; x1 = D.total; clamp(); draw(); out.whole_ms = lastFrameMs;
  let t = performance.now(); for (let k = 0; k < 10; k++) zoom(0.8, D.total / 3); out.zoom10_ms = performance.now() - t;
  // the largest range: zoom to its first pages, hover the middle of the canvas
  let big = 0; for (let i = 1; i < N; i++) if (SIZE[i] > SIZE[big]) big = i;
  const p = goTo(vaAt(POS[big] + Math.min(D.page * 4.5, Math.floor(SIZE[big] / 2))), D.page * 16);
  const r = cv.getBoundingClientRect(), frac = (p - x0) / (x1 - x0), cx = r.left + frac * r.width;
  out.span_pages = (x1 - x0) / D.page;
  out.center = describe(posAtClient(cx));
  cv.dispatchEvent(new MouseEvent("mousemove", { clientX: cx, clientY: r.top + 50, bubbles: true }));
  out.tooltip = tip.textContent;
  const img = ctx.getImageData(Math.floor(frac * cv.width), 60, 1, 1).data; out.center_rgb = [img[0], img[1], img[2]];
  cv.dispatchEvent(new WheelEvent("wheel", { deltaY: 100, clientX: cx, clientY: r.top + 50, bubbles: true, cancelable: true }));
  out.span_after_wheel_out = (x1 - x0) / D.page;
  out.colour = PAL[K[out.center.index]][3];
  document.getElementById("selftest").textContent = JSON.stringify(out);
}
</script></body></html>
"""
