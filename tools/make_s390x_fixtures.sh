#!/usr/bin/env bash
# Regenerates tests/fixtures/s390x/: boots Debian bookworm's 6.1 s390x kernel with ../shared/oracle
# (boot_s390x.sh: qemu-system-s390x -M s390-ccw-virtio -cpu max, TCG, so no KASLR: the CPU has no
# PRNG), captures the kernel's own kernel_page_tables text (mm/ptdump.c +
# arch/s390/mm/dump_pagetables.c, built as a module by the oracle) and keeps a minimised core of
# each run made with `pagewalk extract`: the DAT tables, the pages of the kernel variables the
# markers come from (kernel/s390.py LAYOUT_SYMBOLS, kept through --kallsyms) and the notes
# (NT_S390_CTRS: CR0-CR15, so CR13 = the kernel ASCE travels with the core).
#
# usage: tools/make_s390x_fixtures.sh [VARIANT...]      (default: all variants below)
# needs: the oracle set up with the more architectures (sudo ORACLE_MORE=1 ../shared/oracle/setup.sh)
#        and `make venv`. A run takes about a minute; ORACLE_DIR (default /tmp/oracle) holds the
#        full dumps, which are not kept in git. FROM_RUNS=1 takes existing runs named
#        fixture-s390x-VARIANT instead of booting.
#
# Debian's kernel has KALLSYMS_ALL=n: kallsyms.txt is the serial log's `kallsyms` block plus its
# `sysmap` block (System.map entries the oracle's init resolved at runtime addresses).
# DEBUG_WX=n: there is no kernel W+X verdict to keep.
# Noise: the vmalloc'd stack (16 KiB) of the `cat` that read the debugfs file is usually freed
# by the time QEMU dumps memory; the golden test tolerates exactly that difference.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
oracle=${ORACLE:-$here/../shared/oracle}
export ORACLE_DIR=${ORACLE_DIR:-/tmp/oracle} ORACLE_DUMPS=${ORACLE_DUMPS:-elf}
pw=$here/.venv/bin/pagewalk
dest=$here/tests/fixtures/s390x

# name | environment | boot_s390x.sh arguments   (two 512M runs: the committed "-b" one caught the
# stack of `cat` still mapped, so its text is identical; the other has the usual freed stack)
variants=(
  "6.1-512m||6.1 nokaslr"
  "6.1-512m-b||6.1 nokaslr"
  "6.1-2g|MEM=2G|6.1 nokaslr"
)
want=("$@")

section() { # section NAME < serial.log: the lines between the oracle's BEGIN/END markers
  tr -d '\r' | awk -v b="=====ORACLE-BEGIN $1=====" -v e="=====ORACLE-END $1=====" '$0==b{f=1;next}$0==e{f=0}f'
}

for v in "${variants[@]}"; do
  IFS='|' read -r name envs args <<<"$v"
  if [ ${#want[@]} -gt 0 ] && [[ ! " ${want[*]} " == *" $name "* ]]; then continue; fi
  run=fixture-s390x-$name
  out=$ORACLE_DIR/out/$run
  if [ -z "${FROM_RUNS:-}" ]; then
    echo "== $name: boot_s390x.sh $args"
    env $envs RUN_NAME=$run "$oracle/boot_s390x.sh" $args >/dev/null
  else
    echo "== $name: from $out"
  fi
  d=$dest/$name
  mkdir -p "$d"
  { section kallsyms <"$out/serial.log"; section sysmap <"$out/serial.log" | grep -v '^slide '; } >"$d/kallsyms.txt"
  cp "$out/ptdump_kernel.txt" "$d/ptdump_kernel.txt"
  section uname <"$out/serial.log" >"$d/uname.txt"
  # the module's line with the kernel ASCE and the marker values it used
  tr -d '\r' <"$out/serial.log" | grep -o 'ptdump_oracle: kernel_asce=.*' | head -1 >"$d/oracle_line.txt"
  # the identity map is built of 4 KiB pages (TCG's CPU has no EDAT): 2 KiB of page table per
  # MiB of RAM, very regular, so the core is kept xz-compressed (the tests unpack it with lzma)
  tmp=$(mktemp -d)
  "$pw" extract "$out/mem.elf" --kallsyms "$d/kallsyms.txt" -o "$tmp/core.elf" -q
  xz -9e -c "$tmp/core.elf" >"$d/core.elf.xz"
  if "$pw" dump "$tmp/core.elf" --kallsyms "$d/kallsyms.txt" -q | diff - "$d/ptdump_kernel.txt" >/dev/null; then
    echo "   ok: $(wc -l <"$d/ptdump_kernel.txt") lines, core.elf.xz $(du -k "$d/core.elf.xz" | cut -f1) KiB"
  else
    echo "   differs from the kernel's text (the freed stack of \`cat\` is expected; the test checks the rest)"
  fi
  rm -rf "$tmp"
done
