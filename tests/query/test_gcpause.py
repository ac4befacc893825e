"""query/gcpause.py: the cyclic collector is paused inside gc_paused() blocks, resumes after
the outermost one, stays as it was if it was off, and an inactive pause touches nothing."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from query.gcpause import gc_paused


@pytest.fixture(autouse=True)
def collector_restored() -> Iterator[None]:
    was = gc.isenabled()
    yield
    if was:
        gc.enable()
    else:
        gc.disable()


def test_nested_pauses_resume_after_the_outermost() -> None:
    gc.enable()
    with gc_paused():
        assert not gc.isenabled()
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the outer block still runs
    assert gc.isenabled()


def test_a_collector_that_was_off_stays_off() -> None:
    gc.disable()
    with gc_paused():
        assert not gc.isenabled()
    assert not gc.isenabled()


def test_an_inactive_pause_changes_nothing_and_can_be_reused() -> None:
    gc.enable()
    with gc_paused(False):
        assert gc.isenabled()
        with gc_paused(False):
            assert gc.isenabled()
    assert gc.isenabled()
    with gc_paused(True), gc_paused(False):
        assert not gc.isenabled()
    assert gc.isenabled()


def test_the_collector_resumes_after_an_error() -> None:
    gc.enable()
    with pytest.raises(KeyError), gc_paused():
        raise KeyError("x")
    assert gc.isenabled()
