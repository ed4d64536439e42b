"""ELF cores: QEMU `dump-guest-memory` files and kdump/ELF vmcores, parsed with pyelftools.

PT_LOAD segments give the physical memory (p_paddr, p_offset, p_filesz); PT_NOTE segments give
the CPU state. QEMU 7.2 writes `e_ehsize = 8` and p_vaddr = p_paddr; neither matters here.
Segments that run past the end of the file are cut at it, with a warning in `self.warnings`.
"""

from __future__ import annotations

import struct

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from ..errors import FormatError
from .base import MappedMemory
from .notes import parse_notes

_MACHINES = {
    "EM_X86_64": "x86_64",
    "EM_386": "i386",
    "EM_AARCH64": "aarch64",
    "EM_ARM": "arm",
    "EM_RISCV": "riscv",
    "EM_PPC64": "ppc64",
    "EM_S390": "s390x",
    "EM_MIPS": "mips",
    "EM_SPARCV9": "sparc64",
    "EM_ARC_COMPACT": "arc",
    "EM_ARC_COMPACT2": "arc",
}


class ElfCoreMemory(MappedMemory):
    """An ELF core file: physical memory from PT_LOAD, CPU state from the notes."""

    def __init__(self, path: str) -> None:
        self.warnings: list[str] = []
        with open(path, "rb") as f:
            size = f.seek(0, 2)
            f.seek(0)
            try:
                elf = ELFFile(f)
                if elf.header["e_type"] not in ("ET_CORE",):
                    raise FormatError(f"{path}: an ELF {elf.header['e_type']} file, not a core dump")
                machine = elf.header["e_machine"]
                little = elf.little_endian
                segments: list[tuple[int, int, int]] = []
                raw_notes: list[tuple[str, int, bytes]] = []
                lost_segments = lost_bytes = 0
                phnum = elf.num_segments()
                if elf.header["e_phoff"] + phnum * elf.header["e_phentsize"] > size:
                    raise FormatError(f"{path}: truncated ELF (program headers past the end of the file)")
                for i in range(phnum):
                    ph = elf._get_segment_header(i)  # headers only: the segment data stays in the file
                    ptype = ph["p_type"]
                    off, filesz = ph["p_offset"], ph["p_filesz"]
                    if ptype == "PT_LOAD":
                        if filesz == 0:
                            continue
                        if off + filesz > size:
                            lost_segments += 1
                            lost_bytes += min(filesz, off + filesz - size)
                            if off >= size:
                                continue
                            filesz = size - off
                        segments.append((ph["p_paddr"], filesz, off))
                    elif ptype == "PT_NOTE":
                        if off + filesz > size:
                            self.warnings.append("the notes run past the end of the file (truncated image)")
                            filesz = max(0, size - off)
                        f.seek(off)
                        raw_notes.extend(_split_notes(f.read(filesz), little, self.warnings))
                if lost_segments:
                    self.warnings.append(
                        f"truncated image: {lost_segments} memory segment(s) run past the end of the file "
                        f"({lost_bytes:#x} bytes of memory missing)"
                    )
            except ELFError as e:
                raise FormatError(f"{path}: not a valid ELF core ({e})") from None
            except (struct.error, ValueError, OSError) as e:
                raise FormatError(f"{path}: truncated or corrupt ELF header ({e})") from None
        segments = _drop_overlaps(segments, self.warnings)
        arch = _MACHINES.get(machine, str(machine))
        if arch == "riscv":
            arch = "riscv64" if elf.elfclass == 64 else "riscv32"
        elif arch == "mips" and elf.elfclass == 64:
            arch = "mips64"
        cpu = parse_notes(raw_notes, arch, little)
        super().__init__(path, segments, cpu)
        self.little_endian = little
        self.machine = machine


def _split_notes(blob: bytes, little: bool, warnings: list[str]) -> list[tuple[str, int, bytes]]:
    """(name, type, desc) of every note in a PT_NOTE blob; stops at the first malformed one."""
    e = "<" if little else ">"
    out: list[tuple[str, int, bytes]] = []
    i = 0
    while i + 12 <= len(blob):
        namesz, descsz, ntype = struct.unpack_from(e + "III", blob, i)
        i += 12
        name_end = i + namesz
        desc_at = i + ((namesz + 3) & ~3)
        desc_end = desc_at + descsz
        if desc_end > len(blob):
            warnings.append("a note's size runs past its segment; the remaining notes are ignored")
            break
        name = blob[i:name_end].rstrip(b"\0").decode("ascii", "replace")
        out.append((name, ntype, bytes(blob[desc_at:desc_end])))
        i = desc_at + ((descsz + 3) & ~3)
    return out


def _drop_overlaps(segments: list[tuple[int, int, int]], warnings: list[str]) -> list[tuple[int, int, int]]:
    """Keep the first segment for any physical range described twice."""
    out: list[tuple[int, int, int]] = []
    end = -1
    for pa, n, off in sorted(segments):
        if pa < end:
            cut = end - pa
            if cut >= n:
                warnings.append(f"segment at PA {pa:#x} repeats memory already described; ignored")
                continue
            warnings.append(f"segment at PA {pa:#x} overlaps the previous one; its first {cut:#x} bytes ignored")
            pa, n, off = pa + cut, n - cut, off + cut
        out.append((pa, n, off))
        end = pa + n
    return out
