"""S3-specific tests of store/s3.py, against the local moto server of tests/conftest.py.

The backend-independent contract is checked by test_conformance.py (its ``s3`` variant); here:
the object layout docs/format.md cites, integrity of what is read back, ``open`` failures, the
conditional writes behind ``cas_ref`` under real races, and the retry policy, driven through a
small HTTP proxy in front of moto that fails, races or loses chosen requests.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import anyio
import pytest
import yarl
from aiobotocore.session import get_session
from aiohttp import ClientSession, web

from store.base import open_store
from store.codec import address_of, encode
from store.errors import CorruptNode, NodeNotFound, StoreClosed, StoreError
from store.s3 import S3Store, decode_ref_name, encode_ref_name

pytestmark = pytest.mark.timeout(90)


def node(i: int) -> tuple[bytes, bytes]:
    data = encode({"node": i, "pad": "x" * (i % 7)})
    return address_of(data), data


def bucket_of(url: str) -> str:
    return urlsplit(url).netloc


def with_params(url: str, **params: object) -> str:
    """``url`` with query parameters replaced or added."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query.update({k: str(v) for k, v in params.items()})
    return parts._replace(query=urlencode(query, safe=":/")).geturl()


@pytest.fixture
async def raw(moto_endpoint: str) -> AsyncIterator[Any]:
    """A plain aiobotocore client on moto, to look at and tamper with objects directly."""
    async with get_session().create_client(
        "s3", endpoint_url=moto_endpoint, region_name="us-east-1"
    ) as client:
        yield client


async def keys_in(raw: Any, bucket: str) -> set[str]:
    page = await raw.list_objects_v2(Bucket=bucket)
    return {item["Key"] for item in page.get("Contents", [])}


async def body_of(raw: Any, bucket: str, key: str) -> bytes:
    response = await raw.get_object(Bucket=bucket, Key=key)
    async with response["Body"] as stream:
        return bytes(await stream.read())


# ------------------------------------------------------------------------------ nodes, layout


async def test_nodes_round_trip(s3_url: str) -> None:
    store = await S3Store.open(s3_url)
    try:
        nodes = dict(node(i) for i in range(40))
        present = dict(list(nodes.items())[:25])
        await store.put_many(present)
        await store.put_many(present)  # idempotent
        for address, data in present.items():
            assert await store.get(address) == data
        assert await store.get_many(list(present)) == present
        assert await store.missing(list(nodes)) == set(nodes) - set(present)
        assert await store.list_addresses() == set(present)
        await store.delete_many(list(present)[:10])
        assert await store.list_addresses() == set(list(present)[10:])
    finally:
        await store.aclose()


async def test_object_layout(s3_url: str, raw: Any) -> None:
    # The layout of the module docstring, which docs/format.md cites.
    bucket = bucket_of(s3_url)
    store = await S3Store.open(s3_url)
    try:
        address, data = node(1)
        await store.put_many({address: data})
        assert await store.cas_ref("heads/main", None, b"\x00head")
        assert await store.cas_ref("tag:v1@x+y=z", None, b"")
        assert await keys_in(raw, bucket) == {
            "db/nodes/" + address.hex(),
            "db/refs/heads!2Fmain",
            "db/refs/tag!3Av1!40x!2By!3Dz",
        }
        assert address.hex().startswith("01") and len(address.hex()) == 66
        assert await body_of(raw, bucket, "db/nodes/" + address.hex()) == data
        assert await body_of(raw, bucket, "db/refs/heads!2Fmain") == b"\x00head"
        assert await body_of(raw, bucket, "db/refs/tag!3Av1!40x!2By!3Dz") == b""
        assert await store.list_refs() == {"heads/main": b"\x00head", "tag:v1@x+y=z": b""}
    finally:
        await store.aclose()


async def test_no_prefix_puts_keys_at_the_bucket_root(s3_url: str, raw: Any) -> None:
    bucket = bucket_of(s3_url)
    url = urlsplit(s3_url)._replace(path="").geturl()
    store = await S3Store.open(url)
    try:
        address, data = node(2)
        await store.put_many({address: data})
        assert await store.cas_ref("main", None, b"r")
        assert await keys_in(raw, bucket) == {"nodes/" + address.hex(), "refs/main"}
    finally:
        await store.aclose()


async def test_stores_with_different_prefixes_do_not_see_each_other(s3_url: str) -> None:
    first = await S3Store.open(s3_url)
    second = await S3Store.open(urlsplit(s3_url)._replace(path="/other/db").geturl())
    try:
        address, data = node(3)
        await first.put_many({address: data})
        assert await first.cas_ref("main", None, b"1")
        assert await second.list_addresses() == set()
        assert await second.list_refs() == {}
        assert await second.missing([address]) == {address}
    finally:
        await first.aclose()
        await second.aclose()


async def test_foreign_keys_under_the_prefix_are_ignored(s3_url: str, raw: Any) -> None:
    bucket = bucket_of(s3_url)
    await raw.put_object(Bucket=bucket, Key="db/nodes/README", Body=b"hi")
    await raw.put_object(Bucket=bucket, Key="db/nodes/" + "02" * 33, Body=b"v2 address")
    await raw.put_object(Bucket=bucket, Key="db/refs/bad!zz", Body=b"x")
    await raw.put_object(Bucket=bucket, Key="db/refs/.hidden", Body=b"x")
    store = await S3Store.open(s3_url)
    try:
        assert await store.list_addresses() == set()
        assert await store.list_refs() == {}
    finally:
        await store.aclose()


def test_ref_name_encoding_round_trips() -> None:
    for name in ["main", "heads/main", "a.b-c_d", "x:y@z+w=v/q", "A" * 200]:
        segment = encode_ref_name(name)
        assert "/" not in segment
        assert decode_ref_name(segment) == name
    assert decode_ref_name("heads!2fmain") is None  # only the canonical (uppercase) form
    assert decode_ref_name("a!2E") is None  # '.' is never escaped
    assert decode_ref_name("!2Ehidden") is None  # decodes to an invalid name


# -------------------------------------------------------------------------------- integrity


async def test_corrupt_object_raises_corrupt_node(s3_url: str, raw: Any) -> None:
    bucket = bucket_of(s3_url)
    store = await S3Store.open(s3_url)
    try:
        address, data = node(4)
        other, other_data = node(5)
        await store.put_many({address: data, other: other_data})
        key = "db/nodes/" + address.hex()
        await raw.put_object(Bucket=bucket, Key=key, Body=data[:-1] + b"\xff")
        with pytest.raises(CorruptNode) as info:
            await store.get(address)
        assert info.value.address == address
        with pytest.raises(CorruptNode):
            await store.get_many([other, address])
        await raw.put_object(Bucket=bucket, Key=key, Body=b"")  # truncated to nothing
        with pytest.raises(CorruptNode):
            await store.get(address)
        # Putting the node again replaces the damaged copy.
        await store.put_many({address: data})
        assert await store.get(address) == data
    finally:
        await store.aclose()


async def test_get_many_names_the_first_absent_address(s3_url: str) -> None:
    store = await S3Store.open(s3_url, concurrency=4)
    try:
        nodes = [node(i) for i in range(30)]
        await store.put_many(dict(nodes[::2]))  # even ones present, odd ones absent
        order = [a for a, _ in nodes[::2]] + [nodes[7][0], nodes[3][0], nodes[9][0]]
        with pytest.raises(NodeNotFound) as info:
            await store.get_many(order)
        assert info.value.address == nodes[7][0]
        with pytest.raises(NodeNotFound) as info:
            await store.get(nodes[1][0])
        assert info.value.address == nodes[1][0]
    finally:
        await store.aclose()


# ------------------------------------------------------------------------------------ open


async def test_open_missing_bucket_names_it(moto_endpoint: str) -> None:
    url = f"s3://no-such-bucket-here/db?endpoint_url={moto_endpoint}&region=us-east-1"
    with pytest.raises(StoreError, match="no-such-bucket-here") as info:
        await S3Store.open(url)
    assert "does not exist" in str(info.value)
    with pytest.raises(StoreError, match="no-such-bucket-here"):
        await open_store(url)


@pytest.mark.parametrize(
    "url",
    [
        "s3:///db",
        "s3://",
        "s3://?endpoint_url=http://127.0.0.1:9",
        "s3://bucket-x/db?bogus=1",
        "s3://bucket-x/db?max_attempts=0",
        "s3://bucket-x/db?max_attempts=many",
        "s3://bucket-x/db?region=us-east-1&region=eu-west-1",
        "s3://bucket-x/db?endpoint_url=ftp://host",
        "s3://bucket-x/a/../b",
        "s3://bucket-x/a//b",
        "s3://bad_bucket!/db",
        "s3://bucket-x:9000/db",
        "file:///tmp/x",
    ],
)
async def test_open_bad_url_is_store_error(url: str) -> None:
    with pytest.raises(StoreError):
        await S3Store.open(url)


async def test_open_rejects_credentials_in_the_url_without_echoing_them() -> None:
    with pytest.raises(StoreError) as info:
        await S3Store.open("s3://AKIAEXAMPLE:s3cr3t-value@bucket-x/db")
    assert "s3cr3t-value" not in str(info.value)
    assert "AKIAEXAMPLE" not in str(info.value)


async def test_open_rejects_unknown_options(s3_url: str) -> None:
    with pytest.raises(StoreError, match="colour"):
        await S3Store.open(s3_url, colour="blue")


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # closed again: connecting is refused


@pytest.mark.timeout(60)
async def test_open_unreachable_endpoint_is_store_error(moto_endpoint: str) -> None:
    url = f"s3://bucket-x/db?endpoint_url=http://127.0.0.1:{closed_port()}&region=us-east-1"
    with pytest.raises(StoreError, match="bucket-x"):
        await S3Store.open(url)


async def test_url_attribute_and_closed_store(s3_url: str) -> None:
    store = await open_store(s3_url)
    assert isinstance(store, S3Store)
    assert store.url == s3_url
    await store.aclose()
    await store.aclose()  # idempotent
    with pytest.raises(StoreClosed):
        await store.get(node(1)[0])
    with pytest.raises(StoreClosed):
        await store.cas_ref("main", None, b"x")


# ------------------------------------------------------------------------------------ refs


async def test_cas_ref_with_stale_expected_changes_nothing(s3_url: str) -> None:
    store = await S3Store.open(s3_url)
    try:
        assert await store.cas_ref("main", None, b"A") is True
        assert await store.cas_ref("main", None, b"B") is False  # exists already
        assert await store.cas_ref("main", b"stale", b"C") is False
        assert await store.cas_ref("main", b"stale", None) is False
        assert await store.get_ref("main") == b"A"
        assert await store.cas_ref("main", b"A", b"A") is True  # same value: still a success
        assert await store.cas_ref("main", b"A", b"B") is True
        assert await store.cas_ref("main", b"A", None) is False
        assert await store.get_ref("main") == b"B"
        assert await store.cas_ref("main", b"B", None) is True
        assert await store.get_ref("main") is None
        assert await store.cas_ref("main", b"B", None) is False
        assert await store.cas_ref("main", None, None) is True
        assert await store.list_refs() == {}
    finally:
        await store.aclose()


@pytest.mark.timeout(120)
async def test_concurrent_cas_ref_racers_exactly_one_wins(s3_url: str) -> None:
    # Two store objects (as two processes would have) race on one ref, round after round: the
    # creation, updates, and deletion; each round exactly one wins and its value is what stays.
    stores = [await S3Store.open(s3_url), await S3Store.open(s3_url)]
    try:
        expected: bytes | None = None
        for round_ in range(40):
            deleting = round_ % 10 == 9 and expected is not None
            outcomes: dict[int, bool] = {}
            news: list[bytes | None] = [
                None if deleting else f"round {round_} by {i}".encode() for i in range(2)
            ]

            async def race(
                i: int, expected: bytes | None, new: bytes | None, outcomes: dict[int, bool]
            ) -> None:
                outcomes[i] = await stores[i].cas_ref("main", expected, new)

            async with anyio.create_task_group() as tg:
                for i in range(2):
                    tg.start_soon(race, i, expected, news[i], outcomes)
            winners = [i for i, won in outcomes.items() if won]
            if deleting:
                # Both ask for the same change: the loser sees the ref already gone.
                assert len(winners) == 1, (round_, outcomes)
                assert await stores[0].get_ref("main") is None
                expected = None
                continue
            assert len(winners) == 1, (round_, outcomes)
            expected = news[winners[0]]
            assert await stores[0].get_ref("main") == expected
            assert await stores[1].get_ref("main") == expected
    finally:
        for store in stores:
            await store.aclose()


# ------------------------------------------------------------------- retries, via a proxy


class Proxy:
    """An HTTP proxy on 127.0.0.1 in front of moto that can fail, race or lose requests.

    * ``fail_next = n``: answer the next n requests with ``fail_status``/``fail_code`` (S3's
      XML error body) without forwarding them;
    * ``before``: awaited before a request is forwarded (a racer acts here);
    * ``lose``: if it returns True for a forwarded request, the client gets a 500 instead of the
      real response (the request did take effect: a lost response).
    """

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.fail_next = 0
        self.fail_status = 503
        self.fail_code = "SlowDown"
        self.failed = 0
        self.seen: list[tuple[str, str]] = []
        self.before: Callable[[str, str], Awaitable[None]] | None = None
        self.lose: Callable[[str, str], bool] | None = None
        self.session: ClientSession | None = None

    def count(self, method: str, path_part: str) -> int:
        return sum(1 for m, p in self.seen if m == method and path_part in p)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        method, path = request.method, request.raw_path
        self.seen.append((method, path))
        if self.fail_next > 0:
            self.fail_next -= 1
            self.failed += 1
            return web.Response(status=self.fail_status, body=self._error(self.fail_code))
        if self.before is not None:
            await self.before(method, path)
        assert self.session is not None
        headers = {
            k: v
            for k, v in request.headers.items()
            if k.lower() not in ("host", "content-length", "transfer-encoding", "connection")
        }
        async with self.session.request(
            method,
            yarl.URL(self.upstream + path, encoded=True),
            headers=headers,
            data=body,
            allow_redirects=False,
        ) as response:
            payload = await response.read()
            out_headers = {
                k: v
                for k, v in response.headers.items()
                if k.lower()
                not in ("content-length", "transfer-encoding", "connection", "date", "server")
            }
            status = response.status
        if self.lose is not None and self.lose(method, path):
            return web.Response(status=500, body=self._error("InternalError"))
        return web.Response(status=status, headers=out_headers, body=payload)

    @staticmethod
    def _error(code: str) -> bytes:
        return (
            f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
            f"<Message>injected by the test proxy</Message></Error>"
        ).encode()


@pytest.fixture
async def proxy(moto_endpoint: str) -> AsyncIterator[tuple[Proxy, str]]:
    """A Proxy in front of moto and its ``http://127.0.0.1:PORT``."""
    instance = Proxy(moto_endpoint)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", instance.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    async with ClientSession(auto_decompress=False) as session:
        instance.session = session
        try:
            yield instance, f"http://{host}:{port}"
        finally:
            await runner.cleanup()


def via(s3_url: str, endpoint: str) -> str:
    return with_params(s3_url, endpoint_url=endpoint, max_attempts=4)


FAST = {"backoff_base": 0.001, "backoff_cap": 0.01}


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("status", "code"), [(503, "SlowDown"), (500, "InternalError"), (429, "TooManyRequests")]
)
async def test_transient_errors_are_retried_then_succeed(
    s3_url: str, proxy: tuple[Proxy, str], status: int, code: str
) -> None:
    px, endpoint = proxy
    px.fail_status, px.fail_code = status, code
    store = await S3Store.open(via(s3_url, endpoint), **FAST)
    try:
        address, data = node(6)
        px.fail_next = 3  # max_attempts=4: the fourth attempt goes through
        await store.put_many({address: data})
        px.fail_next = 3
        assert await store.get(address) == data
        px.fail_next = 3
        assert await store.cas_ref("main", None, b"v") is True
        assert px.failed == 9
        assert await store.get_ref("main") == b"v"
    finally:
        await store.aclose()


@pytest.mark.timeout(60)
async def test_retries_are_bounded(s3_url: str, proxy: tuple[Proxy, str]) -> None:
    px, endpoint = proxy
    store = await S3Store.open(via(s3_url, endpoint), **FAST)
    try:
        address, data = node(7)
        px.fail_next = 100
        with pytest.raises(StoreError, match="SlowDown") as info:
            await store.put_many({address: data})
        assert type(info.value) is StoreError
        assert "nodes/" + address.hex() in str(info.value)
        assert px.failed == 4  # exactly max_attempts
        px.fail_next = 100
        with pytest.raises(StoreError, match="after 4 attempt"):
            await store.get_ref("main")
        assert px.failed == 8
        px.fail_next = 0
        assert await store.missing([address]) == {address}  # nothing half-written
    finally:
        await store.aclose()


@pytest.mark.timeout(60)
async def test_client_errors_are_not_retried(s3_url: str, proxy: tuple[Proxy, str]) -> None:
    px, endpoint = proxy
    px.fail_status, px.fail_code = 403, "AccessDenied"
    store = await S3Store.open(via(s3_url, endpoint), **FAST)
    try:
        px.fail_next = 100
        with pytest.raises(StoreError, match="403"):
            await store.missing([node(8)[0]])
        assert px.failed == 1
    finally:
        await store.aclose()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("exists", [False, True])
async def test_precondition_failed_is_a_lost_race_never_retried(
    s3_url: str, proxy: tuple[Proxy, str], raw: Any, exists: bool
) -> None:
    # A racer writes between our read and our conditional PUT: the server answers 412, which
    # is not resent; cas_ref re-reads, sees the racer's value and returns False.
    px, endpoint = proxy
    bucket = bucket_of(s3_url)
    store = await S3Store.open(via(s3_url, endpoint), **FAST)
    try:
        expected = None
        if exists:
            assert await store.cas_ref("main", None, b"old")
            expected = b"old"
        puts_before = px.count("PUT", "/refs/main")

        async def racer(method: str, path: str) -> None:
            if method == "PUT" and path.endswith("/refs/main") and px.before is not None:
                px.before = None
                await raw.put_object(Bucket=bucket, Key="db/refs/main", Body=b"racer")

        px.before = racer
        assert await store.cas_ref("main", expected, b"mine") is False
        assert px.count("PUT", "/refs/main") - puts_before == 1
        assert await store.get_ref("main") == b"racer"
    finally:
        await store.aclose()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("exists", [False, True])
async def test_lost_response_of_a_winning_cas_is_still_a_win(
    s3_url: str, proxy: tuple[Proxy, str], exists: bool
) -> None:
    # The PUT lands but its response is replaced by a 500: the resent PUT gets 412 (the ETag
    # moved, or the key now exists), and the writer token on the re-read shows it was ours.
    px, endpoint = proxy
    store = await S3Store.open(via(s3_url, endpoint), **FAST)
    try:
        expected = None
        if exists:
            assert await store.cas_ref("main", None, b"old")
            expected = b"old"
        lost: list[str] = []

        def lose_first_put(method: str, path: str) -> bool:
            if method == "PUT" and path.endswith("/refs/main") and not lost:
                lost.append(path)
                return True
            return False

        px.lose = lose_first_put
        assert await store.cas_ref("main", expected, b"mine") is True
        assert lost
        assert await store.get_ref("main") == b"mine"
    finally:
        await store.aclose()


@pytest.mark.timeout(60)
async def test_lost_response_of_a_conditional_delete_is_still_a_win(
    s3_url: str, proxy: tuple[Proxy, str]
) -> None:
    px, endpoint = proxy
    store = await S3Store.open(via(s3_url, endpoint), **FAST)
    try:
        assert await store.cas_ref("main", None, b"old")
        px.lose = lambda method, path: method == "DELETE" and px.count("DELETE", "/refs/") == 1
        assert await store.cas_ref("main", b"old", None) is True
        assert px.count("DELETE", "/refs/main") == 2  # resent, then 404: gone, so ours
        assert await store.get_ref("main") is None
    finally:
        await store.aclose()


@pytest.mark.timeout(60)
async def test_lost_response_then_overwritten_is_outcome_unknown(
    s3_url: str, proxy: tuple[Proxy, str], raw: Any
) -> None:
    # Our PUT lands, its response is lost, and a racer overwrites it before we look again:
    # whether we won cannot be told, and cas_ref must not guess.
    px, endpoint = proxy
    bucket = bucket_of(s3_url)
    store = await S3Store.open(via(s3_url, endpoint), **FAST)
    try:
        assert await store.cas_ref("main", None, b"old")
        puts: list[str] = []
        done: list[bool] = []

        def lose_and_overwrite(method: str, path: str) -> bool:
            return method == "PUT" and path.endswith("/refs/main") and not done

        async def racer(method: str, path: str) -> None:
            if method == "PUT" and path.endswith("/refs/main"):
                puts.append(path)
                if len(puts) == 2:  # the resend: the first PUT has landed by now
                    done.append(True)
                    await raw.put_object(Bucket=bucket, Key="db/refs/main", Body=b"racer")

        px.lose = lose_and_overwrite
        px.before = racer
        with pytest.raises(StoreError, match="outcome unknown"):
            await store.cas_ref("main", b"old", b"mine")
        assert await store.get_ref("main") == b"racer"
    finally:
        await store.aclose()
