"""The front door: ``replica`` re-exports exactly its ``__all__``, and every name resolves."""

from __future__ import annotations

import replica


def test_all_names_resolve() -> None:
    for name in replica.__all__:
        assert hasattr(replica, name), name


def test_all_is_unique() -> None:
    # (the order is ruff's RUF022 isort-style order, which ruff itself keeps)
    assert len(set(replica.__all__)) == len(replica.__all__)


def test_error_hierarchy() -> None:
    for name in ("StoreError", "NodeNotFound", "CorruptNode", "CodecError", "TreeError"):
        assert issubclass(getattr(replica, name), replica.ReplicaError), name
    assert issubclass(replica.NodeNotFound, KeyError)
    assert issubclass(replica.CodecError, ValueError)
    assert issubclass(replica.StoreClosed, replica.StoreError)


def test_public_names_only_in_all() -> None:
    public = {n for n in vars(replica) if not n.startswith("_")} - {"annotations"}
    # submodules imported as attributes (replica.demo after `replica demo`) are not exports
    public = {n for n in public if not isinstance(getattr(replica, n), type(replica))}
    assert public <= set(replica.__all__), public - set(replica.__all__)
