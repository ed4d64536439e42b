"""What changed between two address spaces: two images, or two roots of one image.

Both sides are interval arrays (`mappings.py`); the comparison is a merge of their boundaries,
in time proportional to the number of intervals:

1. `shifts` (given) move regions of A's VAs (and optionally their PAs) first: KASLR moves the
   kernel image by one offset; `Shift(va_delta, pa_delta, va_start, va_end)`.
2. The boundaries of both sides cut the VA space into segments (in VA windows of
   `SEGMENT_CHUNK` intervals of each side; a range coalesces across windows); each segment is *same*
   (mapped on both sides to the same PA with the same rights), *removed* (A only), *added*
   (B only), *changed* (rights or memory type differ) or *remapped* (another PA; with
   `pa="ignore"` PAs are not compared). Neighbouring segments of one kind are coalesced.
3. Moves: removed and added ranges with the same size, rights, memory type (and PA, unless
   `pa="ignore"`) are paired up: first where the pairing is unique, then, for the offsets those
   pairs established, every other range found at exactly that offset. A paired range is
   reported once, as *moved* by its VA offset, instead of as removed and added.

The verdict says what a reader wants first: "identical", "everything moved by 0x…, nothing
else changed", or the counts.

>>> res = diff(target_a, target_b)  # doctest: +SKIP
>>> res.verdict  # doctest: +SKIP
'everything moved by 0x15400000, nothing else changed'
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np

from ..errors import UsageError
from .aliases import perm_code
from .mappings import MAPPED, Mappings, Perms, arch_bits, mappings, perm_strings

U64 = np.uint64
TOP = 1 << 64
KINDS = ("same", "removed", "added", "changed", "remapped", "changed+remapped")
SAME, REMOVED, ADDED, CHANGED, REMAPPED, BOTH = range(6)


@dataclass(frozen=True)
class Shift:
    """A's VAs in [va_start, va_end) are compared at + va_delta in B (PAs at + pa_delta)."""

    va_delta: int
    pa_delta: int = 0
    va_start: int = 0
    va_end: int = TOP

    @classmethod
    def parse(cls, text: str) -> Shift:
        """`VA_DELTA[:PA_DELTA][@START-END]`, numbers in any base int() takes (negative allowed).

        >>> Shift.parse("0x15400000:0x1ac00000@0xffffffff80000000-0xffffffffc0000000")
        Shift(va_delta=356515840, pa_delta=448790528, va_start=18446744071562067968, va_end=18446744072635809792)
        """
        body, _, rng = text.partition("@")
        va_s, _, pa_s = body.partition(":")
        try:
            va_delta = int(va_s, 0)
            pa_delta = int(pa_s, 0) if pa_s else 0
            start, end = 0, TOP
            if rng:
                a, _, b = rng.partition("-")
                start, end = int(a, 0), int(b, 0)
        except ValueError:
            raise UsageError(f"--shift takes VA_DELTA[:PA_DELTA][@START-END], got {text!r}") from None
        return cls(va_delta, pa_delta, start, end)


@dataclass
class Change:
    """One coalesced range of a diff. VAs are A's for removed/changed/remapped/moved, B's for added."""

    kind: str
    va_start: int
    va_end: int
    pa_a: int | None = None
    pa_b: int | None = None
    perm_a: str | None = None
    perm_b: str | None = None
    level_a: str | None = None
    level_b: str | None = None
    entry_a: int | None = None
    entry_b: int | None = None
    va_b: int | None = None  # moved: where the range is in B

    @property
    def size(self) -> int:
        return self.va_end - self.va_start

    def as_dict(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if v is not None}
        d["size"] = self.size
        if self.kind == "moved":
            d["va_delta"] = (self.va_b - self.va_start + TOP) % TOP
        return d


MOVED = 6  # kind code of a moved range (after KINDS)


@dataclass
class ChangeArrays:
    """The changes as columns (one row per coalesced range), sorted by (va_start, kind); Change
    objects are built from them on demand, so millions of changes cost arrays, not objects."""

    kind: np.ndarray  # int8: index into KINDS, or MOVED
    va_start: np.ndarray  # uint64, A's VA (B's for added)
    va_end: np.ndarray  # uint64 (0: the end of the address space)
    has_a: np.ndarray  # bool
    has_b: np.ndarray
    ia: np.ndarray  # index into A's mapped intervals (int32 below 2^31 intervals, else int64)
    ib: np.ndarray
    pa_a: np.ndarray  # uint64
    pa_b: np.ndarray
    va_b: np.ndarray  # uint64: moved, or shifted with a B side: where the range is in B
    has_vb: np.ndarray

    def __len__(self) -> int:
        return len(self.kind)

    @classmethod
    def empty(cls) -> ChangeArrays:
        z, zb, zi = np.zeros(0, U64), np.zeros(0, bool), np.zeros(0, np.int64)
        return cls(np.zeros(0, np.int8), z, z, zb, zb, zi, zi, z, z, z, zb)

    def take(self, idx) -> ChangeArrays:
        return ChangeArrays(*(getattr(self, f)[idx] for f in self.__dataclass_fields__))

    @classmethod
    def concat(cls, parts: list[ChangeArrays]) -> ChangeArrays:
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in cls.__dataclass_fields__))

    @classmethod
    def concat_take(cls, parts: list[ChangeArrays], order: np.ndarray) -> ChangeArrays:
        """`concat(parts).take(order)`, a column at a time (one column's copy at once)."""
        cols = {}
        for f in cls.__dataclass_fields__:
            cols[f] = np.concatenate([getattr(p, f) for p in parts])[order]
        return cls(**cols)

    @classmethod
    def insert(cls, base: ChangeArrays, at: np.ndarray, rows: ChangeArrays) -> ChangeArrays:
        """`rows` inserted before the rows `at` of `base` (in their order where `at` ties), a
        column at a time."""
        cols = {}
        for f in cls.__dataclass_fields__:
            x, y = getattr(base, f), getattr(rows, f)
            cols[f] = np.insert(x, at, y.astype(x.dtype, copy=False))
            setattr(base, f, None)  # the column's source goes as its copy comes
        return cls(**cols)


@dataclass
class DiffResult:
    view_a: str | None
    view_b: str | None
    shifts: list[Shift]
    pa: str
    arrays: ChangeArrays
    same_bytes: int
    moves: dict[int, int] = field(default_factory=dict)  # VA delta (mod 2^64) -> bytes moved by it
    regions: list[tuple[str, Shift]] = field(default_factory=list)  # named shifts (automatic ones), A's VAs
    a: Mappings | None = field(default=None, repr=False)  # the mapped intervals of each side
    b: Mappings | None = field(default=None, repr=False)
    _changes: list[Change] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.arrays)

    @property
    def changes(self) -> list[Change]:
        """Every change as an object (built once; see `build()` for a part of them)."""
        if self._changes is None:
            self._changes = self.build(np.arange(len(self.arrays)))
        return self._changes

    def build(self, idx: np.ndarray) -> list[Change]:
        """Change objects of the rows `idx`."""
        c = self.arrays.take(np.asarray(idx, np.int64))
        if not len(c):
            return []
        ta = _texts(self.a, c.ia, c.has_a)
        tb = _texts(self.b, c.ib, c.has_b)
        la = _levels(self.a, c.ia, c.has_a)
        lb = _levels(self.b, c.ib, c.has_b)
        ea = self.a.entry[np.where(c.has_a, c.ia, 0)].tolist() if len(self.a) else [0] * len(c)
        eb = self.b.entry[np.where(c.has_b, c.ib, 0)].tolist() if len(self.b) else [0] * len(c)
        names = (*KINDS, "moved")
        out = []
        for k, vs, ve, ha, hb, pa_, pb_, vb, hv, t_a, t_b, l_a, l_b, e_a, e_b in zip(
                c.kind.tolist(), c.va_start.tolist(), c.va_end.tolist(), c.has_a.tolist(), c.has_b.tolist(),
                c.pa_a.tolist(), c.pa_b.tolist(), c.va_b.tolist(), c.has_vb.tolist(), ta, tb, la, lb, ea, eb):
            out.append(Change(names[k], vs, ve or TOP, pa_a=pa_ if ha else None, pa_b=pb_ if hb else None,
                              perm_a=t_a, perm_b=t_b, level_a=l_a, level_b=l_b,
                              entry_a=e_a if ha else None, entry_b=e_b if hb else None, va_b=vb if hv else None))
        return out

    def of(self, kind: str) -> list[Change]:
        code = (*KINDS, "moved").index(kind)
        return self.build(np.flatnonzero(self.arrays.kind == code))

    @property
    def counts(self) -> dict[str, int]:
        n = np.bincount(self.arrays.kind.astype(np.int64), minlength=MOVED + 1)
        return {k: int(n[(*KINDS, "moved").index(k)]) for k in ("removed", "added", "changed", "remapped",
                                                                 "changed+remapped", "moved")}

    @property
    def identical(self) -> bool:
        return not len(self.arrays) and not any(s.va_delta for s in self.shifts)

    def _region_mask(self, sh: Shift) -> np.ndarray:
        c = self.arrays
        with np.errstate(over="ignore"):
            va = np.where(c.kind == ADDED, c.va_start - U64(sh.va_delta % TOP), c.va_start)
        return (va >= U64(sh.va_start)) & (va < U64(min(sh.va_end, TOP - 1))) if sh.va_end < TOP else va >= U64(sh.va_start)

    def in_region(self, sh: Shift) -> list[Change]:
        """The changes in the region `sh` moves (A's VAs; an added range where A's would be)."""
        return self.build(np.flatnonzero(self._region_mask(sh)))

    def region_verdicts(self) -> list[str]:
        """One sentence per named region: moved by its shift, and what else changed in it."""
        out = []
        names = (*KINDS, "moved")
        c = self.arrays
        with np.errstate(over="ignore"):
            size = (c.va_end - c.va_start).astype(np.float64)
        for name, sh in self.regions:
            mask = self._region_mask(sh)
            pa = f", PA by {_signed_hex(sh.pa_delta)}" if sh.pa_delta else ""
            head = f"{name} {sh.va_start:#x}-{sh.va_end % TOP:#x} moved by {_signed_hex(sh.va_delta)}{pa}"
            if not mask.any():
                out.append(head + ", nothing else changed")
                continue
            k = c.kind[mask].astype(np.int64)
            n = np.bincount(k, minlength=MOVED + 1)
            b = np.bincount(k, weights=size[mask], minlength=MOVED + 1)
            out.append(head + "; in it " + ", ".join(f"{int(n[j])} {names[j]} ({_bytes(int(b[j]))})"
                                                    for j in range(MOVED + 1) if n[j]))
        return out

    @property
    def verdict(self) -> str:
        """One sentence: identical, everything moved by X, or what changed; with named regions
        (the automatic KASLR shifts), each region's sentence first, then the rest."""
        if self.regions:
            inside = np.zeros(len(self.arrays), bool)
            for _, sh in self.regions:
                inside |= self._region_mask(sh)
            deltas = {sh.va_delta % TOP for _, sh in self.regions}
            rest = DiffResult(self.view_a, self.view_b, [], self.pa, self.arrays.take(np.flatnonzero(~inside)),
                              self.same_bytes, {d: n for d, n in self.moves.items() if d not in deltas})
            return "; ".join(self.region_verdicts()) + "; elsewhere: " + rest._plain_verdict()
        return self._plain_verdict()

    def _plain_verdict(self) -> str:
        c = self.counts
        other = sum(v for k, v in c.items() if k != "moved")
        moves = sorted(self.moves.items(), key=lambda kv: -kv[1])
        if not other:
            if not moves:
                return "identical"
            if len(moves) == 1 and not self.same_bytes:
                return f"everything moved by {_signed_hex(moves[0][0])}, nothing else changed"
            shown = ", ".join(f"{_bytes(n)} by {_signed_hex(d)}" for d, n in moves[:4])
            return f"nothing changed except moves ({shown}); {_bytes(self.same_bytes)} in place"
        parts = [f"{v} {k}" for k, v in c.items() if v and k != "moved"]
        parts += [f"{_bytes(n)} moved by {_signed_hex(d)}" for d, n in moves[:4]]
        return ", ".join(parts)


def _signed_hex(d: int) -> str:
    d %= TOP
    return f"-{TOP - d:#x}" if d >= 1 << 63 else f"{d:#x}"


def _bytes(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):.1f} {unit}"
    return f"{n} B"


@dataclass
class _Side:
    """Flattened intervals of one side for the comparison (ends clipped below 2^64). `iv` and
    `delta` are None while the side is the Mappings itself (no shift cut it): identity, zero."""

    va: np.ndarray
    end: np.ndarray
    pa: np.ndarray
    level: np.ndarray  # int8: the span of a repeat interval's entries, through `spans`
    repeat: np.ndarray
    code: np.ndarray  # rights (uint8)
    mt: np.ndarray  # memory type bits
    iv: np.ndarray | None  # index of the source interval
    delta: np.ndarray | None  # VA shift applied to the piece (mod 2^64)
    src: Mappings
    spans: np.ndarray = field(default_factory=lambda: np.zeros(0, U64))

    @classmethod
    def of(cls, m: Mappings) -> _Side:
        mm = m
        end = mm.va_end
        end[(end == 0) & (mm.size > 0)] = U64(TOP - 1)  # the last page of the space loses its last byte
        mask = arch_bits(mm.mode).memtype_mask
        mt = mm.entry & U64(mask)
        for small in (np.uint8, np.uint16, np.uint32):  # the same values in fewer bytes
            if mask <= np.iinfo(small).max:
                mt = mt.astype(small)
                break
        spans = np.array([lvl.entry_span for lvl in mm.mode.levels], U64)
        return cls(mm.va_start, end, mm.pa_start, mm.level, mm.repeat, perm_code(mm.perms), mt,
                   None, None, mm, spans)

    def iv_at(self, idx: np.ndarray) -> np.ndarray:
        return np.asarray(idx) if self.iv is None else self.iv[idx]

    def delta_at(self, idx: np.ndarray) -> np.ndarray:
        return np.zeros(len(idx), U64) if self.delta is None else self.delta[idx]

    def take(self, idx: np.ndarray) -> _Side:
        return _Side(self.va[idx], self.end[idx], self.pa[idx], self.level[idx], self.repeat[idx], self.code[idx],
                     self.mt[idx], self.iv_at(idx), self.delta_at(idx), self.src, self.spans)

    def pa_at(self, idx: np.ndarray, va: np.ndarray) -> np.ndarray:
        if not len(self.va):  # no interval: nothing hits (the caller masks these out)
            return np.zeros(len(va), U64)
        d = va - self.va[idx]
        rep = self.repeat[idx]
        if rep.any():
            d = np.where(rep, d % self.spans[self.level[idx].astype(np.intp)], d)
        return self.pa[idx] + d

    def lookup(self, va: np.ndarray, lo: int = 0, hi: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(interval, hit) of each VA, among intervals [lo, hi) (those that can hold them)."""
        hi = len(self.va) if hi is None else hi
        if hi <= lo:
            return np.zeros(len(va), np.int64), np.zeros(len(va), bool)
        i = np.searchsorted(self.va[lo:hi], va, side="right").astype(np.int64) + (lo - 1)
        ic = np.maximum(i, lo)
        return ic, (i >= lo) & (va < self.end[ic])


def _apply_shifts(side: _Side, shifts: list[Shift]) -> _Side:
    """A's intervals cut at the shift regions' bounds, each piece moved by its region's deltas."""
    if not shifts:
        return side
    regions = sorted(shifts, key=lambda s: s.va_start)
    for r0, r1 in zip(regions, regions[1:]):
        if r1.va_start < r0.va_end:
            raise UsageError(f"--shift regions overlap ({r0.va_start:#x}-{r0.va_end:#x} and {r1.va_start:#x}-{r1.va_end:#x})")
    # the gaps between regions are regions with no shift
    full: list[Shift] = []
    at = 0
    for r in regions:
        if r.va_start > at:
            full.append(Shift(0, 0, at, r.va_start))
        full.append(r)
        at = r.va_end
    if at < TOP:
        full.append(Shift(0, 0, at, TOP))
    pieces = []
    for r in full:
        lo, hi = U64(r.va_start), U64(min(r.va_end, TOP - 1))
        sel = np.flatnonzero((side.va < hi) & (side.end > lo))
        if len(sel) == 0:
            continue
        p = side.take(sel)
        new_va = np.maximum(p.va, lo)
        new_end = np.minimum(p.end, hi)
        pa = p.pa_at(np.arange(len(sel)), new_va)
        with np.errstate(over="ignore"):
            p.va = new_va + U64(r.va_delta % TOP)
            p.end = new_end + U64(r.va_delta % TOP)
            p.pa = pa + U64(r.pa_delta % TOP)
        p.delta = np.full(len(sel), r.va_delta % TOP, U64)
        pieces.append(p)
    if not pieces:
        return side.take(np.zeros(0, np.int64))
    out = _Side(*(np.concatenate([getattr(p, n) for p in pieces]) for n in ("va", "end", "pa", "level", "repeat", "code", "mt", "iv", "delta")), side.src, side.spans)
    order = np.argsort(out.va, kind="stable")
    out = out.take(order)
    if len(out.va) > 1 and np.any(out.end[:-1] > out.va[1:]):
        raise UsageError("after the --shift, regions of A overlap each other (or wrap around the address space)")
    return out


SEGMENT_CHUNK = 1 << 21  # intervals of each side per VA window (a numpy batch)


def _window_bounds(side: _Side, lo: int, hi: int, c0: U64, c1: U64) -> np.ndarray:
    """The boundaries of intervals [lo, hi) of `side` (VA-sorted, disjoint), clipped to [c0, c1]."""
    out = np.empty(2 * (hi - lo), U64)
    out[0::2] = side.va[lo:hi]
    out[1::2] = side.end[lo:hi]
    np.clip(out, c0, c1, out=out)
    return out


def _segments(A: _Side, B: _Side, bounds: np.ndarray, pa: str, moves: dict[int, int], ra: tuple[int, int],
              rb: tuple[int, int], context: bool):
    """Kinds of the segments between `bounds` (sorted), coalesced; only the rows that are not
    SAME come back (kind, start, end, A's and B's interval, has A, has B, PA on each side), with
    the bytes unchanged in place and, when the first segment is `context` (the previous window's
    last) and the window's first rows coalesce with it, the end that row of the previous window
    extends to; bytes the shifts moved are added to `moves`. `ra`, `rb`: the intervals of each
    side that can hold the segments."""
    s, e = bounds[:-1], bounds[1:]
    ia, ha = A.lookup(s, max(ra[0] - 1, 0), ra[1])  # one before: the context segment's
    ib, hb = B.lookup(s, max(rb[0] - 1, 0), rb[1])
    ctx = np.zeros(len(s), bool)
    ctx[0] = context
    keep = ha | hb
    s, e, ia, ha, ib, hb, ctx = s[keep], e[keep], ia[keep], ha[keep], ib[keep], hb[keep], ctx[keep]
    pa_a = np.where(ha, A.pa_at(ia, s), U64(0))
    pa_b = np.where(hb, B.pa_at(ib, s), U64(0))
    both = ha & hb
    rights = both & ((A.code[ia] != B.code[ib]) | (A.mt[ia] != B.mt[ib]))
    moved_pa = both & (pa_a != pa_b) if pa == "exact" else np.zeros(len(s), bool)
    kind = np.full(len(s), SAME, np.int8)
    kind[ha & ~hb] = REMOVED
    kind[hb & ~ha] = ADDED
    kind[rights & ~moved_pa] = CHANGED
    kind[moved_pa & ~rights] = REMAPPED
    kind[rights & moved_pa] = BOTH
    del both, rights, moved_pa
    length = e - s
    is_same = (kind == SAME) & ~ctx  # the context segment was counted in its own window
    seg_delta = np.where(ha, A.delta_at(ia), U64(0))
    same_bytes = int(length[is_same & (seg_delta == 0)].sum(dtype=U64))
    for d in np.unique(seg_delta[is_same & (seg_delta != 0)]).tolist():
        moves[int(d)] = moves.get(int(d), 0) + int(length[is_same & (seg_delta == U64(d))].sum(dtype=U64))
    del seg_delta
    # coalesce neighbours of one kind with the same rights on each side and continuous PAs
    n = len(s)
    brk = np.ones(n, bool)
    if n > 1:
        k0, k1 = slice(None, -1), slice(1, None)

        def cont(side: _Side, idx: np.ndarray, p: np.ndarray, has: np.ndarray) -> np.ndarray:
            same_iv = idx[k1] == idx[k0]
            contiguous = ~side.repeat[idx[k0]] & ~side.repeat[idx[k1]] & (p[k1] == p[k0] + length[k0])
            return ~has[k1] | same_iv | contiguous

        brk[1:] = ~(
            (kind[k1] == kind[k0]) & (e[k0] == s[k1]) & (ha[k1] == ha[k0]) & (hb[k1] == hb[k0])
            & (~ha[k1] | (A.code[ia[k1]] == A.code[ia[k0]])) & (~hb[k1] | (B.code[ib[k1]] == B.code[ib[k0]]))
            & cont(A, ia, pa_a, ha) & cont(B, ib, pa_b, hb)
        )
    first = np.flatnonzero(brk)
    last = np.append(first[1:], n) - 1
    extend = None
    if n and ctx[0]:  # the first row is the previous window's last: extended, or nothing new
        if last[0] > 0 and kind[0] != SAME:
            extend = e[last[0]]
        first, last = first[1:], last[1:]
    ns = kind[first] != SAME
    first, last = first[ns], last[ns]
    return (kind[first], s[first], e[last], ia[first], ib[first], ha[first], hb[first], pa_a[first],
            pa_b[first]), same_bytes, extend


def _pad(side: _Side) -> _Side:
    """A side with no interval gets an empty one at VA 0 that nothing hits, so that every
    gather by interval index has a row to read (its values are masked out)."""
    if len(side.va):
        return side
    z = np.zeros(1, U64)
    return _Side(z, z.copy(), z.copy(), np.zeros(1, np.int8), np.zeros(1, bool), np.zeros(1, np.uint8),
                 np.zeros(1, side.mt.dtype), None if side.iv is None else np.zeros(1, np.int64),
                 None if side.delta is None else np.zeros(1, U64), side.src, side.spans)


def _mapped(m: Mappings) -> Mappings:
    """The MAPPED intervals of `m` (`m` itself when all are: no copy)."""
    ok = m.status == MAPPED
    return m if ok.all() else m.select(ok)


def _index_dtype(n: int):
    return np.int32 if n < (1 << 31) else np.int64


def compare(a: Mappings, b: Mappings, *, shifts: list[Shift] | None = None, pa: str = "exact",
            regions: list[tuple[str, Shift]] | None = None, chunk: int = SEGMENT_CHUNK) -> DiffResult:
    """Diff two interval sets (only their MAPPED intervals count); see the module docstring.
    `chunk`: intervals of each side per VA window (the result does not depend on it).

    >>> compare(mappings(t, "kernel"), mappings(t, "current_kernel")).verdict  # doctest: +SKIP
    """
    if pa not in ("exact", "ignore"):
        raise UsageError(f"pa must be 'exact' or 'ignore', not {pa!r}")
    shifts = list(shifts or []) + [sh for _, sh in regions or []]
    am, bm = _mapped(a), _mapped(b)
    A = _apply_shifts(_Side.of(am), shifts)
    B = _Side.of(bm)
    na, nb = len(A.va), len(B.va)
    if na + nb == 0:
        return DiffResult(a.view, b.view, shifts, pa, ChangeArrays.empty(), 0, regions=list(regions or []), a=am, b=bm)
    A, B = _pad(A), _pad(B)
    # VA windows cut at every `chunk`-th interval start of each side and at the last end: all
    # boundaries of the comparison, so the segments are those of one sweep; rows coalesce across
    # windows (each window starts with the previous one's last segment as context)
    chunk = max(int(chunk), 1)
    top = max(int(A.end.max()) if na else 0, int(B.end.max()) if nb else 0)
    cuts = np.unique(np.concatenate([A.va[::chunk], B.va[::chunk], np.array([top], U64)]))
    same_bytes = 0
    moves: dict[int, int] = {}
    cols: list[list[np.ndarray]] = [[] for _ in range(9)]
    prev: U64 | None = None
    for c0, c1 in itertools.pairwise(cuts):
        a0, a1 = int(np.searchsorted(A.end, c0, side="right")), int(np.searchsorted(A.va, c1))
        b0, b1 = int(np.searchsorted(B.end, c0, side="right")), int(np.searchsorted(B.va, c1))
        parts = [_window_bounds(A, a0, a1, c0, c1), _window_bounds(B, b0, b1, c0, c1), np.array([c0, c1], U64)]
        if prev is not None:
            parts.append(np.array([prev], U64))
        bounds = _unique(np.concatenate(parts))
        r, sb, extend = _segments(A, B, bounds, pa, moves, (a0, a1), (b0, b1), prev is not None)
        prev = bounds[-2]
        same_bytes += sb
        if extend is not None:
            for k in range(len(cols[2]) - 1, -1, -1):  # the last row so far ends where this window's first does
                if len(cols[2][k]):
                    cols[2][k][-1] = extend
                    break
        if len(r[0]):
            idt = _index_dtype(max(na, nb))
            for c, x in zip(cols, (*r[:3], r[3].astype(idt), r[4].astype(idt), *r[5:])):
                c.append(x)
    if not cols[0]:
        cols = [[x] for x in (np.zeros(0, np.int8), np.zeros(0, U64), np.zeros(0, U64), np.zeros(0, np.int32),
                              np.zeros(0, np.int32), np.zeros(0, bool), np.zeros(0, bool), np.zeros(0, U64),
                              np.zeros(0, U64))]
    joined = []
    for k in range(9):  # one column at a time: the pieces go as the whole comes
        joined.append(np.concatenate(cols[k]))
        cols[k] = []
    rk, r_s, r_e, r_ia, r_ib, r_ha, r_hb, r_pa_a, r_pa_b = joined
    del joined, cols
    # moves: pair removed with added ranges
    rem = np.flatnonzero(rk == REMOVED)
    add = np.flatnonzero(rk == ADDED)
    pairs = _pair_moves(
        r_s[rem], r_e[rem] - r_s[rem], A.code[r_ia[rem]], A.mt[r_ia[rem]], r_pa_a[rem],
        r_s[add], r_e[add] - r_s[add], B.code[r_ib[add]], B.mt[r_ib[add]], r_pa_b[add], pa == "exact",
    )
    moved_rem = np.zeros(len(rem), bool)
    moved_add = np.zeros(len(add), bool)
    moved_rem[pairs[0]] = True
    moved_add[pairs[1]] = True
    drop = np.zeros(len(rk), bool)
    drop[rem[moved_rem]] = True
    drop[add[moved_add]] = True

    # moved ranges, coalesced by offset and continuity on both sides; VAs are A's own
    pr, pd = pairs
    moved: ChangeArrays | None = None
    if len(pr):
        js, jd = rem[pr], add[pd]
        with np.errstate(over="ignore"):
            orig = r_s[js] - A.delta_at(r_ia[js])
            o = np.argsort(orig, kind="stable")
            js, jd, orig = js[o], jd[o], orig[o]
            size = r_e[js] - r_s[js]
            vb = r_s[jd]
            delta = vb - orig
        m_first = np.ones(len(js), bool)
        m_first[1:] = ~((delta[1:] == delta[:-1]) & (orig[1:] == orig[:-1] + size[:-1]))
        mf = np.flatnonzero(m_first)
        ml = np.append(mf[1:], len(js)) - 1
        with np.errstate(over="ignore"):
            nbytes = orig[ml] + size[ml] - orig[mf]
        d = delta[mf]
        in_place = d == 0  # a shift said it moved, it did not: in place after all
        same_bytes += int(nbytes[in_place].sum(dtype=U64))
        keep = ~in_place
        for dd in np.unique(d[keep]).tolist():
            moves[int(dd)] = moves.get(int(dd), 0) + int(nbytes[keep & (d == U64(dd))].sum(dtype=U64))
        mf, d, nb = mf[keep], d[keep], nbytes[keep]
        ja, jb = js[mf], jd[mf]
        n = len(mf)
        with np.errstate(over="ignore"):
            moved = ChangeArrays(np.full(n, MOVED, np.int8), orig[mf], orig[mf] + nb, np.ones(n, bool),
                                 np.ones(n, bool), A.iv_at(r_ia[ja]), B.iv_at(r_ib[jb]), r_pa_a[ja], r_pa_b[jb],
                                 vb[mf], np.ones(n, bool))
    # the rows are not SAME (_segments dropped those); without moves they are the changes as they
    # are. Built a column at a time, each source column dropped once used (bounded peak memory).
    rest = np.flatnonzero(~drop) if drop.any() else None
    del drop, rem, add, pairs

    def pick(x: np.ndarray) -> np.ndarray:
        return x if rest is None else x[rest]

    has_a, has_b = pick(r_ha), pick(r_hb)
    del r_ha, r_hb
    if A.delta is None:  # nothing shifted: A's VAs are the segments'
        va_s = pick(r_s)
        va_b = va_s
        del r_s
        va_e = pick(r_e)
        del r_e
        shifted = np.zeros(len(has_a), bool)
    else:
        d_a = np.where(has_a, A.delta_at(pick(r_ia)), U64(0))
        va_b = pick(r_s)
        del r_s
        with np.errstate(over="ignore"):
            va_s = va_b - d_a
            va_e = pick(r_e) - d_a
        del r_e
        shifted = (d_a != 0) & has_b
        del d_a
    ia = A.iv_at(pick(r_ia))
    del r_ia
    ib = B.iv_at(pick(r_ib))
    del r_ib
    kind = pick(rk)
    del rk
    pa_a = pick(r_pa_a)
    del r_pa_a
    pa_b = pick(r_pa_b)
    del r_pa_b
    plain = ChangeArrays(kind, va_s, va_e, has_a, has_b, ia, ib, pa_a, pa_b, va_b, shifted)
    del kind, va_s, va_e, has_a, has_b, ia, ib, pa_a, pa_b, va_b, shifted
    if moved is None and not shifts:
        allc = plain  # the segments' rows are in VA order already
    elif shifts:  # A's own VAs are not in the shifted order: sort
        parts = [plain] if moved is None else [plain, moved]
        k_all = np.concatenate([p.kind for p in parts])
        v_all = np.concatenate([p.va_start for p in parts])
        order = np.lexsort((k_all, v_all))
        del k_all, v_all
        allc = ChangeArrays.concat_take(parts, order)
    else:  # insert the moved rows (few, in VA order) after the rows at the same VA
        at = np.searchsorted(plain.va_start, moved.va_start, side="right")
        allc = ChangeArrays.insert(plain, at, moved)
    return DiffResult(a.view, b.view, shifts, pa, allc, same_bytes, moves, list(regions or []), am, bm)


def _texts(m: Mappings | None, idx: np.ndarray, has: np.ndarray) -> list[str | None]:
    if m is None or not len(m):
        return [None] * len(idx)
    i = np.where(has, idx, 0)
    t = perm_strings(Perms(**{k: v[i] for k, v in m.perms.__dict__.items()}))
    return [x if h else None for x, h in zip(t, has.tolist())]


def _levels(m: Mappings | None, idx: np.ndarray, has: np.ndarray) -> list[str | None]:
    if m is None or not len(m):
        return [None] * len(idx)
    names = [lvl.name for lvl in m.mode.levels]
    return [names[lv] if h else None for lv, h in zip(m.level[np.where(has, idx, 0)].tolist(), has.tolist())]


def _unique(a: np.ndarray) -> np.ndarray:
    """Sorted unique values; `a` (a temporary) is sorted in place."""
    a.sort()
    keep = np.ones(len(a), bool)
    keep[1:] = a[1:] != a[:-1]
    return a[keep]


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a uint64 hash of each value."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> U64(30))) * U64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> U64(27))) * U64(0x94D049BB133111EB)
        return x ^ (x >> U64(31))


def _group_ids(keys: list[np.ndarray]) -> tuple[np.ndarray, int]:
    """A group number per row, equal exactly where every key is (uint64 columns). One sort of a
    hash of the keys packed with the row index (numpy's fast value sort, not an argsort), then a
    check that each group's rows have its first row's keys; the rows of a group where the hash
    collided are grouped again by a lexsort of their keys themselves."""
    n = len(keys[0])
    h = np.zeros(n, U64)
    with np.errstate(over="ignore"):
        for k in keys:
            h = _mix(h * U64(0x9E3779B97F4A7C15) + k)
    bits_i = max((n - 1).bit_length(), 1)
    h >>= U64(bits_i)
    h <<= U64(bits_i)
    h |= np.arange(n, dtype=U64)
    h.sort()
    order = (h & U64((1 << bits_i) - 1)).astype(np.int64)
    start = np.ones(n, bool)
    start[1:] = (h[1:] >> U64(bits_i)) != (h[:-1] >> U64(bits_i))
    del h
    gs = np.cumsum(start) - 1
    ng = int(gs[-1]) + 1
    gid = np.empty(n, np.int64)
    gid[order] = gs
    rep = order[np.flatnonzero(start)][gid]  # each row's group's first row
    bad = np.zeros(n, bool)
    for k in keys:
        bad |= k != k[rep]
    if bad.any():  # a collision: regroup the rows of those groups by their keys
        bad_g = np.zeros(ng, bool)
        bad_g[gid[bad]] = True
        rows = np.flatnonzero(bad_g[gid])
        sub = [k[rows] for k in keys]
        o = np.lexsort(sub[::-1])
        chg = np.zeros(len(rows), bool)
        chg[0] = True
        for k in sub:
            sk = k[o]
            chg[1:] |= sk[1:] != sk[:-1]
        gid[rows[o]] = ng + np.cumsum(chg) - 1
        ng += int(chg.sum())
    return gid, ng


def _pair_moves(va_r, size_r, code_r, mt_r, pa_r, va_d, size_d, code_d, mt_d, pa_d, use_pa: bool):
    """(indices into removed, indices into added) of the ranges paired as moves."""
    nr, nd = len(va_r), len(va_d)
    none = (np.zeros(0, np.int64), np.zeros(0, np.int64))
    if not nr or not nd:
        return none
    gid, ng = _group_ids([np.concatenate([size_r, size_d]), np.concatenate([code_r, code_d]).astype(U64),
                          np.concatenate([mt_r, mt_d]).astype(U64)]
                         + ([np.concatenate([pa_r, pa_d])] if use_pa else []))
    g_r, g_d = gid[:nr], gid[nr:]
    cr = np.bincount(g_r, minlength=ng)
    cd = np.bincount(g_d, minlength=ng)
    # 1. unique on both sides
    uniq = (cr == 1) & (cd == 1)
    ri = np.flatnonzero(uniq[g_r])
    di_of_g = np.full(ng, -1, np.int64)
    dsel = np.flatnonzero(uniq[g_d])
    di_of_g[g_d[dsel]] = dsel
    di = di_of_g[g_r[ri]]
    pr, pd = [ri], [di]
    # 2. for the offsets unique pairs established (the most common first), exact hits elsewhere
    if len(ri):
        delta = va_d[di] - va_r[ri]
        w = size_r[ri]
        ud, inv = np.unique(delta, return_inverse=True)
        weight = np.bincount(inv, weights=w.astype(np.float64))
        taken_r = np.zeros(nr, bool)
        taken_d = np.zeros(nd, bool)
        taken_r[ri] = True
        taken_d[di] = True
        d_order = np.argsort(va_d, kind="stable")
        sva_d = va_d[d_order]
        both_sides = cd[g_r] > 0  # a removed range whose kind no added range has never pairs
        for k in np.argsort(-weight)[:16]:
            dlt = ud[k]
            cand = np.flatnonzero(~taken_r & both_sides)
            if not len(cand):
                break
            with np.errstate(over="ignore"):
                target = va_r[cand] + dlt
            pos = np.searchsorted(sva_d, target)
            posc = np.minimum(pos, nd - 1)
            j = d_order[posc]
            hit = (pos < nd) & (sva_d[posc] == target) & ~taken_d[j] & (g_d[j] == g_r[cand])
            if hit.any():
                rr, dd = cand[hit], j[hit]
                taken_r[rr] = True
                taken_d[dd] = True
                pr.append(rr)
                pd.append(dd)
    return np.concatenate(pr).astype(np.int64), np.concatenate(pd).astype(np.int64)


def kaslr_shifts(target_a, target_b, a: Mappings, b: Mappings) -> list[tuple[str, Shift]]:
    """The moves KASLR makes between two boots of one kernel, from what both images say:

    * the kernel image: VMCOREINFO's KERNELOFFSET (written by the kernel on every architecture
      that randomises its image) gives the VA move; the region is A's block of VA-contiguous
      mappings around `SYMBOL(_stext)`; the PA move is read off both translations of _stext;
    * the regions between the layout's ptdump markers (direct map, vmalloc, vmemmap, ...) whose
      marker moved: VA moved by the marker's difference, PAs compared as they are.

    Regions are named by the kernel's marker names ("kernel image" for the first). Empty when
    the images do not say (no VMCOREINFO, no layout) or nothing moved.
    """
    out: list[tuple[str, Shift]] = []
    vi_a = getattr(getattr(target_a.mem, "cpu", None), "vmcoreinfo", None) or {}
    vi_b = getattr(getattr(target_b.mem, "cpu", None), "vmcoreinfo", None) or {}
    image: Shift | None = None
    try:
        off_a, off_b = int(vi_a["KERNELOFFSET"], 16), int(vi_b["KERNELOFFSET"], 16)
        stext = int(vi_a["SYMBOL(_stext)"], 16)
    except (KeyError, ValueError):
        off_a = off_b = stext = 0
    am, bm = _mapped(a), _mapped(b)
    if off_a != off_b and len(am):
        d = (off_b - off_a) % TOP
        i, hit = am.lookup(np.array([stext], U64))
        if hit[0]:
            k = int(i[0])
            brk = np.flatnonzero(am.va_start[1:] != am.va_end[:-1])  # block boundaries: k in (brk[j], brk[j+1]]
            j = int(np.searchsorted(brk, k))
            lo = int(brk[j - 1]) + 1 if j > 0 else 0
            hi = int(brk[j]) if j < len(brk) else len(am) - 1
            start, end = int(am.va_start[lo]), int(am.va_start[hi]) + int(am.size[hi])
            pa_a = int(am.pa_of(i, np.array([stext], U64))[0])
            ib, hb = bm.lookup(np.array([(stext + d) % TOP], U64))
            pa_d = (int(bm.pa_of(ib, np.array([(stext + d) % TOP], U64))[0]) - pa_a) % TOP if hb[0] else 0
            image = Shift(d, pa_d, start, min(end, TOP))
            out.append(("kernel image", image))
    ma, mb = _markers(target_a), _markers(target_b)
    # a name can come back (s390: "Identity Mapping Start" before and after the kernel image):
    # markers are matched by name and occurrence
    names_b: dict[tuple[str, int], int] = {}
    seen_b: dict[str, int] = {}
    for k, (va, name) in enumerate(mb):
        seen_b[name] = seen_b.get(name, -1) + 1
        names_b[(name, seen_b[name])] = k
    seen_a: dict[str, int] = {}
    for k, (va, name) in enumerate(ma):
        seen_a[name] = seen_a.get(name, -1) + 1
        kb = names_b.get((name, seen_a[name]))
        if kb is None or mb[kb][0] == va:
            continue
        vb = mb[kb][0]
        # the region ends at the next marker of A, and where B's next marker comes first
        size = min((ma[k + 1][0] if k + 1 < len(ma) else TOP) - va, (mb[kb + 1][0] if kb + 1 < len(mb) else TOP) - vb)
        if size <= 0:
            continue
        sh = Shift((vb - va) % TOP, 0, va, va + size)
        if image is not None and sh.va_start < image.va_end and image.va_start < sh.va_end:
            continue  # the kernel image's own move wins where they meet
        if any(sh.va_start < o.va_end and o.va_start < sh.va_end for _, o in out):
            continue
        out.append((name, sh))
    return sorted(out, key=lambda x: x[1].va_start)


def _markers(target) -> list[tuple[int, str]]:
    layout = getattr(target, "layout", None)
    if layout is None or not hasattr(layout, "markers"):
        return []
    try:
        ms = sorted((int(x[0]) % TOP, x[1]) for x in layout.markers() if x[1])
    except (TypeError, ValueError):
        return []
    seen: set[int] = set()
    out = []
    for v, n in ms:  # one name per address
        if v not in seen:
            seen.add(v)
            out.append((v, n))
    return out


def diff(target_a, target_b=None, *, view_a: str = "kernel", view_b: str | None = None,
         shifts: list[Shift] | None = None, pa: str = "exact", auto_shift: bool = True) -> DiffResult:
    """What changed from `view_a` of `target_a` to `view_b` of `target_b` (default: the same
    target, the same view name).

    Two images without `shifts` given: the KASLR moves the images themselves say (`kaslr_shifts`)
    are applied and reported by region, unless `auto_shift` is False.

    >>> diff(resolve(open_image("a.elf")), resolve(open_image("b.elf"))).verdict  # doctest: +SKIP
    'identical'
    """
    other = target_b is not None and target_b is not target_a
    target_b = target_b if target_b is not None else target_a
    view_b = view_b or view_a
    a, b = mappings(target_a, view_a), mappings(target_b, view_b)
    regions = kaslr_shifts(target_a, target_b, a, b) if (auto_shift and other and not shifts) else []
    return compare(a, b, shifts=shifts, pa=pa, regions=regions)
