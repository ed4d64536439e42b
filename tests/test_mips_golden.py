"""mips64 against the kernel: the oracle module's listing of init_mm's PTEs (Debian 6.1 5kc-malta).

MIPS has no ptdump; `tests/fixtures/mips64/*/ptdump_kernel.txt` lists every non-zero PTE of the
vmalloc, module and fixmap ranges as the kernel's own helpers decode it (tools/make_mips64_fixtures.sh).
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest

from pagewalk.arch import mips
from pagewalk.memory import open_image
from pagewalk.ptdump import generic
from pagewalk.runs import root_runs
from pagewalk.target import read_kallsyms, resolve
from pagewalk.translate import translate, translate_many

FIX = Path(__file__).parent / "fixtures" / "mips64"
CASES = sorted(p.name for p in FIX.iterdir() if (p / "core.elf").exists()) if FIX.exists() else []
COLUMNS = ("present", "write", "dirty", "young", "global", "noexec", "noread")


def listing(case: str) -> tuple[dict[str, int], list[dict]]:
    """The module's header (key=value) and its PTE lines."""
    hdr: dict[str, int] = {}
    rows = []
    for line in (FIX / case / "ptdump_kernel.txt").read_text().splitlines():
        if line.startswith("#"):
            # counts and shifts are printed in decimal, addresses and masks in hex
            hdr.update({k: int(v, 10 if k.endswith("SHIFT") or k.startswith("PTRS_PER") else 16)
                        for k, v in re.findall(r"(\w+)=([0-9a-f]+)\b", line)})
            continue
        f = line.split()
        if len(f) == 11:
            rows.append({"va": int(f[0], 16), "pte": int(f[1], 16), "pfn": int(f[2], 16),
                         **{c: f[3 + i] == "1" for i, c in enumerate(COLUMNS)}, "cache": int(f[10], 16)})
    return hdr, rows


def target_of(case: str, **kw):
    kallsyms = read_kallsyms(str(FIX / case / "kallsyms.txt"))
    return resolve(open_image(str(FIX / case / "core.elf")), arch="mips64", kallsyms=kallsyms, **kw)


@pytest.mark.parametrize("case", CASES)
def test_config_bits_equal_the_kernels_header(case):
    """The default configuration's geometry and _PAGE_* masks are those the kernel printed."""
    hdr, _ = listing(case)
    t = target_of(case)
    b = t.mode.extra["bits"]
    for name in ("_PAGE_PRESENT", "_PAGE_WRITE", "_PAGE_ACCESSED", "_PAGE_MODIFIED", "_PAGE_HUGE", "_PAGE_SPECIAL",
                 "_PAGE_GLOBAL", "_PAGE_VALID", "_PAGE_DIRTY", "_CACHE_MASK", "_PAGE_NO_EXEC", "_PAGE_NO_READ"):
        assert b[name] == hdr[name], name
    assert b["PFN_PTE_SHIFT"] == hdr["_PFN_SHIFT"]
    assert [lvl.entries for lvl in t.mode.levels] == [hdr["PTRS_PER_PGD"], hdr["PTRS_PER_PMD"], hdr["PTRS_PER_PTE"]]
    assert [lvl.shift for lvl in t.mode.levels] == [hdr["PGDIR_SHIFT"], hdr["PMD_SHIFT"], hdr["PAGE_SHIFT"]]
    assert t.roots["kernel"] == hdr["pgd_pa"]
    assert t.layout["invalid_tables"] == {"pmd": hdr["invalid_pmd_table"], "pte": hdr["invalid_pte_table"]}
    assert t.layout["sections"][0][:2] == (hdr["VMALLOC_START"], hdr["VMALLOC_END"])


@pytest.mark.parametrize("case", CASES)
def test_every_listed_pte_decodes_as_the_kernel_does(case):
    """Each listed PTE is the entry pagewalk reaches for its VA and decodes to the kernel's pfn and flags."""
    _, rows = listing(case)
    assert len(rows) > 100
    t = target_of(case)
    entries = []
    for r in rows:
        tr = translate(t.mem, t.mode, t.roots["kernel"], r["va"])
        step = tr.steps[-1]
        assert step.level == "pte", (hex(r["va"]), tr.fault)
        entries.append(step.entry)
        if r["present"]:
            assert tr.ok and tr.pa == r["pfn"] << 12
    assert entries == [r["pte"] for r in rows]
    d = mips.decode_ptes(t.mode, np.array(entries, dtype=np.uint64))
    for key in ("pfn", "cache") + COLUMNS:
        assert d[key].tolist() == [r[key] for r in rows], key


@pytest.mark.parametrize("case", CASES)
def test_dump_covers_exactly_the_present_listed_pages(case):
    """The generic dump's lines cover every present listed page once and nothing else."""
    _, rows = listing(case)
    t = target_of(case)
    lines = generic.lines_of(t.mode, root_runs(t.mem, t.mode, t.roots["kernel"]), t.layout["sections"])
    covered: list[int] = []
    for ln in lines:
        assert not ln.missing and ln.level == "pte"
        covered += range(ln.start, ln.end, 4096)
    assert len(covered) == len(set(covered))
    assert set(covered) == {r["va"] for r in rows if r["present"]}
    # every line's flags are the kernel's bit names of its first PTE
    by_va = {r["va"]: r for r in rows}
    for ln in lines:
        assert ln.entry == by_va[ln.start]["pte"]
        assert ("WRITE" in ln.flags) == by_va[ln.start]["write"]
        assert "PRESENT" in ln.flags and "GLOBAL" in ln.flags


@pytest.mark.parametrize("case", CASES)
def test_text_and_json_agree(case):
    """The text lines and the JSON records describe the same ranges, sizes and flags."""
    t = target_of(case)
    buf = io.StringIO()
    n = t.kernel.dump(t, "kernel", buf, "text")
    text = [ln for ln in buf.getvalue().splitlines() if ln.startswith("0x")]
    assert n == len(text) > 0
    buf = io.StringIO()
    t.kernel.dump(t, "kernel", buf, "json")
    doc = json.loads(buf.getvalue())
    assert doc["schema"] == "pagewalk.dump" and doc["arch"] == "mips64" and doc["mode"] == "mips64-4k"
    assert len(doc["ranges"]) == n
    for line, rec in zip(text, doc["ranges"]):
        span, _size, level, *flags = line.split()
        assert span == f"{rec['start']:#018x}-{rec['end'] % (1 << 64):#018x}"
        assert level == rec["level"] and flags == rec["flags"]
        assert rec["size"] == rec["end"] - rec["start"]


@pytest.mark.parametrize("case", CASES)
def test_translate_many_equals_translate_on_vmalloc(case):
    """translate_many() gives translate()'s answers for the listed XKSEG (vmalloc) addresses."""
    _, rows = listing(case)
    t = target_of(case)
    vas = [r["va"] + 0x10 for r in rows if r["va"] < mips.CKSSEG]
    pas, sizes, ok = translate_many(t.mem, t.mode, t.roots["kernel"], np.array(vas, np.uint64))
    for i, va in enumerate(vas):
        tr = translate(t.mem, t.mode, t.roots["kernel"], va)
        assert bool(ok[i]) == tr.ok
        if tr.ok:
            assert int(pas[i]) == tr.pa and int(sizes[i]) == 4096


@pytest.mark.parametrize("case", CASES)
def test_root_from_register_and_detected_empty_tables(case):
    """Without kallsyms, --reg pgd (a CKSEG0 address) and the detected invalid tables give the same dump."""
    hdr, _ = listing(case)
    with_syms = target_of(case)
    mem = open_image(str(FIX / case / "core.elf"))
    t = resolve(mem, arch="mips64", regs={"pgd": hdr["pgd"]})
    assert t.roots == with_syms.roots
    assert t.layout["invalid_tables"] == with_syms.layout["invalid_tables"]
    assert any("detected" in n for n in t.notes)
    a, b = io.StringIO(), io.StringIO()
    t.kernel.dump(t, "kernel", a)
    with_syms.kernel.dump(with_syms, "kernel", b)
    assert a.getvalue() == b.getvalue()
    t2 = resolve(mem, arch="mips64el", regs={"pgd": hdr["pgd_pa"]})
    assert t2.roots == with_syms.roots


@pytest.mark.parametrize("case", CASES)
def test_root_found_by_scanning_without_register_or_symbols(case):
    """With neither --reg pgd nor --kallsyms, swapper_pg_dir is found by scanning and said in a note."""
    hdr, _ = listing(case)
    mem = open_image(str(FIX / case / "core.elf"))
    assert mem.cpu.regs.pop("pgd") == hdr["pgd"]  # the register `extract --reg pgd=…` stored
    t = resolve(mem, arch="mips64")
    assert t.roots["kernel"] == hdr["pgd_pa"]
    assert any("guessed" in n for n in t.notes)


@pytest.mark.parametrize("case", CASES)
def test_empty_tables_inferred_when_the_core_lacks_them(case, tmp_path):
    """A core without invalid_pmd/pte_table's pages (what `extract` keeps) still knows them: same dump."""
    from pagewalk.memory.write import write_elf_core

    hdr, _ = listing(case)
    full = open_image(str(FIX / case / "core.elf"))
    drop = {hdr["invalid_pmd_table"] - 0xFFFFFFFF80000000, hdr["invalid_pte_table"] - 0xFFFFFFFF80000000}
    chunks = [(pa, full.read(pa, 4096)) for a, b in full.runs() for pa in range(a, b, 4096) if pa not in drop]
    path = str(tmp_path / "core.elf")
    write_elf_core(path, "mips64", True, full.cpu.notes, chunks)
    t = resolve(open_image(path), arch="mips64")
    ref = target_of(case)
    assert t.layout["invalid_tables"] == ref.layout["invalid_tables"]
    a, b = io.StringIO(), io.StringIO()
    t.kernel.dump(t, "kernel", a)
    ref.kernel.dump(ref, "kernel", b)
    assert a.getvalue() == b.getvalue()
