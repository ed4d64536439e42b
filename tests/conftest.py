"""Shared fixtures: the committed kernel captures."""

from __future__ import annotations

import pathlib

import pytest

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
X86_64_CASES = sorted(p.name for p in (FIXTURES / "x86_64").iterdir() if (p / "core.elf").exists())


@pytest.fixture(params=X86_64_CASES)
def x86_64_case(request) -> pathlib.Path:
    return FIXTURES / "x86_64" / request.param
