"""Only the optional C extension; everything else is in pyproject.toml.

store/_speedups.c speeds up the tree's node encoding and chunker. It is optional, as
websockets' speedups are: if it cannot be built (no compiler, no Python headers), the
install goes on and store/ uses its Python versions of the same functions."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "store._speedups",
            sources=["store/_speedups.c"],
            optional=True,
            extra_compile_args=[
                "-O2",
                "-Wall",
                "-Wextra",
                "-Wno-missing-field-initializers",
                "-Wno-unused-parameter",
            ],
        )
    ]
)
