"""Hostile inputs for every format reader and every architecture: the fuzz harness's kinds as
hypothesis properties (random tables under every paging mode, raw dumps under random registers
of every architecture, cut and mutated committed cores of every architecture, ELF32 and
big-endian ELF containers, kdump mutations, gdbstub transcripts, note blobs).

Every input goes through fuzz/harness.py's run_one(): dump (text, JSON), checkwx, translate,
translate_many and stats of every view. It must end in a result or a PagewalkError (run_one
returns how it ended); any other exception fails the test. The deep, coverage-guided version of
the same is `fuzz/run.sh` (atheris).
"""

from __future__ import annotations

import io
import pathlib
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "fuzz"))

import harness

from pagewalk.api import dump
from pagewalk.memory import open_image
from pagewalk.memory.elfcore import ElfCoreMemory
from pagewalk.target import resolve

OUTCOMES = {"ok", "error", "output-limit", "empty"}
MODES = harness.modes()
CORES = [i for i in harness.core_infos() if i.path.endswith(".elf")]
KDUMPS = [i for i in harness.core_infos() if i.path.endswith(".kdump")]
FAST = settings(deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


def _core_id(info) -> str:
    return "/".join(pathlib.Path(info.path).parts[-3:-1])


def _run(kind: str, header: dict, body: bytes) -> str:
    """run_one() on an input; a finding already reported (harness.KNOWN_OPEN, a strict xfail in
    test_fuzz_regressions.py until its fix lands) is let through, any other exception fails."""
    try:
        outcome = harness.run_one(harness.encode(kind, header, body))
    except Exception as e:
        if harness.known_finding(e) is None:
            raise
        return "known"
    assert outcome in OUTCOMES
    return outcome


def test_registries_cover_every_architecture():
    """The harness sees every architecture of the kernel registry, and a paging mode of each arch module."""
    from pagewalk.kernel import SUPPORT

    assert harness.arches() == sorted(SUPPORT)
    mode_arches = {m.arch for m in MODES.values()}
    assert {"x86_64", "i386", "arm64"} <= mode_arches and any(a.startswith("riscv") for a in mode_arches)
    for arch in harness.arches():
        names, _ = harness.reg_templates(arch)
        assert names, f"no register names known for {arch}"


@pytest.mark.parametrize("mode_name", list(MODES))
@settings(FAST, max_examples=6)
@given(data=st.binary(min_size=0, max_size=5 * 4096), structure=st.booleans(), root=st.integers(0, 4) | st.just(0))
def test_random_bytes_as_tables_of_every_mode(mode_name, data, structure, root):
    """Random bytes as the tables of any paging mode walk, translate and count without an exception."""
    _run("tables", {"mode": mode_name, "structure": int(structure), "root": root * 4096}, data)


@pytest.mark.parametrize("arch", harness.arches())
@settings(FAST, max_examples=8)
@given(data=st.data(), body=st.binary(min_size=1, max_size=4 * 4096))
def test_raw_dump_under_random_registers_of_every_architecture(arch, data, body):
    """A raw dump under random or mutated registers of any architecture resolves, dumps and checks, or says why not."""
    names, sets = harness.reg_templates(arch)
    template = data.draw(st.sampled_from(sets)) if sets else {}
    header: dict = {"arch": arch, "base": data.draw(st.sampled_from([0, 0x1000, 0x40000000, 0x80000000]))}
    for name in names:
        how = data.draw(st.sampled_from(["absent", "template", "flip", "random", "small"]))
        if how == "template" and name in template:
            header[f"reg.{name}"] = template[name]
        elif how == "flip" and name in template:
            header[f"reg.{name}"] = template[name] ^ (1 << data.draw(st.integers(0, 63)))
        elif how == "random":
            header[f"reg.{name}"] = data.draw(st.integers(0, 2**64 - 1))
        elif how == "small":
            header[f"reg.{name}"] = data.draw(st.integers(0, 4)) * 4096
    _run("raw", header, body)


@pytest.mark.parametrize("info", CORES + KDUMPS, ids=_core_id)
@settings(FAST, max_examples=5)
@given(data=st.data())
def test_cut_and_mutated_cores_of_every_architecture(info, data):
    """A committed core cut at any byte, or with bytes overwritten in its headers, notes or tables, never crashes."""
    raw = bytearray(pathlib.Path(info.path).read_bytes())
    if data.draw(st.booleans()):
        raw = raw[: data.draw(st.integers(1, len(raw)))]
    for _ in range(data.draw(st.integers(0, 8))):
        # headers and notes live in the first pages: bias the mutations there
        hi = len(raw) if data.draw(st.booleans()) else min(len(raw), 8192)
        at = data.draw(st.integers(0, hi - 1))
        val = data.draw(st.binary(min_size=1, max_size=8))
        raw[at : at + len(val)] = val
    _run("image", harness.image_header(info), bytes(raw))


@pytest.mark.parametrize("info", CORES, ids=_core_id)
def test_elf32_and_byte_swapped_containers_hold_the_same_memory(info, tmp_path):
    """A core rewritten as ELF32, or with its headers in the other byte order, describes the same physical memory."""
    data = pathlib.Path(info.path).read_bytes()
    with open_image(info.path) as ref:
        want = ref.runs()
        probe = [(a, min(b - a, 4096)) for a, b in want[:8]]
        want_bytes = [ref.read(a, n) for a, n in probe]
        little = ref.little_endian
    for tag, fn in (("elf32", harness.elf64_to_elf32), ("swapped", harness.elf_swap_endian)):
        v = fn(data)
        if v is None:
            continue
        path = tmp_path / f"{tag}.elf"
        path.write_bytes(v)
        with ElfCoreMemory(str(path)) as mem:
            assert mem.runs() == want, tag
            assert [mem.read(a, n) for a, n in probe] == want_bytes, tag
            assert mem.little_endian == (little if tag == "elf32" else not little)


@pytest.mark.parametrize("info", [i for i in CORES if i.arch in ("x86_64", "i386")][:3], ids=_core_id)
def test_elf32_container_dumps_like_the_original(info, tmp_path):
    """An x86 core as ELF32 (as QEMU writes 32-bit guests) gives the same dump as the ELF64 original."""
    v = harness.elf64_to_elf32(pathlib.Path(info.path).read_bytes())
    if v is None:
        pytest.skip("segments above 4 GiB: no ELF32 form")
    path = tmp_path / "core32.elf"
    path.write_bytes(v)
    outs = []
    for p in (info.path, str(path)):
        with open_image(p) as mem:
            out = io.StringIO()
            dump(resolve(mem, arch=info.arch), "kernel", out)
            outs.append(out.getvalue())
    assert outs[0] == outs[1] and outs[0]


@pytest.mark.parametrize("variant", ["elf32", "swapped"])
@settings(FAST, max_examples=10)
@given(data=st.data())
def test_cut_and_mutated_elf32_and_byte_swapped_cores(variant, data):
    """ELF32 cores and cores in the other byte order, cut and mutated, end in a result or one error."""
    info = data.draw(st.sampled_from(CORES))
    fn = harness.elf64_to_elf32 if variant == "elf32" else harness.elf_swap_endian
    v = fn(pathlib.Path(info.path).read_bytes())
    if v is None:
        return
    raw = bytearray(v[: data.draw(st.integers(1, len(v)))])
    for _ in range(data.draw(st.integers(0, 6))):
        at = data.draw(st.integers(0, min(len(raw), 4096) - 1))
        raw[at] = data.draw(st.integers(0, 255))
    _run("image", harness.image_header(info), bytes(raw))


TRANSCRIPTS = [harness.gdb_transcript(), harness.gdb_transcript(noack=True, rle=True)]


def test_gdb_transcript_replays_the_recorded_dump():
    """A recorded gdbstub transcript (acks or no-ack mode, plain or run-length encoded replies)
    replays to a result, whatever the pieces the socket delivers it in."""
    for transcript in TRANSCRIPTS:
        assert transcript.startswith(b"+$")
        for chunk in (1, 7, 4096):
            assert _run("gdb", {"chunk": chunk}, transcript) == "ok"


@settings(FAST, max_examples=30)
@given(data=st.data())
def test_mutated_gdb_transcripts(data):
    """A gdbstub saying cut, corrupted or garbage packets ends in a result or one error, never a hang."""
    t = bytearray(data.draw(st.sampled_from(TRANSCRIPTS)))
    if data.draw(st.booleans()):
        t = t[: data.draw(st.integers(0, len(t)))]
    for _ in range(data.draw(st.integers(0, 10))):
        if not t:
            break
        at = data.draw(st.integers(0, len(t) - 1))
        t[at : at + 1] = data.draw(st.sampled_from([b"$", b"#", b"}", b"*", b"x", b"\xff", b"", b"E01", b"l<"]))
    _run("gdb", {"chunk": data.draw(st.integers(1, 64))}, bytes(t))


@pytest.mark.parametrize("arch", harness.arches())
@settings(FAST, max_examples=10)
@given(data=st.data())
def test_random_notes_and_vmcoreinfo_for_every_architecture(arch, data):
    """Note blobs with wrong sizes and VMCOREINFO with odd values parse and resolve, or raise one error."""
    keys = ["OSRELEASE", "PAGESIZE", "SYMBOL(init_top_pgt)", "NUMBER(phys_base)", "SYMBOL(swapper_pg_dir)",
            "NUMBER(kimage_voffset)", "NUMBER(TCR_EL1_T1SZ)", "NUMBER(VA_BITS)", "KERNELOFFSET",
            "NUMBER(pgtable_l5_enabled)", "CONFIG_X86_PAE", "NUMBER(MAX_PHYSMEM_BITS)"]
    lines = []
    for k in data.draw(st.lists(st.sampled_from(keys), max_size=8)):
        v = data.draw(st.sampled_from(["0", "1", "16", "64", "4096", "c0000000", "ffffffff80000000", "zz", "", "-1",
                                       "6.12.0", "99999999999999999999999"]))
        lines.append(f"{k}={v}")
    vi = ("\n".join(lines) + "\n").encode()
    blob = bytearray(harness.struct.pack("<III", 11, len(vi), 0) + b"VMCOREINFO\0\0" + vi + bytes(-len(vi) % 4))
    if data.draw(st.booleans()):  # a wrong size field
        at = data.draw(st.sampled_from([0, 4]))
        blob[at : at + 4] = data.draw(st.integers(0, 2**32 - 1)).to_bytes(4, "little")
    blob += data.draw(st.binary(max_size=64))
    _run("notes", {"arch": arch, "big": int(data.draw(st.booleans()))}, bytes(blob))


def test_seed_inputs_of_every_kind_pass():
    """Seeds of every kind of the deep fuzzer (the first three of each) end in a result or an error."""
    per_kind: dict[str, int] = {}
    for name, data in harness.seed_inputs():
        kind = harness.decode(data)[0]
        per_kind[kind] = per_kind.get(kind, 0) + 1
        if per_kind[kind] <= 3:
            assert harness.run_one(data) in OUTCOMES, name
    assert set(per_kind) == set(harness.KINDS)


def test_structured_tables_point_inside_the_image():
    """structure=1 turns random words into table entries the mode's own classify() follows (the walk goes deep)."""
    from pagewalk.mode import Kind

    for name, mode in MODES.items():
        fmts = harness.entry_formats().get(mode.arch)
        if fmts is None or mode.entry_bytes != 8:
            continue
        try:
            probe = np.array([[fmts(mode)[0](0x1000)] * mode.levels[0].entries], dtype=np.uint64).astype(mode.dtype)
        except ValueError:
            continue  # level-dependent table entries (s390): structure=1 keeps such words as they are
        if not (mode.classify(0, probe)[0] == Kind.TABLE).all():
            continue  # the builder's table entries are for other levels of this mode (s390 region/segment types)
        body = np.arange(1, 513, dtype=np.uint64) * np.uint64(4) + np.uint64(1)  # low bits 01: table entries
        out = harness.structure_tables(mode, body.astype(mode.dtype).tobytes(), 4)
        kind, _ = mode.classify(0, np.frombuffer(out[: 8 * 512], dtype=mode.dtype).reshape(1, -1)[:, : mode.levels[0].entries])
        assert (kind == Kind.TABLE).any(), name
