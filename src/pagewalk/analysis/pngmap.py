"""`pagewalk map -o map.png`: a static picture of one view, coloured by permissions.

The same data as the HTML map (`htmlmap.axis()`: the compressed-holes axis, the same colours),
cut into one row per region of the kernel's own ptdump markers ("Low Kernel Mapping",
"vmalloc() Area", "Modules", ...), each row scaled to the full width, so that a 2^57-byte
space with a few GiB mapped reads at a glance: the row label gives the marker name, the VA
range and the bytes mapped; the legend the rights and their bytes. Every range is at least one
pixel wide.

matplotlib is imported here only (the dump never pays for it), through its Agg canvas (no
display, no pyplot state). It is the optional extra `pagewalk[png]`.

>>> info = write_png(target, "map.png")  # doctest: +SKIP
>>> info.width, info.height, [r.name for r in info.rows][:2]  # doctest: +SKIP
(1400, 530, ['Low Kernel Mapping', 'vmalloc() Area'])
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import UsageError
from .htmlmap import Axis, axis
from .mappings import MAPPED, STATUS_NAMES, Mappings, mappings

U64 = np.uint64
WIDTH_IN = 14.0
DPI = 100
ROW_IN = 0.42  # inches per row
HEAD_IN = 0.55
LEGEND_IN = 0.45
MAX_ROWS = 24


@dataclass
class Row:
    """One row of the picture: a region of the axis and where it was drawn (pixels, origin top-left)."""

    name: str
    va_start: int
    va_end: int  # exclusive (mod 2^64)
    pos_start: int  # the row's extent on the compressed axis
    pos_end: int
    mapped_bytes: int
    x0: float = 0.0  # pixel columns of pos_start / pos_end
    x1: float = 0.0
    y0: float = 0.0  # pixel rows of the bar's top and bottom
    y1: float = 0.0

    def x_of(self, pos) -> np.ndarray:
        """Pixel column of axis positions in this row."""
        rel = (np.asarray(pos, U64) - U64(self.pos_start)).astype(np.float64)
        return self.x0 + rel / max(self.pos_end - self.pos_start, 1) * (self.x1 - self.x0)


@dataclass
class PngInfo:
    width: int
    height: int
    ranges: int  # ranges of the view (before any aggregation)
    rows: list[Row] = field(default_factory=list)
    legend: list[tuple[str, str, int]] = field(default_factory=list)  # label, colour, bytes


def _matplotlib():
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.patches import Patch
    except ImportError:
        raise UsageError(
            "map -o FILE.png needs matplotlib: pip install 'pagewalk[png]' (or write FILE.html, which needs nothing)"
        ) from None
    return Figure, FigureCanvasAgg, Patch


def rows_of(ax: Axis, markers: list[tuple[int, str]]) -> list[Row]:
    """The regions between consecutive markers that hold ranges (or the halves of the space
    without markers), on the axis."""
    if not len(ax.pos):
        return []
    va_first = int(ax.va[0])
    with np.errstate(over="ignore"):
        va_last = int(ax.seg_va[-1] + (U64(ax.total) - ax.seg_pos[-1]))
    bounds = sorted({v % (1 << 64) for v, name in markers if name})
    names = {}
    for v, name in markers:
        if name:
            names.setdefault(v % (1 << 64), name)
    cuts = [b for b in bounds if va_first < b < va_last]
    if not cuts:
        half = 1 << 63
        cuts = [half] if va_first < half < va_last else []
    edges = [va_first] + cuts + [va_last]
    pe = ax.pos_of_va(np.array(edges[:-1], U64)).tolist() + [ax.total]
    ends = ax.pos + ax.size
    rows = []
    for k in range(len(edges) - 1):
        p0, p1 = int(pe[k]), int(pe[k + 1])
        if p1 <= p0:
            continue
        inside = (ax.pos < U64(p1)) & (ends > U64(p0))
        if not inside.any():
            continue
        label = names.get(edges[k])
        if label is None:  # the region starts before the first marker: name it by the one it precedes
            label = "user space" if edges[k] < 1 << 63 and k == 0 else f"before {names.get(edges[k + 1], 'end')}"
        rows.append(Row(label, edges[k], edges[k + 1], p0, p1, 0))
    return rows


def write_png(target, path: str, view: str = "kernel", *, m: Mappings | None = None,
              width_in: float = WIDTH_IN, dpi: int = DPI) -> PngInfo:
    """Draw `view` to the PNG file `path`; returns the picture's size and rows (for tests and
    callers that annotate it)."""
    Figure, FigureCanvasAgg, Patch = _matplotlib()
    if m is None:
        m = mappings(target, view)
    markers = []
    layout = getattr(target, "layout", None)
    if layout is not None and hasattr(layout, "markers"):
        try:
            markers = [(int(x[0]), x[1] or "") for x in layout.markers()]
        except (TypeError, ValueError):
            markers = []
    ax = axis(m)
    rows = rows_of(ax, markers)
    if len(rows) > MAX_ROWS:  # keep the largest regions (by axis extent), in VA order
        keep = sorted(sorted(range(len(rows)), key=lambda r: -(rows[r].pos_end - rows[r].pos_start))[:MAX_ROWS])
        rows = [rows[r] for r in keep]
    colours = ax.colours()
    mapped_key = np.array([label not in STATUS_NAMES for label, _, _ in ax.palette], bool)
    nrows = max(len(rows), 1)
    height_in = HEAD_IN + ROW_IN * nrows + LEGEND_IN
    fig = Figure(figsize=(width_in, height_in), dpi=dpi)
    canvas = FigureCanvasAgg(fig)
    W, H = round(width_in * dpi), round(height_in * dpi)
    left, right = 0.22, 0.985
    fig.text(0.01, 1 - 0.3 / height_in, f"pagewalk map: {m.mode.name}, view {m.view}: {len(m)} ranges"
             + ("" if ax.ranges == len(ax.pos) else f" (drawn as {len(ax.pos)})")
             + f"; empty stretches longer than {_size(ax.gap)} are drawn {_size(ax.gap)} long",
             fontsize=9, va="center")
    ends = ax.pos + ax.size
    legend_bytes = np.zeros(len(ax.palette), np.float64)
    for r, row in enumerate(rows):
        bottom = 1 - (HEAD_IN + ROW_IN * (r + 1)) / height_in
        a = fig.add_axes((left, bottom + 0.08 * ROW_IN / height_in, right - left, 0.7 * ROW_IN / height_in))
        span = row.pos_end - row.pos_start
        a.set_xlim(0, span)
        a.set_ylim(0, 1)
        a.set_xticks([])
        a.set_yticks([])
        for sp in a.spines.values():
            sp.set_linewidth(0.4)
        sel = np.flatnonzero((ax.pos < U64(row.pos_end)) & (ends > U64(row.pos_start)))
        x0 = np.maximum(ax.pos[sel], U64(row.pos_start)) - U64(row.pos_start)
        x1 = np.minimum(ends[sel], U64(row.pos_end)) - U64(row.pos_start)
        w = (x1 - x0).astype(np.float64)
        px = span / ((right - left) * W)  # one pixel in axis units
        keys = ax.key[sel]
        # bytes per colour: the VA bytes the ranges map (aggregated ones count their whole extent)
        np.add.at(legend_bytes, keys, w)
        row.mapped_bytes = int(w[mapped_key[keys]].sum())
        for k in np.unique(keys).tolist():
            s = keys == k
            a.broken_barh(list(zip(x0[s].astype(np.float64).tolist(), np.maximum(w[s], px).tolist())), (0, 1),
                          facecolors=colours[k], edgecolors="none", linewidth=0, antialiased=False)
        a.text(-0.005, 0.5, f"{row.name}\n{row.va_start:#x}  {_size(row.mapped_bytes)} mapped",
               transform=a.transAxes, ha="right", va="center", fontsize=7, family="monospace")
        fig_box = a.get_window_extent(renderer=canvas.get_renderer())
        row.x0, row.x1 = float(fig_box.x0), float(fig_box.x1)
        row.y0, row.y1 = float(H - fig_box.y1), float(H - fig_box.y0)
    labels: dict[str, tuple[str, float]] = {}
    for k, (label, _lv, _r) in enumerate(ax.palette):
        base = label.replace(" G", "")
        c, b = labels.get(base, (colours[k], 0.0))
        labels[base] = (c, b + legend_bytes[k])
    legend = sorted(((lab, c, int(b)) for lab, (c, b) in labels.items() if b > 0), key=lambda x: -x[2])
    if legend:
        fig.legend(handles=[Patch(facecolor=c, label=f"{lab} ({_size(b)})") for lab, c, b in legend],
                   loc="lower center", ncol=min(6, len(legend)), fontsize=7, frameon=False,
                   bbox_to_anchor=(0.5, 0.0))
    canvas.print_png(path)
    return PngInfo(W, H, len(m), rows, legend)


def _size(n: float) -> str:
    n = int(n)
    for unit, shift in (("P", 50), ("T", 40), ("G", 30), ("M", 20), ("K", 10)):
        if n >= 1 << shift:
            v = n / (1 << shift)
            return f"{v:.0f}{unit}" if n % (1 << shift) == 0 else f"{v:.1f}{unit}"
    return f"{n}B"


__all__ = ["MAPPED", "PngInfo", "Row", "rows_of", "write_png"]
