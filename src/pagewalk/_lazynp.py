"""`np`, a stand-in for numpy that imports it on first use.

`import numpy` alone takes longer (~90 ms) than a compiled x86-64 `pagewalk dump` of a million
pages. The modules on the way from the command line to the walk (memory, mode, arch/x86,
kernel/x86) name numpy through this proxy, so that resolving a target touches numpy only where
it really computes with it. `from ._lazynp import np` then `np.uint64(...)`, `np.zeros(...)` as
usual; annotations stay strings (`from __future__ import annotations`). Each name is looked up
once and then kept on the proxy, so hot paths pay a plain attribute lookup.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up: README "How it is fast")
if TYPE_CHECKING:
    from typing import Any

__all__ = ["np"]


class _LazyNumpy:
    """The numpy module, imported when the first attribute is read from it."""

    def __getattr__(self, name: str) -> Any:
        import numpy

        value = getattr(numpy, name)
        self.__dict__[name] = value  # next time: found without __getattr__
        return value

    def __repr__(self) -> str:
        return "<lazy numpy>"


np: Any = _LazyNumpy()
