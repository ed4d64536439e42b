"""Writing small ELF cores: the page-table pages of an image and its notes (`pagewalk extract`).

The layout is the one QEMU's dump-guest-memory writes (ELF64 ET_CORE, one PT_NOTE, PT_LOADs at
their physical addresses, p_vaddr = p_paddr), so the result opens wherever the original did.
"""

from __future__ import annotations

import struct

_EM = {"x86_64": 62, "i386": 3, "aarch64": 183, "arm64": 183, "arm": 40, "riscv": 243, "riscv64": 243,
       "riscv32": 243, "ppc64": 21, "s390x": 22, "mips": 8, "mips64": 8, "sparc64": 43, "arc": 195}


def _notes_blob(notes: list[tuple[str, int, bytes]], e: str) -> bytes:
    out = bytearray()
    for name, ntype, desc in notes:
        nb = name.encode() + b"\0"
        out += struct.pack(e + "III", len(nb), len(desc), ntype)
        out += nb + b"\0" * (-len(nb) % 4)
        out += desc + b"\0" * (-len(desc) % 4)
    return bytes(out)


def write_elf_core(
    path: str,
    arch: str,
    little: bool,
    notes: list[tuple[str, int, bytes]],
    chunks: list[tuple[int, bytes]],
) -> int:
    """Write an ELF64 core holding `chunks` ((PA, bytes), merged where contiguous) and `notes`."""
    e = "<" if little else ">"
    merged: list[tuple[int, bytearray]] = []
    for pa, data in sorted(chunks, key=lambda c: c[0]):
        if merged and merged[-1][0] + len(merged[-1][1]) == pa:
            merged[-1][1].extend(data)
        elif merged and merged[-1][0] + len(merged[-1][1]) > pa:
            continue  # already held
        else:
            merged.append((pa, bytearray(data)))
    blob = _notes_blob(notes, e)
    phnum = 1 + len(merged)
    off = 64 + 56 * phnum
    note_off = off
    off += len(blob)
    off = (off + 4095) & ~4095
    phdrs = [struct.pack(e + "IIQQQQQQ", 4, 0, note_off, 0, 0, len(blob), len(blob), 0)]
    data_offs = []
    for pa, data in merged:
        phdrs.append(struct.pack(e + "IIQQQQQQ", 1, 0, off, pa, pa, len(data), len(data), 0))
        data_offs.append(off)
        off += len(data)
    ident = b"\x7fELF" + bytes([2, 1 if little else 2, 1, 0]) + b"\0" * 8
    hdr = ident + struct.pack(e + "HHIQQQIHHHHHH", 4, _EM.get(arch, 0), 1, 0, 64, 0, 0, 64, 56, phnum, 64, 0, 0)
    with open(path, "wb") as f:
        f.write(hdr)
        f.write(b"".join(phdrs))
        f.write(blob)
        for (pa, data), doff in zip(merged, data_offs):
            f.seek(doff)
            f.write(data)
        f.truncate(off)
    return off
