"""``open_store(url)`` (store/base.py): which URLs open what, and errors that name the URL."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from store.base import NodeStore, open_store
from store.codec import address_of
from store.errors import StoreError


@pytest.mark.parametrize("url", ["ftp://x", "http://example.com/db", "gopher:db"])
async def test_unknown_scheme_is_store_error_naming_url(url: str) -> None:
    with pytest.raises(StoreError) as info:
        await open_store(url)
    assert info.type is StoreError
    message = str(info.value)
    assert url in message
    assert url.split(":")[0] in message


@pytest.mark.parametrize("url", ["", "relative/path", "/abs/path"])
async def test_url_without_scheme_is_store_error(url: str) -> None:
    with pytest.raises(StoreError) as info:
        await open_store(url)
    assert info.type is StoreError
    assert repr(url) in str(info.value)


@pytest.mark.parametrize(
    "url",
    [
        pytest.param(None, id="None"),
        pytest.param(b"mem://", id="bytes"),
        pytest.param(5, id="int"),
        pytest.param(Path("/tmp/store"), id="Path"),
    ],
)
async def test_non_string_url_is_store_error(url: Any) -> None:
    with pytest.raises(StoreError) as info:
        await open_store(url)
    assert info.type is StoreError
    assert type(url).__name__ in str(info.value)


async def test_anonymous_mem_stores_are_independent() -> None:
    first, second = await open_store("mem://"), await open_store("mem://")
    nodes = {address_of(b"only in first"): b"only in first"}
    await first.put_many(nodes)
    assert isinstance(first, NodeStore)
    assert await second.missing(list(nodes)) == set(nodes)
    await first.aclose()
    await second.aclose()


async def test_named_mem_stores_share_data() -> None:
    url = f"mem://open-store-test-{uuid.uuid4().hex}"
    first, second = await open_store(url), await open_store(url)
    assert first.url == url
    nodes = {address_of(b"shared"): b"shared"}
    await first.put_many(nodes)
    assert await first.cas_ref("main", None, b"v") is True
    assert await second.get_many(list(nodes)) == nodes
    assert await second.get_ref("main") == b"v"
    other = await open_store(f"mem://open-store-other-{uuid.uuid4().hex}")
    assert await other.list_refs() == {}
    for one in (first, second, other):
        await one.aclose()


async def test_file_store_that_cannot_be_created_is_store_error_naming_url(
    tmp_path: Path,
) -> None:
    # A regular file where the store's directory should be: not a store, and not creatable
    # (this holds even when the tests run as root, unlike a permission-based check).
    occupied = tmp_path / "occupied"
    occupied.write_bytes(b"not a directory")
    for url in ("file://" + str(occupied), "file://" + str(occupied / "below")):
        with pytest.raises(StoreError) as info:
            await open_store(url)
        assert info.type is StoreError, url
        assert str(occupied) in str(info.value), url


async def test_s3_store_of_missing_bucket_is_store_error_naming_it(moto_endpoint: str) -> None:
    bucket = f"replica-absent-{uuid.uuid4().hex[:20]}"
    url = f"s3://{bucket}/db?endpoint_url={moto_endpoint}&region=us-east-1"
    with pytest.raises(StoreError) as info:
        await open_store(url)
    assert info.type is StoreError
    assert bucket in str(info.value)
