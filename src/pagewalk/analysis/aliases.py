"""The reverse map: every physical range mapped at more than one virtual address.

An interval sweep over the mappings sorted by PA, in time proportional to the number of
intervals (plus the size of the answer), never to the number of pages:

1. the boundaries of all PA ranges cut physical memory into elementary segments;
2. a difference array over those boundaries, weighted by how many VAs each interval maps its
   range at (1, or `size / span` for a repeat interval), gives the coverage of every segment;
3. a segment covered twice or more is an alias; its members are the intervals covering it,
   enumerated with a prefix count of alias segments (no per-page work, no dicts).

A segment is flagged `kernel_wx` when one of its virtual mappings is writable (by anyone) and
*another* one executable by the kernel, `user_wx` when one is writable by user mode and another
executable by user mode (a JIT's double mapping); `wx` is either. The kernel writing through the
direct map to memory user mode executes (every page of a program's text) is how an OS works and
is not flagged. Both are computed from weighted counts (pairs = W * X - WX).

>>> res = aliases(target, "kernel")  # doctest: +SKIP
>>> [a for a in res.groups if a.wx][:1]  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .mappings import Mappings, Perms, _perm_text, leaf_entries, mappings, perm_strings

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


class AliasResult:
    """The alias segments of one view: counts from the sweep's arrays at once, `Alias` objects
    built on demand (`groups`, `wx`, `build()`), so that millions of aliases cost arrays, not
    objects, until someone asks for them."""

    def __init__(self, view: str | None, mode: str, arrays: AliasArrays, mm: Mappings, mem=None,
                 max_members: int | None = None) -> None:
        self.view = view
        self.mode = mode
        self.arrays = arrays
        self.intervals = len(mm)  # mapped intervals swept
        self._mm = mm
        self._mem = mem
        self._max_members = max_members
        self._groups: list[Alias] | None = None

    def __len__(self) -> int:
        return len(self.arrays.seg_start)

    @property
    def aliased_bytes(self) -> int:
        return int((self.arrays.seg_end - self.arrays.seg_start).sum(dtype=U64))

    @property
    def wx_count(self) -> int:
        return int(self.arrays.wx.sum())

    @property
    def groups(self) -> list[Alias]:
        if self._groups is None:
            self._groups = self.build(np.arange(len(self)))
        return self._groups

    @property
    def wx(self) -> list[Alias]:
        if self._groups is not None:
            return [a for a in self._groups if a.wx]
        return self.build(np.flatnonzero(self.arrays.wx))

    def build(self, segs: np.ndarray) -> list[Alias]:
        """`Alias` objects of the segments `segs` (indices; returned in PA order)."""
        return _build(self.arrays, self._mm, segs, self._max_members, self._mem)

    def classes(self) -> list[dict]:
        """The segments grouped by their set of mappings' kinds (rights and level of each
        member): `mappings` (the kinds, e.g. ["kernel rw- G pte", "kernel rw- G pmd"]), `count`,
        `bytes`, `wx` (segments of the class flagged W/X), `example` (a segment's PA),
        most bytes first. Whole-array: a segment's signature is its member count and three sums of
        21-bit random codes of its members' kinds (order-free, exact in float64), so no sort of
        the pairs is needed; one sort of the segments groups them."""
        a, mm = self.arrays, self._mm
        nseg = len(a.seg_start)
        if not nseg:
            return []
        code = (mm.perms.code() | (mm.level.astype(U64) << U64(6))).astype(np.int64)  # < 2^9
        rng = np.random.default_rng(0x5EED)
        sig = np.bincount(a.pair_seg, minlength=nseg).astype(U64)
        pc = code[a.pair_iv]
        for _ in range(3):
            h = rng.integers(0, 1 << 21, size=1 << 9)
            part = np.bincount(a.pair_seg, weights=h[pc].astype(np.float64), minlength=nseg).astype(U64)
            with np.errstate(over="ignore"):
                sig = (sig * U64(0x9E3779B97F4A7C15)) ^ part
        del pc
        u = np.unique(sig)  # few classes: a value sort, then lookups in a small table
        gid = np.searchsorted(u, sig)
        ng = len(u)
        nbytes = np.bincount(gid, weights=(a.seg_end - a.seg_start).astype(np.float64), minlength=ng)
        ncount = np.bincount(gid, minlength=ng)
        nwx = np.bincount(gid, weights=a.wx.astype(np.float64), minlength=ng)
        example = np.empty(ng, np.int64)
        example[gid[::-1]] = np.arange(nseg - 1, -1, -1)  # a segment of each class (in practice its first)
        ex_seg, ex_iv = a.pairs_of(np.unique(example))
        names = [lvl.name for lvl in mm.mode.levels]
        members: dict[int, list[int]] = {}
        for sg, iv in zip(ex_seg.tolist(), code[ex_iv].tolist()):
            members.setdefault(sg, []).append(iv)
        out = []
        for k in np.argsort(-nbytes, kind="stable").tolist():
            j = int(example[k])
            kinds = sorted(f"{_perm_text(c & 63)} {names[c >> 6]}" for c in members.get(j, []))
            out.append({"mappings": kinds, "count": int(ncount[k]), "bytes": int(nbytes[k]), "wx": int(nwx[k]),
                        "example": int(a.seg_start[j])})
        return out


@dataclass
class AliasArrays:
    """The sweep's raw result: segments and (segment, interval) pairs, for callers that want arrays."""

    seg_start: np.ndarray  # uint64 PA
    seg_end: np.ndarray
    weight: np.ndarray  # virtual places per segment
    wx: np.ndarray  # bool per segment
    kernel_wx: np.ndarray
    user_wx: np.ndarray
    pair_seg: np.ndarray  # int64: segment of each pair (pairs in interval order, not grouped: see pairs_of)
    pair_iv: np.ndarray  # int64: interval (index into the mapped Mappings) of each pair, ascending

    def pairs_of(self, segs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(segment, interval) of the pairs of segments `segs`, grouped by segment (ascending),
        members in VA order: one gather and one sort of those pairs only."""
        sel = np.zeros(len(self.seg_start), bool)
        sel[np.asarray(segs, np.int64)] = True
        mask = sel[self.pair_seg]
        sub, iv = self.pair_seg[mask], self.pair_iv[mask]
        order = np.argsort(sub, kind="stable")  # iv ascending within a segment: VA order
        return sub[order], iv[order]


def sweep(m: Mappings) -> AliasArrays:
    """Alias segments of mapped intervals `m` (status MAPPED only) and who covers them."""
    n = len(m)
    if n == 0:
        z = np.zeros(0, U64)
        zi = np.zeros(0, np.int64)
        return AliasArrays(z, z, zi, np.zeros(0, bool), np.zeros(0, bool), np.zeros(0, bool), zi, zi)
    w = np.where(m.repeat, m.size // m.span, U64(1)).astype(np.int64)
    b, inv = _unique_inverse(np.concatenate([m.pa_start, m.pa_end]))  # one sort: the boundaries and every rank
    lo, hi = inv[:n], inv[n:]
    del inv
    diff = np.bincount(lo, weights=w, minlength=len(b) + 1) - np.bincount(hi, weights=w, minlength=len(b) + 1)
    cov = np.cumsum(diff.astype(np.int64))[: len(b) - 1]  # segment j = [b[j], b[j+1])
    del diff
    is_alias = cov >= 2
    seg_idx = np.flatnonzero(is_alias)
    pre = np.zeros(len(b), np.int64)
    np.cumsum(is_alias, out=pre[1:])
    k_lo = pre[lo]
    cnt = pre[hi] - k_lo
    del pre, lo, hi, is_alias
    pair_iv = np.repeat(np.arange(n, dtype=np.int64), cnt)
    ordinal = np.repeat(k_lo, cnt) + (np.arange(int(cnt.sum()), dtype=np.int64) - np.repeat(np.cumsum(cnt) - cnt, cnt))
    del k_lo, cnt
    p = m.perms
    wi = w[pair_iv].astype(np.float64)
    ns = len(seg_idx)

    def wsum(flag: np.ndarray) -> np.ndarray:  # weighted count of the members with `flag`, per segment
        return np.bincount(ordinal, weights=np.where(flag[pair_iv], wi, 0.0), minlength=ns).astype(np.int64)

    nw = wsum(p.write)
    nkx = wsum(p.kexec)
    nwkx = wsum(p.write & p.kexec)
    uw = p.write & p.user
    nuw = wsum(uw)
    nux = wsum(p.uexec)
    nuwux = wsum(uw & p.uexec)
    kwx = nw * nkx - nwkx > 0
    uwx = nuw * nux - nuwux > 0
    return AliasArrays(b[seg_idx], b[seg_idx + 1], cov[seg_idx], kwx | uwx, kwx, uwx, ordinal, pair_iv)


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
    if bits_v + bits_i > 64:
        return np.argsort(a, kind="stable")
    key = ((a >> U64(shift)) << U64(bits_i)) | np.arange(n, dtype=U64)
    key.sort()
    return (key & U64((1 << bits_i) - 1)).astype(np.int64)


def _unique_inverse(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted unique values and the rank of each element (one sort)."""
    order = argsort_u64(a)
    s = a[order]
    first = np.ones(len(s), dtype=bool)
    first[1:] = s[1:] != s[:-1]
    inv = np.empty(len(a), dtype=np.int64)
    inv[order] = np.cumsum(first) - 1
    return s[first], inv


def find_aliases(m: Mappings, *, max_members: int | None = None, mem=None) -> AliasResult:
    """The alias segments of mappings `m` (any status; only MAPPED intervals take part).

    `max_members` bounds the members listed per group (the counts stay exact). With `mem` (the
    image), each member's `entry` is the leaf entry at its own first VA, read from the tables;
    without, it is the first entry of the interval it belongs to.
    """
    mm = m.mapped()
    return AliasResult(m.view, m.mode.name, sweep(mm), mm, mem, max_members)


def _build(a: AliasArrays, mm: Mappings, segs: np.ndarray, max_members: int | None, mem) -> list[Alias]:
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
