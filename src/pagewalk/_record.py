"""Record classes for the start-up path: what @dataclass generates, without `import dataclasses`.

`dataclasses` imports `inspect` (and with it ast, dis, tokenize), and each decorated class is
built by exec() of generated code: about 10 ms of `pagewalk dump`'s 60 (README "How it is fast"). The
classes that a dump of an x86-64 image creates before its walk (Level, PagingMode, CpuState,
Target, WxResult, Layout, Layout32) write their own __init__ and take __repr__, __eq__ and, where
frozen, __hash__ and immutability from here. Everything else in the package uses dataclasses.
"""

from __future__ import annotations


class Record:
    """__repr__ and __eq__ over the class's `_fields` (in order), as @dataclass makes them.

    `_compare` names the fields __eq__ and __hash__ look at (default: all of `_fields`).
    Instances are unhashable, as a non-frozen dataclass's are.
    """

    _fields: tuple[str, ...] = ()
    _compare: tuple[str, ...] | None = None
    __hash__ = None  # type: ignore[assignment]

    def _key(self) -> tuple:
        return tuple(getattr(self, k) for k in (self._fields if self._compare is None else self._compare))

    def __repr__(self) -> str:
        return f"{type(self).__qualname__}({', '.join(f'{k}={getattr(self, k)!r}' for k in self._fields)})"

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._key() == other._key()  # type: ignore[attr-defined]

    def replace(self, **changes: object):
        """A copy with some fields changed (dataclasses.replace())."""
        return type(self)(**{**{k: getattr(self, k) for k in self._fields}, **changes})


class FrozenRecord(Record):
    """A Record whose fields are set once, in __init__ (through `_set`): hashable, immutable."""

    def _set(self, **fields: object) -> None:
        for k, v in fields.items():
            object.__setattr__(self, k, v)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"cannot assign to field {name!r} of a frozen {type(self).__name__}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r} of a frozen {type(self).__name__}")

    def __hash__(self) -> int:
        return hash(self._key())
