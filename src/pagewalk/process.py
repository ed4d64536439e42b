"""`pagewalk dump --pid PID`: a live Linux process's address space from /proc.

The walk has `walk_page_range()`'s shape (mm/pagewalk.c, spec §1.6): the VMAs of /proc/PID/maps in
address order, and the areas between them reported as holes. Inside a VMA every page's
/proc/PID/pagemap entry (Documentation/admin-guide/mm/pagemap.rst) is read in large chunks into a
uint64 array, reduced to a small state word, and adjacent pages with the same state are merged
into one range, as ptdump's note_page() merges equal entries. /proc/kpageflags adds THP, hugetlb
and zero-page bits for present pages when it is readable (it needs the PFNs, which the kernel
shows only to CAP_SYS_ADMIN).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TextIO

import numpy as np

from .errors import NoSuchProcess, PagewalkError, ProcessAccessDenied, ProcessError

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
PAGE_SHIFT = PAGE_SIZE.bit_length() - 1
CHUNK_PAGES = 1 << 20  # pagemap entries per read: 8 MiB

# pagemap entry bits
PM_PFN_MASK = (1 << 55) - 1
PM_SOFT_DIRTY = 55
PM_EXCLUSIVE = 56
PM_UFFD_WP = 57
PM_GUARD = 58
PM_FILE = 61
PM_SWAP = 62
PM_PRESENT = 63

# kpageflags bits (include/uapi/linux/kernel-page-flags.h)
KPF_HUGE = 17
KPF_THP = 22
KPF_ZERO_PAGE = 24

# Our state word: one bit per reported property, in the order of the text columns.
# (JSON name, text column): the text column shows its text, or as many blanks.
FLAGS: tuple[tuple[str, str], ...] = (
    ("present", "present"),
    ("swapped", "swapped"),
    ("file", "file"),
    ("exclusive", "excl"),
    ("soft-dirty", "soft-dirty"),
    ("uffd-wp", "uffd-wp"),
    ("guard", "guard"),
    ("thp", "thp"),
    ("hugetlb", "hugetlb"),
    ("zero-page", "zero"),
)
S_PRESENT, S_SWAPPED, S_FILE, S_EXCL, S_SOFT_DIRTY, S_UFFD_WP, S_GUARD, S_THP, S_HUGETLB, S_ZERO = (
    1 << i for i in range(len(FLAGS))
)
_FROM_PAGEMAP = (
    (PM_PRESENT, 0), (PM_SWAP, 1), (PM_FILE, 2), (PM_EXCLUSIVE, 3),
    (PM_SOFT_DIRTY, 4), (PM_UFFD_WP, 5), (PM_GUARD, 6),
)  # fmt: skip
_FROM_KPAGEFLAGS = ((KPF_THP, 7), (KPF_HUGE, 8), (KPF_ZERO_PAGE, 9))
_UNITS = "BKMGTPE"




@dataclass
class Vma:
    """One line of /proc/PID/maps."""

    start: int
    end: int
    perms: str
    offset: int
    dev: str
    inode: int
    path: str


@dataclass
class Range:
    """Adjacent pages of one VMA with the same state (or a hole: vma is None, state 0)."""

    start: int
    end: int
    state: int

    def flags(self) -> list[str]:
        return [name for i, (name, _) in enumerate(FLAGS) if self.state >> i & 1]


@dataclass
class Area:
    """What walk_page_range() visits: a VMA with its ranges, or a hole between VMAs (vma None)."""

    start: int
    end: int
    vma: Vma | None
    ranges: list[Range] = field(default_factory=list)
    present_pages: int = 0
    swapped_pages: int = 0


@dataclass
class ProcessDump:
    """The walk of one process: its areas in address order, and what could not be seen."""

    pid: int
    comm: str
    areas: list[Area]
    hidden: list[str]
    notes: list[str]


def parse_maps(text: str) -> list[Vma]:
    """The VMAs of a /proc/PID/maps text (paths may hold spaces; ' (deleted)' is kept)."""
    vmas = []
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = line.split(None, 5)
        lo, hi = parts[0].split("-")
        path = parts[5].strip() if len(parts) > 5 else ""
        vmas.append(Vma(int(lo, 16), int(hi, 16), parts[1], int(parts[2], 16), parts[3], int(parts[4]), path))
    return vmas


def _proc_error(pid: int, what: str, e: OSError) -> PagewalkError:
    if isinstance(e, FileNotFoundError) or e.errno == 3:  # ESRCH
        return NoSuchProcess(f"no process with pid {pid}")
    if isinstance(e, PermissionError):
        return ProcessAccessDenied(
            f"permission denied reading /proc/{pid}/{what}: another user's process needs root "
            "(or CAP_SYS_PTRACE; check /proc/sys/kernel/yama/ptrace_scope)"
        )
    return ProcessError(f"cannot read /proc/{pid}/{what}: {e.strerror or e}")


def _pagemap_states(fd: int, vma: Vma, kpf_fd: int | None, notes: list[str]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Per chunk of the VMA: (the uint16 state of each page, the raw pagemap entries)."""
    first = vma.start >> PAGE_SHIFT
    total = (vma.end - vma.start) >> PAGE_SHIFT
    done = 0
    short = False
    while done < total:
        n = min(CHUNK_PAGES, total - done)
        ent = np.zeros(n, dtype="<u8")
        got = 0
        if not short:
            view = memoryview(ent).cast("B")
            while got < 8 * n:  # pread may return less than asked; 0 = past the mm's last VMA
                k = os.preadv(fd, [view[got:]], 8 * (first + done) + got)
                if k <= 0:
                    break
                got += k
            if got < 8 * n:
                short = True
                if vma.path != "[vsyscall]":  # the gate area is not in the mm: pagemap never covers it
                    notes.append(
                        f"pagemap ends inside {vma.start:#x}-{vma.end:#x} {vma.path or '[anon]'}: "
                        "the rest is shown not present"
                    )
        state = np.zeros(n, dtype=np.uint16)
        for bit, s in _FROM_PAGEMAP:
            state |= ((ent >> np.uint64(bit)) & np.uint64(1)).astype(np.uint16) << np.uint16(s)
        if kpf_fd is not None:
            state |= _kpageflags_state(kpf_fd, ent)
        yield state, ent
        done += n


def _kpageflags_state(kpf_fd: int, ent: np.ndarray) -> np.ndarray:
    """THP/hugetlb/zero-page state bits of the present pages with a visible PFN (one pread per PFN run)."""
    out = np.zeros(len(ent), dtype=np.uint16)
    present = (ent >> np.uint64(PM_PRESENT)) & np.uint64(1) == 1
    pfn = ent & np.uint64(PM_PFN_MASK)
    sel = np.flatnonzero(present & (pfn != 0))
    if not len(sel):
        return out
    uniq = np.unique(pfn[sel])
    breaks = np.flatnonzero(np.diff(uniq) != 1) + 1
    starts = np.concatenate(([0], breaks))
    stops = np.concatenate((breaks, [len(uniq)]))
    kflags = np.zeros(len(uniq), dtype="<u8")
    view = memoryview(kflags).cast("B")
    for a, b in zip(starts.tolist(), stops.tolist()):
        try:
            os.preadv(kpf_fd, [view[8 * a : 8 * b]], 8 * int(uniq[a]))
        except OSError:
            pass  # PFNs beyond max_pfn (device memory): no flags
    k = kflags[np.searchsorted(uniq, pfn[sel])]
    st = np.zeros(len(sel), dtype=np.uint16)
    for bit, s in _FROM_KPAGEFLAGS:
        st |= ((k >> np.uint64(bit)) & np.uint64(1)).astype(np.uint16) << np.uint16(s)
    out[sel] = st
    return out


def _walk_vma(fd: int, vma: Vma, kpf_fd: int | None, notes: list[str]) -> Area:
    area = Area(vma.start, vma.end, vma)
    base = vma.start
    for state, _ in _pagemap_states(fd, vma, kpf_fd, notes):
        n = len(state)
        cuts = np.flatnonzero(np.diff(state)) + 1  # a new range starts wherever the state changes
        starts = np.concatenate(([0], cuts))
        ends = np.concatenate((cuts, [n]))
        vals = state[starts].tolist()
        area.present_pages += int(np.count_nonzero(state & S_PRESENT))
        area.swapped_pages += int(np.count_nonzero(state & S_SWAPPED))
        for s, e, v in zip(starts.tolist(), ends.tolist(), vals):
            lo, hi = base + (s << PAGE_SHIFT), base + (e << PAGE_SHIFT)
            if area.ranges and area.ranges[-1].state == v and area.ranges[-1].end == lo:
                area.ranges[-1].end = hi  # the same state across a chunk boundary
            else:
                area.ranges.append(Range(lo, hi, v))
        base += n << PAGE_SHIFT
    return area


def walk_pid(pid: int, holes: bool = True) -> ProcessDump:
    """Walk process `pid` like walk_page_range(mm, 0, end of the last VMA): VMAs and the holes between."""
    try:
        with open(f"/proc/{pid}/maps") as f:
            maps = f.read()
    except OSError as e:
        raise _proc_error(pid, "maps", e) from None
    try:
        with open(f"/proc/{pid}/comm") as f:
            comm = f.read().strip()
    except OSError:
        comm = ""
    vmas = parse_maps(maps)
    notes: list[str] = []
    hidden: list[str] = []
    try:
        fd = os.open(f"/proc/{pid}/pagemap", os.O_RDONLY)
    except OSError as e:
        raise _proc_error(pid, "pagemap", e) from None
    kpf_fd = None
    # The kernel zeroes the PFN field unless the opener has CAP_SYS_ADMIN (pagemap_read: show_pfn),
    # and kpageflags is indexed by PFN.
    if not _has_cap_sys_admin():
        hidden.append("pfn (the kernel shows PFNs only with CAP_SYS_ADMIN)")
        hidden.append("thp, hugetlb, zero-page (they come from /proc/kpageflags, which needs the PFNs)")
    else:
        try:
            kpf_fd = os.open("/proc/kpageflags", os.O_RDONLY)
        except OSError as e:
            hidden.append(f"thp, hugetlb, zero-page (/proc/kpageflags: {e.strerror})")
    if not vmas:
        notes.append(f"pid {pid} has no user address space (a kernel thread or a zombie)")
    areas: list[Area] = []
    try:
        prev = 0
        for vma in vmas:
            if holes and vma.start > prev:
                areas.append(Area(prev, vma.start, None, [Range(prev, vma.start, 0)]))
            areas.append(_walk_vma(fd, vma, kpf_fd, notes))
            prev = max(prev, vma.end)
    except OSError as e:
        raise _proc_error(pid, "pagemap", e) from None
    finally:
        os.close(fd)
        if kpf_fd is not None:
            os.close(kpf_fd)
    return ProcessDump(pid, comm, areas, hidden, notes)


def _has_cap_sys_admin() -> bool:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> 21 & 1)
    except OSError:
        pass
    return os.geteuid() == 0


def _size(n: int) -> str:
    unit = 0
    while n and n % 1024 == 0 and unit + 1 < len(_UNITS):
        n //= 1024
        unit += 1
    return f"{n:9d}{_UNITS[unit]}"


def flags_text(state: int) -> str:
    """ptdump-style columns: each flag's text or as many blanks, so that columns line up."""
    return " ".join(text if state >> i & 1 else " " * len(text) for i, (_, text) in enumerate(FLAGS)).rstrip()


def _header(a: Area) -> str:
    if a.vma is None:
        return "---[ hole ]---"
    v = a.vma
    return f"---[ {v.start:x}-{v.end:x} {v.perms} {v.path or '[anon]'} ]---"


def write_text(d: ProcessDump, out: TextIO) -> None:
    for a in d.areas:
        out.write(_header(a) + "\n")
        for r in a.ranges:
            flags = "hole" if a.vma is None else (flags_text(r.state) or "none")
            out.write(f"0x{r.start:016x}-0x{r.end:016x}   {_size(r.end - r.start)} {flags}\n")


def to_json(d: ProcessDump) -> dict:
    areas = []
    for a in d.areas:
        if a.vma is None:
            areas.append({"kind": "hole", "start": a.start, "end": a.end})
            continue
        v = a.vma
        areas.append({
            "kind": "vma", "start": v.start, "end": v.end, "perms": v.perms, "offset": v.offset,
            "dev": v.dev, "inode": v.inode, "path": v.path,
            "present_pages": a.present_pages, "swapped_pages": a.swapped_pages,
            "ranges": [{"start": r.start, "end": r.end, "flags": r.flags()} for r in a.ranges],
        })  # fmt: skip
    return {
        "schema": "pagewalk.pid",
        "version": 1,
        "pid": d.pid,
        "comm": d.comm,
        "page_size": PAGE_SIZE,
        "flags": [name for name, _ in FLAGS],
        "hidden": d.hidden,
        "notes": d.notes,
        "areas": areas,
    }


def dump_pid(pid: int, out: TextIO, fmt: str = "text", quiet: bool = False, err: TextIO | None = None) -> int:
    """Write the walk of process `pid` to `out` (fmt "text" or "json"); notes go to `err` (stderr).

    Returns the exit code (0). Raises NoSuchProcess / ProcessAccessDenied (PagewalkError).
    """
    d = walk_pid(pid)
    err = sys.stderr if err is None else err
    if not quiet:
        for h in d.hidden:
            print(f"pagewalk: note: hidden: {h}", file=err)
        for n in d.notes:
            print(f"pagewalk: note: {n}", file=err)
    if fmt == "json":
        json.dump(to_json(d), out, indent=1)
        out.write("\n")
    else:
        write_text(d, out)
    return 0
