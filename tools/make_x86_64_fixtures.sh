#!/usr/bin/env bash
# Regenerates tests/fixtures/x86_64/: boots stock Debian kernels with ../shared/oracle, captures
# the kernel's own ptdump text and W+X verdict, and keeps a minimised core of each run (only the
# page-table pages, the pages of the layout variables, and the notes) made with `pagewalk extract`.
#
# usage: tools/make_x86_64_fixtures.sh [VARIANT...]      (default: all variants below)
# needs: the oracle set up once (sudo ../shared/oracle/setup.sh, ORACLE_MORE=0 is enough) and
#        `make venv`. Each run takes about a minute; ORACLE_DIR (default /tmp/oracle) holds the
#        full dumps, which are not kept in git.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
oracle=${ORACLE:-$here/../shared/oracle}
export ORACLE_DIR=${ORACLE_DIR:-/tmp/oracle} ORACLE_DUMPS=${ORACLE_DUMPS:-elf}
pw=$here/.venv/bin/pagewalk
dest=$here/tests/fixtures/x86_64

# name | environment | boot_x86_64.sh arguments
variants=(
  "6.12-nokaslr-5level||6.12 nokaslr"
  "6.12-kaslr-5level||6.12 kaslr"
  "6.12-kaslr-4level-pti||6.12 kaslr no5lvl pti=on"
  "6.1-nokaslr-5level||6.1 nokaslr"
  "6.1-kaslr-4level||6.1 kaslr no5lvl"
  "6.1-nokaslr-5level-rodata-off|ORACLE_CHECKWX=1|6.1 nokaslr rodata=off"
)
want=("$@")

section() { # section NAME < serial.log: the lines between the oracle's BEGIN/END markers
  tr -d '\r' | awk -v b="=====ORACLE-BEGIN $1=====" -v e="=====ORACLE-END $1=====" '$0==b{f=1;next}$0==e{f=0}f'
}

for v in "${variants[@]}"; do
  IFS='|' read -r name envs args <<<"$v"
  if [ ${#want[@]} -gt 0 ] && [[ ! " ${want[*]} " == *" $name "* ]]; then continue; fi
  run=fixture-x86_64-$name
  echo "== $name: boot_x86_64.sh $args"
  env $envs RUN_NAME=$run "$oracle/boot_x86_64.sh" $args >/dev/null
  out=$ORACLE_DIR/out/$run
  d=$dest/$name
  mkdir -p "$d"
  section kallsyms <"$out/serial.log" >"$d/kallsyms.txt"
  cp "$out/ptdump_kernel.txt" "$d/ptdump_kernel.txt"
  section wx <"$out/serial.log" | grep -o 'x86/mm: .*W+X.*' >"$d/wx.txt" || true
  section uname <"$out/serial.log" >"$d/uname.txt"
  "$pw" extract "$out/mem.elf" --kallsyms "$d/kallsyms.txt" -o "$d/core.elf" -q
  # the golden test's own check, so a noisy capture (a mapping that changed between the
  # kernel's text and the dump) is caught here and can be re-run
  if "$pw" dump "$d/core.elf" --kallsyms "$d/kallsyms.txt" -q | diff -q - "$d/ptdump_kernel.txt" >/dev/null; then
    echo "   ok: $(wc -l <"$d/ptdump_kernel.txt") lines, core $(du -k "$d/core.elf" | cut -f1) KiB"
  else
    echo "   DIFFERS from the kernel's text (noise between capture and dump? re-run this variant)"
  fi
done
