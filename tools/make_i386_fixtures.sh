#!/usr/bin/env bash
# Regenerates tests/fixtures/i386/: boots stock Debian bookworm 686-pae (PAE) and 686 (2-level)
# kernels with ../shared/oracle (boot_i386.sh), captures the kernel's own ptdump text and W+X
# lines, and keeps a minimised core of each run made with `pagewalk extract`: the page-table
# pages, the pages holding high_memory, __FIXADDR_TOP and __supported_pte_mask (the layout
# variables), and the notes (CR0-CR4, VMCOREINFO).
#
# usage: tools/make_i386_fixtures.sh [VARIANT...]      (default: all variants below)
# needs: the oracle set up with the more architectures (sudo ORACLE_MORE=1 ../shared/oracle/setup.sh)
#        and `make venv`. Each run takes about a minute; ORACLE_DIR (default /tmp/oracle) holds
#        the full dumps, which are not kept in git. FROM_RUNS=1 takes existing runs made under
#        boot_i386.sh's default names (column 4) instead of booting.
#
# The kernels have KALLSYMS_ALL=n: /proc/kallsyms lacks the data symbols, so kallsyms.txt is the
# serial log's `kallsyms` block plus its `sysmap` block (System.map + KASLR slide, runtime
# addresses; the oracle's init resolves them).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
oracle=${ORACLE:-$here/../shared/oracle}
export ORACLE_DIR=${ORACLE_DIR:-/tmp/oracle} ORACLE_DUMPS=${ORACLE_DUMPS:-elf}
pw=$here/.venv/bin/pagewalk
dest=$here/tests/fixtures/i386

# name | environment | boot_i386.sh arguments | boot_i386.sh's own run name
variants=(
  "6.1-pae-nokaslr||pae nokaslr|i386pae-6.1-nokaslr"
  "6.1-pae-kaslr||pae kaslr|i386pae-6.1-kaslr"
  "6.1-2level-nokaslr||nopae nokaslr|i386-6.1-nokaslr"
  "6.1-pae-nokaslr-pti||pae nokaslr pti=on|i386pae-6.1-nokaslr-pti-on"
  "6.1-pae-nokaslr-rodata-off|ORACLE_CHECKWX=1|pae nokaslr rodata=off|i386pae-6.1-nokaslr-rodata-off"
)
want=("$@")

section() { # section NAME < serial.log: the lines between the oracle's BEGIN/END markers
  tr -d '\r' | awk -v b="=====ORACLE-BEGIN $1=====" -v e="=====ORACLE-END $1=====" '$0==b{f=1;next}$0==e{f=0}f'
}

for v in "${variants[@]}"; do
  IFS='|' read -r name envs args default_run <<<"$v"
  if [ ${#want[@]} -gt 0 ] && [[ ! " ${want[*]} " == *" $name "* ]]; then continue; fi
  if [ -n "${FROM_RUNS:-}" ]; then
    out=$ORACLE_DIR/out/$default_run
    echo "== $name: from $out"
  else
    run=fixture-i386-$name
    echo "== $name: boot_i386.sh $args"
    env $envs RUN_NAME=$run "$oracle/boot_i386.sh" $args >/dev/null
    out=$ORACLE_DIR/out/$run
  fi
  d=$dest/$name
  mkdir -p "$d"
  { section kallsyms <"$out/serial.log"; section sysmap <"$out/serial.log" | grep -v '^slide '; } >"$d/kallsyms.txt"
  cp "$out/ptdump_kernel.txt" "$d/ptdump_kernel.txt"
  # the dmesg lines about NX and W+X, once each (the log repeats them in its `wx` block)
  tr -d '\r' <"$out/serial.log" | grep -E '^\[ *[0-9.]+\] (x86/mm: |(Notice: )?NX \(Execute Disable\)|ptdump_oracle: calling)' \
    | awk '!seen[$0]++' | sed 's/^\[[^]]*\] //' >"$d/wx.txt" || true
  section uname <"$out/serial.log" >"$d/uname.txt"
  keep=()
  for sym in high_memory __FIXADDR_TOP __supported_pte_mask; do
    a=$(awk -v s="$sym" '$3==s{print $1; exit}' "$d/kallsyms.txt")
    [ -n "$a" ] && keep+=(--keep-va "0x$a")
  done
  "$pw" extract "$out/mem.elf" --kallsyms "$d/kallsyms.txt" "${keep[@]}" -o "$d/core.elf" -q
  # the golden test's own check, so a noisy capture (a mapping that changed between the
  # kernel's text and the dump) is caught here and can be re-run
  if "$pw" dump "$d/core.elf" --kallsyms "$d/kallsyms.txt" -q | diff -q - "$d/ptdump_kernel.txt" >/dev/null; then
    echo "   ok: $(wc -l <"$d/ptdump_kernel.txt") lines, core $(du -k "$d/core.elf" | cut -f1) KiB"
  else
    echo "   DIFFERS from the kernel's text (noise between capture and dump? re-run this variant)"
  fi
done
