"""The compiled part of pagewalk: one optional C extension (everything else is in pyproject.toml).

pagewalk._x86dump is the x86-64 ptdump walk and text without numpy (src/pagewalk/_x86dump.c,
README "Speed"). It is optional: where it cannot be built, pagewalk uses its numpy path.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "pagewalk._x86dump",
            ["src/pagewalk/_x86dump.c"],
            optional=True,
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra", "-Wno-missing-field-initializers"],
        )
    ]
)
