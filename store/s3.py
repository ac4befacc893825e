"""S3 node store: ``s3://bucket/prefix?endpoint_url=...&region=...&max_attempts=...``.

Works against AWS S3 and S3-compatible servers (MinIO, R2, moto) that honour conditional PUT
(``If-None-Match: *``, ``If-Match``) and, for deleting refs, conditional DELETE. Tested against a
local ``moto`` server over real HTTP (tests/store/test_s3_store.py).

Options, in the URL query or as keywords to :meth:`S3Store.open` (keywords win): ``endpoint_url``
(an S3-compatible server), ``region``, ``max_attempts`` (5); as keywords only: ``concurrency``
(16), ``connect_timeout`` (3 s), ``read_timeout`` (30 s), ``backoff_base`` (0.1 s),
``backoff_cap`` (5 s). Anything else is a StoreError.

Object layout (docs/format.md cites this; changing it is a format change)
-------------------------------------------------------------------------
Let ``P`` be the URL's path without its leading and trailing slashes, followed by ``/`` when not
empty (``s3://b/db`` -> ``P = "db/"``; ``s3://b`` -> ``P = ""``). Under ``P`` the store writes
exactly two kinds of objects:

* ``P + "nodes/" + hex(address)``: one object per node. ``hex`` is the lowercase hex of all 33
  address bytes (66 characters, starting ``01``, as :func:`store.codec.address_to_str`). The body
  is the node's canonical bytes, nothing else. Every read is checked against the address
  (:class:`CorruptNode` on mismatch).
* ``P + "refs/" + encode(name)``: one object per ref. The body is the ref's value, byte for
  byte. ``encode`` keeps ``A-Z a-z 0-9 . _ -`` and writes every other character of the name
  (``/ : @ + =``) as ``!`` and two uppercase hex digits: ``heads/main`` -> ``heads!2Fmain``.
  Each ref is thus a single key segment, which file-backed servers such as MinIO need (they
  cannot hold both ``a`` and ``a/b``); ``!`` never occurs in a ref name, so decoding is exact.
  The object carries user metadata ``replica-writer``: a random token per ``cas_ref`` call, to settle
  a compare-and-set whose response was lost (below). A deleted ref is a deleted object.

Other keys under ``P`` are ignored by ``list_refs`` / ``list_addresses``. No other object is
written: no manifest, no lock, no temporary key. A node object is whole or absent (a PUT is
atomic), and callers put nodes before the ref that names them (store/base.py).

Requests
--------
* ``put_many`` PUTs every node unconditionally (content addressing makes a PUT idempotent, and
  re-putting a node replaces a damaged copy), ``get_many`` GETs and ``missing`` HEADs one object
  per address; all three run at most ``concurrency`` (16) requests at once. ``missing`` uses
  HEAD rather than listing ``nodes/``: a listing costs time and money in proportion to the whole
  store, a HEAD per asked address in proportion to the question (sync asks about the nodes of a
  diff).
* ``delete_many`` uses DeleteObjects, 1000 keys per request.
* ``cas_ref(name, expected, new)``: GET the ref (value and ETag); if the value is not
  ``expected`` return False; else write conditionally: create with ``If-None-Match: *``, replace
  with ``If-Match: <etag>``, delete with ``DeleteObject`` + ``If-Match: <etag>`` (AWS S3 honours
  conditional deletes since 2025-09; moto does too). A 412 PreconditionFailed, a 409
  ConditionalRequestConflict or a 404 on a conditional delete means a concurrent writer got
  there first: re-read and decide again (False as soon as the value differs; a value equal to
  ``expected`` again is retried, at most :data:`CAS_ROUNDS` times). The server's conditional
  check is the linearisation point, so exactly one of several racers wins.
  When a conditional write had to be resent (its first response was lost), a 412 may be our
  own earlier success: the ``replica-writer`` token on the re-read tells; a delete that finds
  the ref gone counts as ours; if neither can be told, StoreError("outcome unknown") is raised
  rather than a possibly wrong answer.
  A server that silently ignores ``If-Match`` on DELETE makes ref deletion racy (nothing else).

Retries: throttling (503 SlowDown, 429, RequestTimeout), other 5xx and connection or read errors
are retried up to ``max_attempts`` attempts in all (default 5) with exponential backoff and full
jitter (``uniform(0, min(cap, base * 2**n))``). botocore's own retries are switched off so that
this one policy applies and a 412/409 is never retried. Everything botocore or aiohttp raises
is translated here into StoreError / NodeNotFound / CorruptNode, naming bucket and key.

Permissions needed: s3:ListBucket (HeadBucket at open, listings; without it S3 answers 403, not
404, for an absent key, which surfaces as StoreError), s3:GetObject, s3:PutObject, s3:DeleteObject.
Credentials and region come from the standard AWS resolution (environment, config files, instance
roles); the URL never carries them. With ``endpoint_url`` path-style addressing is used.
"""

from __future__ import annotations

import random
import re
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar
from urllib.parse import parse_qsl, unquote, urlsplit

import aiohttp
import anyio
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import (
    BotoCoreError,
    ChecksumError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
    PartialCredentialsError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from store.base import check_address, check_batch, check_ref_name, check_ref_value, verify_node
from store.codec import is_address
from store.errors import NodeNotFound, StoreClosed, StoreError

T = TypeVar("T")

#: Conditional-write rounds in one ``cas_ref`` before giving up with StoreError. A round only
#: repeats when a concurrent writer changed the object and the value is ``expected`` again.
CAS_ROUNDS = 8

_DEFAULTS: dict[str, Any] = {
    "endpoint_url": None,
    "region": None,
    "max_attempts": 5,
    "concurrency": 16,
    "connect_timeout": 3.0,
    "read_timeout": 30.0,
    "backoff_base": 0.1,
    "backoff_cap": 5.0,
}
#: Options the URL query may carry (every option may also be passed as a keyword to ``open``).
_QUERY_OPTIONS = frozenset({"endpoint_url", "region", "max_attempts"})

_WRITER_META = "replica-writer"
_SAFE_REF_CHAR = re.compile(r"[A-Za-z0-9._-]")
_ENCODED_REF = re.compile(r"!([0-9A-F]{2})")
_HEX_ADDRESS = re.compile(r"^[0-9a-f]{66}$")

_RETRY_CODES = frozenset({
    "SlowDown", "RequestTimeout", "RequestTimeoutException", "Throttling", "ThrottlingException",
    "ThrottledException", "RequestThrottled", "TooManyRequestsException", "RequestLimitExceeded",
    "InternalError", "ServiceUnavailable", "PriorRequestNotComplete", "BandwidthLimitExceeded",
})  # fmt: skip
_NOT_FOUND = frozenset({"NoSuchKey", "NotFound", "404"})
_CONFLICT = frozenset({"PreconditionFailed", "412", "ConditionalRequestConflict", "409"})
# Network trouble worth another attempt: botocore's connection/read errors, aiohttp's while a
# body is read, timeouts, resets.
_TRANSIENT = (
    HTTPClientError,
    BotoConnectionError,
    IncompleteReadError,
    ChecksumError,
    aiohttp.ClientError,
    TimeoutError,
    OSError,
)


_loader: Any = None


def _session() -> Any:
    """A fresh aiobotocore session (credentials and config are resolved anew for each store),
    sharing one botocore data loader, so the S3 service model is parsed once per process rather
    than once per ``open`` (about 0.1 s each)."""
    global _loader
    session = get_session()
    if _loader is None:
        _loader = session.get_component("data_loader")
    else:
        session.register_component("data_loader", _loader)
    return session


def encode_ref_name(name: str) -> str:
    """The key segment of a ref name (see the module docstring)."""
    return "".join(c if _SAFE_REF_CHAR.match(c) else f"!{ord(c):02X}" for c in name)


def decode_ref_name(segment: str) -> str | None:
    """Inverse of :func:`encode_ref_name`; None if ``segment`` is not one of its outputs."""
    name = _ENCODED_REF.sub(lambda m: chr(int(m.group(1), 16)), segment)
    try:
        check_ref_name(name)
    except StoreError:
        return None
    return name if encode_ref_name(name) == segment else None


def _error_code(exc: ClientError) -> tuple[str, int]:
    error = exc.response.get("Error", {}) or {}
    meta = exc.response.get("ResponseMetadata", {}) or {}
    status = int(meta.get("HTTPStatusCode") or 0)
    return str(error.get("Code") or status), status


def _is_retryable(exc: ClientError) -> bool:
    code, status = _error_code(exc)
    return code in _RETRY_CODES or status == 429 or status >= 500


def _maybe_executed(exc: Exception) -> bool:
    """Could the failed request have taken effect? Throttling refusals and connections that never
    opened did not; a 500, a gateway timeout or a connection lost mid-request may have."""
    if isinstance(exc, ClientError):
        code, status = _error_code(exc)
        refused = {"SlowDown", "Throttling", "ThrottlingException", "ThrottledException",
                   "RequestThrottled", "TooManyRequestsException", "RequestLimitExceeded",
                   "BandwidthLimitExceeded", "RequestTimeout", "ServiceUnavailable"}  # fmt: skip
        return not (code in refused or status in (429, 503))
    return not isinstance(exc, EndpointConnectionError | ConnectTimeoutError)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        code, status = _error_code(exc)
        message = (exc.response.get("Error", {}) or {}).get("Message") or ""
        return f"{code} (HTTP {status}){': ' + message if message else ''}"
    return f"{type(exc).__name__}: {exc}"


@dataclass(slots=True)
class _Call:
    """What happened to one logical request across its attempts."""

    #: An attempt failed in a way that leaves open whether the server executed it (a 500, a
    #: timeout or a connection dropped after sending), and the request was then resent.
    uncertain: bool = False


@dataclass(frozen=True, slots=True)
class _RefObject:
    value: bytes
    etag: str
    writer: str | None


@dataclass(frozen=True, slots=True)
class _Options:
    bucket: str
    prefix: str
    endpoint_url: str | None
    region: str | None
    max_attempts: int
    concurrency: int
    connect_timeout: float
    read_timeout: float
    backoff_base: float
    backoff_cap: float


def _parse_url(url: str, options: Mapping[str, object]) -> _Options:
    if not isinstance(url, str):
        raise StoreError(f"store URL must be a string, got {type(url).__name__}")
    try:
        parts = urlsplit(url)
        hostname = parts.hostname
    except ValueError as exc:
        raise StoreError(f"malformed S3 URL: {exc}") from exc
    if parts.scheme != "s3":
        raise StoreError(f"not an s3:// URL: {parts.scheme}://...")
    if parts.username is not None or parts.password is not None:
        # Not echoed: it may hold a secret.
        raise StoreError(
            "credentials in an s3:// URL are not supported: use the AWS environment variables, "
            "config files or an instance role"
        )
    bucket = parts.netloc
    if not bucket or hostname is None:
        raise StoreError(f"S3 URL {url!r} names no bucket: use s3://bucket/prefix")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._\-]{1,253}[A-Za-z0-9]", bucket):
        raise StoreError(f"invalid S3 bucket name {bucket!r} in {url!r}")
    if parts.fragment:
        raise StoreError(f"S3 URL {url!r} must not have a #fragment")
    prefix = unquote(parts.path).strip("/")
    if prefix and ("//" in prefix or any(seg in (".", "..") for seg in prefix.split("/"))):
        raise StoreError(f"invalid key prefix {prefix!r} in S3 URL {url!r}")
    values = dict(_DEFAULTS)
    seen: set[str] = set()
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key not in _QUERY_OPTIONS:
            raise StoreError(
                f"unknown S3 URL parameter {key!r}: use {', '.join(sorted(_QUERY_OPTIONS))}"
            )
        if key in seen:
            raise StoreError(f"S3 URL parameter {key!r} given twice")
        seen.add(key)
        values[key] = value
    for key, option in options.items():
        if key not in _DEFAULTS:
            raise StoreError(f"unknown S3 store option {key!r}: use {', '.join(sorted(_DEFAULTS))}")
        values[key] = option

    def text(key: str) -> str | None:
        value = values[key]
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            raise StoreError(f"S3 store option {key} must be a non-empty string, got {value!r}")
        return value

    def number(key: str, kind: type[int] | type[float], low: float, high: float) -> Any:
        raw = values[key]
        try:
            if isinstance(raw, bool) or (kind is int and isinstance(raw, float)):
                raise ValueError
            value = kind(raw)
        except (TypeError, ValueError):
            raise StoreError(f"S3 store option {key} must be a number, got {raw!r}") from None
        if not low <= value <= high:
            raise StoreError(f"S3 store option {key}={value} out of range [{low}, {high}]")
        return value

    endpoint_url = text("endpoint_url")
    if endpoint_url is not None and urlsplit(endpoint_url).scheme not in ("http", "https"):
        raise StoreError(f"endpoint_url must be an http(s) URL, got {endpoint_url!r}")
    return _Options(
        bucket=bucket,
        prefix=prefix + "/" if prefix else "",
        endpoint_url=endpoint_url,
        region=text("region"),
        max_attempts=number("max_attempts", int, 1, 20),
        concurrency=number("concurrency", int, 1, 256),
        connect_timeout=number("connect_timeout", float, 0.01, 600),
        read_timeout=number("read_timeout", float, 0.01, 3600),
        backoff_base=number("backoff_base", float, 0, 60),
        backoff_cap=number("backoff_cap", float, 0, 600),
    )


class S3Store:
    """A NodeStore in an S3 bucket (layout and request rules in the module docstring).

    Open with ``await S3Store.open(url)`` (or ``store.base.open_store``); ``aclose()`` when done.
    One aiobotocore client, with its connection pool, serves every call until ``aclose``.
    """

    def __init__(self, url: str, options: _Options, client: Any, stack: AsyncExitStack) -> None:
        self.url = url
        self.bucket = options.bucket
        self.prefix = options.prefix
        self._options = options
        self._client = client
        self._stack = stack
        self._slots = anyio.Semaphore(options.concurrency)
        self._closed = False

    @classmethod
    async def open(cls, url: str, **options: object) -> S3Store:
        """Connect and check that the bucket exists and is reachable.

        Raises StoreError naming the bucket if it is missing, forbidden or unreachable, and for a
        malformed URL or unknown option. An unreachable endpoint fails within a few seconds: the
        check makes at most two attempts, each bounded by ``connect_timeout`` (3 s).
        """
        parsed = _parse_url(url, options)
        config = AioConfig(
            retries={"total_max_attempts": 1, "mode": "standard"},
            connect_timeout=parsed.connect_timeout,
            read_timeout=parsed.read_timeout,
            max_pool_connections=parsed.concurrency,
            s3={"addressing_style": "path"} if parsed.endpoint_url else None,
        )
        stack = AsyncExitStack()
        try:
            try:
                client = await stack.enter_async_context(
                    _session().create_client(
                        "s3",
                        endpoint_url=parsed.endpoint_url,
                        region_name=parsed.region,
                        config=config,
                    )
                )
            except (BotoCoreError, ValueError) as exc:
                raise StoreError(
                    f"cannot open S3 store at bucket {parsed.bucket!r}: {exc}"
                ) from exc
            store = cls(url, parsed, client, stack)
            await store._check_bucket()
        except BaseException:
            with anyio.CancelScope(shield=True):
                await stack.aclose()
            raise
        return store

    async def _check_bucket(self) -> None:
        attempts = min(self._options.max_attempts, 2)
        try:
            await self._request(
                "HeadBucket",
                None,
                lambda: self._client.head_bucket(Bucket=self.bucket),
                passthrough=frozenset({"404", "NoSuchBucket", "NotFound", "403", "301"}),
                attempts=attempts,
            )
        except ClientError as exc:
            code, status = _error_code(exc)
            if status == 404 or code in ("NoSuchBucket", "NotFound"):
                reason = "does not exist"
            elif status == 403:
                reason = "is not accessible with these credentials (403 Forbidden)"
            else:
                region = (
                    (exc.response.get("ResponseMetadata", {}) or {})
                    .get("HTTPHeaders", {})
                    .get("x-amz-bucket-region")
                )
                reason = f"is in another region ({region or 'unknown'}): add ?region=..."
            raise StoreError(f"S3 bucket {self.bucket!r} {reason}") from exc

    # -- plumbing --------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosed(f"store {self.url} is closed")

    def _where(self, key: str | None) -> str:
        return f"s3://{self.bucket}/{key}" if key is not None else f"bucket {self.bucket!r}"

    def _node_key(self, address: bytes) -> str:
        return f"{self.prefix}nodes/{address.hex()}"

    def _ref_key(self, name: str) -> str:
        return f"{self.prefix}refs/{encode_ref_name(name)}"

    async def _request(
        self,
        op: str,
        key: str | None,
        call: Callable[[], Awaitable[T]],
        *,
        passthrough: frozenset[str] = frozenset(),
        attempts: int | None = None,
        record: _Call | None = None,
    ) -> T:
        """Run ``call`` (one S3 request, including reading its body) with bounded retries.

        A ClientError whose code or status is in ``passthrough`` is re-raised as is, for the
        caller to interpret (NoSuchKey, PreconditionFailed); any other failure becomes a
        StoreError naming the operation and the key. ``record`` learns whether a failed attempt
        may nevertheless have been executed by the server before the request was resent.
        """
        limit = attempts or self._options.max_attempts
        attempt = 0
        while True:
            attempt += 1
            try:
                return await call()
            except ClientError as exc:
                code, status = _error_code(exc)
                if code in passthrough or str(status) in passthrough:
                    raise
                if not _is_retryable(exc) or attempt >= limit:
                    raise StoreError(
                        f"S3 {op} {self._where(key)} failed after {attempt} attempt(s): "
                        f"{_describe(exc)}"
                    ) from exc
                maybe_executed = _maybe_executed(exc)
            except (NoCredentialsError, PartialCredentialsError) as exc:
                raise StoreError(
                    f"S3 {op} {self._where(key)}: no usable AWS credentials ({exc}); set "
                    "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, a profile or an instance role"
                ) from exc
            except _TRANSIENT as exc:
                if attempt >= limit:
                    raise StoreError(
                        f"S3 {op} {self._where(key)} failed after {attempt} attempt(s): "
                        f"{_describe(exc)}"
                    ) from exc
                maybe_executed = _maybe_executed(exc)
            except BotoCoreError as exc:
                raise StoreError(f"S3 {op} {self._where(key)} failed: {_describe(exc)}") from exc
            if record is not None:
                record.uncertain = record.uncertain or maybe_executed
            ceiling = min(
                self._options.backoff_cap, self._options.backoff_base * 2 ** (attempt - 1)
            )
            await anyio.sleep(random.uniform(0, ceiling))

    async def _bounded_map(
        self, items: Sequence[T], work: Callable[[T], Awaitable[Any]]
    ) -> list[Any]:
        """``[await work(i) for i in items]``, at most ``concurrency`` at once.

        After the first failure no new item starts; those already running finish. Since items
        start in order, the exception raised is that of the earliest failing item (so
        ``get_many`` names the first absent address, as the contract says).
        """
        results: list[Any] = [None] * len(items)
        errors: dict[int, Exception] = {}

        async def run(index: int, item: T) -> None:
            try:
                results[index] = await work(item)
            except Exception as exc:
                errors[index] = exc
            finally:
                self._slots.release()

        async with anyio.create_task_group() as tg:
            for index, item in enumerate(items):
                await self._slots.acquire()
                if errors:
                    self._slots.release()
                    break
                tg.start_soon(run, index, item)
        if errors:
            raise errors[min(errors)]
        return results

    async def _get_body(self, op: str, key: str, **params: Any) -> tuple[bytes, dict[str, Any]]:
        """GET ``key``: its body and the response (ETag, Metadata). NoSuchKey passes through."""

        async def call() -> tuple[bytes, dict[str, Any]]:
            response = await self._client.get_object(Bucket=self.bucket, Key=key, **params)
            async with response["Body"] as stream:
                body = await stream.read()
            return bytes(body), response

        return await self._request(op, key, call, passthrough=_NOT_FOUND)

    # -- nodes -----------------------------------------------------------------------------------

    async def get(self, address: bytes) -> bytes:
        self._check_open()
        check_address(address)
        return await self._get_node(address)

    async def _get_node(self, address: bytes) -> bytes:
        key = self._node_key(address)
        try:
            data, _ = await self._get_body("GetObject", key)
        except ClientError as exc:
            raise NodeNotFound(address) from exc
        return verify_node(address, data)

    async def get_many(self, addresses: Iterable[bytes]) -> dict[bytes, bytes]:
        self._check_open()
        wanted = list(dict.fromkeys(addresses))
        for address in wanted:
            check_address(address)
        datas = await self._bounded_map(wanted, self._get_node)
        return dict(zip(wanted, datas, strict=True))

    async def put_many(self, nodes: Mapping[bytes, bytes]) -> None:
        self._check_open()
        check_batch(nodes)

        async def put(item: tuple[bytes, bytes]) -> None:
            address, data = item
            key = self._node_key(address)
            await self._request(
                "PutObject",
                key,
                lambda: self._client.put_object(Bucket=self.bucket, Key=key, Body=data),
            )

        await self._bounded_map(list(nodes.items()), put)

    async def missing(self, addresses: Iterable[bytes]) -> set[bytes]:
        self._check_open()
        asked = list(dict.fromkeys(addresses))
        for address in asked:
            check_address(address)

        async def absent(address: bytes) -> bool:
            key = self._node_key(address)
            try:
                await self._request(
                    "HeadObject",
                    key,
                    lambda: self._client.head_object(Bucket=self.bucket, Key=key),
                    passthrough=_NOT_FOUND,
                )
            except ClientError:
                return True
            return False

        flags = await self._bounded_map(asked, absent)
        return {address for address, gone in zip(asked, flags, strict=True) if gone}

    async def list_addresses(self) -> set[bytes]:
        self._check_open()
        out: set[bytes] = set()
        for key in await self._list_keys(f"{self.prefix}nodes/"):
            if _HEX_ADDRESS.match(key):
                address = bytes.fromhex(key)
                if is_address(address):
                    out.add(address)
        return out

    async def delete_many(self, addresses: Iterable[bytes]) -> None:
        self._check_open()
        # As in MemoryStore, anything that is not an address is simply not held: ignored.
        keys = [self._node_key(a) for a in dict.fromkeys(addresses) if is_address(a)]
        batches = [keys[i : i + 1000] for i in range(0, len(keys), 1000)]

        async def delete(batch: list[str]) -> None:
            response = await self._request(
                "DeleteObjects",
                batch[0],
                lambda: self._client.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True},
                ),
            )
            failed = [e for e in response.get("Errors", []) if e.get("Code") != "NoSuchKey"]
            if failed:
                first = failed[0]
                raise StoreError(
                    f"S3 DeleteObjects could not delete {len(failed)} node(s), first "
                    f"{self._where(first.get('Key'))}: {first.get('Code')} {first.get('Message')}"
                )

        await self._bounded_map(batches, delete)

    async def _list_keys(self, prefix: str) -> list[str]:
        """Every key under ``prefix``, with the prefix removed."""
        keys: list[str] = []
        token: str | None = None
        while True:
            params: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
            if token is not None:
                params["ContinuationToken"] = token
            page = await self._request(
                "ListObjectsV2",
                prefix,
                partial(self._client.list_objects_v2, **params),
            )
            keys.extend(item["Key"][len(prefix) :] for item in page.get("Contents", []))
            if not page.get("IsTruncated"):
                return keys
            token = page.get("NextContinuationToken")
            if not token:
                raise StoreError(f"S3 ListObjectsV2 {self._where(prefix)}: truncated, no token")

    # -- refs ------------------------------------------------------------------------------------

    async def _read_ref(self, key: str) -> _RefObject | None:
        try:
            value, response = await self._get_body("GetObject", key)
        except ClientError:
            return None
        metadata = response.get("Metadata") or {}
        return _RefObject(value, response["ETag"], metadata.get(_WRITER_META))

    async def get_ref(self, name: str) -> bytes | None:
        self._check_open()
        check_ref_name(name)
        current = await self._read_ref(self._ref_key(name))
        return None if current is None else current.value

    async def cas_ref(self, name: str, expected: bytes | None, new: bytes | None) -> bool:
        self._check_open()
        check_ref_name(name)
        check_ref_value(expected, "expected")
        check_ref_value(new, "new")
        key = self._ref_key(name)
        writer = uuid.uuid4().hex  # marks our PUT, to recognise it after a lost response
        uncertain = False  # an attempt that may have landed was resent and then refused
        for _ in range(CAS_ROUNDS):
            current = await self._read_ref(key)
            value = None if current is None else current.value
            if uncertain:
                if new is not None and current is not None and current.writer == writer:
                    return True  # our earlier attempt landed; only its response was lost
                if new is None and current is None:
                    return True  # gone: our earlier delete, or a racer's identical one
                if value != expected:
                    raise StoreError(
                        f"cas_ref {self._where(key)}: outcome unknown (a possibly executed "
                        "conditional write was resent and refused, and the ref has changed "
                        "since); re-read the ref"
                    )
            if value != expected:
                return False
            if current is None and new is None:
                return True  # absent, as expected and as asked
            call = _Call()
            if new is None:
                assert current is not None
                request = partial(
                    self._client.delete_object, Bucket=self.bucket, Key=key, IfMatch=current.etag
                )
            else:
                condition = {"IfNoneMatch": "*"} if current is None else {"IfMatch": current.etag}
                request = partial(
                    self._client.put_object,
                    Bucket=self.bucket,
                    Key=key,
                    Body=new,
                    Metadata={_WRITER_META: writer},
                    **condition,
                )
            try:
                await self._request(
                    "DeleteObject" if new is None else "PutObject",
                    key,
                    request,
                    passthrough=_CONFLICT | _NOT_FOUND,
                    record=call,
                )
            except ClientError:
                # 412/409: a concurrent writer passed the server's check first; 404: the object
                # went away under our If-Match. Neither was retried. Re-read and decide again.
                uncertain = uncertain or call.uncertain
                continue
            return True
        raise StoreError(f"cas_ref {self._where(key)}: gave up after {CAS_ROUNDS} contended rounds")

    async def list_refs(self) -> dict[str, bytes]:
        self._check_open()
        prefix = f"{self.prefix}refs/"
        names = sorted(name for name in map(decode_ref_name, await self._list_keys(prefix)) if name)

        async def read(name: str) -> _RefObject | None:
            return await self._read_ref(self._ref_key(name))

        found = await self._bounded_map(names, read)
        # A ref deleted between the listing and its GET is simply absent.
        return {n: obj.value for n, obj in zip(names, found, strict=True) if obj is not None}

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        with anyio.CancelScope(shield=True):  # release the connections even when cancelled
            await self._stack.aclose()
