"""The reverse map: every physical range mapped at more than one virtual address.

An interval sweep over the mappings sorted by PA, in time proportional to the number of
intervals (plus the size of the answer), never to the number of pages:

1. the boundaries of all PA ranges cut physical memory into elementary segments;
2. a difference array over those boundaries, weighted by how many VAs each interval maps its
   range at (1, or `size / span` for a repeat interval), gives the coverage of every segment;
   more difference arrays give the weighted counts of the W/X rules and each segment's class
   signature, so no (segment, interval) pair is made for the counts;
3. a segment covered twice or more is an alias; its members are the intervals covering it,
   enumerated with a prefix count of the segments asked for (no per-page work, no dicts).

The sweep runs over the intervals in PA order a batch (`SWEEP_CHUNK` intervals) at a time, the
intervals that reach past a batch carried into the next one, so its temporaries are bounded;
the batches cut PA space only at boundaries, so the segments are those of one sweep. Only the
W/X segments and one example per class keep their members; others are swept again on demand.

A segment is flagged `kernel_wx` when one of its virtual mappings is writable (by anyone) and
*another* one executable by the kernel, `user_wx` when one is writable by user mode and another
executable by user mode (a JIT's double mapping); `wx` is either. The kernel writing through the
direct map to memory user mode executes (every page of a program's text) is how an OS works and
is not flagged. Both are computed from weighted counts (pairs = W * X - WX).

>>> res = aliases(target, "kernel")  # doctest: +SKIP
>>> [a for a in res.groups if a.wx][:1]  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from .mappings import (
    MAPPED,
    Mappings,
    Perms,
    _perm_text,
    leaf_entries,
    mappings,
    perm_strings,
)

U64 = np.uint64


@dataclass
class AliasMember:
    """One virtual mapping of an alias segment's physical range."""

    va_start: int  # VA of the segment's first byte (first slot for a repeat interval)
    va_end: int
    count: int  # virtual places: 1, or the slots of a repeat interval (each maps the same range)
    level: str
    entry: int
    perm: str
    user: bool
    write: bool
    kexec: bool
    uexec: bool

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class Alias:
    """A physical range and the virtual mappings of it (two or more in all)."""

    pa_start: int
    pa_end: int
    mappings: int  # virtual places in all (sum of member counts)
    wx: bool  # writable at one VA, executable at another (kernel_wx or user_wx)
    kernel_wx: bool  # writable at one VA, executable by the kernel at another
    user_wx: bool  # writable by user mode at one VA, executable by user mode at another
    members: list[AliasMember] = field(default_factory=list)

    def as_dict(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k != "members"}
        d["members"] = [m.as_dict() for m in self.members]
        return d


TOP_PA = (1 << 64) - 1
SWEEP_CHUNK = 1 << 17  # intervals (in PA order) per numpy batch of the sweep
_BIG = np.iinfo(np.int64).max


@dataclass
class AliasArrays:
    """Alias segments (all of them, or a selection) and their (segment, interval) pairs, for
    callers that want arrays. `pair_seg` is the position of a pair's segment in these arrays;
    the pairs are grouped by segment (ascending), members in interval (VA) order."""

    seg_start: np.ndarray  # uint64 PA
    seg_end: np.ndarray
    weight: np.ndarray  # virtual places per segment
    wx: np.ndarray  # bool per segment
    kernel_wx: np.ndarray
    user_wx: np.ndarray
    pair_seg: np.ndarray  # int64: segment of each pair
    pair_iv: np.ndarray  # int64: interval (index into the mapped Mappings) of each pair
    index: np.ndarray | None = None  # int64: each segment's index among all the alias segments (None: all)

    def __len__(self) -> int:
        return len(self.seg_start)

    def pairs_of(self, segs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(segment, interval) of the pairs of segments `segs` (positions in these arrays),
        grouped by segment (ascending), members in VA order."""
        sel = np.zeros(len(self.seg_start), bool)
        sel[np.asarray(segs, np.int64)] = True
        mask = sel[self.pair_seg]
        sub, iv = self.pair_seg[mask], self.pair_iv[mask]
        order = np.argsort(sub, kind="stable")  # iv ascending within a segment: VA order
        return sub[order], iv[order]

    @classmethod
    def concat(cls, parts: list[AliasArrays]) -> AliasArrays:
        if not parts:
            z, zi, zb = np.zeros(0, U64), np.zeros(0, np.int64), np.zeros(0, bool)
            return cls(z, z, zi, zb, zb, zb, zi, zi, zi)
        off = np.cumsum([0] + [len(p) for p in parts[:-1]])
        cols = {f: np.concatenate([getattr(p, f) for p in parts])
                for f in ("seg_start", "seg_end", "weight", "wx", "kernel_wx", "user_wx", "pair_iv", "index")}
        cols["pair_seg"] = np.concatenate([p.pair_seg + o for p, o in zip(parts, off)])
        return cls(**cols)


@dataclass
class _Chunk:
    """The sweep of one PA-ordered batch of intervals: its elementary segments, which of them are
    aliases (covered twice or more), and what their coverage says."""

    ids: np.ndarray  # intervals taking part (indices into the mapped Mappings)
    lo: np.ndarray  # each one's first boundary (index into b)
    hi: np.ndarray  # and the boundary it ends at
    b: np.ndarray  # the boundaries (uint64 PA): segment j is [b[j], b[j+1])
    seg: np.ndarray  # the alias segments (j)
    weight: np.ndarray  # int64: virtual places of each alias segment
    kernel_wx: np.ndarray | None  # bool per alias segment (flags=True)
    user_wx: np.ndarray | None
    sig: np.ndarray | None  # uint64 class signature per alias segment (sig=True)

    def select(self, sel: np.ndarray, offset: int) -> AliasArrays:
        """The alias segments at positions `sel` (ascending) and their pairs; `offset` is the
        index of this chunk's first alias segment among all of them."""
        sel = np.asarray(sel, np.int64)
        j = self.seg[sel]
        mark = np.zeros(len(self.b) - 1, bool)
        mark[j] = True
        pre = np.zeros(len(self.b), np.int64)
        np.cumsum(mark, out=pre[1:])
        k_lo = pre[self.lo]
        cnt = pre[self.hi] - k_lo
        nz = np.flatnonzero(cnt)
        k_lo, cnt = k_lo[nz], cnt[nz]
        total = int(cnt.sum())
        starts = np.cumsum(cnt) - cnt
        pair_iv = np.repeat(self.ids[nz], cnt)
        pair_seg = np.repeat(k_lo - starts, cnt) + np.arange(total, dtype=np.int64)
        order = np.lexsort((pair_iv, pair_seg))
        kwx = self.kernel_wx[sel] if self.kernel_wx is not None else np.zeros(len(sel), bool)
        uwx = self.user_wx[sel] if self.user_wx is not None else np.zeros(len(sel), bool)
        return AliasArrays(self.b[j], self.b[j + 1], self.weight[sel], kwx | uwx, kwx, uwx, pair_seg[order],
                           pair_iv[order], sel + offset)


def _hash_tables() -> list[np.ndarray]:
    """The random 21-bit codes of the 2^9 kinds of mapping (rights | level << 6) of `classes()`."""
    rng = np.random.default_rng(0x5EED)
    return [rng.integers(0, 1 << 21, size=1 << 9) for _ in range(3)]


def _mapped(m: Mappings) -> Mappings:
    """The MAPPED intervals of `m` (`m` itself when all are: no copy)."""
    ok = m.status == MAPPED
    return m if ok.all() else m.select(ok)


def perm_code(p: Perms, dtype=np.uint8) -> np.ndarray:
    """`Perms.code()` (bit 0 user, 1 read, 2 write, 3 kexec, 4 uexec, 5 global) in a small
    integer type: the same values, an eighth of the memory traffic of uint64."""
    c = np.zeros(len(p.user), dtype)
    for k, name in enumerate(("user", "read", "write", "kexec", "uexec", "glob")):
        c |= getattr(p, name).astype(dtype) << dtype(k)
    return c


def _run(lo: np.ndarray, hi: np.ndarray, nb: int, weights: np.ndarray | None) -> np.ndarray:
    """Per segment (of `nb` boundaries): the sum of `weights` (1 when None) over the intervals
    [lo, hi) covering it: a difference array and its prefix sum."""
    d = np.bincount(lo, weights=weights, minlength=nb + 1) - np.bincount(hi, weights=weights, minlength=nb + 1)
    if d.dtype != np.int64:
        d = d.astype(np.int64)
    return np.cumsum(d)[: nb - 1]


def _sums(lo: np.ndarray, hi: np.ndarray, nb: int, seg: np.ndarray, fields: list[np.ndarray], bound: int,
          weights: np.ndarray | None) -> list[np.ndarray]:
    """`_run` of each field (per-interval values, times `weights`) at the segments `seg`, several
    fields packed in one float64 run: a field's sums stay below `bound` at every boundary (sums
    over the intervals covering a segment), so each gets that many bits and the packed sums stay
    exact below 2^53."""
    width = max(int(bound).bit_length(), 1)
    per = max(52 // width, 1) if width <= 26 else 1
    out = []
    for k in range(0, len(fields), per):
        group = fields[k : k + per]
        x = group[0].astype(np.float64)
        for i, f in enumerate(group[1:], 1):
            x += f.astype(np.float64) * float(1 << (width * i))
        v = _run(lo, hi, nb, x if weights is None else x * weights)[seg]
        if len(group) == 1:
            out.append(v)
        else:
            out += [(v >> (width * i)) & ((1 << width) - 1) for i in range(len(group))]
    return out


def _chunks(mm: Mappings, *, flags: bool = True, sig: bool = False, chunk: int = SWEEP_CHUNK) -> Iterator[_Chunk]:
    """The sweep of mapped intervals `mm` (status MAPPED only) in PA order, `chunk` intervals at a
    time. A batch's PA range runs from its first interval's start to the next batch's first
    start (both boundaries of the whole sweep too, so the segments are the one-shot sweep's);
    intervals reaching past it are carried into the next batch, clipped to its start. Every
    per-segment quantity is a difference array over the boundaries: coverage, the weighted
    counts of the W/X rules, the class signature; no (segment, interval) pairs are made here."""
    n = len(mm)
    if n == 0:
        return
    chunk = max(int(chunk), 1)
    order = argsort_u64(mm.pa_start)
    spans = np.array([lvl.entry_span for lvl in mm.mode.levels], U64)
    # one small word per interval, gathered once per batch: rights (bits 0-5, `Perms.code`),
    # level (6-8), repeat (9)
    attr = perm_code(mm.perms, np.uint16)
    attr |= mm.level.astype(np.uint16) << np.uint16(6)
    attr |= mm.repeat.astype(np.uint16) << np.uint16(9)
    if sig:
        hashes = [h.astype(np.float64) for h in _hash_tables()]
    carry = np.zeros(0, np.int64)
    for k0 in range(0, n, chunk):
        new = order[k0 : k0 + chunk]
        ids = np.concatenate([carry, new]) if len(carry) else new
        at = attr[ids]
        rep = (at & 512) != 0
        anyrep = bool(rep.any())
        ps = mm.pa_start[ids]
        size = mm.size[ids]
        if anyrep:
            span = spans[((at >> 6) & 7).astype(np.intp)]
            with np.errstate(over="ignore"):
                pe = ps + np.where(rep, span, size)
        else:
            with np.errstate(over="ignore"):
                pe = ps + size
        pe[pe < ps] = U64(TOP_PA)  # a range wrapping past 2^64 (a corrupt entry) ends at the top
        if len(carry):
            ps = np.maximum(ps, mm.pa_start[new[0]])
        if k0 + chunk < n:
            p1 = mm.pa_start[order[k0 + chunk]]
            out = pe > p1
            carry = ids[out]
            np.minimum(pe, p1, out=pe)
        m = len(ids)
        b, inv = _unique_inverse(np.concatenate([ps, pe]))
        lo, hi = inv[:m], inv[m:]
        del inv, ps, pe
        nb = len(b)
        if anyrep:
            with np.errstate(divide="ignore"):
                w = np.where(rep, size // span, U64(1)).astype(np.int64)
            wf = w.astype(np.float64)
        else:
            wf = None  # every weight is 1
        del size

        count = _run(lo, hi, nb, None)  # intervals covering each segment
        cov = _run(lo, hi, nb, wf) if anyrep else count
        seg = np.flatnonzero(cov >= 2)
        weight = cov[seg]
        maxcov, maxcount = (int(cov.max()), int(count.max())) if nb > 1 else (0, 0)
        del cov
        kwx = uwx = sg = None
        if flags:
            c = at & 63
            write, kexec, user, uexec = ((c >> k) & 1 for k in (2, 3, 0, 4))  # Perms.code's bits
            uw = write & user
            fl = [write, kexec, write & kexec, uw, uexec, uw & uexec]
            nw, nkx, nwkx, nuw, nux, nuwux = _sums(lo, hi, nb, seg, fl, maxcov, wf)
            kwx = nw * nkx - nwkx > 0
            uwx = nuw * nux - nuwux > 0
        if sig:
            cd = (at & 511).astype(np.intp)
            sg = count[seg].astype(U64)  # members per segment
            parts = _sums(lo, hi, nb, seg, [h[cd] for h in hashes], maxcount << 21, None)
            for part in parts:
                with np.errstate(over="ignore"):
                    sg = (sg * U64(0x9E3779B97F4A7C15)) ^ part.astype(U64)
        del count
        yield _Chunk(ids, lo, hi, b, seg, weight, kwx, uwx, sg)


def sweep(m: Mappings, *, chunk: int = SWEEP_CHUNK) -> AliasArrays:
    """Every alias segment of mapped intervals `m` (status MAPPED only) and who covers them."""
    parts, off = [], 0
    for ch in _chunks(m, chunk=chunk):
        parts.append(ch.select(np.arange(len(ch.seg)), off))
        off += len(ch.seg)
    return AliasArrays.concat(parts)


def wx_segments(m: Mappings, *, chunk: int = SWEEP_CHUNK) -> AliasArrays:
    """Only the W/X alias segments of mapped intervals `m` and their pairs (`index`: their
    place among all the alias segments): what `check` needs, without the others' pairs."""
    parts, off = [], 0
    for ch in _chunks(m, chunk=chunk):
        parts.append(ch.select(np.flatnonzero(ch.kernel_wx | ch.user_wx), off))
        off += len(ch.seg)
    return AliasArrays.concat(parts)


def argsort_u64(a: np.ndarray) -> np.ndarray:
    """np.argsort of uint64 values, through np.sort of (value, index) packed in one word when
    they fit (page-aligned PAs do: 40 bits of page number and 24 of index): numpy's SIMD sort
    of values is several times faster than its argsort. Ties come out in index order."""
    n = len(a)
    if n < 2:
        return np.arange(n, dtype=np.int64)
    shift = 12 if not (a & U64(0xFFF)).any() else 0
    bits_v = (int(a.max()) >> shift).bit_length()
    bits_i = (n - 1).bit_length()
    if bits_v + bits_i > 63:
        return np.argsort(a, kind="stable")
    key = ((a >> U64(shift)) << U64(bits_i)) | np.arange(n, dtype=U64)
    key.sort()
    key &= U64((1 << bits_i) - 1)
    return key.view(np.int64)  # the index bits, in place (bits_v + bits_i < 64: non-negative)


def _unique_inverse(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted unique values and the rank of each element (one sort)."""
    order = argsort_u64(a)
    s = a[order]
    first = np.ones(len(s), dtype=bool)
    first[1:] = s[1:] != s[:-1]
    inv = np.empty(len(a), dtype=np.int64)
    inv[order] = np.cumsum(first) - 1
    return s[first], inv


class _LazyArrays:
    """`AliasResult.arrays`: the per-segment flags (`wx`, `kernel_wx`, `user_wx`) at once, the
    other columns of `AliasArrays` (every segment's PAs and pairs) swept on first use."""

    def __init__(self, res: AliasResult) -> None:
        self._res = res
        self.kernel_wx = res._kwx
        self.user_wx = res._uwx
        self.wx = res._kwx | res._uwx

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._res._all(), name)


class AliasResult:
    """The alias segments of one view: counts and flags from the sweep, `Alias` objects built on
    demand (`groups`, `wx`, `build()`), so that millions of aliases cost a few bytes each, not
    objects (nor pairs), until someone asks for them. The sweep keeps the pairs of the W/X
    segments and of one example segment per class; other segments are swept again when asked."""

    def __init__(self, view: str | None, mode: str, mm: Mappings, mem=None, max_members: int | None = None,
                 *, chunk: int = SWEEP_CHUNK) -> None:
        self.view = view
        self.mode = mode
        self.intervals = len(mm)  # mapped intervals swept
        self._mm = mm
        self._mem = mem
        self._max_members = max_members
        self._chunk = chunk
        self._groups: list[Alias] | None = None
        self._full: AliasArrays | None = None
        self._arrays: _LazyArrays | None = None
        self._summarise()

    def _summarise(self) -> None:
        count, nbytes = 0, 0
        kwx, uwx, kept, cls = [], [], [], []
        for ch in _chunks(self._mm, flags=True, sig=True, chunk=self._chunk):
            ns = len(ch.seg)
            if not ns:
                continue
            length = ch.b[ch.seg + 1] - ch.b[ch.seg]
            nbytes += int(length.sum(dtype=U64))
            wx = ch.kernel_wx | ch.user_wx
            u = np.unique(ch.sig)  # few classes: a value sort, then lookups in a small table
            gid = np.searchsorted(u, ch.sig)
            first = np.empty(len(u), np.int64)
            first[gid[::-1]] = np.arange(ns - 1, -1, -1)  # each class's first segment in the chunk
            cls.append((u, np.bincount(gid, weights=length.astype(np.float64), minlength=len(u)),
                        np.bincount(gid, minlength=len(u)), np.bincount(gid, weights=wx.astype(np.float64),
                                                                       minlength=len(u)), first + count))
            kept.append(ch.select(np.union1d(np.flatnonzero(wx), first), count))
            kwx.append(ch.kernel_wx)
            uwx.append(ch.user_wx)
            count += ns
        self._count, self._bytes = count, nbytes
        zb = np.zeros(0, bool)
        self._kwx = np.concatenate(kwx) if kwx else zb
        self._uwx = np.concatenate(uwx) if uwx else zb
        self._kept = AliasArrays.concat(kept)
        if cls:
            su = np.concatenate([c[0] for c in cls])
            u = np.unique(su)
            g = np.searchsorted(u, su)
            self._cls_sig = u
            self._cls_bytes = np.bincount(g, weights=np.concatenate([c[1] for c in cls]), minlength=len(u))
            self._cls_count = np.bincount(g, weights=np.concatenate([c[2] for c in cls]), minlength=len(u))
            self._cls_wx = np.bincount(g, weights=np.concatenate([c[3] for c in cls]), minlength=len(u))
            ex = np.full(len(u), _BIG, np.int64)
            np.minimum.at(ex, g, np.concatenate([c[4] for c in cls]))
            self._cls_example = ex
        else:
            self._cls_sig = np.zeros(0, U64)

    def __len__(self) -> int:
        return self._count

    @property
    def arrays(self) -> _LazyArrays:
        """The sweep's arrays: flags per segment now, the rest (`AliasArrays`) on first use."""
        if self._arrays is None:
            self._arrays = _LazyArrays(self)
        return self._arrays

    def _all(self) -> AliasArrays:
        if self._full is None:
            self._full = sweep(self._mm, chunk=self._chunk)
        return self._full

    @property
    def aliased_bytes(self) -> int:
        return self._bytes

    @property
    def wx_count(self) -> int:
        return int(np.count_nonzero(self._kwx | self._uwx))

    @property
    def groups(self) -> list[Alias]:
        if self._groups is None:
            self._groups = self.build(np.arange(len(self)))
        return self._groups

    @property
    def wx(self) -> list[Alias]:
        if self._groups is not None:
            return [a for a in self._groups if a.wx]
        return self.build(np.flatnonzero(self._kwx | self._uwx))

    def _select(self, segs: np.ndarray) -> tuple[AliasArrays, np.ndarray]:
        """Arrays holding the segments `segs` (sorted indices among all) and their positions there."""
        kept = self._kept
        pos = np.searchsorted(kept.index, segs)
        if len(segs) and (pos < len(kept.index)).all() and (kept.index[np.minimum(pos, len(kept.index) - 1)] == segs).all():
            return kept, pos
        if self._full is not None:
            return self._full, segs
        parts, off, k = [], 0, 0  # sweep again, keeping only these
        for ch in _chunks(self._mm, flags=False, chunk=self._chunk):
            ns = len(ch.seg)
            k1 = int(np.searchsorted(segs, off + ns))
            if k1 > k:
                sel = segs[k:k1] - off
                part = ch.select(sel, off)
                part.kernel_wx, part.user_wx = self._kwx[segs[k:k1]], self._uwx[segs[k:k1]]
                part.wx = part.kernel_wx | part.user_wx
                parts.append(part)
            k = k1
            off += ns
        return AliasArrays.concat(parts), np.arange(len(segs))

    def build(self, segs: np.ndarray) -> list[Alias]:
        """`Alias` objects of the segments `segs` (indices; returned in PA order)."""
        segs = np.unique(np.asarray(segs, np.int64))
        if not len(segs):
            return []
        a, pos = self._select(segs)
        return _build(a, self._mm, pos, self._max_members, self._mem)

    def classes(self) -> list[dict]:
        """The segments grouped by their set of mappings' kinds (rights and level of each
        member): `mappings` (the kinds, e.g. ["kernel rw- G pte", "kernel rw- G pmd"]), `count`,
        `bytes`, `wx` (segments of the class flagged W/X), `example` (a segment's PA),
        most bytes first. Whole-array: a segment's signature is its member count and three sums of
        21-bit random codes of its members' kinds (order-free, exact in float64; summed by the
        sweep's difference arrays), so no sort of the pairs is needed; the classes of each batch
        and then of all of them are a sort of a few values."""
        if not len(self._cls_sig):
            return []
        mm = self._mm
        code = (mm.perms.code() | (mm.level.astype(U64) << U64(6))).astype(np.int64)  # < 2^9
        a, pos = self._select(np.unique(self._cls_example))
        ex_seg, ex_iv = a.pairs_of(pos)
        names = [lvl.name for lvl in mm.mode.levels]
        members: dict[int, list[int]] = {}
        for sg, iv in zip(a.index[ex_seg].tolist(), code[ex_iv].tolist()):
            members.setdefault(sg, []).append(iv)
        starts = dict(zip(a.index[pos].tolist(), a.seg_start[pos].tolist()))
        out = []
        for k in np.argsort(-self._cls_bytes, kind="stable").tolist():
            j = int(self._cls_example[k])
            kinds = sorted(f"{_perm_text(c & 63)} {names[c >> 6]}" for c in members.get(j, []))
            out.append({"mappings": kinds, "count": int(self._cls_count[k]), "bytes": int(self._cls_bytes[k]),
                        "wx": int(self._cls_wx[k]), "example": int(starts[j])})
        return out


def find_aliases(m: Mappings, *, max_members: int | None = None, mem=None, chunk: int = SWEEP_CHUNK) -> AliasResult:
    """The alias segments of mappings `m` (any status; only MAPPED intervals take part).

    `max_members` bounds the members listed per group (the counts stay exact). With `mem` (the
    image), each member's `entry` is the leaf entry at its own first VA, read from the tables;
    without, it is the first entry of the interval it belongs to. `chunk`: intervals per batch
    of the sweep (the result does not depend on it).
    """
    return AliasResult(m.view, m.mode.name, _mapped(m), mem, max_members, chunk=chunk)


def _build(a: AliasArrays, mm: Mappings, segs: np.ndarray, max_members: int | None, mem) -> list[Alias]:
    """`Alias` objects of the segments at positions `segs` (ascending) of `a`."""
    segs = np.sort(np.asarray(segs, np.int64))
    if not len(segs):
        return []
    p_seg, p_iv = a.pairs_of(segs)
    lo = np.searchsorted(p_seg, segs)
    hi = np.searchsorted(p_seg, segs, side="right")
    if max_members is not None:
        hi = np.minimum(hi, lo + max_members)
    cnt = hi - lo
    pj = np.repeat(np.arange(len(segs)), cnt)  # member -> position in segs
    pk = np.repeat(lo, cnt) + (np.arange(int(cnt.sum())) - np.repeat(np.cumsum(cnt) - cnt, cnt))
    iv = p_iv[pk]
    seg_s = a.seg_start[segs][pj]
    seg_len = (a.seg_end[segs] - a.seg_start[segs])[pj]
    va = np.where(mm.repeat[iv], mm.va_start[iv], mm.va_start[iv] + (seg_s - mm.pa_start[iv]))
    if mem is not None and len(va):
        ent = leaf_entries(mem, mm.mode, mm.root_pa, va)
    else:
        ent = mm.entry[iv]
    names = [lvl.name for lvl in mm.mode.levels]
    p = mm.perms
    texts = perm_strings(Perms(**{k: v[iv] for k, v in p.__dict__.items()}))  # only the members' intervals
    count = np.where(mm.repeat[iv], mm.size[iv] // mm.span[iv], U64(1))
    members: list[AliasMember] = [
        AliasMember(va_start=v, va_end=v + n, count=c, level=names[lv], entry=e, perm=texts[i], user=u, write=w,
                    kexec=kx, uexec=ux)
        for v, n, c, lv, e, i, u, w, kx, ux in zip(
            va.tolist(), seg_len.tolist(), count.tolist(), mm.level[iv].tolist(), ent.tolist(), range(len(iv)),
            p.user[iv].tolist(), p.write[iv].tolist(), p.kexec[iv].tolist(), p.uexec[iv].tolist())
    ]
    bounds = np.concatenate([[0], np.cumsum(cnt)]).tolist()
    return [
        Alias(s, e, w, x, kx, ux, members[bounds[k]:bounds[k + 1]])
        for k, (s, e, w, x, kx, ux) in enumerate(zip(
            a.seg_start[segs].tolist(), a.seg_end[segs].tolist(), a.weight[segs].tolist(), a.wx[segs].tolist(),
            a.kernel_wx[segs].tolist(), a.user_wx[segs].tolist()))
    ]


def aliases(target, view: str = "kernel", *, max_members: int | None = None) -> AliasResult:
    """Every physical range of `view` mapped at more than one VA, W/X ones flagged.

    >>> res = aliases(resolve(open_image("core.elf")))  # doctest: +SKIP
    >>> len(res.wx)  # doctest: +SKIP
    0
    """
    return find_aliases(mappings(target, view), max_members=max_members, mem=target.mem)
