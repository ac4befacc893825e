"""Output of the ``replica`` command: table cells, aligned tables, JSON, progress lines.

Tables are for people (strings bare, keywords with their colon, instants in RFC 3339 UTC,
collections as EDN); ``--json`` is for programs (docs/cli.md, "JSON output"). Progress goes
to stderr only (stdout stays parseable), one line rewritten in place, only when enabled.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import decimal
import json
import math
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, TextIO, TypeVar

import anyio

import replica
from query import edn
from query.types import Keyword, Symbol
from replica.datom import Datom
from store.base import NodeStore

#: characters of a commit address shown for short ids (hex after the '01' version byte)
SHORT = 10


def echo(text: str = "") -> None:
    print(text, file=sys.stdout)


def echo_err(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def short(address: bytes) -> str:
    return address.hex()[2 : 2 + SHORT]


def time_text(wall_ms: int, ms: bool = False) -> str:
    if wall_ms <= 0:
        return "-"
    t = dt.datetime.fromtimestamp(wall_ms / 1000, dt.UTC)
    return t.strftime("%Y-%m-%d %H:%M:%S") + (f".{t.microsecond // 1000:03d}" if ms else "")


def iso(wall_ms: int) -> str | None:
    if wall_ms <= 0:
        return None
    t = dt.datetime.fromtimestamp(wall_ms / 1000, dt.UTC)
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"  # pragma: no cover - the loop returns


def duration(seconds: float) -> str:
    s = max(0, round(seconds))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def cell(value: Any) -> str:
    """A value as shown in a table cell: strings bare, keywords with their colon, instants in
    RFC 3339 UTC, collections as EDN."""
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Keyword):
        return ":" + value
    if isinstance(value, Symbol):
        return str(value)
    if isinstance(value, str):
        return value.replace("\n", "\\n").replace("\t", "\\t")
    if isinstance(value, int | float):
        return repr(value) if isinstance(value, float) else str(value)
    if isinstance(value, dt.datetime):
        return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if isinstance(value, bytes):
        return value.hex()
    try:
        return edn.dumps(value)
    except replica.EDNError:
        return repr(value)


def is_number(value: Any) -> bool:
    return isinstance(value, int | float | decimal.Decimal) and not isinstance(value, bool)


def table(
    headers: Sequence[str], rows: Sequence[Sequence[Any]], *, numeric: Sequence[bool] = ()
) -> str:
    """Rows as aligned columns under a dashed header; numeric columns right-aligned (by
    ``numeric`` or, if not given, when every value of the column is a number)."""
    cells = [[cell(v) for v in row] for row in rows]
    ncol = len(headers)
    if not numeric:
        numeric = [bool(rows) and all(is_number(r[i]) for r in rows) for i in range(ncol)]
    widths = [max([len(headers[i])] + [len(r[i]) for r in cells]) for i in range(ncol)]

    def line(items: Sequence[str]) -> str:
        parts = [
            items[i].rjust(widths[i]) if numeric[i] else items[i].ljust(widths[i])
            for i in range(ncol)
        ]
        return "  ".join(parts).rstrip()

    out = [line(list(headers)), line(["-" * w for w in widths])]
    out.extend(line(r) for r in cells)
    return "\n".join(out)


def rows_note(n: int) -> str:
    return f"({n} row{'s' if n != 1 else ''})"


def jsonable(value: Any) -> Any:
    """The JSON form of a value (docs/cli.md, "JSON output"): keywords and symbols as their
    text without the colon, instants as RFC 3339 strings, UUIDs and decimals as strings,
    bytes as hex, sets as sorted arrays, datoms as objects; integers stay exact."""
    if value is None or isinstance(value, bool | str):
        return str(value) if isinstance(value, str) else value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return value
    if isinstance(value, dt.datetime):
        return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if isinstance(value, uuid.UUID | decimal.Decimal):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, Datom):
        return {
            "e": value.e,
            "a": value.a,
            "v": jsonable(value.v),
            "tx": value.tx,
            "added": value.added,
        }
    if isinstance(value, Mapping):
        return {(k if isinstance(k, str) else cell(k)): jsonable(v) for k, v in value.items()}
    if isinstance(value, set | frozenset):
        return [jsonable(v) for v in sorted(value, key=sort_key)]
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    return repr(value)


def emit_json(value: Any) -> None:
    echo(json.dumps(jsonable(value), indent=2, ensure_ascii=False, allow_nan=False))


def sort_key(value: Any) -> tuple[Any, ...]:
    """A total order over the values a query returns (mixed types never raise)."""
    if value is None:
        return (0,)
    if isinstance(value, bool):
        return (1, value)
    if is_number(value):
        return (2, value) if not (isinstance(value, float) and math.isnan(value)) else (2.5,)
    if isinstance(value, str):
        return (3, value)
    if isinstance(value, dt.datetime):
        return (4, value)
    if isinstance(value, list | tuple):
        return (6, tuple(sort_key(v) for v in value))
    return (9, type(value).__name__, repr(value))


def render_progress(
    label: str,
    done: int,
    elapsed: float,
    *,
    unit: str = "nodes",
    total: int | None = None,
    nbytes: int | None = None,
    total_bytes: int | None = None,
    width: int = 20,
) -> str:
    """One progress line: a bar and percentage when a total is known, the count, bytes,
    rate and ETA (from bytes when their total is known, else from the count)."""
    parts = [label]
    fraction: float | None = None
    if total_bytes and nbytes is not None:
        fraction = min(1.0, nbytes / total_bytes)
    elif total:
        fraction = min(1.0, done / total)
    if fraction is not None:
        filled = int(fraction * width)
        parts.append("[" + "#" * filled + "." * (width - filled) + f"] {fraction * 100:3.0f}%")
    parts.append(f"{done:,}/{total:,} {unit}" if total else f"{done:,} {unit}")
    if nbytes is not None:
        parts.append(human_bytes(nbytes))
    if elapsed > 0:
        parts.append(f"{done / elapsed:,.0f} {unit}/s")
        if nbytes:
            parts.append(f"{human_bytes(nbytes / elapsed)}/s")
    if fraction is not None and 0 < fraction < 1 and elapsed > 0:
        parts.append(f"ETA {duration(elapsed * (1 - fraction) / fraction)}")
    else:
        parts.append(f"{duration(elapsed)} elapsed")
    return "  ".join(parts)


class Progress:
    """A progress line on stderr, rewritten in place (only when ``enabled``: a terminal or
    ``--progress``); :meth:`close` clears it so the command's summary follows cleanly."""

    def __init__(
        self,
        label: str,
        *,
        enabled: bool,
        unit: str = "nodes",
        total: int | None = None,
        total_bytes: int | None = None,
        stream: TextIO | None = None,
    ) -> None:
        self.label = label
        self.enabled = enabled
        self.unit = unit
        self.total = total
        self.total_bytes = total_bytes
        self.stream = stream if stream is not None else sys.stderr
        self.started = time.monotonic()
        self._last = 0.0
        self._shown = 0

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def update(self, done: int, nbytes: int | None = None, *, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < 0.1:
            return
        self._last = now
        text = render_progress(
            self.label,
            done,
            self.elapsed(),
            unit=self.unit,
            total=self.total,
            nbytes=nbytes,
            total_bytes=self.total_bytes,
        )
        pad = max(0, self._shown - len(text))
        self.stream.write("\r" + text + " " * pad)
        self.stream.flush()
        self._shown = len(text)

    def close(self) -> None:
        if self.enabled and self._shown:
            self.stream.write("\r" + " " * self._shown + "\r")
            self.stream.flush()
            self._shown = 0


def progress_enabled(args: argparse.Namespace) -> bool:
    forced = getattr(args, "progress", None)
    if forced is not None:
        return bool(forced)
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


T = TypeVar("T")


async def with_progress(
    progress: Progress, counter: Callable[[], tuple[int, int | None]], work: Awaitable[T]
) -> T:
    """Await ``work`` while a ticker shows ``counter()`` (done, bytes) ten times a second."""
    result: list[T] = []
    error: list[BaseException] = []

    async def ticker() -> None:
        while True:
            done, nbytes = counter()
            progress.update(done, nbytes)
            await anyio.sleep(0.1)

    async with anyio.create_task_group() as tg:
        if progress.enabled:
            tg.start_soon(ticker)
        try:
            result.append(await work)
        except BaseException as exc:  # re-raised below, outside the task group
            error.append(exc)
        finally:
            tg.cancel_scope.cancel()
    if error:
        progress.close()
        raise error[0]
    done, nbytes = counter()
    progress.update(done, nbytes, force=True)
    progress.close()
    return result[0]


class CountingStore:
    """A NodeStore passing everything to ``inner`` and counting the nodes and bytes read and
    written: progress for maintenance calls that take no progress callback."""

    def __init__(self, inner: NodeStore) -> None:
        self.inner = inner
        self.url = inner.url
        self.nodes = 0
        self.bytes = 0

    def counts(self) -> tuple[int, int | None]:
        return self.nodes, self.bytes

    async def get(self, address: bytes) -> bytes:
        data = await self.inner.get(address)
        self.nodes += 1
        self.bytes += len(data)
        return data

    async def get_many(self, addresses: Iterable[bytes]) -> dict[bytes, bytes]:
        found = await self.inner.get_many(addresses)
        self.nodes += len(found)
        self.bytes += sum(len(d) for d in found.values())
        return found

    async def put_many(self, nodes: Mapping[bytes, bytes]) -> None:
        await self.inner.put_many(nodes)
        self.nodes += len(nodes)
        self.bytes += sum(len(d) for d in nodes.values())

    async def missing(self, addresses: Iterable[bytes]) -> set[bytes]:
        return await self.inner.missing(addresses)

    async def get_ref(self, name: str) -> bytes | None:
        return await self.inner.get_ref(name)

    async def cas_ref(self, name: str, expected: bytes | None, new: bytes | None) -> bool:
        return await self.inner.cas_ref(name, expected, new)

    async def list_refs(self) -> dict[str, bytes]:
        return await self.inner.list_refs()

    async def list_addresses(self) -> set[bytes]:
        return await self.inner.list_addresses()

    async def delete_many(self, addresses: Iterable[bytes]) -> None:
        await self.inner.delete_many(addresses)

    async def aclose(self) -> None:
        await self.inner.aclose()


@contextlib.contextmanager
def counting_store(conn: replica.Connection) -> Iterator[CountingStore]:
    """Route ``conn.store`` through a :class:`CountingStore` for one maintenance call
    (export, verify, gc read and write only through ``conn.store``)."""
    proxy = CountingStore(conn.store)
    conn.store = proxy
    try:
        yield proxy
    finally:
        conn.store = proxy.inner
