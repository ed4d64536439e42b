"""CPU state from ELF notes: QEMU's CPU-state note (x86 control registers) and VMCOREINFO."""

from __future__ import annotations

import struct

from ..errors import FormatError
from .base import CpuState

# QEMUCPUState (QEMU target/i386/arch_dump.c): version, size, then rax..gs segments; cr[5] at 0x188.
_QEMU_X86_CR_OFFSET = 0x188


PAGEWALK_NOTE = "PAGEWALK"  # note name of the registers `pagewalk extract` stores


def registers_note(regs: dict[str, int]) -> tuple[str, int, bytes]:
    """A note holding registers as `name=0xvalue` lines, read back by parse_notes()."""
    text = "".join(f"{k}={v:#x}\n" for k, v in sorted(regs.items()))
    return (PAGEWALK_NOTE, 1, text.encode())


def parse_vmcoreinfo(text: str) -> dict[str, str]:
    """VMCOREINFO `KEY=VALUE` lines as a dict (keys like `SYMBOL(init_top_pgt)`)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        k, sep, v = line.partition("=")
        if sep:
            out[k.strip()] = v.strip()
    return out


def vmcoreinfo_int(vi: dict[str, str], key: str, base: int = 0) -> int | None:
    """A VMCOREINFO number (SYMBOL() values are hex, as the kernel writes them); None if absent.

    A value that is not a number is a corrupt image: FormatError, not a traceback.
    """
    v = vi.get(key)
    if v is None or v == "":
        return None
    try:
        return int(v, base or (16 if key.startswith("SYMBOL(") or key == "KERNELOFFSET" else 10))
    except ValueError:
        raise FormatError(f"VMCOREINFO {key}={v!r} is not a number (corrupt image?)") from None


def parse_notes(notes: list[tuple[str, int, bytes]], arch: str, little: bool) -> CpuState:
    """Registers and VMCOREINFO out of the notes of a core; unknown notes are kept as they are."""
    cpu = CpuState(arch=arch, notes=notes)
    e = "<" if little else ">"
    for name, ntype, desc in notes:
        if name == "QEMU" and arch in ("x86_64", "i386") and len(desc) >= _QEMU_X86_CR_OFFSET + 40:
            if "cr3" in cpu.regs:
                continue  # the first vCPU's state wins; the others are kept in `notes`
            cr = struct.unpack_from(e + "5Q", desc, _QEMU_X86_CR_OFFSET)
            cpu.regs.update(cr0=cr[0], cr2=cr[2], cr3=cr[3], cr4=cr[4])
        elif name == PAGEWALK_NOTE:
            # registers saved by `pagewalk extract` (lines "name=0xvalue"); the image's own notes win
            for k, v in parse_vmcoreinfo(desc.decode("ascii", "replace")).items():
                try:
                    cpu.regs.setdefault(k.lower(), int(v, 0))
                except ValueError:
                    continue
        elif name == "VMCOREINFO":
            cpu.vmcoreinfo.update(parse_vmcoreinfo(desc.decode("ascii", "replace")))
        elif name == "LINUX" and ntype == 0x304 and len(desc) >= 128 and "cr1" not in cpu.regs:
            # NT_S390_CTRS: control registers 0..15 (CR1 primary ASCE, CR7 secondary, CR13 home)
            crs = struct.unpack_from(e + "16Q", desc, 0)
            cpu.regs.update({f"cr{i}": v for i, v in enumerate(crs)})
    return cpu
