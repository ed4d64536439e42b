"""The generic ptdump driver: the kernel's note_page() event stream, one event per run.

mm/ptdump.c calls note_page(addr, level, val) for every leaf, every PTE slot and every hole,
in address order, per `ptdump_range`, then flushes with note_page(0, -1, 0). An architecture's
note_page() only acts when the state changes or an address marker is reached, so events equal
to the current state can be dropped. `drive()` therefore feeds one event per run, plus the
event the kernel would deliver at the first entry at or after each address marker inside a run
(markers are where the kernel splits runs that are otherwise equal).

`runs` is the root's whole run list (`runs.root_runs()`) or its chunks in VA order
(`runs.iter_runs()`): the state machine simply goes on from one chunk to the next, so a run
continuing across a chunk boundary is one run to it, as the kernel's stream of events is.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable, Iterable, Iterator
from typing import Protocol

import numpy as np

from ..bits import align_up
from ..errors import MemoryReadError
from ..mode import Kind, PagingMode
from ..runs import SKIP_KLEVEL, Runs, with_ends

TOP = 1 << 64


class NoteState(Protocol):
    """An architecture's note_page() state machine."""

    def note(self, va: int, level: int, val: int, key: int, eff: int) -> None: ...

    def next_marker(self) -> int | None:
        """Start address of the marker the next event may cross (None when there is none)."""
        ...

    def flush(self) -> None: ...


class MarkerState:
    """What every note_page() port shares: its output and the address marker ahead of it.

    Subclasses set `markers` ((start, name, ...) in the kernel's array order, END last), `marker`
    (index of the current one), `level` (-1 before the first event) and `out`.
    """

    markers: list
    marker: int
    level: int
    out: object

    def _print(self, s: str) -> None:
        if self.out is not None:
            self.out.write(s)

    def next_marker(self) -> int | None:
        if self.level == -1 or self.marker + 1 >= len(self.markers):
            return None
        return self.markers[self.marker + 1][0]


def scaled_size(n: int, units: str = "KMGTPE") -> tuple[int, str]:
    """The kernel's ptdump size column: `n` divided by 1024 while it is a multiple of 1024, and the
    unit reached (units[0] is n's own unit; "KMGTPE" for KiB counts, " KMGTPE" for bytes)."""
    unit = 0
    while not n & 1023 and unit < len(units) - 1:
        n >>= 10
        unit += 1
    return n, units[unit]


def run_extents(mode: PagingMode, runs: Runs, end: int | None = None) -> Iterator[tuple[int, int, int, int, int, int, int]]:
    """(va, end, klevel, val, key, eff, entry_span) of every run, canonical VAs, in address order.

    A run that crosses the middle of the root's span is split there: the two halves of a
    canonical address space are not adjacent. The last run ends at offset `end` (a chunk's
    end; None: the top of the root's span).
    """
    half = 1 << (mode.va_bits - 1)
    top = 1 << mode.va_bits
    high = TOP - top if mode.canonical else 0
    # a mode whose VAs are an offset from a base (arm64's TTBR1 region is the top 2^va_bits)
    base = 0 if mode.canonical else mode.canonical_va(0)
    starts = runs.start.tolist()
    klevel = runs.klevel.tolist()
    val = runs.val.tolist()
    key = runs.key.tolist()
    eff = runs.eff.tolist()
    spans = [1 << lvl.shift for lvl in mode.levels]
    hw = runs.hw.tolist()
    n = len(starts)
    for k in range(n):
        if klevel[k] == SKIP_KLEVEL:
            continue  # no event in entries the kernel skips; the previous run goes on over them
        s = starts[k]
        e = starts[k + 1] if k + 1 < n else (top if end is None else end)
        span = spans[hw[k]]
        if mode.canonical and s < half < e:
            yield s, half, klevel[k], val[k], key[k], eff[k], span
            s = half
        if mode.canonical and s >= half:
            yield s + high, (e + high) if e < top else TOP, klevel[k], val[k], key[k], eff[k], span
        else:
            yield base + s, base + e, klevel[k], val[k], key[k], eff[k], span


def drive(state: NoteState, mode: PagingMode, runs: Runs | Iterable[Runs], ranges: list[tuple[int, int]]) -> None:
    """Feed `state` the note_page() events of walking `ranges` (ptdump_walk_pgd), then flush.

    `runs`: one run list or chunks of it in VA order. Ranges in address order are walked as the
    chunks come; otherwise (the kernel walks ranges in array order) the extents are held.
    """
    ranges = list(ranges)
    ordered = all(a[0] <= a[1] <= b[0] for a, b in itertools.pairwise(ranges))
    if not ordered:
        extents = [x for r, end in with_ends(mode, runs) for x in run_extents(mode, r, end)]
        starts = [x[0] for x in extents]
        for r_start, r_end in ranges:
            k = max(0, bisect.bisect_right(starts, r_start) - 1)
            while k < len(extents):
                if extents[k][0] >= r_end:
                    break
                _note_extent(state, extents[k], r_start, r_end)
                k += 1
        state.flush()
        return
    ri = 0
    nr = len(ranges)
    for r, end in with_ends(mode, runs):
        if ri >= nr:
            break
        for ext in run_extents(mode, r, end):
            s, e = ext[0], ext[1]
            while ri < nr and ranges[ri][1] <= s:
                ri += 1
            if ri >= nr:
                break
            for r_start, r_end in ranges[ri:]:
                if r_start >= e:
                    break
                _note_extent(state, ext, r_start, r_end)
    state.flush()


def _note_extent(state: NoteState, ext: tuple[int, int, int, int, int, int, int], r_start: int, r_end: int) -> None:
    """The events of one run clipped to one range: its first entry, and one at each marker inside."""
    s, e, klevel, val, key, eff, span = ext
    if e <= r_start or s >= r_end:
        return
    va = max(s, r_start)
    end = min(e, r_end)
    state.note(va, klevel, val, key, eff)
    last = va
    while True:
        m = state.next_marker()
        if m is None or m >= end:
            break
        p = max(align_up(m, span), last + span)
        if p >= end:
            break
        state.note(p, klevel, val, key, eff)
        last = p


def entry_reader(mem, mode: PagingMode, root: int) -> Callable[[int, int], int]:
    """(va, note_page level) -> the raw entry the kernel's walker reports there (0 if none).

    For the PA column when a marker splits a run (riscv, powerpc): the kernel's note_page() takes
    the PA of the entry at the marker, not of the run's first entry. One entry per level is read.
    """
    order = "little" if mode.byteorder == "<" else "big"

    def read(va: int, klevel: int) -> int:
        off = mode.table_offset(va)
        table = root
        for i, lvl in enumerate(mode.levels):
            idx = (off >> lvl.shift) & (lvl.entries - 1)
            try:
                e = int.from_bytes(mem.read(table + idx * mode.entry_bytes, mode.entry_bytes), order)
            except MemoryReadError:
                return 0
            kind, out = mode.classify(i, np.array([e], dtype=np.uint64))
            k = int(kind[0])
            if lvl.klevel == klevel and k == Kind.LEAF:
                return e
            if k != Kind.TABLE:
                return 0
            table = int(out[0])
        return 0

    return read
