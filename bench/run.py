#!/usr/bin/env python3
"""pagewalk against its floor and its peers, on the same synthetic images: one table.

    make bench                                   # = .venv/bin/python bench/run.py
    .venv/bin/python bench/run.py --sizes 16,20,22,24 --runs 5 --peers-max-size 22
    .venv/bin/python bench/run.py --no-peers     # pagewalk and the C floor only

What it does (see bench/README.md for the columns):
1. generates images into bench/out/ with ../shared/bench/gen_synth.py (or $PAGEWALK_SHARED),
   skipping those whose .json exists: linux profile, 4-level, 2^16 and 2^20 leaves by default
   (--sizes), one 5-level image and one KASAN-shaped image (--shared 0.5) of --extra-size;
2. builds walk_ref.c with gcc -O2 into bench/out/ and runs it (the C floor);
3. runs `pagewalk dump` as a whole process, and root_runs() and translate_many() in this
   process;
4. runs the peers (bench/peers.py) in their own venv, bench/out/peers-venv;
5. checks every answer against the generator's ground truth and prints one table of medians.

Nothing here changes pagewalk: a wrong answer is printed as WRONG with its details.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from checksums import M64, mix, usum  # bench/ is the script's directory

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
OUT = HERE / "out"
PEERS_VENV = OUT / "peers-venv"
PEERS_REQ = HERE / "requirements-peers.txt"

# x86-64 entry bits and the ground truth's attribute rules (gen_synth.py docstring, walk_ref.c)
P, RW, US, PWT, PCD, PS, G = 0x1, 0x2, 0x4, 0x8, 0x10, 0x80, 0x100
NX = 1 << 63
PKEY_MASK = 0xF << 59
KEY_MASK = RW | US | PWT | PCD | G | NX | PKEY_MASK  # + PAT normalised to bit 7
GDB_MASK = RW | US | PWT | PCD | NX
CR4_PAE, CR4_LA57 = 0x20, 0x1000
CR3_ADDR = 0x000FFFFFFFFFF000


# ---- locating the shared yardstick ------------------------------------------------------------
def shared_dir() -> Path:
    """The directory holding gen_synth.py and walk_ref.c: $PAGEWALK_SHARED (that directory or
    its parent `shared/`), else <repo>/../shared/bench."""
    env = os.environ.get("PAGEWALK_SHARED")
    cands = [Path(env), Path(env) / "bench"] if env else [REPO.parent / "shared" / "bench"]
    for c in cands:
        if (c / "gen_synth.py").is_file() and (c / "walk_ref.c").is_file():
            return c.resolve()
    where = " or ".join(str(c) for c in cands)
    sys.exit(f"bench: gen_synth.py and walk_ref.c not found in {where} (set PAGEWALK_SHARED)")


# ---- small helpers --------------------------------------------------------------------------
def leaf_key(val: np.ndarray, size: np.ndarray) -> np.ndarray:
    """The ground truth's leaf attributes: RW US PWT PCD G NX PKEY, PAT moved to bit 7."""
    key = val & np.uint64(KEY_MASK)
    large = size != np.uint64(4096)
    pat = np.where(large, (val >> np.uint64(12)) & np.uint64(1), (val >> np.uint64(7)) & np.uint64(1))
    return key | (pat << np.uint64(7))


def check(checks: dict, name: str, got, want) -> None:
    checks[name] = {"got": got, "want": want, "ok": got == want}


def all_ok(checks: dict) -> bool:
    return all(c["ok"] for c in checks.values())


def median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


@dataclass
class Proc:
    wall: float
    rc: int
    maxrss_kb: int | None
    stdout: str
    stderr: str


GNU_TIME = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None


# Every timed process runs as an installed program does: with its bytecode cached. A shell that
# sets PYTHONDONTWRITEBYTECODE would otherwise make each pagewalk run recompile its modules (pip
# compiles the peers' at install time); the first, untimed run of each command writes the cache.
PROC_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def run_proc(cmd: list[str], tag: str, rss: bool = False) -> Proc:
    """Run `cmd` as a whole process: wall time from spawn to exit, exit code, and with `rss` its
    peak RSS.

    The RSS comes from GNU time (/usr/bin/time -f %M), not from our own rusage: Python spawns
    children with vfork, and Linux carries the parent's high-water RSS over exec into the child's
    ru_maxrss, so wait4()/RUSAGE_CHILDREN would report this (large) process's RSS for every
    child. time(1) is a small process that forks, so its child starts from its small footprint.
    It adds about a millisecond to the wall time, so it is used for the pagewalk and peer runs
    only, never for the C floor.
    """
    logs = OUT / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    so, se, sr = logs / f"{tag}.stdout", logs / f"{tag}.stderr", logs / f"{tag}.maxrss"
    if rss and GNU_TIME:
        cmd = [GNU_TIME, "-f", "%M", "-o", str(sr)] + cmd
    with open(so, "wb") as fo, open(se, "wb") as fe:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=fo, stderr=fe, stdin=subprocess.DEVNULL, env=PROC_ENV)
        p.wait()
        wall = time.perf_counter() - t0
    maxrss = None
    if rss and GNU_TIME:
        try:
            maxrss = int(sr.read_text().strip().splitlines()[-1])
        except (OSError, ValueError, IndexError):
            maxrss = None
    return Proc(wall, p.returncode, maxrss, so.read_text(errors="replace"), se.read_text(errors="replace"))


# ---- images -----------------------------------------------------------------------------------
@dataclass
class Image:
    name: str
    log2: int
    levels: int = 4
    shared: float = 0.0
    path: Path = field(init=False)
    meta: dict = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.path = OUT / f"{self.name}.raw"

    @property
    def truth(self) -> dict:
        return self.meta["truth"]

    @property
    def cr3(self) -> int:
        return int(self.meta["cr3"])

    @property
    def cr4(self) -> int:
        return CR4_PAE | (CR4_LA57 if self.levels == 5 else 0)


def image_set(args) -> list[Image]:
    imgs = [Image(f"linux-4l-2p{s}", s) for s in args.sizes]
    if args.extra_size:
        e = args.extra_size
        imgs.append(Image(f"linux-5l-2p{e}", e, levels=5))
        pct = int(round(args.shared * 100))
        imgs.append(Image(f"linux-4l-2p{e}-shared{pct}", e, shared=args.shared))
    return imgs


def generate(img: Image, shared: Path) -> None:
    js = Path(str(img.path) + ".json")
    if not (js.is_file() and img.path.is_file()):
        cmd = [sys.executable, str(shared / "gen_synth.py"), "--pages", str(1 << img.log2),
               "--levels", str(img.levels), "--profile", "linux", "--out", str(img.path)]
        if img.shared:
            cmd += ["--shared", str(img.shared)]
        print(f"bench: generating {img.path.name} ...", file=sys.stderr, flush=True)
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    img.meta = json.loads(js.read_text())


def load_probe(img: Image) -> np.ndarray:
    return np.fromfile(str(img.path) + ".probe.u64", dtype="<u8").reshape(-1, 3)


# ---- the C floor --------------------------------------------------------------------------------
C_FIELDS = ("leaves", "leaves_4k", "leaves_2m", "leaves_1g", "pages_4k", "runs", "runs_level", "runs_eff",
            "runs_vphys", "runs_gdb", "wx_pages_leaf", "wx_pages_eff", "checksum_leaves", "checksum_vphys",
            "checksum_gdb")


def build_c(shared: Path) -> Path:
    src = shared / "walk_ref.c"
    exe = OUT / "walk_ref"
    if not exe.exists() or exe.stat().st_mtime < src.stat().st_mtime:
        cc = os.environ.get("CC", "gcc")
        subprocess.run([cc, "-O2", "-o", str(exe), str(src)], check=True)
    return exe


def bench_c(exe: Path, img: Image, runs: int) -> dict:
    walls, walks, checks = [], [], {}
    for i in range(runs):
        p = run_proc([str(exe), str(img.path), hex(img.cr3), str(img.levels)], f"{img.name}.c.{i}")
        walls.append(p.wall)
        try:
            got = json.loads(p.stdout)
        except ValueError:
            checks["output"] = {"got": p.stdout[:200] + p.stderr[:200], "want": "JSON", "ok": False}
            break
        walks.append(got["walk_s"])
        if i == 0:
            for k in C_FIELDS:
                check(checks, k, got.get(k), img.truth[k])
    return {"wall": median(walls), "walk": median(walks), "checks": checks, "ok": bool(checks) and all_ok(checks)}


# ---- pagewalk, whole process ----------------------------------------------------------------------
def pagewalk_cmd() -> list[str]:
    exe = Path(sys.executable).parent / "pagewalk"
    if exe.exists():
        return [str(exe)]
    return [sys.executable, "-c", "import sys; from pagewalk.cli import main; sys.exit(main())"]


_LINE = re.compile(r"^0x([0-9a-f]+)-0x([0-9a-f]+)\s+\d+[BKMGTPE] (.{30})(pgd|p4d|pud|pmd|pte)$")


def text_present_pages(path: Path) -> tuple[int, int]:
    """4K pages of the present ranges of a ptdump text (flag columns not blank), and line count."""
    pages = lines = 0
    with open(path) as f:
        for line in f:
            m = _LINE.match(line.rstrip("\n"))
            if not m:
                continue
            lines += 1
            if m.group(3).strip():
                size = (int(m.group(2), 16) - int(m.group(1), 16)) % (1 << 64) or (1 << 64)
                pages += size // 4096
    return pages, lines


def bench_pagewalk_cli(img: Image, runs: int, json_check: bool) -> dict:
    base = pagewalk_cmd()
    common = [str(img.path), "--image-format", "raw", "--arch", "x86_64", "--reg", f"cr3={img.cr3:#x}",
              "--reg", f"cr4={img.cr4:#x}", "--pti", "off", "-q"]
    txt = OUT / f"{img.name}.dump.txt"
    walls, rss, checks, notes = [], [], {}, []
    run_proc(base + ["dump"] + common + ["-o", str(txt)], f"{img.name}.pagewalk.warmup")  # bytecode cache
    # a whole pagewalk run is short and this machine's timings are noisy: at least 7 for its median
    for i in range(max(runs, 7)):
        p = run_proc(base + ["dump"] + common + ["-o", str(txt)], f"{img.name}.pagewalk.{i}", rss=True)
        walls.append(p.wall)
        rss.append(p.maxrss_kb)
        if p.rc != 0:
            check(checks, "dump exit code", p.rc, 0)
            notes.append(p.stderr.strip()[-300:])
            break
    if txt.exists() and "dump exit code" not in checks:
        pages, lines = text_present_pages(txt)
        check(checks, "text dump: present 4K pages = pages_4k", pages, img.truth["pages_4k"])
    # W+X: `checkwx` walks ptdump_ranges (lower half + kernel half above the guard hole) with the
    # kernel's effective permissions; the generator puts nothing in the guard hole and its
    # wx_pages_eff uses the same hierarchical rule (RW and US ANDed, NX ORed down the levels), so
    # the two counts are the same quantity. wx_pages_leaf (leaf bits alone) is not what the
    # kernel reports: the "hierarchy trap" pages are W+X by leaf bits only.
    p = run_proc(base + ["checkwx"] + common, f"{img.name}.checkwx")
    m = re.search(r"FAILED, (\d+) W\+X pages found", p.stdout)
    wx = int(m.group(1)) if m else (0 if "passed, no W+X pages found" in p.stdout else None)
    check(checks, "checkwx W+X pages = wx_pages_eff", wx, img.truth["wx_pages_eff"])
    check(checks, "checkwx exit code", p.rc, 1 if img.truth["wx_pages_eff"] else 0)
    extra = {"checkwx_s": p.wall}
    if json_check:
        js = OUT / f"{img.name}.dump.json"
        p = run_proc(base + ["dump"] + common + ["--format", "json", "-o", str(js)], f"{img.name}.json", rss=True)
        extra.update(json_s=p.wall, json_rss_kb=p.maxrss_kb)
        if p.rc == 0:
            doc = json.loads(js.read_text())
            rng = [r for r in doc["ranges"] if "start" in r]
            # ranges with present false are holes *and* non-present non-zero entries (swap PTEs)
            pres = [r for r in rng if r["present"]]
            check(checks, "json dump: present 4K pages = pages_4k", sum(r["size"] // 4096 for r in pres),
                  img.truth["pages_4k"])
            wxj = sum(r["size"] // 4096 for r in pres if r["effective"]["write"] and r["effective"]["exec"])
            check(checks, "json dump: effective W+X 4K pages = wx_pages_eff", wxj, img.truth["wx_pages_eff"])
            skipped = [r for r in doc["ranges"] if "skipped" in r]
            if skipped:
                notes.append(f"json dump skipped ranges (marker line limits): {skipped}")
            js.unlink()
        else:
            check(checks, "json dump exit code", p.rc, 0)
    rss = [x for x in rss if x is not None]
    if rss:
        # issue 3's memory target: the output streams, so the peak is the tables plus a constant
        budget_kb = int(img.meta.get("table_pages", 0)) * 4 + RSS_SLACK_MIB * 1024
        check(checks, f"peak RSS <= page tables + {RSS_SLACK_MIB} MiB", max(rss) <= budget_kb, True)
    return {"wall": median(walls), "walls": walls, "rss_kb": max(rss) if rss else None, "checks": checks, "ok": all_ok(checks),
            "notes": notes, **extra}


# ---- page-table bombs (--bombs) ---------------------------------------------------------------------
RSS_SLACK_MIB = 100


def make_bomb(path: Path, varied: bool) -> None:
    """A 5-level x86 bomb at PA 0: one table per level, all 512 entries of each point at the next
    (512^5 leaves). Uniform: every PTE the same (RW, NX); varied: PTEs alternate two values, so
    the output really is 512^5 / 1 runs long and can only stream until the run limit."""
    words = np.zeros((5, 512), dtype=np.uint64)
    for lvl in range(4):
        words[lvl, :] = np.uint64(((lvl + 1) * 4096) | 0x67)
    if varied:
        i = np.arange(512, dtype=np.uint64)
        words[4, :] = np.where(i % 2 == 1, np.uint64(0x100000 | 0x63), np.uint64(0x200000 | 0x61 | (1 << 63)))
    else:
        words[4, :] = np.uint64(0x100000 | 0x63 | (1 << 63))
    path.write_bytes(words.tobytes())


def bench_bombs() -> list[list[str]]:
    """Dump and checkwx of the two bombs, whole process: time, peak RSS and what happened."""
    base = pagewalk_cmd()
    rows = []
    for name, varied in (("bomb-5l-uniform", False), ("bomb-5l-varied", True)):
        path = OUT / f"{name}.raw"
        make_bomb(path, varied)
        common = [str(path), "--image-format", "raw", "--arch", "x86_64", "--reg", "cr3=0", "--reg", "cr4=0x1020",
                  "--pti", "off", "-q"]
        for cmd in ("dump", "checkwx"):
            out = ["-o", os.devnull] if cmd == "dump" else []
            p = run_proc(base + [cmd] + common + out, f"{name}.{cmd}", rss=True)
            if not varied:
                ok = p.rc in (0, 1) and "error" not in p.stderr
                what = "ok: a few lines" if ok else f"WRONG: rc {p.rc} {p.stderr.strip()[-120:]}"
            else:
                ok = p.rc == 1 and "bomb" in p.stderr
                what = ("ok: streamed to the run limit, then: " + p.stderr.strip().splitlines()[-1][:90]) if ok else (
                    f"WRONG: rc {p.rc} {p.stderr.strip()[-120:]}")
            rows.append([name, cmd, f"{p.wall:.2f}", str((p.maxrss_kb or 0) // 1024), what])
    return rows


# ---- pagewalk, in process -------------------------------------------------------------------------
def runs_counters(runs, mode) -> dict:
    """The ground truth's counters, recomputed from pagewalk's compressed run list.

    pagewalk merges adjacent entries only when their whole flag word, effective permissions and
    level are equal, so its runs refine every grouping of the ground truth (runs, runs_level,
    runs_eff, runs_gdb): merging adjacent present runs under each rule gives those counts
    exactly, and sums over the runs give the leaf and page counts.
    """
    va_bits = mode.va_bits
    top = 1 << va_bits
    half = 1 << (va_bits - 1)
    start = np.asarray(runs.start, dtype=np.uint64)
    n = len(start)
    end = np.empty(n, dtype=np.uint64)
    end[:-1] = start[1:]
    if n:
        end[-1] = np.uint64(top)
    val = np.asarray(runs.val, dtype=np.uint64)
    eff = np.asarray(runs.eff, dtype=np.uint64)
    hw = np.asarray(runs.hw, dtype=np.int64)
    klevel = np.asarray(runs.klevel, dtype=np.int64)
    # present leaves: P set, and not a hole (val 0) nor a missing table (negative klevel)
    pres = ((val & np.uint64(P)) != 0) & (klevel >= 0)
    start, end, val, eff, hw = start[pres], end[pres], val[pres], eff[pres], hw[pres]
    # the two halves of a canonical space are not adjacent: cut a run crossing the middle
    cross = (start < np.uint64(half)) & (end > np.uint64(half))
    if cross.any():
        idx = np.flatnonzero(cross)
        start = np.insert(start, idx + 1, np.uint64(half))
        end = np.insert(end, idx + 1, end[idx])
        end[idx + np.arange(len(idx))] = np.uint64(half)
        val, eff, hw = (np.insert(a, idx + 1, a[idx]) for a in (val, eff, hw))
    shifts = np.array([lvl.shift for lvl in mode.levels], dtype=np.uint64)
    size = np.uint64(1) << shifts[hw]
    length = end - start
    nleaf = length // size
    pages = length >> np.uint64(12)
    canon = np.where(start >= np.uint64(half), start | np.uint64(M64 ^ (top - 1)), start)
    contig = np.zeros(len(start), dtype=bool)
    contig[1:] = (start[1:] == end[:-1]) & (start[1:] != np.uint64(half))
    key = leaf_key(val, size)
    pm = np.uint64(RW | US | NX)
    ekey = leaf_key((val & ~pm) | (eff & pm), size)
    gkey = val & np.uint64(GDB_MASK)

    def boundaries(*cols):
        same = contig.copy()
        for c in cols:
            same[1:] &= c[1:] == c[:-1]
        return ~same

    bg = boundaries(gkey)
    gs = np.flatnonzero(bg)
    glen = np.add.reduceat(length, gs) if len(gs) else np.zeros(0, np.uint64)
    wx_leaf = ((val & np.uint64(RW)) != 0) & ((val & np.uint64(NX)) == 0)
    wx_eff = ((eff & np.uint64(RW)) != 0) & ((eff & np.uint64(NX)) == 0)
    return {
        "leaves": int(nleaf.sum()),
        "leaves_4k": int(nleaf[size == np.uint64(1 << 12)].sum()),
        "leaves_2m": int(nleaf[size == np.uint64(1 << 21)].sum()),
        "leaves_1g": int(nleaf[size == np.uint64(1 << 30)].sum()),
        "pages_4k": int(pages.sum()),
        "runs": int(boundaries(key).sum()),
        "runs_level": int(boundaries(key, size).sum()),
        "runs_eff": int(boundaries(ekey).sum()),
        "runs_gdb": int(len(gs)),
        "checksum_gdb": "%#x" % usum(mix(canon[gs], glen, gkey[gs], np.zeros(len(gs), np.uint64))),
        "wx_pages_leaf": int(pages[wx_leaf].sum()),
        "wx_pages_eff": int(pages[wx_eff].sum()),
        "_present_runs": int(len(start)),
        "_canon": canon,
        "_key": key,
    }


def bench_pagewalk_inproc(img: Image, runs: int) -> dict:
    from pagewalk.arch.x86 import X86_64_4LEVEL, X86_64_5LEVEL
    from pagewalk.memory.raw import RawMemory
    from pagewalk.runs import root_runs
    from pagewalk.translate import translate_many

    mode = X86_64_5LEVEL if img.levels == 5 else X86_64_4LEVEL
    root = img.cr3 & CR3_ADDR
    mem = RawMemory(str(img.path))
    truth = img.truth
    out: dict = {}
    # walk + coalesce
    times, r = [], None
    for _ in range(runs):
        t0 = time.perf_counter()
        r = root_runs(mem, mode, root)
        times.append(time.perf_counter() - t0)
    got = runs_counters(r, mode)
    checks: dict = {}
    for k in ("leaves", "leaves_4k", "leaves_2m", "leaves_1g", "pages_4k", "runs", "runs_level", "runs_eff",
              "runs_gdb", "checksum_gdb", "wx_pages_leaf", "wx_pages_eff"):
        check(checks, k, got[k], truth[k])
    out["walk"] = {"time": median(times), "checks": checks, "ok": all_ok(checks), "runs_total": len(r),
                   "present_runs": got["_present_runs"]}
    # translate_many on the probe
    probe = load_probe(img)
    vas = np.ascontiguousarray(probe[:, 0])
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        pa, size, ok = translate_many(mem, mode, root, vas)
        times.append(time.perf_counter() - t0)
    pa, size, ok = (np.asarray(x) for x in (pa, size, ok))
    tchecks: dict = {}
    check(tchecks, "faults", int((~ok).sum()), 0)
    check(tchecks, "pa mismatches", int((pa.astype(np.uint64) != probe[:, 1]).sum()), 0)
    check(tchecks, "page size mismatches", int((size.astype(np.uint64) != probe[:, 2]).sum()), 0)
    bad = np.flatnonzero(~ok | (pa.astype(np.uint64) != probe[:, 1]) | (size.astype(np.uint64) != probe[:, 2]))
    first_bad = None
    if len(bad):
        j = int(bad[0])
        first_bad = {"va": "%#x" % int(probe[j, 0]), "got": ("%#x" % int(pa[j]), int(size[j]), bool(ok[j])),
                     "want": ("%#x" % int(probe[j, 1]), int(probe[j, 2]))}
    # checksum_leaves over every leaf: PA and size from translate_many, attributes from the run
    # holding the VA (root_runs). Only when the probe holds every leaf.
    if len(probe) == truth["leaves"] and not len(bad):
        canon, key = got["_canon"], got["_key"]
        ri = np.searchsorted(canon, vas, side="right") - 1
        shift = np.log2(size.astype(np.float64)).astype(np.uint64)
        check(tchecks, "checksum_leaves (translate_many PA + root_runs attrs)",
              "%#x" % usum(mix(vas, pa, shift, key[ri])), truth["checksum_leaves"])
    med = median(times)
    out["translate"] = {"time": median(times), "n": len(vas), "rate": len(vas) / med if med else None,
                        "checks": tchecks, "ok": all_ok(tchecks), "first_bad": first_bad}
    mem.close()
    return out


# ---- peers ----------------------------------------------------------------------------------
def ensure_peers() -> tuple[Path | None, str]:
    """bench/out/peers-venv with bench/requirements-peers.txt installed; (python, note)."""
    py = PEERS_VENV / "bin" / "python"
    stamp = PEERS_VENV / ".installed"
    if py.exists() and stamp.exists() and stamp.stat().st_mtime >= PEERS_REQ.stat().st_mtime:
        return py, ""
    print("bench: installing the peers into bench/out/peers-venv (once) ...", file=sys.stderr, flush=True)
    try:
        if not py.exists():
            subprocess.run([sys.executable, "-m", "venv", str(PEERS_VENV)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "-r", str(PEERS_REQ)], check=True)
    except (subprocess.CalledProcessError, OSError) as e:
        return None, f"peers not installed ({e}); see bench/README.md"
    stamp.touch()
    return py, ""


def pagewalk_dump_once(img: Image, tag: str) -> float:
    """One more timed `pagewalk dump` of `img` as bench_pagewalk_cli() runs it (its text is
    checked there): its wall time."""
    txt = OUT / f"{img.name}.dump.txt"
    common = [str(img.path), "--image-format", "raw", "--arch", "x86_64", "--reg", f"cr3={img.cr3:#x}",
              "--reg", f"cr4={img.cr4:#x}", "--pti", "off", "-q"]
    return run_proc(pagewalk_cmd() + ["dump"] + common + ["-o", str(txt)], tag, rss=True).wall


def bench_peer(py: Path, tool: str, img: Image, runs: int, between=None) -> dict:
    """A peer's whole-process runs; `between()` runs after each (pagewalk's runs interleaved with
    the peer's, so that both are timed under the same load: this machine's speed drifts)."""
    walls, res, rss = [], None, []
    for i in range(runs):
        p = run_proc([str(py), str(HERE / "peers.py"), tool, str(img.path)], f"{img.name}.{tool}.{i}", rss=True)
        if between is not None:
            between()
        try:
            res = json.loads(p.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            res = {"status": "error", "ok": False, "error": (p.stderr or p.stdout).strip()[-300:]}
        if res.get("status") != "ran":
            break
        walls.append(p.wall)
        rss.append(p.maxrss_kb)
    rss = [x for x in rss if x is not None]
    return {"wall": median(walls), "rss_kb": max(rss) if rss else None, **(res or {})}


# ---- the table --------------------------------------------------------------------------------
def mark(ok: bool | None) -> str:
    return "" if ok is None else (" ok" if ok else " WRONG")


def fmt_s(x: float | None) -> str:
    if x is None:
        return "–"
    return f"{x:.4f}" if x < 0.1 else f"{x:.3f}" if x < 10 else f"{x:.1f}"


def fmt_ratio(x: float | None) -> str:
    if x is None:
        return "–"
    return f"{x:.1f}x" if x < 100 else f"{x:.0f}x"


def fmt_count(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.0f}k"


def peer_cell(r: dict | None) -> str:
    if r is None:
        return "skipped"
    st = r.get("status")
    if st == "n/a":
        return "n/a"
    if st != "ran":
        return "error"
    return fmt_s(r["wall"]) + mark(r.get("ok"))


HEADER = ["image", "tables MiB", "leaves", "C floor s", "C walk s", "pagewalk s", "pagewalk RSS MiB",
          "walk+coalesce s", "translate_many Maddr/s", "volatility3 s", "drgn s", "pagewalk / C",
          "fastest peer / pagewalk", "walk+coalesce / C walk"]


def table_rows(results: list[dict]) -> list[list[str]]:
    rows = []
    for res in results:
        img: Image = res["image"]
        c, cli, inp = res["c"], res["cli"], res["inproc"]
        # ratios only between answers that are right: a wrong answer's time means nothing
        peers = {k: v for k, v in res["peers"].items()
                 if v and v.get("status") == "ran" and v.get("wall") and v.get("ok")}
        fastest = min(peers.items(), key=lambda kv: kv[1]["wall"]) if peers else None
        tr = inp["translate"]
        wk = inp["walk"]
        rows.append([
            img.name,
            f"{img.meta['table_pages'] * 4096 / 2**20:.1f}",
            fmt_count(img.truth["leaves"]),
            fmt_s(c["wall"]) + mark(c["ok"]),
            fmt_s(c["walk"]),
            fmt_s(cli["wall"]) + mark(cli["ok"]),
            f"{cli['rss_kb'] / 1024:.0f}" if cli.get("rss_kb") else "–",
            fmt_s(wk["time"]) + mark(wk["ok"]),
            (f"{tr['rate'] / 1e6:.2f}" if tr["rate"] else "–") + mark(tr["ok"]),
            peer_cell(res["peers"].get("vol3")),
            peer_cell(res["peers"].get("drgn")),
            fmt_ratio(cli["wall"] / c["wall"]) if cli["ok"] and c["ok"] and c["wall"] else "–",
            (fmt_ratio(fastest[1]["wall"] / cli["wall"]) + f" ({'volatility3' if fastest[0] == 'vol3' else 'drgn'})")
            if fastest and cli["ok"] and cli["wall"] else "–",
            fmt_ratio(wk["time"] / c["walk"]) if wk["ok"] and c["ok"] and c["walk"] else "–",
        ])
    return rows


def markdown(rows: list[list[str]]) -> str:
    cols = list(zip(HEADER, *rows))
    w = [max(len(x) for x in col) for col in cols]
    line = lambda cells: "| " + " | ".join(c.ljust(w[i]) for i, c in enumerate(cells)) + " |"  # noqa: E731
    out = [line(HEADER), "|" + "|".join("-" * (x + 2) for x in w) + "|"]
    out += [line(r) for r in rows]
    return "\n".join(out)


def wrong_details(results: list[dict]) -> list[str]:
    lines = []
    for res in results:
        name = res["image"].name
        parts = [("C floor", res["c"]), ("pagewalk (whole process)", res["cli"]),
                 ("pagewalk walk+coalesce", res["inproc"]["walk"]), ("pagewalk translate_many", res["inproc"]["translate"])]
        parts += [(k, v) for k, v in res["peers"].items() if v]
        for label, r in parts:
            if r.get("status") == "error":
                lines.append(f"- {name}: {label}: error: {r.get('error')}")
                continue
            for k, c in (r.get("checks") or {}).items():
                if not c["ok"]:
                    lines.append(f"- {name}: {label}: {k}: got {c['got']}, want {c['want']}")
            if r.get("explanation"):
                lines.append(f"  ({r['explanation']})")
            if r.get("first_bad"):
                lines.append(f"- {name}: {label}: first wrong address {r['first_bad']}")
            for n in r.get("notes", []) if isinstance(r.get("notes"), list) else []:
                lines.append(f"- {name}: {label}: {n}")
        img = res["image"]
        if not res["cli"]["ok"] and res["inproc"]["walk"]["ok"] and img.cr3 & 0x1000:
            lines.append(f"  (hint: CR3 {img.cr3:#x} has bit 12 set and the library walk from that root is right; "
                         "the CLI may be dropping bit 12 as if it were PTI's user-copy bit despite --pti off: "
                         "see logs/*.pagewalk.*.stderr and `pagewalk translate --reg cr3=...`)")
    return lines


NOTES = """\
Notes: medians of {runs} runs (pagewalk s: where peers ran, of the three runs after each peer run, so that both
are timed under the same load; else of 7 runs); "ok"/"WRONG" = every check of that column against gen_synth.py's ground truth
(details below when WRONG). C floor = walk_ref.c (gcc -O2), whole process; C walk = its own in-process walk time.
pagewalk s = `pagewalk dump IMAGE --image-format raw ... -o FILE` (kernel ptdump text), whole process.
walk+coalesce = pagewalk.runs.root_runs() in process; translate_many = pagewalk.translate.translate_many() on
the probe VAs (exact PA and page size). volatility3 = Intel32e.mapping() over the whole 48-bit space, whole
process (no 5-level layer: n/a on 5-level images); drgn = follow_phys once per probe leaf VA, whole process
(it is handed the leaves; it does not find them). gdb-pt-dump is not on PyPI: not run (the shared README
has its figures). Peers on images above 2^{peers_max} leaves: skipped unless --peers-max-size."""


DEMO = REPO / "tests" / "fixtures" / "x86_64" / "6.12-kaslr-4level-pti"  # `make demo`'s bundled sample


def bench_startup(runs: int) -> dict:
    """Interpreter start-up (`python -c pass`, this venv) and the bundled sample's `make demo`
    dump, whole process, medians."""
    py = [sys.executable, "-c", "pass"]
    run_proc(py, "startup.warmup")
    start = median([run_proc(py, f"startup.{i}").wall for i in range(max(runs, 5))])
    cmd = pagewalk_cmd() + ["dump", str(DEMO / "core.elf"), "--kallsyms", str(DEMO / "kallsyms.txt"), "-q",
                            "-o", str(OUT / "demo.dump.txt")]
    run_proc(cmd, "demo.warmup")
    procs = [run_proc(cmd, f"demo.{i}") for i in range(max(runs, 5))]
    want = (DEMO / "ptdump_kernel.txt").read_text()
    same = all(p.rc == 0 for p in procs) and (OUT / "demo.dump.txt").read_text().splitlines() == want.splitlines()
    return {"startup": start, "demo": median([p.wall for p in procs]), "demo_ok": same}


def targets(results: list[dict], startup: dict) -> list[str]:
    """Issue 3's targets, each judged from this run's medians: one line each, met or NOT MET."""
    lines = ["Targets (issue 3), from this run:"]

    def verdict(ok: bool, text: str) -> None:
        lines.append(f"- {'met    ' if ok else 'NOT MET'}  {text}")

    by_name = {r["image"].name: r for r in results}
    for r in results:
        img, cli = r["image"], r["cli"]
        peers = {k: v for k, v in r["peers"].items() if v and v.get("status") == "ran" and v.get("ok")}
        if img.log2 == 20 and img.levels == 4 and not img.shared and peers and cli["ok"]:
            name, best = min(peers.items(), key=lambda kv: kv[1]["wall"])
            ratio = best["wall"] / cli["wall"]
            verdict(ratio >= 30, f"`pagewalk dump` of {img.name} {fmt_ratio(ratio)} faster than the fastest peer "
                    f"({'volatility3' if name == 'vol3' else 'drgn'} {fmt_s(best['wall'])} s, pagewalk "
                    f"{fmt_s(cli['wall'])} s; target 30x)")
    for r in results:
        img, c, wk = r["image"], r["c"], r["inproc"]["walk"]
        if wk["ok"] and c["ok"] and c["walk"]:
            verdict(wk["time"] <= 10 * c["walk"], f"{img.name}: walk+coalesce {fmt_ratio(wk['time'] / c['walk'])} the "
                    "C walk (target: within 10x)")
    for r in results:
        img, c, cli = r["image"], r["c"], r["cli"]
        if img.log2 >= 24 and cli["ok"] and c["ok"]:
            bound = 15 * c["wall"] + startup["startup"]
            verdict(cli["wall"] <= bound, f"{img.name}: {fmt_s(cli['wall'])} s whole process, under 15x the C floor "
                    f"plus start-up ({fmt_s(bound)} s)")
            tables_mib = img.meta["table_pages"] * 4096 / 2**20
            rss = (cli.get("rss_kb") or 0) / 1024
            verdict(bool(cli.get("rss_kb")) and rss <= tables_mib + RSS_SLACK_MIB,
                    f"{img.name}: peak RSS {rss:.0f} MiB, at most the tables ({tables_mib:.0f} MiB) + "
                    f"{RSS_SLACK_MIB} MiB")
    for r in results:
        img = r["image"]
        plain = by_name.get(f"linux-4l-2p{img.log2}")
        if img.shared and plain and r["inproc"]["walk"]["ok"] and plain["inproc"]["walk"]["ok"]:
            # the walk's own cost, in process (the whole process also writes the text, which differs)
            ws, wp = r["inproc"]["walk"]["time"], plain["inproc"]["walk"]["time"]
            verdict(ws <= wp, f"{img.name} (half its leaves under shared tables): walk+coalesce {fmt_s(ws)} s against "
                    f"{fmt_s(wp)} s for the plain image of as many leaves; whole process {fmt_s(r['cli']['wall'])} s "
                    f"against {fmt_s(plain['cli']['wall'])} s (target: a shared table costs no more than walking it once)")
    rates = [(r["image"].name, r["inproc"]["translate"]) for r in results]
    ok_rates = [t["rate"] for _, t in rates if t["ok"] and t["rate"]]
    verdict(bool(ok_rates) and min(ok_rates) >= 1e6 and len(ok_rates) == len(rates),
            f"translate_many: {min(ok_rates) / 1e6:.2f}-{max(ok_rates) / 1e6:.2f} M addresses/s (target: 1 M/s)"
            if ok_rates else "translate_many: no correct run")
    verdict(startup["demo_ok"] and startup["demo"] < 0.5,
            f"the bundled sample (`make demo`'s dump, --kallsyms): {fmt_s(startup['demo'])} s whole process, "
            f"{'the kernel' + chr(39) + 's text exactly' if startup['demo_ok'] else 'WRONG text'} (target: well under "
            f"a second; start-up alone {fmt_s(startup['startup'])} s)")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--sizes", default="16,20,24", help="log2 of the 4K leaves of the 4-level images (default "
                    "16,20,24: issue 3's targets are at 2^20 and 2^24; 22 is another large one)")
    ap.add_argument("--extra-size", type=int, default=20,
                    help="log2 size of the 5-level and the KASAN-shaped image (default 20; 0: none)")
    ap.add_argument("--shared", type=float, default=0.5, help="--shared fraction of the KASAN-shaped image (0.5)")
    ap.add_argument("--runs", type=int, default=3, help="runs per measurement; medians are shown (default 3)")
    ap.add_argument("--no-peers", action="store_true", help="do not run volatility3 and drgn")
    ap.add_argument("--peers-max-size", type=int, default=20,
                    help="run the peers only on images of at most 2^N leaves (default 20: volatility3 takes "
                    "minutes at 2^24)")
    ap.add_argument("--json-check-max-size", type=int, default=22,
                    help="check the JSON dump only on images of at most 2^N leaves (default 22)")
    ap.add_argument("--bombs", action="store_true",
                    help="also dump and check two 5-level page-table bombs (uniform, varied: about a minute)")
    args = ap.parse_args(argv)
    args.sizes = [int(s) for s in str(args.sizes).split(",") if s.strip()]
    if args.runs < 1:
        ap.error("--runs must be at least 1")

    try:
        import pagewalk  # noqa: F401
    except ImportError:
        sys.exit("bench: pagewalk is not importable: run `make bench` (or .venv/bin/python bench/run.py)")
    shared = shared_dir()
    OUT.mkdir(parents=True, exist_ok=True)
    if shutil.which(os.environ.get("CC", "gcc")) is None:
        sys.exit("bench: gcc not found (needed for the C floor)")
    imgs = image_set(args)
    for img in imgs:
        generate(img, shared)
    exe = build_c(shared)
    peers_py, peers_note = (None, "peers not run (--no-peers)") if args.no_peers else ensure_peers()

    results = []
    t_start = time.perf_counter()
    for img in imgs:
        print(f"bench: {img.name} ...", file=sys.stderr, flush=True)
        res: dict = {"image": img}
        res["c"] = bench_c(exe, img, args.runs)
        res["cli"] = bench_pagewalk_cli(img, args.runs, img.log2 <= args.json_check_max_size)
        res["inproc"] = bench_pagewalk_inproc(img, args.runs)
        res["peers"] = {}
        for tool in ("vol3", "drgn"):
            if peers_py is None or img.log2 > args.peers_max_size:
                res["peers"][tool] = None
            elif tool == "vol3" and img.levels != 4:
                res["peers"][tool] = {"status": "n/a", "reason": "volatility3 has no 5-level (LA57) Intel layer"}
            else:
                extra = res["cli"].setdefault("walls_beside_peers", [])
                tag = f"{img.name}.pagewalk.beside-{tool}"
                res["peers"][tool] = bench_peer(
                    peers_py, tool, img, args.runs,
                    between=lambda: extra.extend(pagewalk_dump_once(img, f"{tag}.{len(extra)}") for _ in range(3)))
        if res["cli"].get("walls_beside_peers") and res["cli"]["ok"]:
            # pagewalk's time is the median of the runs made right after the peers' runs (three
            # after each): both then are timed under the same load, whatever this machine's speed
            # did during pagewalk's own first runs (those still give the checks and the RSS)
            res["cli"]["wall"] = median(res["cli"]["walls_beside_peers"])
        results.append(res)

    startup = bench_startup(args.runs)
    rows = table_rows(results)
    text = [markdown(rows), "", NOTES.format(runs=args.runs, peers_max=args.peers_max_size), ""]
    text += targets(results, startup)
    bomb_rows = bench_bombs() if args.bombs else []
    if bomb_rows:
        head = ["bomb image", "command", "s", "RSS MiB", "result"]
        cols = list(zip(head, *bomb_rows))
        w = [max(len(x) for x in col) for col in cols]
        fmt = lambda cells: "| " + " | ".join(c.ljust(w[i]) for i, c in enumerate(cells)) + " |"  # noqa: E731
        text += ["", fmt(head), "|" + "|".join("-" * (x + 2) for x in w) + "|"] + [fmt(r) for r in bomb_rows]
    if peers_note:
        text.append(peers_note)
    wrong = wrong_details(results)
    text.append("")
    text.append("Checks: all ok." if not wrong else "Checks that failed (WRONG):\n" + "\n".join(wrong))
    text.append(f"(bench took {time.perf_counter() - t_start:.0f} s)")
    report = "\n".join(text)
    print(report)
    (OUT / "results.md").write_text(report + "\n")

    def clean(o):
        if isinstance(o, Image):
            return {"name": o.name, "log2": o.log2, "levels": o.levels, "shared": o.shared, "cr3": o.cr3,
                    "table_pages": o.meta.get("table_pages"), "truth": o.truth}
        if isinstance(o, dict):
            return {k: clean(v) for k, v in o.items() if not k.startswith("_")}
        if isinstance(o, (list, tuple)):
            return [clean(v) for v in o]
        if isinstance(o, np.generic):
            return o.item()
        return o

    (OUT / "results.json").write_text(json.dumps(clean(results), indent=1) + "\n")
    # exit 1 when pagewalk (or the C floor, i.e. the yardstick itself) is wrong; a peer's wrong
    # answer is reported in the table but does not fail `make bench`
    own = [r for r in results for part in (r["c"], r["cli"], r["inproc"]["walk"], r["inproc"]["translate"])
           if not part["ok"]]
    own += [r for r in bomb_rows if r[-1].startswith("WRONG")]
    return 1 if own else 0


if __name__ == "__main__":
    sys.exit(main())
