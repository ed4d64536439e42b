"""The only bit helpers: masks, fields and sign extension, on Python ints."""

from __future__ import annotations


def mask(hi: int, lo: int) -> int:
    """Bits hi..lo inclusive set.

    >>> hex(mask(51, 12))
    '0xffffffffff000'
    """
    return ((1 << (hi - lo + 1)) - 1) << lo


def field(value: int, hi: int, lo: int) -> int:
    """Bits hi..lo of value, shifted down.

    >>> field(0xABCD, 11, 4)
    188
    """
    return (value >> lo) & ((1 << (hi - lo + 1)) - 1)


def sign_extend(value: int, bits: int, width: int = 64) -> int:
    """Canonical form of a `bits`-bit address in a `width`-bit word (x86 canonical VAs).

    >>> hex(sign_extend(0x800000000000, 48))
    '0xffff800000000000'
    """
    value &= (1 << bits) - 1
    if value >> (bits - 1):
        value |= ((1 << width) - 1) ^ ((1 << bits) - 1)
    return value


def align_up(value: int, size: int) -> int:
    """Round value up to a multiple of the power of two size."""
    return (value + size - 1) & ~(size - 1)
