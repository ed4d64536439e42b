"""The x86 kernels' address-space layouts for ptdump: marker tables and walked ranges.

`Layout` is x86-64's (arch/x86/include/asm/pgtable_64_types.h, address_markers[] of
arch/x86/mm/dump_pagetables.c), `Layout32` i386's (pgtable_32_areas.h, fixmap.h). Plain Python,
no numpy: resolving a target builds one before any walk (README "How it is fast"); pagewalk.ptdump.x86
re-exports every name.
"""

from __future__ import annotations

from .._record import Record

TOP = 1 << 64
LEVEL_NAME = ("pgd", "p4d", "pud", "pmd", "pte")


class Layout(Record):
    """The x86-64 kernel's address-space layout (arch/x86/include/asm/pgtable_64_types.h).

    Defaults are the non-KASLR values; `known` lists the names that came from the image or the
    command line rather than from these defaults.
    """

    _fields = ("l5", "page_offset", "vmalloc_start", "vmemmap_start", "modules_vaddr", "modules_end",
               "fixaddr_start", "kasan", "kasan_shadow_offset", "ldt", "espfix", "efi", "known")
    bits = 64  # sizeof(unsigned long) * 8

    def __init__(
        self,
        l5: bool,
        page_offset: int | None = None,
        vmalloc_start: int | None = None,
        vmemmap_start: int | None = None,
        modules_vaddr: int = 0xFFFFFFFFC0000000,  # __START_KERNEL_map + KERNEL_IMAGE_SIZE (1 GiB, RANDOMIZE_BASE)
        modules_end: int = 0xFFFFFFFFFF000000,
        fixaddr_start: int | None = None,
        kasan: bool = False,  # CONFIG_KASAN: the shadow markers
        kasan_shadow_offset: int = 0xDFFFFC0000000000,  # CONFIG_KASAN_SHADOW_OFFSET (x86-64 default)
        ldt: bool = True,  # CONFIG_MODIFY_LDT_SYSCALL
        espfix: bool = True,  # CONFIG_X86_ESPFIX64
        efi: bool = True,  # CONFIG_EFI
        known: set[str] | None = None,
    ) -> None:
        self.l5 = l5
        self.page_offset = page_offset if page_offset is not None else 0xFF11000000000000 if l5 else 0xFFFF888000000000
        self.vmalloc_start = vmalloc_start if vmalloc_start is not None else 0xFFA0000000000000 if l5 else 0xFFFFC90000000000
        self.vmemmap_start = vmemmap_start if vmemmap_start is not None else 0xFFD4000000000000 if l5 else 0xFFFFEA0000000000
        self.modules_vaddr = modules_vaddr
        self.modules_end = modules_end
        self.fixaddr_start = fixaddr_start if fixaddr_start is not None else DEFAULT_FIXADDR_START
        self.kasan = kasan
        self.kasan_shadow_offset = kasan_shadow_offset
        self.ldt = ldt
        self.espfix = espfix
        self.efi = efi
        self.known = set() if known is None else known

    @property
    def pgdir_shift(self) -> int:
        return 48 if self.l5 else 39

    def ranges(self) -> list[tuple[int, int]]:
        """ptdump_ranges[] of ptdump_walk_pgd_level_core(): the lower half, then the kernel
        half from GUARD_HOLE_END_ADDR (the hypervisor guard hole is not walked)."""
        half = 1 << (56 if self.l5 else 47)
        guard_hole_end = (TOP - (256 << self.pgdir_shift)) + (16 << self.pgdir_shift)
        return [(0, half), (guard_hole_end, TOP - 1)]

    def markers(self) -> list[tuple[int, str, int]]:
        """address_markers[] in array order: (start, name, max_lines), END last."""
        p4d_shift = 39
        m: list[tuple[int, str, int]] = [(0, "User Space", 0), (1 << 63, "Kernel Space", 0)]
        if self.ldt:
            m.append(((TOP - (240 << self.pgdir_shift)), "LDT remap", 0))
        m += [
            (self.page_offset, "Low Kernel Mapping", 0),
            (self.vmalloc_start, "vmalloc() Area", 0),
            (self.vmemmap_start, "Vmemmap", 0),
        ]
        if self.kasan:
            # KASAN_SHADOW_START = KASAN_SHADOW_OFFSET + ((-1UL << __VIRTUAL_MASK_SHIFT) >> 3)
            vms = 56 if self.l5 else 47
            start = (self.kasan_shadow_offset + ((TOP - (1 << vms)) >> 3)) % TOP
            m += [(start, "KASAN shadow", 0), (start + (1 << (vms - 3)), "KASAN shadow end", 0)]
        m.append((TOP - (4 << p4d_shift), "CPU entry Area", 0))
        if self.espfix:
            m.append((TOP - (2 << p4d_shift), "ESPfix Area", 16))
        if self.efi:
            m.append((TOP - 68 * (1 << 30), "EFI Runtime Services", 0))
        m += [
            (0xFFFFFFFF80000000, "High Kernel Mapping", 0),
            (self.modules_vaddr, "Modules", 0),
            (self.modules_end, "End Modules", 0),
            (self.fixaddr_start, "Fixmap Area", 0),
            (TOP - 1, "", 0),
        ]
        return m


# FIXADDR_START of the Debian 6.1 and 6.12 amd64 kernels (both: FIXADDR_TOP 0xffffffffff5ff000
# minus their fixmap size). It depends on the kernel configuration (NR_CPUS, ...): give another
# kernel's value with --define FIXADDR_START=...
DEFAULT_FIXADDR_START = 0xFFFFFFFFFF579000

TOP32 = 1 << 32
VMALLOC_OFFSET = 8 << 20  # arch/x86/include/asm/pgtable_32_areas.h
# Debian bookworm 6.1 686 and 686-pae (both: __FIXADDR_TOP 0xfffff000): FIXADDR_START =
# FIXADDR_TOP - FIXADDR_SIZE and CPU_ENTRY_AREA_BASE, which follow from NR_CPUS and the fixmap
# and cpu_entry_area sizes of the configuration (other kernels: --define FIXADDR_START=...,
# --define CPU_ENTRY_AREA_BASE=...).
DEFAULT_FIXADDR_TOP_32 = 0xFFFFF000
DEFAULT_FIXADDR_SIZE_32 = 0x247000
DEFAULT_CPU_ENTRY_AREA_BASE_32 = 0xFF400000


class Layout32(Record):
    """The i386 kernel's address-space layout (arch/x86/include/asm/pgtable_32_areas.h, fixmap.h).

    VMALLOC_START is high_memory + 8 MiB; LDT_BASE_ADDR, PKMAP_BASE and VMALLOC_END are computed
    from CPU_ENTRY_AREA_BASE and the PMD size (2 MiB with PAE, 4 MiB without) as the header does.
    """

    _fields = ("pae", "page_offset", "high_memory", "vmalloc_start", "fixaddr_top", "fixaddr_start",
               "cpu_entry_area_base", "highmem", "ldt", "nx", "known")
    bits = 32

    def __init__(
        self,
        pae: bool,
        page_offset: int = 0xC0000000,  # CONFIG_PAGE_OFFSET (VMSPLIT_3G)
        high_memory: int | None = None,  # the end of the direct map; None: VMALLOC_START = vmalloc_start
        vmalloc_start: int | None = None,
        fixaddr_top: int = DEFAULT_FIXADDR_TOP_32,  # __FIXADDR_TOP (a variable: reserve_top_address())
        fixaddr_start: int | None = None,
        cpu_entry_area_base: int = DEFAULT_CPU_ENTRY_AREA_BASE_32,
        highmem: bool = True,  # CONFIG_HIGHMEM: the "Persistent kmap() Area" marker
        ldt: bool = True,  # CONFIG_MODIFY_LDT_SYSCALL
        nx: bool | None = None,  # __supported_pte_mask & _PAGE_NX (None: judged from the tables)
        known: set[str] | None = None,
    ) -> None:
        self.pae = pae
        self.page_offset = page_offset
        self.high_memory = high_memory
        self.vmalloc_start = vmalloc_start
        self.fixaddr_top = fixaddr_top
        self.fixaddr_start = fixaddr_start
        self.cpu_entry_area_base = cpu_entry_area_base
        self.highmem = highmem
        self.ldt = ldt
        self.nx = nx
        self.known = set() if known is None else known
        self.__post_init__()

    def __post_init__(self) -> None:
        """The addresses that follow from others (again after a caller changed those)."""
        if self.vmalloc_start is None and self.high_memory is not None:
            self.vmalloc_start = (self.high_memory + VMALLOC_OFFSET) % TOP32
        if self.fixaddr_start is None:
            self.fixaddr_start = self.fixaddr_top - DEFAULT_FIXADDR_SIZE_32

    @property
    def pmd_size(self) -> int:
        return (2 << 20) if self.pae else (4 << 20)

    def ranges(self) -> list[tuple[int, int]]:
        """ptdump_ranges[] on 32-bit: {0, ~0UL}, every page included (end exclusive here)."""
        return [(0, TOP32)]

    def areas(self) -> dict[str, int]:
        """The marker addresses by their kernel names."""
        pmd_mask = ~(self.pmd_size - 1)
        cea = self.cpu_entry_area_base
        ldt = (cea - 4096) & pmd_mask  # LDT_BASE_ADDR
        pkmap = (ldt - 4096) & pmd_mask  # PKMAP_BASE
        vmalloc_end = (pkmap if self.highmem else ldt) - 2 * 4096
        vmalloc_start = self.vmalloc_start if self.vmalloc_start is not None else vmalloc_end
        return {
            "PAGE_OFFSET": self.page_offset,
            "VMALLOC_START": vmalloc_start,
            "VMALLOC_END": vmalloc_end,
            "PKMAP_BASE": pkmap,
            "LDT_BASE_ADDR": ldt,
            "CPU_ENTRY_AREA_BASE": cea,
            "FIXADDR_START": self.fixaddr_start,
        }

    def markers(self) -> list[tuple[int, str, int]]:
        """address_markers[] of the !CONFIG_X86_64 build, in array order, END (-1) last."""
        a = self.areas()
        m = [
            (0, "User Space", 0),
            (a["PAGE_OFFSET"], "Kernel Mapping", 0),
            (a["VMALLOC_START"], "vmalloc() Area", 0),
            (a["VMALLOC_END"], "vmalloc() End", 0),
        ]
        if self.highmem:
            m.append((a["PKMAP_BASE"], "Persistent kmap() Area", 0))
        if self.ldt:
            m.append((a["LDT_BASE_ADDR"], "LDT remap", 0))
        m += [
            (a["CPU_ENTRY_AREA_BASE"], "CPU entry area", 0),
            (a["FIXADDR_START"], "Fixmap area", 0),
            (TOP32 - 1, "", 0),
        ]
        return m
