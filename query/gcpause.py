"""Pausing CPython's cyclic garbage collector around allocation-heavy work.

Queries, pulls and large transactions allocate hundreds of thousands of short-lived tuples,
dicts and lists. Reference counting frees them; the cyclic collector would meanwhile run full
collections that rescan every tracked object of the process (the node cache included) and free
nothing, which costs 2-3x. ``gc_paused()`` disables it for the duration. Nested and concurrent
uses (several asyncio tasks) share one depth counter: the collector resumes when the last one
ends, and only if it was enabled when the first one began.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

__all__ = ["gc_paused"]

_depth = 0
_was_enabled = False


_NOTHING = contextlib.nullcontext()


def gc_paused(active: bool = True) -> contextlib.AbstractContextManager[None]:
    """The collector paused while in the ``with`` block (if ``active``; else nothing, and
    cheaply: small transactions ask on every call)."""
    return _paused() if active else _NOTHING


@contextlib.contextmanager
def _paused() -> Iterator[None]:
    global _depth, _was_enabled
    if _depth == 0:
        _was_enabled = gc.isenabled()
        gc.disable()
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if _depth == 0 and _was_enabled:
            gc.enable()
