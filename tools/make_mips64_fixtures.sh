#!/usr/bin/env bash
# Regenerates tests/fixtures/mips64/: boots Debian bookworm's 6.1 5kc-malta kernel (mips64el,
# 4 KiB pages, 3 levels) with ../shared/oracle (boot_mips64el.sh). MIPS has no ptdump: the
# oracle's module lists every non-zero PTE of init_mm's vmalloc, module and fixmap ranges with
# the kernel's own helpers (ptdump_kernel.txt, with the geometry and _PAGE_* masks in its
# `# key=value` header). Each variant keeps that listing, the runtime addresses of
# swapper_pg_dir and invalid_{pmd,pte}_table (kallsyms.txt: the serial log's `sysmap` block,
# System.map + the KASLR slide) and a minimised core made with `pagewalk extract --reg pgd=…`
# (the page-table pages plus the invalid tables' pages; the register travels in a note).
#
# usage: tools/make_mips64_fixtures.sh [VARIANT...]     (default: all variants below)
# needs: the oracle set up with the more architectures (ORACLE_MORE=1 ../shared/oracle/setup.sh)
#        and `make venv`. FROM_RUNS=1 takes existing runs named fixture-mips64el-VARIANT.
# The QEMU 7.2 of bookworm cannot dump MIPS guests: the oracle saves RAM with pmemsave and wraps
# it into an ELF64 EM_MIPS core without notes (rawcore.py).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
oracle=${ORACLE:-$here/../shared/oracle}
export ORACLE_DIR=${ORACLE_DIR:-/tmp/oracle}
pw=$here/.venv/bin/pagewalk
dest=$here/tests/fixtures/mips64
variants=(nokaslr kaslr)
want=("$@")
[ ${#want[@]} -gt 0 ] || want=("${variants[@]}")

section() { # section NAME < serial.log: the lines between the oracle's BEGIN/END markers
  tr -d '\r' | awk -v b="=====ORACLE-BEGIN $1=====" -v e="=====ORACLE-END $1=====" '$0==b{f=1;next}$0==e{f=0}f'
}

for v in "${want[@]}"; do
  run=fixture-mips64el-$v
  out=$ORACLE_DIR/out/$run
  if [ -z "${FROM_RUNS:-}" ]; then
    echo "== $v: boot_mips64el.sh 6.1 $v"
    RUN_NAME=$run "$oracle/boot_mips64el.sh" 6.1 "$v" >/dev/null
  else
    echo "== $v: from $out"
  fi
  d=$dest/6.1-$v
  mkdir -p "$d"
  section sysmap <"$out/serial.log" | grep -v '^slide ' >"$d/kallsyms.txt"
  cp "$out/ptdump_kernel.txt" "$d/ptdump_kernel.txt"
  pgd=$(sed -n 's/^# pgd=\([0-9a-f]*\) .*/0x\1/p' "$d/ptdump_kernel.txt")
  # the invalid tables are CKSEG0 addresses (unmapped segment): keep their pages by PA
  "$pw" extract "$out/mem.elf" --arch mips64 --reg "pgd=$pgd" --kallsyms "$d/kallsyms.txt" -o "$d/core.elf" -q
  "$here/.venv/bin/python" - "$out/mem.elf" "$d/core.elf" "$d/kallsyms.txt" <<'PY'
# append the pages of invalid_pmd_table / invalid_pte_table (PA = VA - CKSEG0) to the small core
import sys

from pagewalk.memory import open_image

from pagewalk.memory.write import write_elf_core
big, small, syms = open_image(sys.argv[1]), open_image(sys.argv[2]), sys.argv[3]
want = {}
for line in open(syms):
    a, _, name = line.split()[:3]
    if name in ("invalid_pmd_table", "invalid_pte_table", "invalid_pud_table"):
        pa = int(a, 16) - 0xFFFFFFFF80000000
        want[pa] = 4096
chunks = [(pa, small.read(pa, n)) for pa, n in ((a, b - a) for a, b in small.runs())]
chunks += [(pa, big.read(pa, n)) for pa, n in want.items() if not small.contains(pa, n)]
write_elf_core(sys.argv[2] + ".tmp", "mips64", True, small.cpu.notes, chunks)
PY
  mv "$d/core.elf.tmp" "$d/core.elf"
  n=$("$pw" dump "$d/core.elf" --arch mips64 --kallsyms "$d/kallsyms.txt" -q | grep -c '^0x' || true)
  echo "   $(grep -vc '^#' "$d/ptdump_kernel.txt") listed PTEs, $n dump lines, core $(du -k "$d/core.elf" | cut -f1) KiB"
done
