#!/usr/bin/env bash
# Regenerates tests/fixtures/arm64/: boots stock Debian arm64 kernels with ../shared/oracle,
# captures the kernel's own kernel_page_tables text and W+X verdict, and keeps a minimised core
# of each run (only the page-table pages and the notes, plus the MMU registers read over QEMU's
# gdbstub, which `pagewalk extract --reg` stores in the small core) made with `pagewalk extract`.
#
# usage: tools/make_arm64_fixtures.sh [VARIANT...]      (default: all variants below)
# needs: the oracle set up once (sudo ../shared/oracle/setup.sh) and `make venv`. Each boot takes
#        about a minute; ORACLE_DIR (default /tmp/oracle) holds the full dumps, which are not kept
#        in git. A capture already in $ORACLE_DIR/out under the oracle's default run name is
#        reused unless FRESH=1.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
oracle=${ORACLE:-$here/../shared/oracle}
export ORACLE_DIR=${ORACLE_DIR:-/tmp/oracle} ORACLE_DUMPS=${ORACLE_DUMPS:-elf}
pw=$here/.venv/bin/pagewalk
dest=$here/tests/fixtures/arm64

# name | environment | boot_arm64.sh arguments | the oracle's default run name
variants=(
  "6.1-nokaslr-48bit||6.1 nokaslr|arm64-6.1-nokaslr-max_"
  "6.1-kaslr-48bit||6.1 kaslr|arm64-6.1-kaslr-max_"
  "6.1-nokaslr-48bit-rodata-off|ORACLE_CHECKWX=1|6.1 nokaslr rodata=off|arm64-6.1-nokaslr-max_rodata-off"
  "6.12-nokaslr-52bit-lpa2||6.12 nokaslr|arm64-6.12-nokaslr-max_"
  "6.12-nokaslr-48bit-cortex-a57|CPU=cortex-a57|6.12 nokaslr|arm64-6.12-nokaslr-cortex-a57_"
)
want=("$@")

section() { # section NAME < serial.log: the lines between the oracle's BEGIN/END markers
  tr -d '\r' | awk -v b="=====ORACLE-BEGIN $1=====" -v e="=====ORACLE-END $1=====" '$0==b{f=1;next}$0==e{f=0}f'
}
reg() { # reg N < gdb_sysregs.txt: the value gdb printed as $N
  awk -v n="\$$1" '$1==n{print $3}'
}

for v in "${variants[@]}"; do
  IFS='|' read -r name envs args default_run <<<"$v"
  if [ ${#want[@]} -gt 0 ] && [[ ! " ${want[*]} " == *" $name "* ]]; then continue; fi
  out=$ORACLE_DIR/out/$default_run
  if [ "${FRESH:-0}" = 1 ] || [ ! -f "$out/mem.elf" ]; then
    run=fixture-arm64-$name
    echo "== $name: boot_arm64.sh $args"
    env $envs RUN_NAME=$run "$oracle/boot_arm64.sh" $args >/dev/null
    out=$ORACLE_DIR/out/$run
  else
    echo "== $name: reusing $out"
  fi
  d=$dest/$name
  mkdir -p "$d"
  section kallsyms <"$out/serial.log" >"$d/kallsyms.txt"
  cp "$out/ptdump_kernel.txt" "$d/ptdump_kernel.txt"
  section wx <"$out/serial.log" | grep -o -e 'arm64/mm: .*' -e 'Checked W+X mappings.*' >"$d/wx.txt" || true
  section uname <"$out/serial.log" >"$d/uname.txt"
  # $1 TTBR0_EL1, $2 TTBR1_EL1, $3 TCR_EL1, $4 MAIR_EL1 (boot_arm64.sh's gdb commands)
  regs=(--reg "ttbr0_el1=$(reg 1 <"$out/gdb_sysregs.txt")" --reg "ttbr1_el1=$(reg 2 <"$out/gdb_sysregs.txt")"
        --reg "tcr_el1=$(reg 3 <"$out/gdb_sysregs.txt")" --reg "mair_el1=$(reg 4 <"$out/gdb_sysregs.txt")")
  "$pw" extract "$out/mem.elf" --arch arm64 "${regs[@]}" -o "$d/core.elf" -q
  # the golden test's own check, so a noisy capture (a mapping that changed between the
  # kernel's text and the dump) is caught here and can be re-run with FRESH=1
  if "$pw" dump "$d/core.elf" -q | diff -q - "$d/ptdump_kernel.txt" >/dev/null; then
    echo "   ok: $(wc -l <"$d/ptdump_kernel.txt") lines, core $(du -k "$d/core.elf" | cut -f1) KiB"
  else
    echo "   DIFFERS from the kernel's text (noise between capture and dump? re-run with FRESH=1)"
  fi
done
