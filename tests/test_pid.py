"""`dump --pid`: a live process's VMAs and pages from /proc/PID/maps, pagemap and kpageflags."""

from __future__ import annotations

import io
import json
import mmap
import os
import subprocess
import sys
import textwrap

import pytest

from pagewalk import process
from pagewalk.errors import PagewalkError
from pagewalk.process import (
    PAGE_SIZE,
    S_EXCL,
    S_FILE,
    S_PRESENT,
    S_SWAPPED,
    S_THP,
    S_ZERO,
    NoSuchProcess,
    ProcessAccessDenied,
)

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/pagemap"), reason="needs Linux /proc/PID/pagemap")

PS = PAGE_SIZE
HUGE = 2 << 20

# The child maps known pages, prints their addresses as one JSON line and waits for stdin to close.
CHILD = textwrap.dedent(
    """
    import ctypes, json, mmap, os, sys
    PS = mmap.PAGESIZE
    HUGE = 2 << 20
    def addr(m):
        return ctypes.addressof(ctypes.c_char.from_buffer(m))
    out = {}
    # anonymous, 16 pages: 0, 1, 2 and 5 written, 7 only read (the shared zero page), the rest untouched
    anon = mmap.mmap(-1, 16 * PS, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    for i in (0, 1, 2, 5):
        anon[i * PS] = 1
    anon[7 * PS]
    out["anon"] = addr(anon)
    # a shared mapping of a file of 8 pages: page 0 read
    path = sys.argv[1]
    with open(path, "wb") as f:
        f.write(b"x" * (8 * PS))
    fd = os.open(path, os.O_RDWR)
    filemap = mmap.mmap(fd, 8 * PS, flags=mmap.MAP_SHARED)
    filemap[0]
    out["file"] = addr(filemap)
    # MAP_POPULATE, 32 pages, never touched by us
    pop = mmap.mmap(-1, 32 * PS, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | mmap.MAP_POPULATE)
    out["populate"] = addr(pop)
    # 2 MiB aligned inside 4 MiB, MADV_HUGEPAGE, one byte written
    big = mmap.mmap(-1, 2 * HUGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    base = addr(big)
    off = -base % HUGE
    try:
        big.madvise(mmap.MADV_HUGEPAGE, off, HUGE)
    except (AttributeError, OSError):
        pass
    big[off] = 1
    out["thp"] = base + off
    print(json.dumps(out), flush=True)
    sys.stdin.read()
    """
)


@pytest.fixture(scope="module")
def child(tmp_path_factory):
    """A child process with known mappings, its printed addresses and the file it mapped."""
    path = str(tmp_path_factory.mktemp("pid") / "mapped.bin")
    p = subprocess.Popen([sys.executable, "-c", CHILD, path], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        line = p.stdout.readline()
        assert line, "the child process did not start"
        addrs = json.loads(line)
        walk = process.walk_pid(p.pid)
        yield p.pid, addrs, path, walk
    finally:
        p.stdin.close()
        p.wait(timeout=10)


def page_states(walk, lo: int, npages: int) -> list[int]:
    """The state word of each page in [lo, lo + npages pages), looked up in the coalesced ranges."""
    out = []
    for i in range(npages):
        va = lo + i * PS
        hits = [r.state for a in walk.areas if a.vma for r in a.ranges if r.start <= va < r.end]
        assert len(hits) == 1, f"{va:#x} is in {len(hits)} ranges"
        out.append(hits[0])
    return out


def vma_at(walk, va: int):
    """The VMA area holding `va`."""
    (a,) = [a for a in walk.areas if a.vma and a.start <= va < a.end]
    return a


def kpageflags_visible(walk) -> bool:
    """True when THP/zero-page bits could be read (root with CAP_SYS_ADMIN)."""
    return not any("kpageflags" in h for h in walk.hidden)


def test_anonymous_touched_and_untouched(child):
    """Written anonymous pages are present and exclusive, untouched ones are neither present nor swapped."""
    _, addrs, _, walk = child
    st = page_states(walk, addrs["anon"], 16)
    for i in (0, 1, 2, 5):
        assert st[i] & (S_PRESENT | S_EXCL | S_FILE) == S_PRESENT | S_EXCL, (i, st[i])
    for i in (3, 4, 6, 8, 9, 10, 11, 12, 13, 14, 15):
        assert st[i] & (S_PRESENT | S_SWAPPED) == 0, (i, st[i])
    # a read of an untouched private page maps the shared zero page: present, not exclusive
    assert st[7] & (S_PRESENT | S_EXCL) == S_PRESENT
    if kpageflags_visible(walk):
        assert st[7] & S_ZERO
        assert not st[0] & S_ZERO


def test_anonymous_ranges_are_coalesced(child):
    """Pages 0-2 (equal state, adjacent) are one range; page 3 starts another."""
    _, addrs, _, walk = child
    a = addrs["anon"]
    (r,) = [r for r in vma_at(walk, a).ranges if r.start <= a < r.end]
    assert r.start <= a and r.end == a + 3 * PS
    assert r.state & S_PRESENT


def test_file_backed_mapping(child):
    """The shared file mapping's VMA names the file, and its read page is present and file-backed."""
    _, addrs, path, walk = child
    a = vma_at(walk, addrs["file"])
    assert a.vma.path == path
    assert a.vma.perms == "rw-s"
    assert (a.vma.start, a.vma.end, a.vma.offset) == (addrs["file"], addrs["file"] + 8 * PS, 0)
    st = page_states(walk, addrs["file"], 8)
    assert st[0] & (S_PRESENT | S_FILE) == S_PRESENT | S_FILE
    # fault-around may map more of the page cache; whatever is present is file-backed
    assert all(s & S_FILE for s in st if s & S_PRESENT)
    assert a.present_pages == sum(1 for s in st if s & S_PRESENT) >= 1


def test_map_populate(child):
    """All 32 pages of the MAP_POPULATE region are present and exclusive without being touched."""
    _, addrs, _, walk = child
    st = page_states(walk, addrs["populate"], 32)
    assert all(s & (S_PRESENT | S_EXCL | S_FILE) == S_PRESENT | S_EXCL for s in st), st
    a = vma_at(walk, addrs["populate"])
    assert a.present_pages >= 32


def test_madv_hugepage_region(child):
    """The written page of the MADV_HUGEPAGE region is present; if THP was granted, all 512 pages are THP."""
    _, addrs, _, walk = child
    st = page_states(walk, addrs["thp"], HUGE // PS)
    assert st[0] & S_PRESENT
    if any(s & S_THP for s in st):
        assert all(s & (S_PRESENT | S_THP) == S_PRESENT | S_THP for s in st)
    elif kpageflags_visible(walk):
        # one write maps all 512 pages only through a huge page, which kpageflags would have shown
        assert not all(s & S_PRESENT for s in st)


def test_walk_tiles_the_address_space(child):
    """VMAs and holes follow each other with no gap or overlap from 0 to the last VMA, like walk_page_range()."""
    _, _, _, walk = child
    pos = 0
    for a in walk.areas:
        assert a.start == pos, f"{a.start:#x} != {pos:#x}"
        assert a.ranges[0].start == a.start and a.ranges[-1].end == a.end
        for r1, r2 in zip(a.ranges, a.ranges[1:]):
            assert r1.end == r2.start and r1.state != r2.state  # coalesced: neighbours differ
        pos = a.end
    assert any(a.vma is None for a in walk.areas)


def test_text_output(child):
    """The text has a ptdump-like header per VMA and a `0x…-0x…   SIZE flags` line per range."""
    pid, addrs, path, _ = child
    out, err = io.StringIO(), io.StringIO()
    assert process.dump_pid(pid, out, "text", err=err) == 0
    lines = out.getvalue().splitlines()
    f = addrs["file"]
    hdr = f"---[ {f:x}-{f + 8 * PS:x} rw-s {path} ]---"
    i = lines.index(hdr)
    first = lines[i + 1]
    assert first.startswith(f"0x{f:016x}-0x")
    assert "present" in first.split() and "file" in first.split()
    a = addrs["anon"]
    # pages 0-2 written, page 3 untouched: a present line ends at a + 3 pages (it may start earlier:
    # the kernel merges an adjacent anonymous VMA with the same flags into this one)
    ending = [ln for ln in lines if ln.startswith("0x") and ln.split()[0].split("-")[1] == f"0x{a + 3 * PS:016x}"]
    assert len(ending) == 1 and "present" in ending[0].split()
    assert int(ending[0].split()[0].split("-")[0], 16) <= a
    p = addrs["populate"]
    assert any(ln.startswith(f"0x{p:016x}-") or (ln.startswith("0x") and _covers(ln, p, 32 * PS)) for ln in lines)
    assert "---[ hole ]---" in lines


def _covers(line: str, lo: int, size: int) -> bool:
    s, e = (int(x, 16) for x in line.split()[0].split("-"))
    return s <= lo and lo + size <= e and "present" in line


def test_json_output(child):
    """`--format json` gives the same walk as data under schema pagewalk.pid version 1."""
    pid, addrs, path, _ = child
    out = io.StringIO()
    process.dump_pid(pid, out, "json", quiet=True)
    doc = json.loads(out.getvalue())
    assert (doc["schema"], doc["version"], doc["pid"], doc["page_size"]) == ("pagewalk.pid", 1, pid, PS)
    (vma,) = [a for a in doc["areas"] if a["kind"] == "vma" and a["start"] == addrs["file"]]
    assert vma["path"] == path and vma["perms"] == "rw-s" and vma["end"] == addrs["file"] + 8 * PS
    assert {"present", "file"} <= set(vma["ranges"][0]["flags"])
    (r,) = [r for a in doc["areas"] if a["kind"] == "vma" for r in a["ranges"] if r["start"] <= addrs["anon"] < r["end"]]
    assert r["end"] == addrs["anon"] + 3 * PS and "exclusive" in r["flags"] and "file" not in r["flags"]


def test_own_process():
    """Our own process: a buffer we wrote is present and exclusive, one we did not is absent, the python binary is mapped."""
    m = mmap.mmap(-1, 8 * PS, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    import ctypes

    base = ctypes.addressof(ctypes.c_char.from_buffer(m))
    m[2 * PS] = 7
    walk = process.walk_pid(os.getpid())
    st = page_states(walk, base, 8)
    assert st[2] & (S_PRESENT | S_EXCL) == S_PRESENT | S_EXCL
    assert [bool(s & S_PRESENT) for i, s in enumerate(st) if i != 2] == [False] * 7
    exe = os.path.realpath(sys.executable)
    assert any(a.vma and a.vma.path == exe and "x" in a.vma.perms for a in walk.areas)
    assert walk.pid == os.getpid() and walk.comm


def test_hidden_fields_are_said(child, monkeypatch):
    """Without CAP_SYS_ADMIN the PFN and the kpageflags bits are reported hidden on stderr, and not shown."""
    pid, addrs, _, _ = child
    monkeypatch.setattr(process, "_has_cap_sys_admin", lambda: False)
    out, err = io.StringIO(), io.StringIO()
    process.dump_pid(pid, out, "text", err=err)
    e = err.getvalue()
    assert "hidden: pfn" in e and "thp, hugetlb, zero-page" in e
    walk = process.walk_pid(pid)
    assert not any(r.state & (S_THP | S_ZERO) for a in walk.areas for r in a.ranges)
    assert page_states(walk, addrs["anon"], 1)[0] & S_PRESENT


def test_nonexistent_pid():
    """A pid that cannot exist (above pid_max) gives NoSuchProcess with one clear message."""
    with open("/proc/sys/kernel/pid_max") as f:
        pid = int(f.read()) + 1
    with pytest.raises(NoSuchProcess) as ei:
        process.dump_pid(pid, io.StringIO())
    assert str(ei.value) == f"no process with pid {pid}"
    assert isinstance(ei.value, PagewalkError) and ei.value.exit_code == 7


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to another user")
def test_permission_denied():
    """Another user's process (root's, read by a child turned nobody) gives ProcessAccessDenied, not a traceback."""
    src = os.path.dirname(os.path.dirname(process.__file__))
    code = (
        "import os, sys; sys.path.insert(0, sys.argv[1]); from pagewalk import process\n"
        "os.setgid(65534); os.setuid(65534)\n"
        "try:\n process.walk_pid(os.getppid())\nexcept process.PagewalkError as e:\n"
        " print(type(e).__name__, e.exit_code, e)"
    )
    r = subprocess.run([sys.executable, "-c", code, src], check=False, capture_output=True, text=True, timeout=10)
    assert r.stdout.startswith(f"ProcessAccessDenied {ProcessAccessDenied.exit_code} permission denied reading /proc/"), (
        r.stdout + r.stderr
    )
