"""One module per architecture; this registry maps `--arch` names to them."""

from __future__ import annotations

ARCHES = {
    "x86_64": "x86",
}
ALIASES = {"amd64": "x86_64", "x86-64": "x86_64"}
