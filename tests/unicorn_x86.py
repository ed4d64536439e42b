"""One emulated x86 CPU (unicorn) over a PageTableBuilder's physical image, shared by the 64- and 32-bit tests.

Recipe of /work/shared/reference/unicorn-mmu-notes.md: CPU TLB mode (mapped memory is physical),
the builder's image at its physical addresses, CR3 = root, CR4 and EFER as the paging mode wants,
CR0 = PG|PE|WP, and a load (`mov ax, [bx]`) or store (`mov [bx], cx`) from an identity-mapped
code page in supervisor mode. Every data page holds a function of its own physical address in
each word, so a load says where it read. After a fault the CPU's exception state is not reset
(the next fault becomes a #DF), so a fresh engine is made after every fault.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

import unicorn
from unicorn import UC_ARCH_X86, UC_HOOK_INTR, UC_MODE_32, UC_MODE_64, Uc, UcError
from unicorn import x86_const as X

KB4 = 4096
CODE = 0x2000_0000  # identity-mapped code page (VA == PA)
CR0_PE, CR0_WP, CR0_PG = 1, 1 << 16, 1 << 31
EFER = 0xC0000080


class Bits:
    """What differs between long mode and 32-bit protected mode for the harness."""

    def __init__(self, long_mode: bool) -> None:
        self.uc_mode = UC_MODE_64 if long_mode else UC_MODE_32
        self.load = b"\x48\x8b\x03" if long_mode else b"\x8b\x03"  # mov rax, [rbx] / mov eax, [ebx]
        self.store = b"\x48\x89\x0b" if long_mode else b"\x89\x0b"  # mov [rbx], rcx / mov [ebx], ecx
        self.word = "<Q" if long_mode else "<I"
        r = "R" if long_mode else "E"
        self.ax, self.bx, self.cx, self.ip = (getattr(X, f"UC_X86_REG_{r}{n}") for n in ("AX", "BX", "CX", "IP"))


class X86Machine:
    """One x86 CPU over a builder's physical image; re-created after every fault.

    `word_of(pa)` is the value stored in the data word at `pa` (its address, or a 32-bit function of it).
    """

    def __init__(self, b, *, long_mode: bool, cr4: int, efer: int, word_of: Callable[[int], int]) -> None:
        self.b = b
        self.bits = Bits(long_mode)
        self.cr4 = cr4
        self.efer = efer
        self.word_of = word_of
        self.image_end = -(-b.end // KB4) * KB4
        self.extra: dict[int, bytes] = {}  # page PA -> contents, for pages outside the image
        self.uc: Uc | None = None
        self.ints: list[int] = []

    def add_page(self, pa: int) -> None:
        """Map the 4K page holding `pa` (if not already there), each word holding word_of(its address)."""
        page = pa & ~(KB4 - 1)
        if page < self.image_end or page == CODE or page in self.extra:
            return
        step = struct.calcsize(self.bits.word)
        self.extra[page] = b"".join(struct.pack(self.bits.word, self.word_of(page + k)) for k in range(0, KB4, step))
        if self.uc is not None:
            self.uc.mem_map(page, KB4)
            self.uc.mem_write(page, self.extra[page])

    def _make(self) -> Uc:
        uc = Uc(UC_ARCH_X86, self.bits.uc_mode)
        uc.ctl_set_tlb_mode(getattr(unicorn, "UC_TLB_CPU", 0))  # virtual accesses go through the guest's tables
        uc.mem_map(0, self.image_end)
        uc.mem_write(self.b.base, bytes(self.b.image))
        uc.mem_map(CODE, KB4)
        uc.mem_write(CODE, self.bits.load + self.bits.store)
        for page, data in self.extra.items():
            uc.mem_map(page, KB4)
            uc.mem_write(page, data)
        uc.reg_write(X.UC_X86_REG_CR3, self.b.root)
        uc.reg_write(X.UC_X86_REG_CR4, self.cr4)
        if self.efer:
            uc.msr_write(EFER, self.efer)
        uc.reg_write(X.UC_X86_REG_CR0, CR0_PG | CR0_PE | CR0_WP)

        def on_intr(uc, intno, user_data):
            self.ints.append(intno)
            uc.emu_stop()

        uc.hook_add(UC_HOOK_INTR, on_intr)
        return uc

    def _run(self, va: int, store: bool, value: int) -> tuple:
        if self.uc is None:
            self.uc = self._make()
        uc, bits = self.uc, self.bits
        self.ints.clear()
        uc.reg_write(bits.ax, 0)
        uc.reg_write(bits.bx, va)
        uc.reg_write(bits.cx, value)
        start = CODE + (len(bits.load) if store else 0)
        end = start + len(bits.store if store else bits.load)
        try:
            uc.emu_start(start, end)
        except UcError as e:  # e.g. an access to physical memory nobody mapped
            self.uc = None
            return ("error", str(e))
        if self.ints:
            cr2 = uc.reg_read(X.UC_X86_REG_CR2)
            self.uc = None  # the CPU's exception state is now dirty
            return ("fault", self.ints[0], cr2)
        assert uc.reg_read(bits.ip) == end
        return ("ok", uc.reg_read(bits.ax))

    def load(self, va: int) -> tuple:
        """("ok", word) | ("fault", vector, cr2) | ("error", text)."""
        return self._run(va, False, 0)

    def store(self, va: int, value: int) -> tuple:
        """("ok", 0) | ("fault", vector, cr2) | ("error", text) for a store of `value` at `va`."""
        return self._run(va, True, value)

    def phys_word(self, pa: int) -> int:
        assert self.uc is not None
        size = struct.calcsize(self.bits.word)
        return struct.unpack(self.bits.word, bytes(self.uc.mem_read(pa, size)))[0]
