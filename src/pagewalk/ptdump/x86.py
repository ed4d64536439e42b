"""The x86 ptdump text and W+X check: arch/x86/mm/dump_pagetables.c (v5.8+ semantics, v6.12 text).

`X86State.note()` is that file's note_page(); `printk_prot()` and the marker tables are copied
in behaviour, column for column. One port serves both word sizes: a layout says `bits` (64 on
x86-64, 32 on i386: `0x%0*lx` prints 16 or 8 hex digits, sizes and the final flush wrap modulo
2^bits). Marker addresses that KASLR or the machine move (PAGE_OFFSET, VMALLOC_START,
VMEMMAP_START; high_memory on i386) come from a `Layout` (x86-64) or `Layout32` (i386).
"""

from __future__ import annotations

from typing import TextIO

import numpy as np

from ..arch.x86 import (
    _PAGE_GLOBAL,
    _PAGE_NX,
    _PAGE_PAT_LARGE,
    _PAGE_PCD,
    _PAGE_PRESENT,
    _PAGE_PSE,
    _PAGE_PWT,
    _PAGE_RW,
    _PAGE_USER,
    PTE_PFN_MASK,
)
from ..runs import MISSING_BASE
from .core import MarkerState, scaled_size
from .x86_layout import (  # noqa: F401 - re-exported: the layouts live there, without numpy
    DEFAULT_CPU_ENTRY_AREA_BASE_32,
    DEFAULT_FIXADDR_SIZE_32,
    DEFAULT_FIXADDR_START,
    DEFAULT_FIXADDR_TOP_32,
    LEVEL_NAME,
    TOP,
    TOP32,
    VMALLOC_OFFSET,
    Layout,
    Layout32,
)

_UNITS = "BKMGTPE"


def printk_prot(prot: int, level: int) -> str:
    """printk_prot(): 30 columns of flags (or blanks when not present), then the level name."""
    if not prot & _PAGE_PRESENT:
        s = " " * 30
    else:
        s = (
            ("USR " if prot & _PAGE_USER else "    ")
            + ("RW " if prot & _PAGE_RW else "ro ")
            + ("PWT " if prot & _PAGE_PWT else "    ")
            + ("PCD " if prot & _PAGE_PCD else "    ")
            # bit 7 is PSE in upper levels and PAT in a PTE
            + ("PSE " if level <= 3 and prot & _PAGE_PSE else "    ")
            + (
                "PAT "
                if (level == 4 and prot & _PAGE_PSE) or (level in (2, 3) and prot & _PAGE_PAT_LARGE)
                else "    "
            )
            + ("GLB " if prot & _PAGE_GLOBAL else "    ")
            + ("NX " if prot & _PAGE_NX else "x  ")
        )
    return s + LEVEL_NAME[level] + "\n"


class X86State(MarkerState):
    """note_page() of arch/x86/mm/dump_pagetables.c, with its W+X accounting (note_wx())."""

    def __init__(
        self,
        layout: Layout | Layout32,
        out: TextIO | None,
        check_wx: bool = False,
        bits: int | None = None,
        records: list[dict] | None = None,
    ) -> None:
        bits = bits or layout.bits
        self.markers = layout.markers()
        self.out = out
        self.records = records
        self.ranges_written = 0
        self.check_wx = check_wx
        self.width = bits // 4
        self.mod = 1 << bits
        self.level = -1
        self.current_prot = 0
        self.effective_prot = 0
        self.start_address = 0
        self.marker = 0
        self.lines = 0
        self.wx_pages = 0
        self.wx_ranges: list[tuple[int, int]] = []
        self.wx_ranges_dropped = 0  # W+X ranges counted but not listed (format_fast: MAX_WX_RANGES)

    def note(self, va: int, level: int, val: int, key: int, eff: int) -> None:
        new_prot = key
        new_eff = 0 if val == 0 else eff
        if self.level == -1:
            self.current_prot = new_prot
            self.effective_prot = new_eff
            self.level = level
            self.marker = 0
            self.lines = 0
            self._print(f"---[ {self.markers[0][1]} ]---\n")
            return
        nxt = self.markers[self.marker + 1][0]
        if new_prot == self.current_prot and new_eff == self.effective_prot and level == self.level and va < nxt:
            return
        if self.check_wx and self.effective_prot & _PAGE_RW and not self.effective_prot & _PAGE_NX:
            self.wx_pages += ((va - self.start_address) % self.mod) // 4096
            self.wx_ranges.append((self.start_address, va))
        max_lines = self.markers[self.marker][2]
        shown = not max_lines or self.lines < max_lines
        if self.records is not None and shown:
            self.records.append(self._record(va))
        if self.out is not None and shown:
            self.ranges_written += 1
            delta, unit = scaled_size((va - self.start_address) % self.mod, _UNITS)
            w = self.width
            if self.level <= MISSING_BASE:
                # not the kernel's: the image lacks the table this entry points to
                text = f"[table at PA {self.current_prot & PTE_PFN_MASK:#x} not in image] {LEVEL_NAME[MISSING_BASE - self.level]}\n"
            else:
                text = printk_prot(self.current_prot, self.level)
            self.out.write(f"0x{self.start_address:0{w}x}-0x{va % self.mod:0{w}x}   {delta:9d}{unit} " + text)
        self.lines += 1
        if va >= nxt:
            if max_lines and self.lines > max_lines:
                nskip = self.lines - max_lines
                if self.records is not None:
                    self.records.append({"skipped": nskip, "marker": self.markers[self.marker][1]})
                self._print(f"... {nskip} entr{'y' if nskip == 1 else 'ies'} skipped ... \n")
            self.marker += 1
            self.lines = 0
            self._print(f"---[ {self.markers[self.marker][1]} ]---\n")
        self.start_address = va
        self.current_prot = new_prot
        self.effective_prot = new_eff
        self.level = level

    def _record(self, va: int) -> dict:
        prot = self.current_prot
        if self.level <= MISSING_BASE:
            return {
                "start": self.start_address,
                "end": va if va else self.mod,
                "level": LEVEL_NAME[MISSING_BASE - self.level],
                "marker": self.markers[self.marker][1],
                "missing_table_pa": prot & PTE_PFN_MASK,
            }
        present = bool(prot & _PAGE_PRESENT)
        return {
            "start": self.start_address,
            "end": va if va else self.mod,
            "size": (va - self.start_address) % self.mod or self.mod,
            "level": LEVEL_NAME[self.level],
            "marker": self.markers[self.marker][1],
            "present": present,
            "flags": printk_prot(prot, self.level)[:30].split() if present else [],
            "prot": prot,
            "effective": {
                "user": bool(self.effective_prot & _PAGE_USER),
                "write": bool(self.effective_prot & _PAGE_RW),
                "exec": present and not self.effective_prot & _PAGE_NX,
            },
        }

    def flush(self) -> None:
        """note_page(st, 0, -1, 0): close the last run at address 0 (printed modulo 2^bits)."""
        if self.level == -1:
            return
        self.note(0, -1, 0, 0, 0)


# W+X ranges format_fast() lists; beyond, they are counted (wx_pages stays exact). The kernel
# itself WARNs once; a page-table bomb can have millions.
MAX_WX_RANGES = 1 << 16


def format_fast(
    mode, runs, layout: Layout | Layout32, out: TextIO | None, check_wx: bool = False, json_records: bool = False
) -> X86State:
    """The same text and W+X accounting as driving X86State, computed from `vector.BreakStream`.

    `runs` is one run list (`runs.root_runs()`) or an iterable of chunks in VA order
    (`runs.iter_runs()`): the text is written as the chunks come, so neither the runs nor the
    lines of 2^24 pages are held at once. With `json_records`, `out` gets the ranges as
    comma-separated JSON objects instead (the records X86State(records=...) makes). Returns a
    finished X86State (wx_pages, wx_ranges, ranges_written) for the caller.
    """
    from .vector import BreakStream, with_ends

    markers = layout.markers()
    st = X86State(layout, None, check_wx=check_wx)
    bs = BreakStream(mode, layout.ranges(), [m[0] for m in markers])
    fmt = _Formatter(mode, layout, markers, st, out, check_wx, json_records)
    for r, end in with_ends(mode, runs):
        lines = bs.feed(r, end)
        if lines is not None:
            fmt.add(lines)
    bs.finish()
    fmt.flush()
    return st


class _Formatter:
    """Lines of `BreakStream` to text (or JSON records) and W+X counts, a batch at a time.

    A line ends where the next starts, so the last line of a batch waits for the next batch (or
    the final flush, which ends it at address 0, as note_page(st, 0, -1, 0) prints it). Carried
    across batches too: the current marker and the lines already counted under it (ESPfix's
    max_lines), and whether anything was written (the first header, JSON separators).
    """

    def __init__(self, mode, layout, markers, st: X86State, out: TextIO | None, check_wx: bool, json_records: bool):
        from .vector import to_va

        self.to_va = lambda off: to_va(mode, off)
        self.bits = layout.bits
        self.markers = markers
        self.st = st
        self.out = out
        self.check_wx = check_wx
        self.json = json_records
        self.pending = None  # the last line seen: (start_va, klevel, key, eff, fire), arrays of 1
        self.marker = 0
        self.seg_lines = 0
        self.any_record = False
        self.started = False
        self.header = False

    def add(self, lines) -> None:
        starts = self.to_va(lines.start)
        if not self.started:
            starts = starts.copy()
            starts[0] = 0  # the kernel's first note_page() leaves start_address at 0
            self.started = True
        cols = (starts, lines.klevel, lines.key, lines.eff, lines.fire)
        if self.pending is not None:
            cols = tuple(np.concatenate([p, c]) for p, c in zip(self.pending, cols))
        self.pending = tuple(c[-1:] for c in cols)
        if len(cols[0]) > 1:
            ends = cols[0][1:]
            self._emit(*(c[:-1] for c in cols), ends)

    def flush(self) -> None:
        if self.pending is not None:
            self._emit(*self.pending, np.zeros(1, np.uint64))  # the flush: note_page(st, 0, -1, 0)
            self.pending = None

    def _emit(self, starts_va, klevel, key, eff, fire, ends_va) -> None:
        bits = self.bits
        st = self.st
        with np.errstate(over="ignore"):
            delta = ends_va - starts_va  # modulo 2^bits, as the kernel computes it
        if bits < 64:
            delta &= np.uint64((1 << bits) - 1)
        if self.check_wx:
            is_wx = ((eff & np.uint64(_PAGE_RW)) != 0) & ((eff & np.uint64(_PAGE_NX)) == 0)
            if is_wx.any():
                room = max(0, MAX_WX_RANGES - len(st.wx_ranges))
                idx = np.flatnonzero(is_wx)
                st.wx_ranges += list(zip(starts_va[idx[:room]].tolist(), ends_va[idx[:room]].tolist()))
                st.wx_ranges_dropped += max(0, len(idx) - room)
                st.wx_pages += int((delta[is_wx] // np.uint64(4096)).sum(dtype=np.uint64))
        if self.out is None:
            return
        # units: shift by 10 while the low 10 bits are clear, at most up to 'E'
        low = delta & (~delta + np.uint64(1))  # lowest set bit (0 for delta == 0)
        tz = np.where(delta == 0, np.uint64(64), np.log2(np.maximum(low, np.uint64(1)).astype(np.float64)).astype(np.uint64))
        unit = np.minimum(tz // np.uint64(10), np.uint64(6))
        shown_a = delta >> (unit * np.uint64(10))
        markers = self.markers
        pieces: list[str] = []
        if not self.header:
            self.header = True
            if not self.json:
                pieces.append(f"---[ {markers[0][1]} ]---\n")
        n = len(starts_va)
        bounds = [0] + [int(j) for j in np.flatnonzero(fire) if j > 0] + [n]
        for a, z in zip(bounds[:-1], bounds[1:]):
            if fire[a]:
                max_lines = markers[self.marker][2]
                if max_lines and self.seg_lines > max_lines:
                    nskip = self.seg_lines - max_lines
                    if self.json:
                        pieces.append(f',\n{{"skipped": {nskip}, "marker": "{markers[self.marker][1]}"}}')
                    else:
                        pieces.append(f"... {nskip} entr{'y' if nskip == 1 else 'ies'} skipped ... \n")
                self.marker = int(fire[a])
                self.seg_lines = 0
                if not self.json:
                    pieces.append(f"---[ {markers[self.marker][1]} ]---\n")
            max_lines = markers[self.marker][2]
            zz = min(z, a + max(0, max_lines - self.seg_lines)) if max_lines else z
            self.seg_lines += z - a
            for c in range(a, zz, _CHUNK_LINES):
                cz = min(zz, c + _CHUNK_LINES)
                if self.json:
                    sep = ",\n" if self.any_record else ""
                    pieces.append(sep + _records(starts_va[c:cz], ends_va[c:cz], delta[c:cz], key[c:cz], klevel[c:cz], eff[c:cz], markers[self.marker][1], bits))
                    self.any_record = True
                else:
                    pieces.append(_lines(starts_va[c:cz], ends_va[c:cz], shown_a[c:cz], unit[c:cz], key[c:cz], klevel[c:cz], bits))
                self.out.write("".join(pieces))
                pieces.clear()
            st.ranges_written += max(0, zz - a)
        if pieces:
            self.out.write("".join(pieces))


def _records(start, end, delta, key, klevel, eff, marker: str, bits: int = 64) -> str:
    """JSON objects of many ranges (the fields of X86State._record), comma-separated."""
    out = []
    top = 1 << bits
    for s_, e_, d, k, lv, ef in zip(start.tolist(), end.tolist(), delta.tolist(), key.tolist(), klevel.tolist(), eff.tolist()):
        if lv <= MISSING_BASE:
            out.append(
                f'{{"start": {s_}, "end": {e_ or top}, "level": "{LEVEL_NAME[MISSING_BASE - lv]}", '
                f'"marker": "{marker}", "missing_table_pa": {k & PTE_PFN_MASK}}}'
            )
            continue
        present = bool(k & _PAGE_PRESENT)
        flags = printk_prot(k, lv)[:30].split() if present else []
        out.append(
            f'{{"start": {s_}, "end": {e_ or top}, "size": {d or top}, "level": "{LEVEL_NAME[lv]}", '
            f'"marker": "{marker}", "present": {"true" if present else "false"}, '
            f'"flags": [{", ".join(chr(34) + f + chr(34) for f in flags)}], "prot": {k}, '
            f'"effective": {{"user": {"true" if ef & _PAGE_USER else "false"}, '
            f'"write": {"true" if ef & _PAGE_RW else "false"}, '
            f'"exec": {"true" if present and not ef & _PAGE_NX else "false"}}}}}'
        )
    return ",\n".join(out)


# a byte -> its two hex digits, as one uint16 in memory order
_HEX2 = np.frombuffer(b"".join(b"%02x" % k for k in range(256)), dtype=np.uint16)
# three decimal digits of 0..999: rows 0-999 zero-padded (a group after a non-zero one), rows
# 1000-1999 blank-padded with 0 blank (a leading group), rows 2000-2999 "%3d" (the last group)
_DEC3 = np.frombuffer(
    b"".join(b"%03d" % k for k in range(1000))
    + b"".join(b"%3d" % k if k else b"   " for k in range(1000))
    + b"".join(b"%3d" % k for k in range(1000)),
    dtype=np.uint8,
).reshape(3000, 3)
_UNIT_BYTES = np.frombuffer(_UNITS.encode(), np.uint8)
_TEMPLATES: dict[int, np.ndarray] = {}
_PROT_CACHE: dict[str, np.ndarray] = {"pairs": np.zeros(0, np.uint64), "texts": np.zeros((0, 34), np.uint8)}
_LV_MASK = np.uint64(7 << 12)


def _distinct(a: np.ndarray) -> np.ndarray:
    """Sorted distinct values (np.unique() would import numpy.ma, 15 ms of start-up)."""
    s = np.sort(a)
    keep = np.ones(len(s), dtype=bool)
    keep[1:] = s[1:] != s[:-1]
    return s[keep]


def _template(w: int) -> np.ndarray:
    """The constant bytes of a range line with `w` hex digits per address."""
    if w not in _TEMPLATES:
        row = b"0x" + b" " * w + b"-0x" + b" " * w + b" " * 3 + b" " * 11 + b" " * 34
        _TEMPLATES[w] = np.frombuffer(row, np.uint8)
    return _TEMPLATES[w]


def _prot_texts(pair: np.ndarray) -> np.ndarray:
    """printk_prot() of many (key | level << 12) as (n, 34) bytes, from a cache of the ones seen."""
    c = _PROT_CACHE
    pos = np.searchsorted(c["pairs"], pair)
    pos_c = np.minimum(pos, max(len(c["pairs"]) - 1, 0))
    if len(c["pairs"]) == 0 or not (c["pairs"][pos_c] == pair).all():
        new = _distinct(pair if len(c["pairs"]) == 0 else pair[c["pairs"][pos_c] != pair])
        if len(c["pairs"]) + len(new) > 4096:  # a hostile image: do not let the cache grow without bound
            c["pairs"], c["texts"] = np.zeros(0, np.uint64), np.zeros((0, 34), np.uint8)
            new = _distinct(pair)
        texts = np.array(
            [np.frombuffer(printk_prot(int(k & ~_LV_MASK), int(k & _LV_MASK) >> 12).encode(), np.uint8) for k in new],
            dtype=np.uint8,
        ).reshape(len(new), 34)
        pairs = np.concatenate([c["pairs"], new])
        order = np.argsort(pairs, kind="stable")
        c["pairs"], c["texts"] = pairs[order], np.concatenate([c["texts"], texts])[order]
        pos = np.searchsorted(c["pairs"], pair)
    return np.take(c["texts"], pos, axis=0)


def _hex_columns(v: np.ndarray, w: int) -> np.ndarray:
    """%0*lx of many values: (n, w) ASCII hex digits, one table lookup per byte."""
    be = v.astype(">u8").view(np.uint8).reshape(-1, 8)[:, 8 - w // 2 :]
    return np.take(_HEX2, be).view(np.uint8).reshape(len(v), w)
_CHUNK_LINES = 1 << 16


def _lines(start, end, shown, unit, key, klevel, bits: int = 64) -> str:
    """Range lines of note_page() for many runs at once, as fixed-width byte columns.

    A line is "0x" W "-0x" W "   " %9lu unit " " 30 columns of flags, 3 of level, "\n" with W =
    bits / 4 hex digits (85 bytes on x86-64, 69 on i386). Falls back to %-formatting when a size
    needs more than 9 digits or a line is not the kernel's (a table missing from the image).
    """
    n = len(start)
    if n == 0:
        return ""
    w = bits // 4
    if (shown >= np.uint64(10**9)).any() or (klevel <= MISSING_BASE).any():
        out = []
        for s_, e_, v, u, k, lv in zip(start.tolist(), end.tolist(), shown.tolist(), unit.tolist(), key.tolist(), klevel.tolist()):
            if lv <= MISSING_BASE:
                text = f"[table at PA {k & PTE_PFN_MASK:#x} not in image] {LEVEL_NAME[MISSING_BASE - lv]}\n"
            else:
                text = printk_prot(k, lv)
            out.append("0x%0*x-0x%0*x   %9d%s %s" % (w, s_, w, e_, v, _UNITS[u], text))
        return "".join(out)
    e1 = 2 + w
    s2 = e1 + 3
    e2 = s2 + w
    col = e2 + 3  # the size column: 9 digits and the unit
    # one template row ("0x", "-0x" and the blanks), then the variable columns
    buf = np.empty((n, col + 11 + 34), dtype=np.uint8)
    buf[:] = _template(w)
    buf[:, 2:e1] = _hex_columns(start, w)
    buf[:, s2:e2] = _hex_columns(end, w)
    # %9lu as three groups of three digits, each from a table row chosen for its leading blanks
    sh = shown.astype(np.int64)
    g1, g2, g3 = sh // 1_000_000, (sh // 1000) % 1000, sh % 1000
    idx = np.empty((n, 3), np.int64)
    idx[:, 0] = g1 + 1000
    idx[:, 1] = np.where(g1 > 0, g2, g2 + 1000)
    idx[:, 2] = np.where((g1 > 0) | (g2 > 0), g3, g3 + 2000)
    buf[:, col : col + 9] = np.take(_DEC3, idx, axis=0).reshape(n, 9)
    buf[:, col + 9] = np.take(_UNIT_BYTES, unit.astype(np.intp))
    # the flags never use the PFN bits, so the level can ride in bits 12..14 of one key
    pair = key | (klevel.astype(np.uint64) << np.uint64(12))
    buf[:, col + 11 :] = _prot_texts(pair)
    return buf.tobytes().decode("ascii")
