#!/usr/bin/env bash
# Regenerates tests/fixtures/arm/: boots stock Debian bookworm armmp-lpae (LPAE, long descriptors)
# and armmp (short descriptors) kernels with ../shared/oracle (boot_armhf.sh, qemu-system-arm -M
# virt -cpu cortex-a15), captures the kernel's own kernel_page_tables text (arch/arm/mm/dump.c)
# and W+X lines, and keeps a minimised core of each run made with `pagewalk extract --reg ...`:
# the page-table pages (Linux and hardware tables), the page holding high_memory, and the
# registers TTBR0/TTBR1/TTBCR/SCTLR/DACR/PRRR-MAIR0/NMRR-MAIR1 read over QEMU's gdbstub just
# before the dump (the ELF32 core itself carries none of them, and no VMCOREINFO).
#
# usage: tools/make_arm_fixtures.sh [VARIANT...]      (default: all variants below)
# needs: the oracle set up with the more architectures (../shared/oracle/setup.sh, ORACLE_MORE on)
#        and `make venv`. Each run takes under a minute; ORACLE_DIR (default /tmp/oracle) holds
#        the full dumps, which are not kept in git. FROM_RUNS=1 reuses runs already made under the
#        run names below (fixture-armhf-<variant>) instead of booting.
#
# The kernels have KALLSYMS_ALL=n: kallsyms.txt is the serial log's `kallsyms` block plus its
# `sysmap` block (System.map lines at their runtime addresses: swapper_pg_dir, high_memory, ...).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
oracle=${ORACLE:-$here/../shared/oracle}
export ORACLE_DIR=${ORACLE_DIR:-/tmp/oracle} ORACLE_DUMPS=${ORACLE_DUMPS:-elf}
pw=$here/.venv/bin/pagewalk
dest=$here/tests/fixtures/arm

# name | environment | boot_armhf.sh arguments
variants=(
  "lpae-nokaslr||lpae nokaslr"
  "nolpae-nokaslr||nolpae nokaslr"
  "nolpae-rodata-off|ORACLE_CHECKWX=1|nolpae nokaslr rodata=off"
  "lpae-rodata-off|ORACLE_CHECKWX=1|lpae nokaslr rodata=off"
  "lpae-mem1g|MEM=1G|lpae nokaslr"
  "nolpae-mem1g|MEM=1G|nolpae nokaslr"
)
want=("$@")

section() { # section NAME < serial.log: the lines between the oracle's BEGIN/END markers
  tr -d '\r' | awk -v b="=====ORACLE-BEGIN $1=====" -v e="=====ORACLE-END $1=====" '$0==b{f=1;next}$0==e{f=0}f'
}

for v in "${variants[@]}"; do
  IFS='|' read -r name envs args <<<"$v"
  if [ ${#want[@]} -gt 0 ] && [[ ! " ${want[*]} " == *" $name "* ]]; then continue; fi
  run=fixture-armhf-$name
  out=$ORACLE_DIR/out/$run
  if [ -n "${FROM_RUNS:-}" ] && [ -f "$out/mem.elf" ]; then
    echo "== $name: from $out"
  else
    echo "== $name: boot_armhf.sh $args"
    env $envs RUN_NAME=$run "$oracle/boot_armhf.sh" $args >/dev/null
  fi
  d=$dest/$name
  mkdir -p "$d"
  { section kallsyms <"$out/serial.log"; section sysmap <"$out/serial.log" | grep -v '^slide '; } >"$d/kallsyms.txt"
  cp "$out/ptdump_kernel.txt" "$d/ptdump_kernel.txt"
  # the dmesg lines about W+X and the module's register line, once each
  tr -d '\r' <"$out/serial.log" | grep -E '^\[ *[0-9.]+\] (arm/mm: |Checked W\+X|ptdump_oracle: (TTBR|calling))' \
    | awk '!seen[$0]++' | sed 's/^\[[^]]*\] //' >"$d/wx.txt" || true
  section uname <"$out/serial.log" >"$d/uname.txt"
  # gdb_sysregs.txt: $1 TTBR0 $2 TTBR1 $3 TTBCR $4 SCTLR $5 DACR $6 PRRR/MAIR0 $7 NMRR/MAIR1
  # (gdb shows the LPAE TTBRs as 32 bits: the ASID in bits 55:48 is dropped, the table address kept)
  names=(ttbr0 ttbr1 ttbcr sctlr dacr prrr nmrr)
  case "$args" in lpae*) names=(ttbr0 ttbr1 ttbcr sctlr dacr mair0 mair1) ;; esac
  regs=()
  for i in 1 2 3 4 5 6 7; do
    val=$(sed -n "s/^\\\$$i = //p" "$out/gdb_sysregs.txt")
    regs+=(--reg "${names[$((i - 1))]}=$val")
  done
  printf '%s\n' "${regs[@]}" | grep -v '^--reg$' | paste -sd' ' >"$d/regs.txt"
  "$pw" extract "$out/mem.elf" "${regs[@]}" --kallsyms "$d/kallsyms.txt" -o "$d/core.elf" -q
  # the golden test's own check, so a noisy capture (a mapping that changed between the
  # kernel's text and the dump) is caught here and can be re-run. The one known kind of noise
  # (the oracle README's "Noise"): the vmalloc'd stack of the `cat` that read the file, gone by
  # dump time. Lines printed by the kernel but absent from the dump, 8/16K RW NX PTE ranges only,
  # are listed in noise.txt (the golden test checks that their pages are unmapped in the core).
  rm -f "$d/noise.txt"
  diffs=$("$pw" dump "$d/core.elf" --kallsyms "$d/kallsyms.txt" -q | diff - "$d/ptdump_kernel.txt" | grep '^[<>]' || true)
  if [ -z "$diffs" ]; then
    echo "   ok: $(wc -l <"$d/ptdump_kernel.txt") lines, core $(du -k "$d/core.elf" | cut -f1) KiB"
  elif ! grep -q '^<' <<<"$diffs" && ! grep -v -E '^> 0x[0-9a-f]+-0x[0-9a-f]+ +(8|16)K PTE .*RW NX' <<<"$diffs" | grep -q .; then
    sed 's/^> //' <<<"$diffs" >"$d/noise.txt"
    echo "   ok with $(wc -l <"$d/noise.txt") noise line(s) (a stack freed between the text and the dump): noise.txt"
  else
    echo "   DIFFERS from the kernel's text (noise between capture and dump? re-run this variant)"
  fi
done
