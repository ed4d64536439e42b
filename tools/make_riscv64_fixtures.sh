#!/usr/bin/env bash
# Regenerates tests/fixtures/riscv64/: boots Debian's riscv64 6.12 kernel with ../shared/oracle in
# Sv57, Sv48 (no5lvl) and Sv39 (no4lvl), captures the kernel's own kernel_page_tables text, QEMU's
# `info mem` walk and satp, and keeps a minimised core of each run (only the page-table pages of
# satp's and swapper_pg_dir's tables, the page holding kernel_map, and the notes, with satp stored
# in them) made with `pagewalk extract`.
#
# usage: tools/make_riscv64_fixtures.sh [--reuse] [VARIANT...]   (default: sv57 sv48 sv39)
#   --reuse: take an existing oracle run directory instead of booting (ORACLE_DIR/out/<run>)
# needs: the oracle set up once (sudo ../shared/oracle/setup.sh, ORACLE_MORE=0 is enough) and
#        `make venv`. Each boot takes about a minute. Debian's riscv64 kernel has
#        CONFIG_DEBUG_WX=n: there is no W+X verdict to capture.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
oracle=${ORACLE:-$here/../shared/oracle}
export ORACLE_DIR=${ORACLE_DIR:-/tmp/oracle} ORACLE_DUMPS=${ORACLE_DUMPS:-elf}
pw=$here/.venv/bin/pagewalk
dest=$here/tests/fixtures/riscv64
reuse=0
if [ "${1:-}" = "--reuse" ]; then reuse=1; shift; fi

# name | boot_riscv64.sh arguments
variants=(
  "sv57|6.12 nokaslr"
  "sv48|6.12 nokaslr no5lvl"
  "sv39|6.12 nokaslr no4lvl"
)
want=("$@")

section() { # section NAME < serial.log: the lines between the oracle's BEGIN/END markers
  tr -d '\r' | awk -v b="=====ORACLE-BEGIN $1=====" -v e="=====ORACLE-END $1=====" '$0==b{f=1;next}$0==e{f=0}f'
}

for v in "${variants[@]}"; do
  IFS='|' read -r name args <<<"$v"
  if [ ${#want[@]} -gt 0 ] && [[ ! " ${want[*]} " == *" $name "* ]]; then continue; fi
  run=fixture-riscv64-$name
  out=$ORACLE_DIR/out/$run
  if [ $reuse = 1 ] && [ ! -e "$out/mem.elf" ]; then
    # the oracle's default run name for these arguments
    out=$ORACLE_DIR/out/riscv64-$(echo "$args" | tr ' =' '_-' | sed 's/_/-/;s/_/-/')
  fi
  if [ $reuse = 0 ] || [ ! -e "$out/mem.elf" ]; then
    echo "== $name: boot_riscv64.sh $args"
    out=$ORACLE_DIR/out/$run
    RUN_NAME=$run "$oracle/boot_riscv64.sh" $args >/dev/null
  else
    echo "== $name: reusing $out"
  fi
  d=$dest/$name
  mkdir -p "$d"
  section kallsyms <"$out/serial.log" >"$d/kallsyms.txt"
  section uname <"$out/serial.log" >"$d/uname.txt"
  cp "$out/ptdump_kernel.txt" "$d/ptdump_kernel.txt"
  cp "$out/hmp_info_mem.txt" "$d/hmp_info_mem.txt"
  satp=0x$(awk '$1=="satp"{print $2}' "$out/hmp_info_registers.txt")
  echo "$satp" >"$d/satp.txt"
  kmap=0x$(awk '$3=="kernel_map"{print $1}' "$d/kallsyms.txt")
  "$pw" extract "$out/mem.elf" --arch riscv64 --reg "satp=$satp" --kallsyms "$d/kallsyms.txt" \
    --keep-va "$kmap" -o "$d/core.elf" -q
  # the golden test's own check, so a noisy capture (a vmalloc'd stack that came or went between
  # the kernel's text and the dump) is caught here and can be re-run
  if "$pw" dump "$d/core.elf" --kallsyms "$d/kallsyms.txt" -q | diff -q - "$d/ptdump_kernel.txt" >/dev/null; then
    echo "   ok: $(wc -l <"$d/ptdump_kernel.txt") lines, satp $satp, core $(du -k "$d/core.elf" | cut -f1) KiB"
  else
    echo "   DIFFERS from the kernel's text (noise between capture and dump? re-run this variant)"
  fi
done
