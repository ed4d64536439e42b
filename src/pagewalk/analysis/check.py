"""Named security checks over every view of an image, each finding with the entries that prove it.

| check | severity | what it flags |
|---|---|---|
| `wx` | high | a mapping writable and executable by its effective permissions (the hierarchy folded in) |
| `wx-alias` | high / low | a physical range writable at one VA and executable by the kernel at another (low: a user-mode double mapping, writable and executable by user mode at two VAs) |
| `user-kernel` | high | a mapping in the kernel half that user mode can read, write or execute |
| `exec-direct-map` | high | an executable mapping inside the direct (linear) map |
| `writable-kernel-text` | high | the kernel's text (`_stext`.. `_etext`) mapped writable |
| `global-user` | medium | a user mapping with the global bit (x86 with PTI; arm64, where Linux makes every EL0 page nG) |
| `reserved-bits` | medium | a valid entry the MMU rejects (reserved bits or encodings): a fault, or corruption |
| `unwalked-entry` | medium | an entry the kernel's walker skips as bad although the MMU follows it (hidden from ptdump) |
| `missing-table` | info | a table the image does not hold: the checks are blind below it |

Unlike `checkwx` (which reproduces the kernel's verdict, blind spots included), these read the
effective permissions as the MMU applies them. Every finding carries its VA and PA range, the
level, the leaf entry and the per-level trace of `translate` at its first VA; a finding that
appears in several views (tables shared between a kernel PGD and a process's) is listed once with
all of them. The `wx` page counts of the `kernel` view equal the kernel's W+X count on x86-64,
arm64 and riscv.

>>> res = check(target, symbols=read_kallsyms("kallsyms.txt"))  # doctest: +SKIP
>>> res.exit_status("medium")  # doctest: +SKIP
1
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..translate import translate
from .aliases import wx_segments
from .mappings import (
    FAULT,
    MAPPED,
    MISSING,
    UNWALKED,
    Mappings,
    _perm_text,
    kernel_half_start,
    mappings,
)

U64 = np.uint64
SEVERITIES = ("info", "low", "medium", "high")

CHECKS = {
    "wx": ("high", "writable and executable mapping (effective permissions)"),
    "wx-alias": ("high", "physical memory writable at one virtual address and executable at another"),
    "user-kernel": ("high", "kernel-half mapping accessible from user mode"),
    "exec-direct-map": ("high", "executable mapping in the direct map"),
    "writable-kernel-text": ("high", "kernel text mapped writable"),
    "global-user": ("medium", "global user mapping (survives address-space switches)"),
    "reserved-bits": ("medium", "valid entry with reserved bits or encodings (the MMU faults on it)"),
    "unwalked-entry": ("medium", "entry the kernel's walker skips as bad but the MMU follows"),
    "missing-table": ("info", "page table not in the image (nothing below it is checked)"),
}

# Where the direct map is, by the names of the kernel's own ptdump markers (start, end marker;
# None: up to the next marker by address).
DIRECT_MAP_MARKERS = {
    "x86_64": ("Low Kernel Mapping", None),
    "arm64": ("Linear Mapping start", "Linear Mapping end"),
    "riscv64": ("Linear mapping", None),
    "riscv32": ("Linear mapping", None),
}
# Known by-design exceptions: (arch, check, "va" or "pa", start, end) -> (severity, why); a
# finding wholly inside the range gets the severity and the reason in its detail.
EXCEPTIONS = {
    ("x86_64", "user-kernel", "va", 0xFFFFFFFFFF600000, 0xFFFFFFFFFF601000): (
        "low", "the legacy vsyscall page (vsyscall=native/emulate maps it user-readable by design)"),
    ("x86_64", "exec-direct-map", "pa", 0, 1 << 20): (
        "low", "the real-mode trampoline below 1 MiB (set_real_mode_permissions() makes its text executable)"),
}


def _exception(arch: str, check_name: str, va0: int, va1: int, pa0: int | None, pa1: int | None):
    for (a, c, space, lo, hi), verdict in EXCEPTIONS.items():
        if a != arch or c != check_name:
            continue
        s, e = (va0, va1) if space == "va" else (pa0, pa1)
        if s is not None and lo <= s and e <= hi:
            return verdict
    return None


@dataclass
class Finding:
    """One finding: what, where (virtual and physical), how bad, and the entries that prove it."""

    check: str
    severity: str
    message: str
    views: list[str]
    va_start: int
    va_end: int
    pa_start: int | None
    pa_end: int | None
    level: str
    pages: int
    perm: str
    entry: int
    trace: list[dict] = field(default_factory=list)  # translate(va_start): level, table_pa, index, entry, kind
    detail: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class CheckResult:
    findings: list[Finding]
    views: list[str]
    notes: list[str] = field(default_factory=list)

    def by_check(self, name: str, view: str | None = None) -> list[Finding]:
        return [f for f in self.findings if f.check == name and (view is None or view in f.views)]

    def counts(self) -> dict[str, dict[str, int]]:
        """check -> {"findings": n, "pages": n}."""
        out: dict[str, dict[str, int]] = {}
        for f in self.findings:
            c = out.setdefault(f.check, {"findings": 0, "pages": 0})
            c["findings"] += 1
            c["pages"] += f.pages
        return out

    @property
    def worst(self) -> str | None:
        if not self.findings:
            return None
        return max((f.severity for f in self.findings), key=SEVERITIES.index)

    def exit_status(self, fail_on: str = "medium") -> int:
        """0 when no finding is at or above `fail_on`, else 1 (for CI pipelines)."""
        limit = SEVERITIES.index(fail_on)
        return 1 if any(SEVERITIES.index(f.severity) >= limit for f in self.findings) else 0


def _marker_ranges(target) -> list[tuple[int, str]]:
    layout = getattr(target, "layout", None)
    if layout is None or not hasattr(layout, "markers"):
        return []
    return sorted((m[0], m[1] or "") for m in layout.markers())


def direct_map_range(target) -> tuple[int, int] | None:
    """[start, end) of the direct map from the layout's markers (None when unknown)."""
    names = DIRECT_MAP_MARKERS.get(target.mode.arch)
    markers = _marker_ranges(target)
    if not names or not markers:
        return None
    starts = {name: va for va, name in markers}
    if names[0] not in starts:
        return None
    start = starts[names[0]]
    if names[1] is not None and names[1] in starts:
        return start, starts[names[1]]
    later = [va for va, _ in markers if va > start]
    return (start, later[0]) if later else None


def kernel_text_range(target, symbols: dict[str, int] | None) -> tuple[int, int] | None:
    """[_stext, _etext) from kallsyms (or _text); VMCOREINFO only has _stext, not enough."""
    symbols = symbols or {}
    start = symbols.get("_stext", symbols.get("_text"))
    end = symbols.get("_etext")
    if start is None or end is None or end <= start:
        return None
    return start, end


def _views(target, views: list[str] | None) -> list[str]:
    if views:
        return views
    seen: dict[tuple[int, str], str] = {}
    for v in target.roots:
        seen.setdefault((target.roots[v], target.mode_for(v).name), v)
    return list(seen.values())


def _trace(target, view: str, va: int) -> list[dict]:
    mode = target.mode_for(view)
    tr = translate(target.mem, mode, target.root(view), va)
    return [{"level": s.level, "table_pa": s.table_pa, "index": s.index, "entry": s.entry, "kind": s.kind} for s in tr.steps]


def _runs(m: Mappings, flag: np.ndarray) -> list[tuple[int, int]]:
    """(first, last) interval indices of runs of flagged intervals contiguous in VA and PA, one level."""
    idx = np.flatnonzero(flag)
    if not len(idx):
        return []
    a, b = idx[:-1], idx[1:]
    join = (b == a + 1) & (m.va_end[a] == m.va_start[b]) & (m.level[a] == m.level[b]) & (m.status[a] == m.status[b])
    join &= (m.status[a] != MAPPED) | (~m.repeat[a] & ~m.repeat[b] & (m.pa_start[a] + m.size[a] == m.pa_start[b]))
    starts = np.concatenate([[0], np.flatnonzero(~join) + 1])
    ends = np.append(starts[1:], len(idx)) - 1
    return list(zip(idx[starts].tolist(), idx[ends].tolist()))


def check(target, *, views: list[str] | None = None, symbols: dict[str, int] | None = None,
          max_trace: int = 1000) -> CheckResult:
    """Run every check on every distinct view of `target` (or the `views` given).

    `symbols` (kallsyms) gives `_stext`/`_etext` for `writable-kernel-text`. Findings beyond
    `max_trace` carry no per-level trace (the rest of the finding is complete).
    """
    views = _views(target, views)
    notes: list[str] = []
    found: dict[tuple, Finding] = {}
    text = kernel_text_range(target, symbols)
    if text is None:
        notes.append("writable-kernel-text not checked: needs _stext and _etext (give --kallsyms)")
    dmap = direct_map_range(target)
    if dmap is None:
        notes.append("exec-direct-map not checked: the direct map's range is not known for this layout")
    traced = 0
    for view in views:
        m = mappings(target, view)
        mode = m.mode
        p = m.perms
        texts = _ByIndex([_perm_text(c) for c in range(64)], p.code())  # no Python list per interval
        names = _ByIndex([lvl.name for lvl in mode.levels], m.level)
        page = m.page_size
        mapped = m.status == MAPPED
        khalf = m.va_start >= U64(kernel_half_start(mode))
        flags: dict[str, np.ndarray] = {
            "wx": mapped & p.write & p.exec,
            "user-kernel": mapped & khalf & (p.user | p.uexec),
            "reserved-bits": m.status == FAULT,
            "unwalked-entry": m.status == UNWALKED,
            "missing-table": m.status == MISSING,
        }
        if dmap is not None:
            flags["exec-direct-map"] = mapped & p.exec & (m.va_start >= U64(dmap[0])) & (m.va_start < U64(dmap[1]))
        if text is not None:
            flags["writable-kernel-text"] = mapped & p.write & (m.va_start < U64(text[1])) & (m.va_end > U64(text[0]))
        if mode.arch == "arm64" or (mode.arch == "x86_64" and target.pti):
            flags["global-user"] = mapped & ~khalf & p.user & p.glob
        for name, flag in flags.items():
            for i, j in _runs(m, flag):
                va0 = int(m.va_start[i])
                va1 = int(m.va_start[j]) + int(m.size[j])
                if name == "writable-kernel-text":  # the pages of [_stext, _etext) only
                    va0 = max(va0, text[0] & ~(page - 1))
                    va1 = min(va1, -(-text[1] // page) * page)
                st = int(m.status[i])
                pa0 = int(m.pa_start[i]) + (va0 - int(m.va_start[i])) if st == MAPPED else None
                pa1 = pa0 + (va1 - va0) if pa0 is not None and not m.repeat[i] else (
                    int(m.pa_start[i]) + int(m.span[i]) if pa0 is not None else None)
                sev, msg = CHECKS[name]
                exc = _exception(mode.arch, name, va0, va1, pa0, pa1)
                detail: dict = {}
                if st == FAULT:
                    code = mode.hw_classify(int(m.level[i]), np.array([int(m.entry[i])], U64))[1][0]
                    detail["reason"] = mode.fault_reason(int(code))
                if st in (MISSING, UNWALKED):
                    detail["next_pa"] = int(m.pa_start[i])
                if exc is not None:
                    sev, why = exc
                    detail["exception"] = why
                _add(found, Finding(name, sev, msg, [view], va0, va1, pa0, pa1, names[i], (va1 - va0) // page,
                                    texts[i] if st == MAPPED else "", int(m.entry[i]), detail=detail))
        _wx_aliases(found, m, view, texts, names)
    findings = sorted(found.values(), key=lambda f: (-SEVERITIES.index(f.severity), f.check, f.va_start))
    for f in findings:
        if traced >= max_trace:
            break
        f.trace = _trace(target, f.views[0], f.va_start)
        if f.trace and f.trace[-1]["entry"] is not None:
            f.entry = f.trace[-1]["entry"]  # the entry at va_start itself (the interval's first may differ)
        for w in f.detail.get("writable_at", []):
            w["trace"] = _trace(target, f.views[0], w["va_start"])
            if w["trace"] and w["trace"][-1]["entry"] is not None:
                w["entry"] = w["trace"][-1]["entry"]
        traced += 1
    return CheckResult(findings, views, notes)


class _ByIndex:
    """texts[i] of interval i from a small table and a code array (instead of a list per interval)."""

    def __init__(self, table: list[str], codes: np.ndarray) -> None:
        self.table, self.codes = table, codes

    def __getitem__(self, i) -> str:
        return self.table[int(self.codes[i])]


def _add(found: dict, f: Finding) -> None:
    key = (f.check, f.va_start, f.va_end, f.pa_start, f.pa_end, f.entry)
    if key in found:
        found[key].views.append(f.views[0])
    else:
        found[key] = f


def _wx_aliases(found: dict, m: Mappings, view: str, texts: _ByIndex, names: _ByIndex) -> None:
    """One finding per alias segment with a writable and an executable mapping: at the
    executable VA (the segment's first), with the writable VAs (up to 8) in `detail`. The choice
    of members is whole-array numpy; only the findings themselves are Python objects."""
    mapped = m.status == MAPPED
    every = bool(mapped.all())
    mm = m if every else m.select(mapped)  # no copy when every interval is mapped
    a = wx_segments(mm)  # only the W/X segments and their pairs (grouped, members in VA order)
    if not len(a):
        return
    mm_idx = None if every else np.flatnonzero(mapped)
    p = mm.perms
    segs = np.arange(len(a))
    p_seg, iv = a.pair_seg, a.pair_iv
    lo = np.searchsorted(p_seg, segs)
    hi = np.searchsorted(p_seg, segs, side="right")
    cnt = hi - lo
    k = np.repeat(segs, cnt)  # W/X segment (position in segs) of each of its pairs
    kcase = a.kernel_wx[k]
    ex = np.where(kcase, p.kexec[iv], p.uexec[iv])
    wr = np.where(kcase, p.write[iv], p.write[iv] & p.user[iv])
    pos = np.arange(len(iv))
    first = np.concatenate([[0], np.cumsum(cnt)[:-1]])
    xpos = np.minimum.reduceat(np.where(ex, pos, len(iv)), first)  # every W/X segment has an exec member
    x = iv[xpos]
    other = wr & ((iv != x[k]) | mm.repeat[iv])
    seg_s, seg_e = a.seg_start, a.seg_end
    # the VA of each member at the segment's first byte
    va = np.where(mm.repeat[iv], mm.va_start[iv], mm.va_start[iv] + (seg_s[k] - mm.pa_start[iv]))
    cs = np.cumsum(other)
    rank = cs - np.repeat(cs[first] - other[first], cnt)  # 1, 2, ... among a segment's writable others
    shown = other & (rank <= 8)
    length = seg_e - seg_s
    gidx = iv if every else mm_idx[iv]  # the members' intervals in `m`
    ptab, ntab = texts.table, names.table
    pcode, ncode = texts.codes, names.codes
    sk = k[shown]
    sva = va[shown]
    sg = gidx[shown]
    w_dicts = [{"va_start": v, "va_end": v + n, "perm": ptab[pc], "level": ntab[lc], "entry": en}
               for v, n, pc, lc, en in zip(sva.tolist(), length[sk].tolist(), pcode[sg].tolist(), ncode[sg].tolist(),
                                           mm.entry[iv[shown]].tolist())]
    nshown = np.bincount(sk, minlength=len(a))
    ends = np.cumsum(nshown).tolist()
    xva = va[xpos]
    xg = gidx[xpos]
    sev = np.where(a.kernel_wx, "high", "low").tolist()
    msg = CHECKS["wx-alias"][1]
    page = m.page_size
    at = 0
    for s0, n, v0, pc, lc, e, sv, w, end in zip(seg_s.tolist(), length.tolist(), xva.tolist(), pcode[xg].tolist(),
                                                 ncode[xg].tolist(), mm.entry[x].tolist(), sev, a.weight.tolist(),
                                                 ends):
        if end == at:
            continue
        others = w_dicts[at:end]
        at = end
        _add(found, Finding("wx-alias", sv, msg, [view], v0, v0 + n, s0, s0 + n, ntab[lc], n // page, ptab[pc], e,
                            detail={"writable_at": others, "mappings": int(w)}))
