"""Hostile tables on every architecture: bombs, loops, wrong roots and wrong modes finish, bounded
by the distinct tables, and make the problem visible (stats' reserved and missing counts).

The modes come from fuzz/harness.py's registry (every `pagewalk.arch` module, its `make_mode`
factory, the modes of the committed cores) and the entry encoders from tests/builders*.py, so an
architecture added later is covered by the same tests. Time and memory bounds of the same cases
as whole `pagewalk` processes are checked by bench/hostile.py, not here.
"""

from __future__ import annotations

import io
import pathlib
import sys

import numpy as np
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "fuzz"))

import harness

from pagewalk.analysis.stats import stats
from pagewalk.api import checkwx, dump
from pagewalk.errors import PagewalkError
from pagewalk.memory import open_image
from pagewalk.memory.write import write_elf_core
from pagewalk.mode import HwKind, Kind, PagingMode
from pagewalk.runs import discover, root_runs
from pagewalk.target import Target, resolve
from pagewalk.translate import translate, translate_many

FORMATS = harness.entry_formats()
LEAF_FLAG_CANDIDATES = (0x1, 0x3, 0x7, 0x63, 0x403, 0x443, 0x4F, 0xC3, 0xF, 0x1F, 0x0, 0x2, 0x400, 0x800)


def _table_bytes(mode: PagingMode, i: int) -> int:
    return mode.levels[i].entries * mode.entry_bytes


def _encoders(mode: PagingMode):
    """(table entry maker, a valid leaf maker for the last level) or None where the tests have no encoder."""
    fmts = FORMATS.get(mode.arch)
    if fmts is None:
        return None
    make_table, make_leaf = fmts(mode)
    last = len(mode.levels) - 1
    for flags in LEAF_FLAG_CANDIDATES:
        try:
            e = make_leaf(last, 0x5000, flags)
        except Exception:  # noqa: BLE001 - an encoder refusing flags it has no use for
            continue
        arr = np.array([[e]], dtype=np.uint64).astype(mode.dtype)
        if mode.classify(last, arr)[0][0, 0] == Kind.LEAF and mode.hw_classify(last, arr)[0][0, 0] == HwKind.LEAF:
            return make_table, (lambda pa, f=flags: make_leaf(last, pa, f))
    return None


def _place(mode: PagingMode) -> list[int]:
    """PAs of one table per level, each aligned to its own size and to a page."""
    pas, at = [], 0x10000
    for i in range(len(mode.levels)):
        size = max(_table_bytes(mode, i), 4096)
        at = (at + size - 1) // size * size
        pas.append(at)
        at += size
    return pas


def _image(mode: PagingMode, tables: dict[int, np.ndarray], tmp_path, name="img") -> object:
    end = max(pa + len(t) * mode.entry_bytes for pa, t in tables.items())
    buf = bytearray((end + 4095) // 4096 * 4096)
    for pa, t in tables.items():
        b = np.asarray(t, dtype=np.uint64).astype(mode.dtype).tobytes()
        buf[pa : pa + len(b)] = b
    path = tmp_path / f"{name}.raw"
    path.write_bytes(bytes(buf))
    return open_image(str(path), "raw", 0)


def _bomb_modes() -> list[str]:
    out = []
    for name, mode in harness.modes().items():
        enc = _encoders(mode)
        if enc is None:
            continue
        make_table, _ = enc
        pas = _place(mode)
        ok = True
        for i in range(len(mode.levels) - 1):  # the encoder's table entry is a table at every upper level
            try:
                arr = np.array([[make_table(pas[i + 1])]], dtype=np.uint64).astype(mode.dtype)
            except Exception:  # noqa: BLE001 - level-dependent entries (s390): the arch's own tests build them
                ok = False
                break
            if mode.classify(i, arr)[0][0, 0] != Kind.TABLE:
                ok = False
        if ok:
            out.append(name)
    return out


BOMB_MODES = _bomb_modes()


def _bomb(mode: PagingMode, fanout: int | None = None, varied: bool = False):
    """Every entry (or the first `fanout`) of each table points at the one table of the next level."""
    make_table, make_leaf = _encoders(mode)
    pas = _place(mode)
    tables = {}
    for i in range(len(mode.levels) - 1):
        n = mode.levels[i].entries
        t = np.zeros(n, np.uint64)
        t[: fanout or n] = make_table(pas[i + 1])
        tables[pas[i]] = t
    n = mode.levels[-1].entries
    leaf = [make_leaf(0x200000 + (k % 2 if varied else 0) * 0x1000) for k in range(n)]
    tables[pas[-1]] = np.array(leaf, dtype=np.uint64)
    return tables, pas


def test_every_registered_arch_with_encoders_has_bomb_modes():
    """The bomb tests cover x86-64 (4/5-level), i386, arm64 and riscv modes at least."""
    arches = {harness.modes()[n].arch for n in BOMB_MODES}
    assert {"x86_64", "i386", "arm64"} <= arches
    assert any(a.startswith("riscv") for a in arches)


@pytest.mark.parametrize("mode_name", BOMB_MODES)
def test_uniform_bomb_costs_one_table_per_level(mode_name, tmp_path):
    """A bomb (every entry of every table points at the next table, entries^levels leaves) reads one
    table per level and folds into a handful of runs; translate and stats finish too."""
    mode = harness.modes()[mode_name]
    tables, pas = _bomb(mode)
    with _image(mode, tables, tmp_path) as mem:
        lts = discover(mem, mode, pas[0])
        # one table per level (two where a mode pairs tables, as arm's short descriptors do)
        assert all(1 <= len(lt.pas) <= 2 for lt in lts)
        runs = root_runs(mem, mode, pas[0])
        # proportional to the distinct tables' entries, not to the entries^levels leaves
        assert 1 <= len(runs) <= sum(len(lt.pas) * lv.entries for lt, lv in zip(lts, mode.levels))
        va = mode.canonical_va(mode.top_span - mode.levels[-1].entry_span)
        tr = translate(mem, mode, pas[0], va)
        assert tr.ok and len(tr.steps) == len(mode.levels)
        pa, _, ok = translate_many(mem, mode, pas[0], np.array([va, mode.canonical_va(0)], np.uint64))
        assert ok.all() and int(pa[0]) == tr.pa
        s = _stats(Target(mem, mode, {"kernel": pas[0]}), "kernel")
        if s is not None:
            assert [lv.tables for lv in s.levels] == [len(lt.pas) for lt in lts]


@pytest.mark.parametrize("mode_name", BOMB_MODES)
def test_bomb_with_varied_leaves_is_bounded(mode_name, tmp_path):
    """A bomb whose shared last-level table alternates two leaves expands per reference; with a small
    fan-out the walk finishes with the expected number of distinct tables (or is refused as a bomb)."""
    mode = harness.modes()[mode_name]
    tables, pas = _bomb(mode, fanout=2, varied=True)
    with _image(mode, tables, tmp_path) as mem:
        assert all(1 <= len(lt.pas) <= 2 for lt in discover(mem, mode, pas[0]))
        try:
            runs = root_runs(mem, mode, pas[0])
        except PagewalkError as e:
            assert "bomb" in str(e)
        else:
            refs = 2 ** (len(mode.levels) - 1)
            assert len(runs) >= refs  # every reference of the shared table shows its alternation


def _same_shaped_levels(mode_name: str) -> bool:
    """Every level's table has the root's size: a loop back to the root is a table of each level's shape."""
    mode = harness.modes()[mode_name]
    return all(_table_bytes(mode, i) == _table_bytes(mode, 0) for i in range(len(mode.levels)))


@pytest.mark.parametrize("mode_name", [m for m in BOMB_MODES if _same_shaped_levels(m)])
def test_loop_back_to_the_root_terminates(mode_name, tmp_path):
    """A root whose entries all point back at itself is read once per level, and translation stops at the last level."""
    mode = harness.modes()[mode_name]
    make_table, _ = _encoders(mode)
    pas = _place(mode)
    root = pas[0]
    t = np.full(mode.levels[0].entries, make_table(root), np.uint64)
    with _image(mode, {root: t}, tmp_path) as mem:
        lts = discover(mem, mode, root)
        assert all(len(lt.pas) <= 1 for lt in lts)
        root_runs(mem, mode, root)
        tr = translate(mem, mode, root, mode.canonical_va(0))
        assert len(tr.steps) <= len(mode.levels)


# -- wrong roots and wrong modes on the committed cores of every architecture ----------------------

CORES = [i for i in harness.core_infos() if i.path.endswith(".elf") and i.roots and i.modes]
CODE_PAGE = bytes.fromhex("554889e54157415641554154534883ec28488b47") * 205  # x86 prologues, as kernel text
TEXT_PAGE = (b"Linux version 6.12.0 (debian-kernel@lists.debian.org) #1 SMP PREEMPT_DYNAMIC\n" * 60)[:4096]


def _core_id(info) -> str:
    return "/".join(pathlib.Path(info.path).parts[-3:-1])


def _with_bad_root(info, page: bytes, tmp_path) -> tuple[object, int]:
    """The core rewritten with one more page holding `page` (64 KiB for big-granule roots), above its memory."""
    with open_image(info.path) as mem:
        chunks = [(a, mem.read(a, b - a)) for a, b in mem.runs()]
        notes = list(mem.cpu.notes)
        little = getattr(mem, "little_endian", True)
        arch = mem.cpu.arch
        top = max(b for _, b in mem.runs())
    size = max(_table_bytes(m, 0) for m in info.modes)
    bad = (top + 0x10000 + 0xFFFF) & ~0xFFFF
    filler = (page * (size // len(page) + 1))[: max(size, len(page))]
    path = tmp_path / "bad-root.elf"
    write_elf_core(str(path), {"aarch64": "arm64"}.get(arch, arch or ""), little, notes, chunks + [(bad, filler)])
    return open_image(str(path)), bad


def _finish(target, view: str = "kernel") -> tuple[str, object]:
    out = io.StringIO()
    dump(target, view, out)
    checkwx(target)
    mode = target.mode_for(view)
    translate(target.mem, mode, target.root(view), mode.canonical_va(mode.top_span - 4096))
    return out.getvalue(), _stats(target, view)


def _stats(target, view: str = "kernel"):
    """stats() of a view, None where the analyses do not know the architecture's bits yet."""
    from pagewalk.analysis.mappings import arch_bits

    try:
        arch_bits(target.mode_for(view))
    except PagewalkError:
        return None
    return stats(target, view)


def _random_page(seed: int) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, 65536, dtype=np.uint8).tobytes()


@pytest.mark.parametrize("info", CORES, ids=_core_id)
@pytest.mark.parametrize("what", ["zeros", "random", "text", "code"])
def test_a_root_that_is_not_a_page_table(info, what, tmp_path):
    """A root holding zeros, random bytes, ASCII text or machine code is walked to the end; a zero
    root maps nothing, and every valid entry the MMU would fault on is counted as reserved."""
    page = {"zeros": bytes(4096), "random": _random_page(1), "text": TEXT_PAGE, "code": CODE_PAGE}[what]
    mem, bad = _with_bad_root(info, page, tmp_path)
    with mem:
        try:
            target = resolve(mem, arch=info.arch)
        except PagewalkError as e:
            pytest.skip(f"the rewritten core does not resolve: {e}")
        for view in list(target.roots):
            target.roots[view] = bad
        text, st_ = _finish(target)
        mode = target.mode
        root = np.frombuffer(mem.read(bad, _table_bytes(mode, 0)), dtype=mode.dtype)[None, :]
        hwk, _ = mode.hw_classify(0, root.astype(np.uint64))
        if st_ is None:
            return  # the analyses do not count this architecture's entries yet: finishing is what is checked
        if what == "zeros":
            assert st_.mapped_bytes == 0 and st_.levels[0].entries["reserved"] == 0
        else:
            # the reserved count of the root level is exactly what the MMU faults on among valid entries
            from pagewalk.analysis.mappings import arch_bits

            valid = arch_bits(mode).valid.for_level(0, len(mode.levels))
            assert st_.levels[0].entries["reserved"] == int(((hwk[0] == HwKind.FAULT) & valid(root[0].astype(np.uint64))).sum())


def _deeper_modes(info) -> list[PagingMode]:
    """Modes of the same architecture, entry size and granule with more levels than the core's."""
    mode = info.modes[0]
    out = []
    for m in harness.modes().values():
        if (m.arch == mode.arch and m.entry_bytes == mode.entry_bytes and len(m.levels) > len(mode.levels)
                and m.levels[-1].shift == mode.levels[-1].shift and m.byteorder == mode.byteorder
                and m.levels[0].entries >= mode.levels[0].entries):
            out.append(m)
    return out


WRONG_MODE_CASES = [(i, m) for i in CORES for m in _deeper_modes(i)[:2]]


@pytest.mark.parametrize("info,mode", WRONG_MODE_CASES, ids=[f"{_core_id(i)}-as-{m.name}" for i, m in WRONG_MODE_CASES])
def test_root_read_with_too_many_levels_is_visible(info, mode):
    """A core's root read with more levels than it has (4-level as 5-level, Sv39 as Sv57, 48-bit as
    52-bit) finishes, and stats shows what is wrong: reserved entries, missing tables or a different map."""
    with open_image(info.path) as mem:
        target = resolve(mem, arch=info.arch)
        view = "kernel"
        right = _stats(target, view)
        wrong_target = Target(mem, mode, {view: target.root(view)})
        s = _stats(wrong_target, view)
        root_runs(mem, mode, target.root(view))
        translate(mem, mode, target.root(view), mode.canonical_va(mode.top_span - 4096))
        if s is None or right is None:
            return  # finishing is what is checked where the analyses do not know the bits yet
        reserved = sum(lv.entries["reserved"] for lv in s.levels)
        missing = sum(lv.tables_missing for lv in s.levels)
        right_reserved = sum(lv.entries["reserved"] for lv in right.levels)
        right_missing = sum(lv.tables_missing for lv in right.levels)
        assert (reserved > right_reserved or missing > right_missing
                or s.intervals != right.intervals or s.mapped_bytes != right.mapped_bytes)


def test_x86_4level_root_as_5level_counts_reserved_entries():
    """The 6.1 KASLR 4-level capture read as 5-level: PUD-level entries with PS set land where the MMU
    wants a P4D or PUD without it, and stats counts them as reserved; the right mode counts none."""
    path = harness.FIXTURES / "x86_64" / "6.1-kaslr-4level" / "core.elf"
    with open_image(str(path)) as mem:
        base = resolve(mem)
        wrong = resolve(mem, regs={"cr4": mem.cpu.regs["cr4"] | (1 << 12)})
        assert wrong.mode.name == "x86_64-5level"
        r = stats(base, "kernel")
        w = stats(wrong, "kernel")
        assert sum(lv.entries["reserved"] for lv in r.levels) == 0
        assert sum(lv.entries["reserved"] for lv in w.levels) > 0
        assert w.intervals["fault"] > 0 and r.intervals["fault"] == 0


def test_riscv_sv39_root_as_sv57_counts_reserved_entries():
    """The Sv39 capture read as Sv57 (satp MODE 10): leaves land at non-leaf levels with bits the
    MMU reserves there, and stats counts them; read as Sv39 it counts none."""
    path = harness.FIXTURES / "riscv64" / "sv39" / "core.elf"
    with open_image(str(path)) as mem:
        satp = mem.cpu.regs["satp"]
        right = stats(resolve(mem), "kernel")
        wrong = stats(resolve(mem, regs={"satp": (satp & ~(0xF << 60)) | (10 << 60)}), "kernel")
        assert sum(lv.entries["reserved"] for lv in right.levels) == 0
        assert sum(lv.entries["reserved"] for lv in wrong.levels) > 0


# -- entries the MMU faults on, per architecture: counted by stats, named by translate ---------------

def _chain(mode: PagingMode, level: int, entry: int, tmp_path):
    """Tables from the root down to `level`, index 0 at each, with `entry` at index 0 of `level`."""
    make_table, _ = FORMATS[mode.arch](mode)
    pas = _place(mode)
    tables = {}
    for i in range(level):
        t = np.zeros(mode.levels[i].entries, np.uint64)
        t[0] = make_table(pas[i + 1])
        tables[pas[i]] = t
    t = np.zeros(mode.levels[level].entries, np.uint64)
    t[0] = entry
    tables[pas[level]] = t
    return _image(mode, tables, tmp_path), pas[0]


RESERVED_CASES = [
    # (mode, level, entry, manual): valid entries the hardware rejects
    ("x86_64-4level", 0, 0x2000 | 0x83, "SDM vol. 3A table 4-15: PS is reserved (must be 0) in a PML4E"),
    ("x86_64-5level", 0, 0x2000 | 0x83, "SDM vol. 3A table 4-13: PS is reserved in a PML5E"),
    ("sv39", 0, (0x80000 << 10) | 0x5, "RISC-V privileged §10.3.2: W=1 with R=0 is reserved"),
    ("sv57", 0, 0x7 | (1 << 55), "RISC-V privileged §10.4: bits 60:54 reserved"),
    ("arm64-4k-48bit-4level-ttbr1", 3, 0x40000000 | 0x1 | (1 << 10), "Arm ARM D8.3: 0b01 at level 3 is reserved"),
]


@pytest.mark.parametrize("mode_name,level,entry,manual", RESERVED_CASES, ids=[c[0] for c in RESERVED_CASES])
def test_reserved_encodings_are_counted_per_architecture(mode_name, level, entry, manual, tmp_path):
    """One valid entry the MMU rejects (reserved bits or encoding) is counted as reserved by stats at its
    level, and translate stops there with a fault naming it, as the hardware would."""
    mode = harness.modes()[mode_name]
    mem, root = _chain(mode, level, entry, tmp_path)
    with mem:
        s = stats(Target(mem, mode, {"kernel": root}), "kernel")
        assert [lv.entries["reserved"] for lv in s.levels] == [int(i == level) for i in range(len(mode.levels))], manual
        tr = translate(mem, mode, root, mode.canonical_va(0))
        assert not tr.ok and len(tr.steps) == level + 1 and tr.steps[-1].kind == "fault"
        assert tr.fault.startswith(f"{mode.levels[level].name} entry {entry:#018x}"), manual
