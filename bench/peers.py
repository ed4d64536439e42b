#!/usr/bin/env python3
"""Run one peer of pagewalk over one synthetic image, as a whole process, and check its answer.

    bench/out/peers-venv/bin/python bench/peers.py vol3 IMAGE    # volatility3 Intel32e.mapping()
    bench/out/peers-venv/bin/python bench/peers.py drgn IMAGE    # drgn follow_phys per probe leaf

IMAGE is a raw image made by gen_synth.py; IMAGE.json (ground truth) and IMAGE.probe.u64 sit
next to it. Prints one JSON object on stdout: the tool, its version, the counters it produced,
the checks against the ground truth (each "ok" or "WRONG") and the in-process walk time.
bench/run.py times the whole process. Runs in bench/out/peers-venv (bench/requirements-peers.txt),
never in pagewalk's venv.

volatility3: the layers are built by hand, as a plugin's automagic would: a FileLayer over the
raw file and an Intel32e layer on it with page_map_offset = CR3. Intel32e.mapping() yields
(offset, length, mapped_offset, ...) merged over VA- and PA-contiguous pages, which is the
ground truth's `runs_vphys` rule, so its run count, the 4K pages it covers and checksum_vphys
must all match. volatility3 has no 5-level (LA57) Intel layer: 5-level images are "n/a".

drgn: a Program for x86-64 with the raw file as its physical memory and a custom Linux-kernel
target (Program.set_linux_kernel_custom) whose VMCOREINFO names a swapper_pg_dir that drgn
resolves straight to CR3 (SYMBOL(swapper_pg_dir) + NUMBER(phys_base) - __START_KERNEL_map =
CR3), so drgn walks the image's own tables, 4- or 5-level (NUMBER(pgtable_l5_enabled)). drgn has
no public "walk every mapping" call: it translates the probe's leaf VAs one by one with
follow_phys (the libdrgn helper behind drgn.helpers.linux.mm.follow_phys, which wants a
struct mm_struct we do not have). That is an easier task than a full walk: drgn is handed the
leaves instead of finding them.
"""

from __future__ import annotations

import json
import mmap
import sys
import time

import numpy as np

from checksums import M64, mix, usum  # noqa: E402  (bench/ is the script's directory)

START_KERNEL_MAP = 0xFFFFFFFF80000000


def verdict(got, want) -> dict:
    return {"got": got, "want": want, "ok": got == want}


def load(image: str) -> tuple[dict, np.ndarray]:
    with open(image + ".json") as f:
        meta = json.load(f)
    probe = np.fromfile(image + ".probe.u64", dtype="<u8").reshape(-1, 3)
    return meta, probe


def run_vol3(image: str, meta: dict, probe: np.ndarray) -> dict:
    import volatility3
    from volatility3.framework import contexts
    from volatility3.framework.layers import intel, physical

    version = getattr(volatility3, "__version__", None)
    if version is None:
        from volatility3.framework import constants

        version = constants.PACKAGE_VERSION
    if meta["levels"] != 4:
        return {"tool": "volatility3", "version": version, "status": "n/a",
                "reason": "volatility3 has no 5-level (LA57) Intel layer"}
    t0 = time.perf_counter()
    ctx = contexts.Context()
    ctx.config["base.location"] = "file://" + image
    ctx.add_layer(physical.FileLayer(ctx, "base", "base"))
    ctx.config["virt.memory_layer"] = "base"
    ctx.config["virt.page_map_offset"] = meta["cr3"] & 0x000FFFFFFFFFF000
    layer = intel.Intel32e(ctx, "virt", "virt")
    ctx.add_layer(layer)
    va, ln, pa = [], [], []
    for off, size, moff, _msize, _lname in layer.mapping(0, 1 << 48, ignore_errors=True):
        va.append(off)
        ln.append(size)
        pa.append(moff)
    walk_s = time.perf_counter() - t0
    va = np.array(va, dtype=np.uint64)
    ln = np.array(ln, dtype=np.uint64)
    pa = np.array(pa, dtype=np.uint64)
    # mapping() works on non-canonical offsets (0 .. 2^48): sign-extend the upper half
    va = np.where(va >= np.uint64(1 << 47), va | np.uint64(M64 ^ ((1 << 48) - 1)), va)
    truth = meta["truth"]
    checks = {
        "runs_vphys": verdict(int(len(va)), truth["runs_vphys"]),
        "pages_4k": verdict(int(ln.sum()) >> 12, truth["pages_4k"]),
        "checksum_vphys": verdict("%#x" % usum(mix(va, ln, pa, np.zeros(len(va), np.uint64))), truth["checksum_vphys"]),
    }
    out = {"tool": "volatility3", "version": version, "status": "ran", "walk_s": walk_s,
           "ok": all(c["ok"] for c in checks.values()), "checks": checks}
    missing = truth["pages_4k"] - (int(ln.sum()) >> 12)
    shared = meta.get("shared") or {}
    if missing and missing == shared.get("pages"):
        out["explanation"] = (
            f"the {missing} missing 4K pages are exactly the ones mapped through the shared (KASAN-like) "
            "PT/PMD: volatility3's Intel._get_valid_table() treats a table whose 512 entries are all "
            "identical as invalid (a Windows heuristic), so it never descends into it")
    return out


def run_drgn(image: str, meta: dict, probe: np.ndarray) -> dict:
    import drgn
    from drgn import Architecture, Object, Platform, PlatformFlags, Program

    try:
        from _drgn import _linux_helper_follow_phys as follow_phys
    except ImportError:  # pragma: no cover - older/newer drgn
        from drgn.helpers.linux.mm import _linux_helper_follow_phys as follow_phys

    t0 = time.perf_counter()
    f = open(image, "rb")
    mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)

    def read_fn(address: int, count: int, offset: int, physical: bool) -> bytes:
        return mm[offset : offset + count]

    prog = Program(Platform(Architecture.X86_64, PlatformFlags.IS_64_BIT | PlatformFlags.IS_LITTLE_ENDIAN))
    prog.add_memory_segment(0, len(mm), read_fn, physical=True)
    cr3 = meta["cr3"] & 0x000FFFFFFFFFF000
    # swapper_pg_dir + phys_base - __START_KERNEL_map = CR3 (libdrgn arch_x86_64.c resolves
    # swapper_pg_dir this way; phys_base must be non-zero)
    vmcoreinfo = (
        "OSRELEASE=0.0.0-synthetic\nPAGESIZE=4096\nKERNELOFFSET=0\n"
        f"SYMBOL(swapper_pg_dir)={START_KERNEL_MAP:x}\nNUMBER(phys_base)={cr3}\n"
        f"NUMBER(pgtable_l5_enabled)={1 if meta['levels'] == 5 else 0}\n"
    )
    prog.set_linux_kernel_custom(vmcoreinfo, False)
    pgd = Object(prog, "void *", START_KERNEL_MAP)
    vas = probe[:, 0].tolist()
    want = probe[:, 1].tolist()
    wrong = faults = 0
    first_bad = None
    for va, pa in zip(vas, want):
        try:
            got = follow_phys(prog, pgd, va)
        except drgn.FaultError:
            faults += 1
            got = None
        if got != pa:
            wrong += 1
            if first_bad is None:
                first_bad = {"va": "%#x" % va, "got": None if got is None else "%#x" % got, "want": "%#x" % pa}
    walk_s = time.perf_counter() - t0
    checks = {
        "probe_pa_mismatches": verdict(wrong, 0),
        "probe_faults": verdict(faults, 0),
    }
    out = {"tool": "drgn", "version": drgn.__version__, "status": "ran", "walk_s": walk_s,
           "ok": all(c["ok"] for c in checks.values()), "checks": checks, "probe_n": len(vas),
           "probe_is_all_leaves": len(vas) == meta["truth"]["leaves"]}
    if first_bad:
        out["first_bad"] = first_bad
    return out


TOOLS = {"vol3": run_vol3, "drgn": run_drgn}


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[1] not in TOOLS:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    image = argv[2]
    meta, probe = load(image)
    try:
        res = TOOLS[argv[1]](image, meta, probe)
    except Exception as e:  # report, do not crash the table
        res = {"tool": argv[1], "status": "error", "ok": False, "error": f"{type(e).__name__}: {e}"}
    print(json.dumps(res))
    return 0 if res.get("ok", True) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
