#!/usr/bin/env bash
# Regenerates tests/fixtures/ppc64/: boots Debian's ppc64el 6.1 kernel (64K pages, radix MMU,
# qemu-system-ppc64 -M pseries -cpu power9) with ../shared/oracle at the default 512 MiB and at
# 2 GiB, captures the kernel's own kernel_page_tables text (generated module: mm/ptdump.c +
# arch/powerpc/mm/ptdump), the module's `ptdump_oracle: radix=… prtb0=…` line and the System.map
# symbols the boot script resolves (serial log "sysmap" block), and keeps a minimised core of each
# run made with `pagewalk extract --reg prtb0=…` (only the radix tree's pages, the pages of
# process_tb and of the process table, and the notes, with prtb0 stored in them).
#
# The hash MMU (`disable_radix`) variant has no process table: its core carries pgd= (init_mm.pgd's
# PA) instead, and pagewalk walks the kernel's Linux tables (8/10/10/8 index bits).
#
# usage: tools/make_ppc64_fixtures.sh [--reuse] [VARIANT...]   (default: radix-512M radix-2G hash-512M)
#   --reuse: take the existing oracle run directory (ORACLE_DIR/out/fixture-ppc64-<variant>)
# needs: the oracle set up once with its more architectures (sudo ../shared/oracle/setup.sh) and
#        `make venv`. Each boot takes one to two minutes. Debian's ppc64el kernel has
#        CONFIG_DEBUG_WX=n: there is no W+X verdict to capture.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
oracle=${ORACLE:-$here/../shared/oracle}
export ORACLE_DIR=${ORACLE_DIR:-/tmp/oracle} ORACLE_DUMPS=${ORACLE_DUMPS:-elf}
pw=$here/.venv/bin/pagewalk
dest=$here/tests/fixtures/ppc64
reuse=0
if [ "${1:-}" = "--reuse" ]; then reuse=1; shift; fi

# name | MEM | boot_ppc64el.sh arguments
variants=(
  "radix-512M|512M|6.1 nokaslr"
  "radix-2G|2G|6.1 nokaslr"
  "hash-512M|512M|6.1 nokaslr disable_radix"
)
want=("$@")

section() { # section NAME < serial.log: the lines between the oracle's BEGIN/END markers
  tr -d '\r' | awk -v b="=====ORACLE-BEGIN $1=====" -v e="=====ORACLE-END $1=====" '$0==b{f=1;next}$0==e{f=0}f'
}

for v in "${variants[@]}"; do
  IFS='|' read -r name mem args <<<"$v"
  if [ ${#want[@]} -gt 0 ] && [[ ! " ${want[*]} " == *" $name "* ]]; then continue; fi
  run=fixture-ppc64-$name
  out=$ORACLE_DIR/out/$run
  if [ $reuse = 0 ] || [ ! -e "$out/mem.elf" ]; then
    echo "== $name: MEM=$mem boot_ppc64el.sh $args"
    MEM=$mem RUN_NAME=$run "$oracle/boot_ppc64el.sh" $args >/dev/null
  else
    echo "== $name: reusing $out"
  fi
  d=$dest/$name
  mkdir -p "$d"
  section sysmap <"$out/serial.log" | grep -v '^slide ' >"$d/kallsyms.txt"
  section uname <"$out/serial.log" >"$d/uname.txt"
  cp "$out/ptdump_kernel.txt" "$d/ptdump_kernel.txt"
  line=$(tr -d '\r' <"$out/serial.log" | grep -m1 -o 'ptdump_oracle: radix=.*')
  echo "$line" >"$d/oracle_line.txt"
  prtb0=0x$(echo "$line" | sed -n 's/.* prtb0=\([0-9a-f]*\).*/\1/p')
  prtb=0x$(echo "$line" | sed -n 's/.* process_tb=\([0-9a-f]*\).*/\1/p')
  pgd=0x$(echo "$line" | sed -n 's/.* pgd_pa=\([0-9a-f]*\).*/\1/p')
  if [ $((prtb0)) -ne 0 ]; then
    reg="prtb0=$prtb0" keep=(--keep-va "$prtb")
  else
    reg="pgd=$pgd" keep=()
  fi
  "$pw" extract "$out/mem.elf" --arch ppc64 --reg "$reg" --kallsyms "$d/kallsyms.txt" \
    "${keep[@]}" -o "$d/core.elf" -q
  # the golden test's own check, so a noisy capture (a vmalloc'd stack that came or went between
  # the kernel's text and the dump) is caught here and can be re-run
  if "$pw" dump "$d/core.elf" -q | diff -q - "$d/ptdump_kernel.txt" >/dev/null; then
    echo "   ok: $(wc -l <"$d/ptdump_kernel.txt") lines, $reg, core $(du -k "$d/core.elf" | cut -f1) KiB"
  else
    echo "   DIFFERS from the kernel's text (noise between capture and dump? re-run this variant)"
  fi
done
