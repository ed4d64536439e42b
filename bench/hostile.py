"""Hostile inputs as whole `pagewalk` processes, each against a stated time and peak-RSS bound.

    .venv/bin/python bench/hostile.py            # all cases; exit 1 if one misses its bound
    .venv/bin/python bench/hostile.py -k bomb    # cases whose name contains "bomb"

Every case builds its input (page-table bombs, loops, random roots, cut cores), runs one
`pagewalk` command in a fresh process, and measures that process's wall time and peak RSS
(os.wait4's ru_maxrss, per child). A case passes when the exit code is one it allows, stderr holds
no traceback, and time and RSS are within its bound. The bounds are for a 2-core machine shared
with other work; they are what the README's Limits section states.

Bombs with varied contents (a shared table whose entries differ, reached through many entries)
expand to one run per reference; today a walk of more than 4 million runs is refused with a
message (exit 1), a streaming walk may complete instead. The cases accept either outcome and bound
both: refusing must be quick, completing must stay within the same time and memory.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
PAGEWALK = [str(ROOT / ".venv" / "bin" / "python"), "-m", "pagewalk.cli"]
FIXTURES = ROOT / "tests" / "fixtures"
PAGE = 4096


@dataclass
class Case:
    name: str
    what: str  # one line: the input and what is expected
    args: list[str]
    seconds: float
    rss_mib: int
    exits: tuple[int, ...] = (0,)


@dataclass
class Result:
    case: Case
    exit: int
    seconds: float
    rss_mib: float
    traceback: bool
    stderr: str

    @property
    def passed(self) -> bool:
        return (self.exit in self.case.exits and not self.traceback and self.seconds <= self.case.seconds
                and self.rss_mib <= self.case.rss_mib)


def run(case: Case) -> Result:
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as err:
        p = subprocess.Popen([*PAGEWALK, *case.args], stdout=subprocess.DEVNULL, stderr=err, cwd=ROOT)
        _, status, ru = os.wait4(p.pid, 0)
        dt = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        text = err.read().decode(errors="replace")
    return Result(case, p.returncode, dt, ru.ru_maxrss / 1024, "Traceback" in text, text.strip().splitlines()[-1:] and
                  text.strip().splitlines()[-1] or "")


# -- inputs ---------------------------------------------------------------------------------------


def _write(path: pathlib.Path, tables: dict[int, np.ndarray], dtype: str = "<u8") -> str:
    end = max(pa + t.size * np.dtype(dtype).itemsize for pa, t in tables.items())
    buf = bytearray((end + PAGE - 1) // PAGE * PAGE)
    for pa, t in tables.items():
        b = t.astype(dtype).tobytes()
        buf[pa : pa + len(b)] = b
    path.write_bytes(bytes(buf))
    return str(path)


# x86 (SDM vol. 3A §4.5): P|RW|US|A|D for tables (_PAGE_TABLE), P|RW|A|D + NX for 4K leaves
X86_TABLE = 0x67
X86_LEAF_RW_NX = 0x63 | (1 << 63)
X86_LEAF_RO_X = 0x21
# arm64 (Arm ARM D8.3): 0b11 table / page descriptor; AF, inner shareable, PXN|UXN
ARM64_TABLE = 3
ARM64_PAGE = 3 | (1 << 10) | (3 << 8) | (1 << 53) | (1 << 54)
ARM64_TCR = 0x500074B5503510  # the Debian 6.12 cortex-a57 capture's: 4K granule, 48-bit VAs both halves
# riscv (privileged spec §10.3): V for tables; V|R|W|A|D for leaves; PPN at bit 10
RV_V, RV_LEAF = 1, 0xC7


def _rv(pa: int, flags: int) -> int:
    return (pa >> 12) << 10 | flags


def bomb(levels: int, table_entry, leaf, fanout: int = 512, leaves=None) -> tuple[dict[int, np.ndarray], int]:
    """One table per level at PAs 0x1000, 0x2000, ...; the first `fanout` entries of every upper
    table point at the next table; the last table holds `leaves` (default: `leaf` everywhere)."""
    tables = {}
    for i in range(levels - 1):
        t = np.zeros(512, np.uint64)
        t[:fanout] = table_entry((i + 2) * PAGE)
        tables[(i + 1) * PAGE] = t
    last = np.array(leaves if leaves is not None else [leaf] * 512, dtype=np.uint64)
    tables[levels * PAGE] = last
    return tables, PAGE


def cases(tmp: pathlib.Path) -> list[Case]:
    out: list[Case] = []
    x86_regs = lambda root, l5: ["--arch", "x86_64", "--image-format", "raw", "--reg", f"cr3={root:#x}",
                                 "--reg", f"cr4={0x1000 if l5 else 0x20:#x}", "-q"]

    # 1. x86-64 5-level bomb, uniform: 512^5 leaves, 5 distinct tables
    t, root = bomb(5, lambda pa: pa | X86_TABLE, 0x200000 | X86_LEAF_RW_NX)
    img = _write(tmp / "x86-5l-bomb.raw", t)
    for cmd in ("dump", "checkwx"):
        out.append(Case(f"x86-5level-bomb-uniform-{cmd}", "512^5 leaves, all equal: 5 tables",
                        [cmd, img, *x86_regs(root, True)], 10, 300, (0,)))
    out.append(Case("x86-5level-bomb-uniform-translate", "the last VA of the bomb",
                    ["translate", img, "0xfffffffffffff000", *x86_regs(root, True)], 10, 300, (0,)))

    # 2. x86-64 4-level bomb, leaves alternating RW-NX and RO-X (no W+X): one run per PTE per reference
    alt = [(0x200000 | X86_LEAF_RW_NX) if k % 2 else (0x201000 | X86_LEAF_RO_X) for k in range(512)]
    t, root = bomb(4, lambda pa: pa | X86_TABLE, 0, fanout=8, leaves=alt)
    img = _write(tmp / "x86-4l-bomb-varied-small.raw", t)
    out.append(Case("x86-4level-bomb-varied-8^3-dump", "8^3 references x 512 alternating PTEs = 262k runs: completes",
                    ["dump", img, *x86_regs(root, False)], 60, 800, (0,)))
    t, root = bomb(4, lambda pa: pa | X86_TABLE, 0, fanout=16, leaves=alt)
    img = _write(tmp / "x86-4l-bomb-varied-mid.raw", t)
    out.append(Case("x86-4level-bomb-varied-16^3-dump", "16^3 references x 512 alternating PTEs = 2.1M lines of text",
                    ["dump", img, *x86_regs(root, False)], 120, 800, (0,)))
    t, root = bomb(4, lambda pa: pa | X86_TABLE, 0, fanout=32, leaves=alt)
    img = _write(tmp / "x86-4l-bomb-varied-large.raw", t)
    out.append(Case("x86-4level-bomb-varied-32^3-checkwx",
                    "32^3 references x 512 alternating PTEs = 16.8M runs: refused as a bomb, or streamed",
                    ["checkwx", img, *x86_regs(root, False)], 180, 1500, (0, 1)))
    t, root = bomb(4, lambda pa: pa | X86_TABLE, 0, fanout=512, leaves=alt)
    img_full = _write(tmp / "x86-4l-bomb-varied-full.raw", t)
    for cmd, secs in (("checkwx", 120), ("dump", 180)):
        out.append(Case(f"x86-4level-bomb-varied-512^3-{cmd}",
                        "512^3 references x 512 alternating PTEs (6.9e10 runs) from 20 KiB: refused with a message",
                        [cmd, img_full, *x86_regs(root, False)], secs, 1000, (0, 1)))
    out.append(Case("x86-4level-bomb-varied-32^3-translate", "one VA through the same bomb",
                    ["translate", img, "0x7fffffe00000", *x86_regs(root, False)], 10, 300, (0, 1)))

    # 3. loops: every root entry points at the root; PUD entries point back at the PGD
    t = {PAGE: np.full(512, PAGE | X86_TABLE, np.uint64)}
    img = _write(tmp / "x86-loop-root.raw", t)
    out.append(Case("x86-loop-to-root-dump", "every PGD entry points at the PGD itself",
                    ["dump", img, *x86_regs(PAGE, False)], 10, 300, (0,)))
    t = {PAGE: np.full(512, 2 * PAGE | X86_TABLE, np.uint64), 2 * PAGE: np.full(512, PAGE | X86_TABLE, np.uint64)}
    img = _write(tmp / "x86-loop-levels.raw", t)
    for cmd in ("dump", "checkwx"):
        # the PTE level reads table pages as RW, executable leaves: checkwx rightly finds W+X (exit 1)
        out.append(Case(f"x86-5level-loop-between-levels-{cmd}", "PGD -> P4D -> PGD -> ... (2 tables, 5 levels)",
                        [cmd, img, *x86_regs(PAGE, True)], 10, 300, (0, 1)))

    # 3b. tables pointing outside the image: 511 held PMD-level tables whose 512 entries each name a
    #     distinct table the image does not hold (261k missing tables from a 2 MiB file)
    t = {0: np.array([0] + [((k % 511) + 1) * PAGE | X86_TABLE for k in range(1, 512)], np.uint64)}
    far = np.arange(511 * 512, dtype=np.uint64) * np.uint64(PAGE) + np.uint64(1 << 40)
    for k in range(511):
        t[(k + 1) * PAGE] = far[k * 512 : (k + 1) * 512] | np.uint64(X86_TABLE)
    img = _write(tmp / "x86-missing-tables.raw", t)
    for cmd in ("dump", "checkwx"):
        out.append(Case(f"x86-261k-tables-outside-the-image-{cmd}", "2 MiB of entries naming 261k absent tables",
                        [cmd, img, *x86_regs(0, False)], 30, 800, (0,)))

    # 4. arm64 4K 48-bit bomb (TTBR1), riscv Sv57 bomb
    t, root = bomb(4, lambda pa: pa | ARM64_TABLE, 0x40000000 | ARM64_PAGE)
    img = _write(tmp / "arm64-bomb.raw", t)
    arm_regs = ["--arch", "arm64", "--image-format", "raw", "--reg", f"ttbr1_el1={root:#x}",
                "--reg", f"tcr_el1={ARM64_TCR:#x}", "--kernel-version", "6.12", "-q"]
    for cmd in ("dump", "checkwx"):
        out.append(Case(f"arm64-4k-48bit-bomb-{cmd}", "512^4 pages through TTBR1: 4 tables", [cmd, img, *arm_regs],
                        10, 300, (0,)))
    t, root = bomb(5, lambda pa: _rv(pa, RV_V), _rv(0x80200000, RV_LEAF))
    img = _write(tmp / "riscv-sv57-bomb.raw", t)
    rv_regs = ["--arch", "riscv64", "--image-format", "raw", "--reg", f"satp={(10 << 60) | (root >> 12):#x}", "-q"]
    for cmd in ("dump", "checkwx"):
        out.append(Case(f"riscv-sv57-bomb-{cmd}", "512^5 pages: 5 tables", [cmd, img, *rv_regs], 10, 300, (0,)))

    # 5. wrong roots: zeros, random bytes (4- and 5-level), a 4-level capture read as 5-level
    img = tmp / "zeros.raw"
    img.write_bytes(bytes(16 * PAGE))
    out.append(Case("x86-root-all-zeros-dump", "an empty root: no mappings", ["dump", str(img), *x86_regs(0, False)],
                    10, 300, (0,)))
    rng = np.random.default_rng(7)
    img = tmp / "random.raw"
    img.write_bytes(rng.integers(0, 256, 64 * PAGE, dtype=np.uint8).tobytes())
    for l5 in (False, True):
        out.append(Case(f"x86-root-random-{'5' if l5 else '4'}level-dump", "random bytes as tables",
                        ["dump", str(img), *x86_regs(0, l5)], 20, 400, (0, 1)))
        out.append(Case(f"x86-root-random-{'5' if l5 else '4'}level-stats", "reserved entries counted",
                        ["stats", str(img), *x86_regs(0, l5)], 20, 400, (0, 1)))
    core = FIXTURES / "x86_64" / "6.1-kaslr-4level" / "core.elf"
    if core.exists():
        out.append(Case("x86-4level-capture-as-5level-dump", "CR4.LA57 forced on a 4-level capture",
                        ["dump", str(core), "--reg", "cr4=0x751ef0", "-q"], 20, 400, (0,)))
    img = tmp / "short.raw"
    img.write_bytes(bytes(100))
    out.append(Case("raw-dump-shorter-than-the-root", "100 bytes, root at 0: one error line, exit 5",
                    ["dump", str(img), *x86_regs(0, False)], 10, 300, (5,)))

    # 6. every architecture's committed cores, cut: at the first page and in the middle (exit 2: the
    #    core does not say its architecture, as cores written without an e_machine do)
    for arch_dir in sorted(p for p in FIXTURES.iterdir() if p.is_dir() and p.name != "fuzz-regressions"):
        cores = sorted(arch_dir.glob("*/core.elf")) or sorted(arch_dir.glob("*.kdump"))
        if not cores:
            continue
        data = cores[0].read_bytes()
        for frac, label in ((None, "4097"), (0.5, "half")):
            cut = 4097 if frac is None else int(len(data) * frac)
            img = tmp / f"cut-{arch_dir.name}-{label}{cores[0].suffix}"
            img.write_bytes(data[:cut])
            out.append(Case(f"{arch_dir.name}-core-cut-at-{label}-dump", f"{cores[0].parent.name} cut at {cut} bytes",
                            ["dump", str(img), "-q"], 20, 400, (0, 2, 3, 4, 5)))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-k", metavar="TEXT", help="only cases whose name contains TEXT")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="pagewalk-hostile-") as d:
        todo = [c for c in cases(pathlib.Path(d)) if not args.k or args.k in c.name]
        results = []
        w = max(len(c.name) for c in todo)
        print(f"{'case':{w}}  {'exit':>4}  {'s':>7} {'≤ s':>5}  {'RSS MiB':>8} {'≤ MiB':>6}  result")
        for c in todo:
            r = run(c)
            results.append(r)
            why = "" if r.passed else "  <- " + ("traceback" if r.traceback else f"exit {r.exit} not in {c.exits}"
                                                   if r.exit not in c.exits else "over bound")
            print(f"{c.name:{w}}  {r.exit:4d}  {r.seconds:7.2f} {c.seconds:5.0f}  {r.rss_mib:8.0f} {c.rss_mib:6d}  "
                  f"{'pass' if r.passed else 'FAIL'}{why}", flush=True)
            if not r.passed and r.stderr:
                print(f"{'':{w}}  stderr: {r.stderr[:200]}")
    failed = sum(not r.passed for r in results)
    print(f"{len(results) - failed}/{len(results)} cases within their bounds")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
