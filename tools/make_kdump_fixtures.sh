#!/usr/bin/env bash
# Regenerates tests/fixtures/kdump/: makedumpfile's kdump-compressed files (zlib, lzo, snappy, zstd,
# and the flattened form of `makedumpfile -F`) of the committed minimised core
# tests/fixtures/x86_64/6.12-nokaslr-5level/core.elf, so that `pagewalk dump` of each must print
# that capture's ptdump_kernel.txt.
#
# usage: tools/make_kdump_fixtures.sh            the small committed fixtures (a few seconds)
#        tools/make_kdump_fixtures.sh --large    also the full-size dumps the oracle test reads:
#                                                boots the guest (about a minute) into
#                                                $ORACLE_DIR/out/kdump-x86 (not kept in git)
# needs: `make venv`; makedumpfile. Debian 12's makedumpfile 1.7.2 has zlib and lzo only; for snappy
#        and zstd point MAKEDUMPFILE at a build with them (the variants it lacks are skipped):
#          make LINKTYPE=dynamic USELZO=on USESNAPPY=on USEZSTD=on   # in makedumpfile's source,
#          with libelf-dev libdw-dev libbz2-dev liblzo2-dev libsnappy-dev libzstd-dev zlib1g-dev
#        --large also needs the oracle (../shared/oracle/setup.sh).
#
# makedumpfile cannot read the minimised core as it is: it reads the kernel's utsname,
# node_online_map, mem_section and the struct pages of every dumped PFN (even with -d 1, for the
# hwpoison/offline checks). So the core it gets is the committed one plus those pages, made up
# from VMCOREINFO: utsname from uname.txt, node 0 online, every memory section present with an
# all-zero mem_map in a free stretch of the direct map. These added pages are zero or unread by
# pagewalk; the page tables are the committed core's, byte for byte.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
py=$here/.venv/bin/python
pw=$here/.venv/bin/pagewalk
mdf=${MAKEDUMPFILE:-makedumpfile}
case_dir=$here/tests/fixtures/x86_64/6.12-nokaslr-5level
dest=$here/tests/fixtures/kdump
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$dest"

has() { # has ALGO: whether $mdf was built with it (`makedumpfile -v` lists "lzo enabled" etc.)
  [ "$1" = zlib ] || "$mdf" -v 2>&1 | grep -q "^$1[[:space:]]*enabled"
}

# 1. the core makedumpfile can read: the committed pages plus what makedumpfile itself reads
"$py" - "$case_dir/core.elf" "$case_dir/uname.txt" "$tmp/src.elf" <<'EOF'
import struct, sys
from pagewalk.memory.elfcore import ElfCoreMemory
from pagewalk.memory.write import write_elf_core

src, uname, out = sys.argv[1:4]
m = ElfCoreMemory(src)
pages: dict[int, bytearray] = {}
for a, b in m.runs():
    for p in range(a, b, 4096):
        pages[p] = bytearray(m.read(p, 4096))
held = set(pages)
vi = m.cpu.vmcoreinfo
sym = lambda k: int(vi[f"SYMBOL({k})"], 16)
phys_base = int(vi.get("NUMBER(phys_base)", "0"), 0)
kimg = lambda va: va - 0xFFFFFFFF80000000 + phys_base  # kernel-image VA -> PA


def put(pa: int, data: bytes) -> None:
    page = pa & ~0xFFF
    assert page not in held, f"PA {pa:#x} is in the committed core; it must stay as it is"
    buf = pages.setdefault(page, bytearray(4096))
    buf[pa - page : pa - page + len(data)] = data


# utsname (check_release): six 65-byte strings
w = open(uname).readline().split()
fields = ["Linux", "(none)", w[2], " ".join(w[3:-2]), w[-2], "(none)"]
put(kimg(sym("init_uts_ns") + int(vi.get("OFFSET(uts_namespace.name)", "4"))),
    b"".join(f.encode()[:64].ljust(65, b"\0") for f in fields))
put(kimg(sym("node_online_map")), struct.pack("<Q", 1))  # node 0 online
# mem_section (SPARSEMEM_EXTREME): the root array (in the direct map) -> one page of mem_section
# structs -> one mem_map for all PFNs, in a free stretch of RAM the direct map covers
root_va = sym("mem_section")
page_offset = root_va & ~((1 << 40) - 1)
region = 0x10000000
sec_pa, map_pa = region, region + 4096
put(root_va - page_offset, struct.pack("<Q", page_offset + sec_pa))
spage = int(vi["SIZE(page)"])
nsec = ((max(pages) >> int(vi["NUMBER(SECTION_SIZE_BITS)"])) + 1)
put(sec_pa, b"".join(struct.pack("<Q", (page_offset + map_pa) | 3).ljust(int(vi["SIZE(mem_section)"]), b"\0")
                     for _ in range(nsec)))
# makedumpfile reads the struct pages of each dumped PFN up to the end of its 512-PFN block
# (PGMM_CACHED): add those mem_map pages, which are dumped PFNs in turn, until nothing is missing
while True:
    need = set()
    for p in pages:
        pfn = p >> 12
        end = (pfn // 512 + 1) * 512
        for q in range((map_pa + pfn * spage) & ~0xFFF, map_pa + end * spage, 4096):
            if q not in pages:
                need.add(q)
    if not need:
        break
    for q in need:
        pages[q] = bytearray(4096)
assert all(not (region <= p < region + (1 << 24)) or p not in held for p in pages), "region is not free"
write_elf_core(out, "x86_64", True, m.cpu.notes, [(p, bytes(b)) for p, b in sorted(pages.items())])
print(f"   source core: {len(held)} committed pages + {len(pages) - len(held)} for makedumpfile")
EOF

# 2. one kdump file per compression, and the flattened stream of the zlib one
variants=("zlib|-c" "lzo|-l" "snappy|-p" "zstd|-z")
for v in "${variants[@]}"; do
  IFS='|' read -r algo opt <<<"$v"
  out=$dest/$algo.kdump
  if ! has "$algo"; then
    echo "   $algo: skipped ($mdf has no $algo; set MAKEDUMPFILE to a build with it)"
    continue
  fi
  rm -f "$out"
  "$mdf" $opt -d 1 "$tmp/src.elf" "$out" >"$tmp/log" 2>&1 || { cat "$tmp/log"; exit 1; }
  chmod 644 "$out"
done
"$mdf" -F -c -d 1 "$tmp/src.elf" >"$dest/flat-zlib.kdump" 2>"$tmp/log" || { cat "$tmp/log"; exit 1; }

# 3. the golden check the tests make
for f in "$dest"/*.kdump; do
  if "$pw" dump "$f" --kallsyms "$case_dir/kallsyms.txt" -q | cmp -s - "$case_dir/ptdump_kernel.txt"; then
    echo "   ok: $(basename "$f") $(du -k "$f" | cut -f1) KiB"
  else
    echo "   DIFFERS: $(basename "$f")"
    exit 1
  fi
done

# 4. --large: a real guest, QEMU's own flattened kdump-zlib, and makedumpfile -d 31 of its ELF core
if [ "${1:-}" = --large ]; then
  oracle=${ORACLE:-$here/../shared/oracle}
  export ORACLE_DIR=${ORACLE_DIR:-/tmp/oracle}
  out=$ORACLE_DIR/out/kdump-x86
  # QEMU 7.2 as Debian builds it writes kdump-zlib only ("kdump-lzo is not available now")
  ORACLE_DUMPS=elf,kdump-zlib RUN_NAME=kdump-x86 "$oracle/boot_x86_64.sh" 6.12 nokaslr >/dev/null
  # makedumpfile 1.7.2 reads the program headers from offset 64, QEMU puts them after its two
  # section headers: a copy with them moved (the segment data stay where they are)
  "$py" - "$out/mem.elf" "$tmp/big.elf" <<'EOF'
import shutil, struct, sys
src, dst = sys.argv[1:3]
shutil.copyfile(src, dst)
with open(dst, "r+b") as f:
    eh = bytearray(f.read(64))
    phoff, = struct.unpack_from("<Q", eh, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", eh, 0x36)
    f.seek(phoff)
    ph = f.read(phentsize * phnum)
    first = min(struct.unpack_from("<Q", ph, i * phentsize + 8)[0] for i in range(phnum))
    assert 64 + len(ph) <= first, "no room for the program headers"
    struct.pack_into("<QQ", eh, 0x20, 64, 0)
    struct.pack_into("<HHHHHH", eh, 0x34, 64, phentsize, phnum, 64, 0, 0)
    f.seek(0)
    f.write(eh + ph)
EOF
  for v in "${variants[@]}"; do
    IFS='|' read -r algo opt <<<"$v"
    has "$algo" || continue
    rm -f "$out/mem.md-$algo.kdump"
    "$mdf" $opt -d 31 "$tmp/big.elf" "$out/mem.md-$algo.kdump" >"$tmp/log" 2>&1 || { cat "$tmp/log"; exit 1; }
  done
  algo=zlib opt=-c
  has zstd && algo=zstd opt=-z
  "$mdf" -F $opt -d 31 "$tmp/big.elf" >"$out/mem.md-$algo-flat.kdump" 2>"$tmp/log" || { cat "$tmp/log"; exit 1; }
  tr -d '\r' <"$out/serial.log" | awk '$0=="=====ORACLE-BEGIN kallsyms====="{f=1;next}$0=="=====ORACLE-END kallsyms====="{f=0}f' \
    >"$out/kallsyms.txt"
  ls -la "$out"/mem.kdump-zlib "$out"/mem.md-*.kdump
fi
