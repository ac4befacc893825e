"""The optional C extension (store/_speedups.c), or None.

It is built by ``pip install`` where a C compiler and the Python headers exist; without it,
store/ uses the Python versions of the same functions, which are the definition (tests check
that both give the same results). Set ``REPLICA_PURE_PYTHON=1`` to use the Python versions
even where the extension is built."""

from __future__ import annotations

import os
from types import ModuleType

native: ModuleType | None
if os.environ.get("REPLICA_PURE_PYTHON"):
    native = None
else:
    try:
        from store import _speedups as native
    except ImportError:  # not built: no compiler where this was installed
        native = None

__all__ = ["native"]
