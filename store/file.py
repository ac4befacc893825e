"""Durable directory node store: ``file:///abs/path`` (DESIGN.md section 3; the embedded default).

Nodes live in append-only *segment* files, written in batches; refs are small files replaced
atomically under an ``flock`` lock, so ``cas_ref`` is atomic across processes. Several processes
may open one directory at once: each appends only to segments it created itself, and a store
object refreshes its in-memory index from disk when a read or ``missing`` misses and in
``list_addresses``, so it sees nodes other processes wrote.

Costs, counted in :attr:`FileStore.stats` (``fsyncs`` counts every fsync/fdatasync issued):
a ``put_many`` is one ``fdatasync`` whatever its size, and one ``pwritev`` per 1024 parts of its
records (plus one fsync of ``nodes/`` when it starts a new segment, plus two when it first
seals the previous one); nodes already indexed are skipped (unless only another live
writer's segment holds them: it may not have synced them yet), and a batch of nothing new costs
nothing. A successful ``cas_ref`` costs two (the temporary file, the directory; one if the
value is unchanged or deleted), a failed one none. A ``cas_ref`` after
:meth:`FileStore.stage` (how a transaction commits: its nodes are staged, then the branch ref
moves) writes the staged nodes and a *ref record* as one batch: one ``fdatasync`` for the
whole commit, won or lost.

Blocking work runs in a worker thread, except a small commit's ``cas_ref`` (at most
INLINE_BYTES staged), which runs on the caller's thread when it cannot wait for a lock or read
another writer's segment and the recent fdatasyncs were fast (``stats["cas_inline"]`` counts
them): the two thread wake-ups cost as much as that fdatasync (docs/decisions.md 27).

Memory does not grow with the data beyond about 21 bytes a node stored. The in-memory index
(:class:`_Table`) holds no address: it maps a 32-bit *tag* of each address (its bytes 1-4) to
the segment and offset of its record, 12 bytes a slot in two flat arrays, at most 3/4 full
(a dict of 33-byte addresses took ~150 bytes a node). Every hit is confirmed by the record
header, which holds the whole address: a tag shared by two addresses costs one read more, never
a wrong answer, and a header that matches nothing is looked up in the segment's own index (its
``.idx``, else a scan) to tell a damaged record of the address (CorruptNode; ``missing`` says
present, as for any damaged node) from another address's record. So ``missing`` and the
skipping of stored nodes in ``put_many`` read one record header per node already stored, and
``list_addresses`` reads the ``.idx`` files. The segment this object writes keeps its ``.idx``
entries in memory (45 bytes a node, at most ``segment_records``) until it is sealed. A batch is
written from its parts with ``pwritev``, never joined into one buffer (a commit of a large
transaction is tens of MB; copies that size fragment the heap and kept RSS growing). None of
this is part of the on-disk format, which is unchanged.

On-disk layout, format version 1 (docs/format.md cites this; integers are big-endian)
=================================================================================

The directory format stays 1; segments and ref files carry their own version in their
magic. Version 2 of both (ref records, ref versions) is read and written; version-1 files are
read. Code that knows only version 1 refuses version-2 files (a segment of a newer format, a
damaged ref file): a StoreError, never a silently missed record.

``<root>/FORMAT``
    UTF-8 JSON ``{"format": "replica-file-store", "version": 1}`` and a newline, written first
    when the store is created (as ``.FORMAT.tmp-<random>``, fsync, rename, fsync of ``<root>``).
    Opening a directory whose FORMAT says anything else, or a non-empty directory without
    FORMAT, is a StoreError; nothing is written into it.

``<root>/nodes/<writer>-<seq>.seg``: a segment
    ``<writer>`` is 16 lowercase hex digits, random per opened store object; ``<seq>`` is 6
    decimal digits counting that object's segments from 000001. Only the object that created a
    segment ever writes to it, and only by appending. The file is:

    * an 8-byte header ``b"RPLSEG\\x00\\x02"`` (magic, segment version 2: node and ref
      records; version-1 segments, ``...\\x00\\x01``, hold node records only and are still
      read; GC writes its output segments with the version-1 header);
    * then batches, each one or more *records* followed by one *commit record*:

      - node record:   ``0x4E ("N") | u32 data length | 33-byte address | data``
        (38 bytes + data; the address is a version-1 address, first byte 0x01);
      - ref record:    ``0x52 ("R") | u16 name length | name (ASCII) | u64 version | u32
        value length | value``; value length ``0xFFFFFFFF`` (and no value) deletes the ref;
      - commit record: ``0x43 ("C") | u32 number of records in the batch | u64 byte
        length of those records | u64 XXH3-64 (seed 0) of those bytes`` (21 bytes).

    A ref record and the nodes it names are in one batch: both count or neither does.

    A batch counts only if its commit record is present and matches (count, length and
    checksum), so a batch torn by a crash (short, zero-filled or garbage tail) is never
    indexed: nothing partially written becomes visible. A scan stops at the first batch that
    does not parse or verify, with one exception: a batch that parses but fails its checksum
    and is *followed* by a valid batch cannot be a torn tail (a writer syncs each batch before
    the next), so it is on-disk damage; its nodes are indexed and reading a damaged one raises
    CorruptNode instead of calling it absent. Every read checks the record header (tag,
    length, address) and the SHA-256 of the data against the address (CorruptNode). A node
    may sit in several segments (two writers stored it); any copy serves.

    The writer holds ``flock(LOCK_EX)`` on its segment as long as it writes it. It creates
    the segment as ``nodes/.tmp-<writer>-<seq>.seg``, locks it, then renames it, so a segment
    is never visible unlocked while its writer may still append. Its first batch (with the
    header) is followed by an fsync of ``nodes/``.

    A writer of many small batches (PREFILL_AFTER in a row, each at most PREFILL_SMALL bytes:
    transactions' commits) also writes *zeros* ahead of its last batch: a batch that grows
    the file writes PREFILL_CHUNK bytes of zeros after itself (never past ``segment_size``)
    in the same write and sync, so that the next batches overwrite existing bytes instead
    of growing the file (an fdatasync that commits no metadata; ``stats["prefill_bytes"]``
    counts the zeros). Zeros are no batch (0x00 is no record tag): a scan stops there as at
    any torn tail, and other writers' scans of a live segment read them and find nothing.
    The writer truncates them off before it seals the segment; a crashed writer's zeros stay
    (its repair counts them as a torn tail; the ``.idx`` records the valid end; a repair
    fsyncs the segment before writing its ``.idx``, since a writer killed between its write
    and its fdatasync leaves bytes only the page cache holds). Zeros are
    written only at or after the end of the last batch, and a batch is written there only
    after the zeros that overlap it are: no zero ever overwrites a batch.

``<root>/nodes/<writer>-<seq>.idx``: a segment is *sealed* when this exists
    ``b"RPLIDX\\x00\\x01" | u64 valid end (segment bytes covered by the entries) | u64 entry
    count | (33-byte address | u64 offset of the node record | u32 data length) * count |
    u64 XXH3-64 of all the preceding bytes``. The entries are those a scan of the valid
    batches finds, in file order (not sorted by address). Written atomically
    (``nodes/.tmp-<random>-<name>``, fsync, rename, fsync of ``nodes/``) by the writer before
    it releases the lock: when its segment reaches ``segment_size`` (default 32 MiB) or
    ``segment_records`` (default 100 000 nodes), or when the store object is closed. An
    unsealed segment that nobody has locked belongs to a writer that died: the first store
    object to see it takes the lock, scans it once, writes its ``.idx`` (or deletes the
    segment if no batch in it verified), and releases the lock. Opening therefore reads
    ``.idx`` files and scans only the segments of writers that crashed since (each at most
    ``segment_size`` + one batch) and of writers still alive in other processes. A damaged
    ``.idx`` (bad magic, size or checksum) is replaced by a scan. ``.idx`` files without their
    segment are ignored.

``<root>/refs/<sha256 hex of the ref name>.ref``: one file per ref
    ``b"RPLREF\\x00\\x02" | u16 name length | name (ASCII) | u64 version | u32 value length |
    value | u64 XXH3-64 of all the preceding bytes``; value length ``0xFFFFFFFF`` (no value)
    marks a deleted ref. Version-1 files (``b"RPLREF\\x00\\x01" | u16 name length | name |
    u32 value length | value | u64 XXH3-64``) are read as version 0. Hashed file names give
    every valid ref name (``a/b``, ``a//b``, ``/x``, ``main`` next to ``main/feature``) its own
    flat file, also on case-insensitive file systems; the name inside lets ``list_refs``
    recover it. A ref is set by writing ``refs/.tmp-<random>``, fsync, rename over the ref
    file, fsync of ``refs/``; deleted by unlink and fsync of ``refs/``. A damaged ref file is
    a StoreError.

    **The value of a ref** is the one with the highest version among its ref file and the
    ref records of *unsealed* segments (a damaged batch's record, if it is the highest, is a
    StoreError). Every ref change happens under ``refs/.lock`` after re-reading the
    unsealed segments (``refresh``), with version = current version + 1: ``cas_ref`` writes
    a ref file (or unlinks it, when no unsealed segment holds a record of that ref; else it
    writes a deleted marker), or, with staged nodes, appends a ref record in the batch of
    those nodes. Reading a ref refreshes first, so records of other live writers are seen.
    Before a writer seals its segment, it copies the records newer than the ref files into
    them (ref files written as above, under the lock, then the ``.idx``), and so does the
    repair of a crashed writer's segment: a sealed segment's ref records are never needed.

``<root>/refs/.lock``
    Empty. ``cas_ref`` holds ``flock(LOCK_EX)`` on it around read, compare and write (a lock
    that dies with its holder, even on SIGKILL). Temporary ref files exist only under this
    lock, so opening (holding it) deletes any ``refs/.tmp-*``; ``nodes/.tmp-*`` and
    ``.FORMAT.tmp-*`` older than 10 minutes are deleted too.

GC (``delete_many``) seals this object's segment, then copies the surviving records of every
segment holding a deleted address (any copy of it) into new segments, each written and fsynced
with its ``.idx`` renamed into place before the segment itself, fsyncs ``nodes/``, and only then
unlinks the old segments and their ``.idx``. It is maintenance: run it while no other process
writes (a deleted address in a segment another live process is still writing is a StoreError
rather than a lost write). Other store objects notice vanished segments and rebuild their index.

The store relies on POSIX ``flock``, ``rename`` and ``fsync`` semantics of a local file system
(not NFS). On macOS ``F_FULLFSYNC`` is used for file syncs.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import itertools
import json
import os
import re
import secrets
import stat
import struct
import threading
import time
from array import array
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import aiofiles.os
import anyio
import anyio.lowlevel
import xxhash

from store.base import check_address, check_batch, check_ref_name, check_ref_value, verify_node
from store.codec import is_address
from store.errors import CorruptNode, NodeNotFound, StoreClosed, StoreError
from store.speedups import native

FORMAT_FILE = "FORMAT"
FORMAT_NAME = "replica-file-store"
FORMAT_VERSION = 1
NODES_DIR = "nodes"
REFS_DIR = "refs"
LOCK_FILE = ".lock"
TMP_PREFIX = ".tmp-"

SEGMENT_MAGIC = b"RPLSEG\x00\x01"  # node records only (GC output; older writers)
SEGMENT_MAGIC_2 = b"RPLSEG\x00\x02"  # node and ref records (this writer's segments)
SEGMENT_MAGICS = (SEGMENT_MAGIC, SEGMENT_MAGIC_2)
INDEX_MAGIC = b"RPLIDX\x00\x01"
REF_MAGIC = b"RPLREF\x00\x01"  # read only (no version: version 0)
REF_MAGIC_2 = b"RPLREF\x00\x02"
NODE_TAG = 0x4E  # "N"
COMMIT_TAG = 0x43  # "C"
REF_TAG = 0x52  # "R"
DELETED = 0xFFFFFFFF  # value length of a ref record or file that deletes the ref

_NODE_HEAD = struct.Struct(">BI33s")  # tag, data length, address: 38 bytes
_COMMIT = struct.Struct(">BIQQ")  # tag, record count, records length, xxh3-64: 21 bytes
_IDX_HEAD = struct.Struct(">8sQQ")  # magic, valid end, count
_IDX_ENTRY = struct.Struct(">33sQI")  # address, record offset, data length: 45 bytes
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_REF_TAIL = struct.Struct(">QI")  # version, value length (DELETED: none)

DEFAULT_SEGMENT_SIZE = 32 * 1024 * 1024
DEFAULT_SEGMENT_RECORDS = 100_000
MAX_NODE_SIZE = 0xFFFFFFFF
STALE_TEMP_SECONDS = 600.0
# A cas_ref that writes a small commit runs on the event loop's thread instead of a worker
# (FileStore.cas_ref): at most this many staged bytes, and only while the store's recent
# fdatasyncs took less than INLINE_SYNC_SECONDS on average
INLINE_BYTES = 256 * 1024
INLINE_SYNC_SECONDS = 0.001
# A writer that has appended PREFILL_AFTER batches in a row of at most PREFILL_SMALL bytes
# keeps zeros written and synced ahead of its last batch: a small batch that would extend
# the file writes PREFILL_CHUNK bytes of zeros after itself (never past segment_size), in the
# same pwritev and fdatasync. The batches after it land inside the zeros, change no file
# size, and their fdatasyncs commit no metadata (about half the time of one that appends, on
# ext4); the one that extends pays for writing the zeros (~1 ms a MiB here). An earlier
# version filled from a background thread: commits that met a fill waited for its
# fdatasync, and the thread hand-offs cost the loop's thread the GIL. Writers of larger
# batches (sync storing received nodes, bulk loads) gain nothing from zeros (measured: sync
# 100 commits apart 1.1 s -> 1.4 s with fills), so they do not write them.
PREFILL_AFTER = 16
PREFILL_SMALL = 128 * 1024
PREFILL_CHUNK = 1024 * 1024
# A batch's node records up to this size are joined into one bytes (store/_speedups.c
# encode_records); larger ones are written as they are, in parts
JOIN_BYTES = 1024 * 1024
_ZEROS = bytes(64 * 1024)
_SCAN_PIECE = 64 * 1024  # a scan reads a segment's new bytes in pieces from this size up
_KEPT_REF_FILES = 64  # ref files a store object keeps open (see _Core._load_ref_kept)

_SEGMENT_NAME = re.compile(r"^[0-9a-f]{16}-[0-9]{6}\.seg$")

# The in-memory index (_Table) packs (segment id, record offset) into one u64.
_SEG_SHIFT = 40
_OFF_MASK = (1 << _SEG_SHIFT) - 1
_MAX_SEGMENT_ID = (1 << (64 - _SEG_SHIFT)) - 1
_IDX_KEY = struct.Struct(">xI28xQ4x")  # an .idx entry's address bytes 1-4 and record offset
_READ_AHEAD = 8192  # a read fetches the record header and this many bytes in one pread

_T = TypeVar("_T")
Entry = tuple[bytes, int, int]  # address, record offset, data length
Found = dict[bytes, bytes | None]  # address -> data (None: not found there)
RefRecord = tuple[str, int, bytes | None]  # name, version, value (None: deleted)


def _xxh(data: bytes | bytearray | memoryview) -> int:
    return int(xxhash.xxh3_64_intdigest(data))


def _idx_name(segment: str) -> str:
    return segment[: -len(".seg")] + ".idx"


# ------------------------------------------------------------------------------ batch parsing

_OK, _BADSUM, _BROKEN = 0, 1, 2


def _parse_batch(
    buf: memoryview, p: int, base: int
) -> tuple[int, list[Entry], list[RefRecord], int]:
    """Parse the batch starting at ``buf[p]`` (``base`` = file offset of ``buf[0]``).

    Returns (status, node entries, ref records, end). _BROKEN: incomplete or structurally
    invalid (a torn tail, or a live writer's batch not fully written yet); _BADSUM:
    structure intact, checksum wrong.
    """
    entries: list[Entry] = []
    refs: list[RefRecord] = []
    q, n = p, len(buf)
    head = _NODE_HEAD.size
    while q < n:
        tag = buf[q]
        if tag == NODE_TAG:
            if q + head > n:
                break
            _, length, address = _NODE_HEAD.unpack_from(buf, q)
            if not is_address(address) or q + head + length > n:
                break
            entries.append((address, base + q, length))
            q += head + length
        elif tag == REF_TAG:
            if q + 3 > n:
                break
            (name_len,) = _U16.unpack_from(buf, q + 1)
            r = q + 3 + name_len
            if r + _REF_TAIL.size > n:
                break
            version, value_len = _REF_TAIL.unpack_from(buf, r)
            r += _REF_TAIL.size
            value: bytes | None = None
            if value_len != DELETED:
                if r + value_len > n:
                    break
                value = bytes(buf[r : r + value_len])
                r += value_len
            try:
                name = bytes(buf[q + 3 : q + 3 + name_len]).decode("ascii")
            except UnicodeDecodeError:
                break
            refs.append((name, version, value))
            q = r
        elif tag == COMMIT_TAG:
            if q + _COMMIT.size > n:
                break
            _, count, records_len, checksum = _COMMIT.unpack_from(buf, q)
            if count == 0 or count != len(entries) + len(refs) or records_len != q - p:
                break
            end = q + _COMMIT.size
            if _xxh(buf[p:q]) != checksum:
                return _BADSUM, entries, refs, end
            return _OK, entries, refs, end
        else:
            break
    return _BROKEN, [], [], p


def _parse_batches(
    buf: memoryview, base: int
) -> tuple[list[Entry], list[tuple[RefRecord, bool]], int]:
    """Entries and ref records (each with a flag: from a damaged batch) of the valid
    batches at the start of ``buf``, and how many bytes they span."""
    out: list[Entry] = []
    out_refs: list[tuple[RefRecord, bool]] = []
    p = 0
    while p < len(buf):
        status, entries, refs, end = _parse_batch(buf, p, base)
        if status == _BADSUM:
            # Damage, not a torn tail, if a valid batch follows: keep its nodes (reads of the
            # damaged ones raise CorruptNode). Otherwise it is the tail: stop before it.
            if _parse_batch(buf, end, base)[0] != _OK:
                break
        elif status != _OK:
            break
        out.extend(entries)
        damaged = status == _BADSUM
        out_refs.extend((ref, damaged) for ref in refs)
        p = end
    return out, out_refs, p


def _encode_batch(
    nodes: list[tuple[bytes, bytes]], start: int, refs: list[RefRecord] | None = None
) -> tuple[list[bytes], int, list[Entry], bytes]:
    """One batch (node records, ref records, commit record) to be written at file offset
    ``start``: its parts (written with one ``pwritev``, never joined: a batch can be tens of
    MB, and copies that big would fragment the heap), its length, its node entries and their
    .idx bytes (:func:`_pack_entries`). (The C twin of the node records joins a small batch's,
    up to JOIN_BYTES: one copy, one checksum update.)"""
    parts: list[bytes] = []
    checksum = xxhash.xxh3_64()
    pos = start
    joined = None if native is None else native.encode_records(nodes, start, JOIN_BYTES)
    if joined is not None:
        records, entries, idx = joined
        parts.append(records)
        checksum.update(records)
        pos += len(records)
    else:
        entries = []
        head_size = _NODE_HEAD.size
        for address, data in nodes:
            head = _NODE_HEAD.pack(NODE_TAG, len(data), address)
            parts.append(head)
            parts.append(data)
            checksum.update(head)
            checksum.update(data)
            entries.append((address, pos, len(data)))
            pos += head_size + len(data)
        idx = _pack_entries(entries)
    refs = refs or []
    for name, version, value in refs:
        raw = name.encode("ascii")
        record = bytes((REF_TAG,)) + _U16.pack(len(raw)) + raw
        if value is None:
            record += _REF_TAIL.pack(version, DELETED)
        else:
            record += _REF_TAIL.pack(version, len(value)) + value
        parts.append(record)
        checksum.update(record)
        pos += len(record)
    records_len = pos - start
    commit = _COMMIT.pack(COMMIT_TAG, len(nodes) + len(refs), records_len, checksum.intdigest())
    parts.append(commit)
    return parts, records_len + len(commit), entries, idx


def _check_sizes(nodes: Iterable[tuple[bytes, bytes]]) -> None:
    """StoreError naming the first of ``nodes`` (address, data) too large for a record."""
    nodes = list(nodes)
    if nodes and max(map(len, map(itemgetter(1), nodes))) > MAX_NODE_SIZE:
        for address, data in nodes:
            if len(data) > MAX_NODE_SIZE:
                raise StoreError(f"node {address.hex()} is larger than {MAX_NODE_SIZE} bytes")


def _pack_entries(entries: list[Entry]) -> bytes:
    """Entries as the body of an .idx file."""
    return b"".join([_IDX_ENTRY.pack(*entry) for entry in entries])


def _encode_ref(name: str, value: bytes | None, version: int) -> bytes:
    raw = name.encode("ascii")
    tail = _REF_TAIL.pack(version, DELETED if value is None else len(value))
    body = b"".join((REF_MAGIC_2, _U16.pack(len(raw)), raw, tail, value or b""))
    return body + _U64.pack(_xxh(body))


def _decode_ref(raw: bytes) -> tuple[str, bytes | None, int] | None:
    """(name, value or None if deleted, version) of a ref file's bytes, or None if they
    are damaged. Version-1 files (no version, never deleted) are version 0."""
    if len(raw) < 8 + 2 + 4 + 8 or raw[:8] not in (REF_MAGIC, REF_MAGIC_2):
        return None
    if _U64.unpack_from(raw, len(raw) - 8)[0] != _xxh(memoryview(raw)[:-8]):
        return None
    (name_len,) = _U16.unpack_from(raw, 8)
    p = 10 + name_len
    version = 0
    if raw[:8] == REF_MAGIC_2:
        if p + _REF_TAIL.size > len(raw) - 8:
            return None
        version, value_len = _REF_TAIL.unpack_from(raw, p)
        p += _REF_TAIL.size
    else:
        if p + 4 > len(raw) - 8:
            return None
        (value_len,) = _U32.unpack_from(raw, p)
        p += 4
    value: bytes | None = None
    if value_len == DELETED and raw[:8] == REF_MAGIC_2:
        if p != len(raw) - 8:
            return None
    else:
        if p + value_len != len(raw) - 8:
            return None
        value = raw[p : p + value_len]
    try:
        name = raw[10 : 10 + name_len].decode("ascii")
    except UnicodeDecodeError:
        return None
    return name, value, version


@functools.lru_cache(maxsize=1024)
def _ref_file(name: str) -> str:
    return hashlib.sha256(name.encode("ascii")).hexdigest() + ".ref"


# ------------------------------------------------------------------------------- low-level I/O


def _pread_all(fd: int, size: int, offset: int) -> bytes:
    chunks: list[bytes] = []
    while size > 0:
        chunk = os.pread(fd, min(size, 1 << 30), offset)
        if not chunk:
            break
        chunks.append(chunk)
        size -= len(chunk)
        offset += len(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _pwrite_all(fd: int, data: bytes | bytearray, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


try:
    _IOV_MAX = min(max(int(os.sysconf("SC_IOV_MAX")), 16), 1024)
except (AttributeError, ValueError, OSError):  # pragma: no cover - no sysconf
    _IOV_MAX = 16


# macOS: fsync does not reach the platter, F_FULLFSYNC does
_FULLFSYNC: int | None = getattr(fcntl, "F_FULLFSYNC", None)
_datasync: Callable[[int], None] = getattr(os, "fdatasync", os.fsync)


def _pwritev_all(fd: int, parts: Sequence[bytes | bytearray], offset: int) -> None:
    """Write ``parts`` one after the other from ``offset`` without joining them."""
    pwritev = getattr(os, "pwritev", None)
    for i in range(0, len(parts), _IOV_MAX):
        chunk = parts[i : i + _IOV_MAX]
        size = sum(map(len, chunk))
        written = pwritev(fd, chunk, offset) if pwritev is not None else 0
        if written < size:  # a short write (or no pwritev): the rest one part at a time
            skip = written
            for part in chunk:
                if skip >= len(part):
                    skip -= len(part)
                    continue
                _pwrite_all(fd, part[skip:] if skip else part, offset + written)
                written += len(part) - skip
                skip = 0
        offset += size


def _read_file(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


# ------------------------------------------------------------------------- the in-memory index

_U32_CODE = next(code for code in "IL" if array(code).itemsize == 4)


def _tag(address: bytes) -> int:
    """An address's tag in the index: its bytes 1-4 (SHA-256 bits) as a u32, never 0."""
    return int.from_bytes(address[1:5], "big") or 1


class _Table:
    """The in-memory index: where the records of an address may be (12 bytes a slot).

    An open-addressing hash table with linear probing, at most 3/4 full, in two arrays: a
    u32 *tag* per slot (bytes 1-4 of the address; 0 marks an empty slot, so a tag of 0 is
    stored as 1) and a u64 *location* (segment id << 40 | offset of the node record). The
    home slot of a tag is ``tag & mask``, so the table can grow from the tags alone.
    :meth:`find` returns every location stored under an address's tag: *candidates*, each
    confirmed by reading the record header, which holds the whole address (a tag shared by
    two addresses meets about one lookup in 2**32 and costs one read more, never a wrong
    answer). About 21 bytes a node on average (16-32 with the load factor), where a dict of
    33-byte keys costs ~150.

    One writer (the thread holding FileStore's mutex); readers in any thread, without a
    lock: a slot's location is stored before its tag, and growing fills new arrays and then
    swaps the ``arrays`` tuple whole. Entries are never removed (GC builds a new table).
    """

    __slots__ = ("arrays", "used")

    def __init__(self, capacity: int = 1024) -> None:
        self.arrays = self._empty(capacity)
        self.used = 0

    @staticmethod
    def _empty(capacity: int) -> tuple[array[int], array[int], int]:
        return array(_U32_CODE, bytes(4 * capacity)), array("Q", bytes(8 * capacity)), capacity - 1

    def __len__(self) -> int:
        return self.used

    @property
    def nbytes(self) -> int:
        tags, locs, _ = self.arrays
        return len(tags) * tags.itemsize + len(locs) * locs.itemsize

    def _reserve(self, more: int) -> None:
        tags, locs, mask = self.arrays
        capacity = mask + 1
        need = self.used + more
        if need * 4 <= capacity * 3:
            return
        while need * 4 > capacity * 3:
            capacity *= 2
        new_tags, new_locs, new_mask = self._empty(capacity)
        if native is not None:
            native.table_rehash(tags, locs, new_tags, new_locs, new_mask)
            self.arrays = (new_tags, new_locs, new_mask)
            return
        for tag, loc in zip(tags, locs, strict=True):
            if tag:
                i = tag & new_mask
                while new_tags[i]:
                    i = (i + 1) & new_mask
                new_locs[i] = loc
                new_tags[i] = tag
        self.arrays = (new_tags, new_locs, new_mask)

    def add(self, segment_id: int, pairs: Iterable[tuple[int, int]], count: int) -> None:
        """Index ``count`` records of one segment, given as (tag, record offset) pairs."""
        self._reserve(count)
        tags, locs, mask = self.arrays
        base = segment_id << _SEG_SHIFT
        for tag, offset in pairs:
            tag = tag or 1
            i = tag & mask
            while tags[i]:
                i = (i + 1) & mask
            locs[i] = base | offset
            tags[i] = tag
        self.used += count

    def add_entries(self, segment_id: int, entries: list[Entry]) -> None:
        """Index a batch's entries (address, record offset, length) of one segment."""
        if native is None:
            pairs = ((int.from_bytes(a[1:5], "big"), offset) for a, offset, _ in entries)
            self.add(segment_id, pairs, len(entries))
            return
        self._reserve(len(entries))
        tags, locs, mask = self.arrays
        native.table_insert_entries(tags, locs, mask, self.used, segment_id << _SEG_SHIFT, entries)
        self.used += len(entries)

    def hits(self, addresses: list[bytes]) -> list[bytes]:
        """Those of ``addresses`` whose tag a slot holds (the others are not indexed)."""
        tags, _, mask = self.arrays
        if native is not None:
            found: list[bytes] = native.table_hits(tags, mask, addresses)
            return found
        out = []
        for address in addresses:
            tag = int.from_bytes(address[1:5], "big") or 1
            i = tag & mask
            t = tags[i]
            while t and t != tag:
                i = (i + 1) & mask
                t = tags[i]
            if t:
                out.append(address)
        return out

    def find(self, address: bytes) -> list[int]:
        """The locations indexed under ``address``'s tag (usually none or one)."""
        tags, locs, mask = self.arrays
        tag = int.from_bytes(address[1:5], "big") or 1
        i = tag & mask
        found: list[int] = []
        t = tags[i]
        while t:
            if t == tag:
                found.append(locs[i])
            i = (i + 1) & mask
            t = tags[i]
        return found


@dataclass
class _Segment:
    id: int
    name: str
    sealed: bool
    scan_pos: int = 0  # unsealed segments of other writers: where the next scan starts
    count: int = 0  # entries this segment contributed when it was (last) loaded


@dataclass
class _Writer:
    """The segment this store object appends to (it holds the segment's flock)."""

    seg: _Segment
    fd: int
    end: int = 0  # offset after the last durable batch
    idx: bytearray = field(default_factory=bytearray)  # its .idx entries so far (45 B each)
    count: int = 0  # entries in ``idx``
    dir_synced: bool = False
    broken: bool = False  # a write or sync failed: never append here again
    small_run: int = 0  # batches of at most PREFILL_SMALL bytes written in a row
    # zeros written ahead (see PREFILL_AFTER): the file's bytes before ``filled`` were
    # written (batches, then zeros) and synced by this writer
    filled: int = 0
    prefill_off: bool = False  # writing zeros failed here (a full disk): no more
    # set while a batch is written and recorded: still set afterwards means an exception
    # (a KeyboardInterrupt on the event loop's thread) left the memory state behind the
    # file, so it is read back from the file before anything more is written (_reconcile)
    suspect: bool = False


class _Core:
    """All state and all blocking work of a FileStore. Every method runs in an executor thread.

    Mutating methods (open, refresh, append, delete, close) are serialized by FileStore's
    mutex. Reads run concurrently with them (lookups on the loop, record reads in other
    threads): ``table`` is safe for that (see _Table), and ``seg_names`` is only changed by
    single dict assignments and pops (atomic under the GIL). A reader that finds nothing, or
    a segment that has vanished, refreshes under the mutex and looks again.
    """

    def __init__(self, root: str, segment_size: int, segment_records: int) -> None:
        self.root = root
        self.nodes_dir = os.path.join(root, NODES_DIR)
        self.refs_dir = os.path.join(root, REFS_DIR)
        self.segment_size = segment_size
        self.segment_records = segment_records
        self.table = _Table()
        self.segments: dict[str, _Segment] = {}
        self.seg_names: dict[int, str] = {}
        self.writer: _Writer | None = None
        self.writer_id = secrets.token_hex(8)
        self.lock_fd = -1
        # ref records of unsealed segments: segment name -> ref name -> (version, value,
        # from a damaged batch); sealed segments' records are in the ref files already
        self.seg_refs: dict[str, dict[str, tuple[int, bytes | None, bool]]] = {}
        # nodes handed over by stage(): written with the next batch of this object
        self.staged: dict[bytes, bytes] = {}
        self._ref_mutex = threading.RLock()
        self._ref_lock_depth = 0
        # moving average of how long this object's fdatasyncs of segments took (seconds);
        # unknown (inf) until the first one
        self.sync_seconds = float("inf")
        # ref files read by _resolve, kept open: name -> (fd, st_dev, st_ino, decoded)
        self._ref_files: dict[str, tuple[int, int, int, tuple[str, bytes | None, int]]] = {}
        self._ids = itertools.count(1)
        self._seq = 0
        self._stats_lock = threading.Lock()
        self.stats: dict[str, int] = dict.fromkeys(
            (
                "fsyncs",
                "batches",
                "nodes_written",
                "bytes_written",
                "segments_created",
                "segments_sealed",
                "segments_repaired",
                "torn_tails",
                "segments_loaded",
                "scanned_bytes",
                "refreshes",
                "cas",
                "cas_inline",
                "prefill_bytes",
            ),
            0,
        )

    # ---------------------------------------------------------------------------- helpers

    def _where(self) -> str:
        return f"file store {self.root}"

    def _count(self, key: str, n: int = 1) -> None:
        with self._stats_lock:
            self.stats[key] += n

    def _sync_fd(self, fd: int) -> None:
        self._count("fsyncs")
        started = time.perf_counter()
        try:
            self._sync_fd_now(fd)
        finally:
            took = time.perf_counter() - started
            avg = self.sync_seconds
            self.sync_seconds = took if avg == float("inf") else avg + (took - avg) / 8

    def _sync_fd_now(self, fd: int) -> None:
        if _FULLFSYNC is not None:
            try:
                fcntl.fcntl(fd, _FULLFSYNC)
                return
            except OSError:
                pass
        _datasync(fd)

    def _sync_dir(self, path: str) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            self._count("fsyncs")
            os.fsync(fd)
        finally:
            os.close(fd)

    def _write_durably(self, path: str, data: bytes | Sequence[bytes | bytearray]) -> None:
        """Create ``path`` (must not exist) with ``data`` and fsync it (not its directory)."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            _pwritev_all(fd, [data] if isinstance(data, bytes) else data, 0)
            self._sync_fd(fd)
        finally:
            os.close(fd)

    def _new_id(self) -> int:
        seg_id = next(self._ids)
        if seg_id > _MAX_SEGMENT_ID:  # pragma: no cover - 16 million segments in one object
            raise StoreError(f"{self._where()}: too many segments for one store object: reopen")
        return seg_id

    def _register(self, seg: _Segment) -> None:
        self.segments[seg.name] = seg
        self.seg_names[seg.id] = seg.name

    def _add_entries(self, seg: _Segment, entries: list[Entry]) -> None:
        self.table.add_entries(seg.id, entries)
        seg.count += len(entries)

    def _add_idx(self, seg: _Segment, raw: bytes | memoryview) -> None:
        """Index the entries of an .idx file (``raw``: the entries, as :meth:`_load_idx`)."""
        count = len(raw) // _IDX_ENTRY.size
        self.table.add(seg.id, _IDX_KEY.iter_unpack(raw), count)
        seg.count += count

    # ------------------------------------------------------------------------------- open

    def open(self) -> None:
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    def _open(self) -> None:
        root = self.root
        try:
            st: os.stat_result | None = os.stat(root)
        except FileNotFoundError:
            st = None
        except OSError as exc:
            raise StoreError(f"cannot open {self._where()}: {exc}") from exc
        if st is not None and not stat.S_ISDIR(st.st_mode):
            raise StoreError(f"cannot open {self._where()}: {root} exists and is not a directory")
        try:
            if st is None:
                created_dirs = []
                path = root
                while not os.path.lexists(path) and os.path.dirname(path) != path:
                    created_dirs.append(path)
                    path = os.path.dirname(path)
                os.makedirs(root, exist_ok=True)
                for path in reversed(created_dirs):  # make each new directory entry durable
                    self._sync_dir(os.path.dirname(path))
            self._check_or_write_format()
            created = False
            for sub in (self.nodes_dir, self.refs_dir):
                try:
                    os.mkdir(sub)
                    created = True
                except FileExistsError:
                    if not os.path.isdir(sub):
                        raise StoreError(f"{self._where()}: {sub} is not a directory") from None
            if created:
                self._sync_dir(root)
            # Opening the lock file for writing is also the writability probe.
            self.lock_fd = os.open(
                os.path.join(self.refs_dir, LOCK_FILE), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644
            )
            self._remove_stale_temps()
            self.refresh()
        except OSError as exc:
            raise StoreError(f"cannot open {self._where()}: {exc}") from exc

    def _check_or_write_format(self) -> None:
        path = os.path.join(self.root, FORMAT_FILE)
        for _ in range(3):
            try:
                raw: bytes | None = _read_file(path)
            except FileNotFoundError:
                raw = None
            if raw is not None:
                self._check_format(raw)
                return
            names = [n for n in os.listdir(self.root) if not n.startswith(".FORMAT" + TMP_PREFIX)]
            if FORMAT_FILE in names:
                continue  # another process created the store meanwhile: read its FORMAT
            if names:
                raise StoreError(
                    f"cannot open {self._where()}: the directory is not empty and has no "
                    f"FORMAT file, so it is not a replica file store (refusing to write into it)"
                )
            doc = {"format": FORMAT_NAME, "version": FORMAT_VERSION}
            tmp = os.path.join(self.root, f".FORMAT{TMP_PREFIX}{secrets.token_hex(8)}")
            self._write_durably(tmp, (json.dumps(doc) + "\n").encode())
            os.rename(tmp, path)
            self._sync_dir(self.root)
            return
        raise StoreError(f"cannot open {self._where()}: FORMAT file keeps disappearing")

    def _check_format(self, raw: bytes) -> None:
        try:
            doc = json.loads(raw)
        except ValueError:
            doc = None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT_NAME:
            raise StoreError(
                f"cannot open {self._where()}: its FORMAT file does not describe a "
                f"{FORMAT_NAME!r} store: {raw[:200]!r}"
            )
        if doc.get("version") != FORMAT_VERSION:
            raise StoreError(
                f"cannot open {self._where()}: format version {doc.get('version')!r} is not "
                f"supported (this code reads version {FORMAT_VERSION})"
            )

    def _remove_stale_temps(self) -> None:
        # Temporary ref files exist only while their creator holds refs/.lock.
        fcntl.flock(self.lock_fd, fcntl.LOCK_EX)
        try:
            for name in os.listdir(self.refs_dir):
                if name.startswith(TMP_PREFIX):
                    _unlink_quietly(os.path.join(self.refs_dir, name))
        finally:
            fcntl.flock(self.lock_fd, fcntl.LOCK_UN)
        cutoff = time.time() - STALE_TEMP_SECONDS
        for directory, prefix in (
            (self.nodes_dir, TMP_PREFIX),
            (self.root, ".FORMAT" + TMP_PREFIX),
        ):
            for name in os.listdir(directory):
                if name.startswith(prefix):
                    path = os.path.join(directory, name)
                    try:
                        if os.stat(path).st_mtime < cutoff:
                            os.unlink(path)
                    except FileNotFoundError:
                        pass

    # ------------------------------------------------------------------- index maintenance

    def _listing(self) -> tuple[set[str], set[str]]:
        """The segment and .idx file names in ``nodes/``."""
        names: set[str] = set()
        idxs: set[str] = set()
        known = self.segments
        for name in os.listdir(self.nodes_dir):
            if name in known or (name.endswith(".seg") and _SEGMENT_NAME.match(name)):
                names.add(name)
            elif name.endswith(".idx"):
                idxs.add(name)
        return names, idxs

    def _listing_is_known(self, names: set[str]) -> bool:
        """True if ``names`` (a listing) holds exactly the segments this object knows."""
        own = self.writer.seg.name if self.writer is not None else None
        known = self.segments.keys()
        return all(n in known for n in names) and all(n in names or n == own for n in known)

    def refresh(self, listing: tuple[set[str], set[str]] | None = None) -> None:
        """Bring the index up to date with every segment on disk (``listing``: the
        directory's, if the caller has just listed it)."""
        self._count("refreshes")
        w = self.writer
        if w is not None and w.suspect and not w.broken:
            self._reconcile(w)  # our own last batch first (see _Writer.suspect)
        names, idxs = self._listing() if listing is None else listing
        own = w.seg.name if w is not None else None
        vanished = [n for n in self.segments if n not in names and n != own]
        if vanished:
            # Another process ran GC: forget those segments and rebuild the index.
            rebuild = False
            for name in vanished:
                seg = self.segments.pop(name)
                self.seg_names.pop(seg.id, None)
                self.seg_refs.pop(name, None)
                rebuild = rebuild or seg.count > 0
            if rebuild:
                self._rebuild_index()
        discovered = sorted(names - self.segments.keys())
        for name in discovered:
            seg = _Segment(self._new_id(), name, sealed=False)
            raw = self._load_idx(name) if _idx_name(name) in idxs else None
            if raw is not None:
                seg.sealed = True
                self._register(seg)
                self._add_idx(seg, raw)
                self._count("segments_loaded")
            else:
                self._register(seg)
                self._follow(seg)
        for seg in list(self.segments.values()):
            if not seg.sealed and seg.name != own and seg.name not in discovered:
                self._follow(seg)

    def _rebuild_index(self) -> None:
        self.table = _Table()  # swapped whole: concurrent lookups see the old or the new one
        for seg in list(self.segments.values()):
            seg.count = 0
            if self.writer is not None and seg is self.writer.seg:
                self._add_idx(seg, bytes(self.writer.idx))
            elif seg.sealed:
                raw = self._load_idx(seg.name)
                if raw is None:
                    seg.sealed = False
                    seg.scan_pos = 0
                    self._follow(seg)
                else:
                    self._add_idx(seg, raw)
            else:
                seg.scan_pos = 0
                self._follow(seg)

    def _follow(self, seg: _Segment) -> None:
        """Index new batches of an unsealed segment of another writer; seal it if that writer
        is gone (the repair after a crash: one scan, bounded by the segment size)."""
        path = os.path.join(self.nodes_dir, seg.name)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return  # deleted by GC meanwhile; the next refresh forgets it
        try:
            if not _try_lock(fd):
                entries, refs, seg.scan_pos = self._scan(fd, seg.scan_pos)
                self._add_entries(seg, entries)
                if refs:
                    self._note_refs(seg.name, refs)
                return
            # Nobody writes this segment any more (its writer closed or died).
            sealed = self._read_idx(seg.name)
            if sealed is None:
                # a writer killed between its write and its fdatasync left bytes that only
                # the page cache holds: make them durable before an .idx vouches for them
                self._sync_fd_now(fd)
                entries, refs, end = self._scan(fd, 0)
                if os.fstat(fd).st_size > end:
                    self._count("torn_tails")  # bytes after the last valid batch: ignored
                if refs:  # its ref records go to the ref files before it is sealed
                    self._note_refs(seg.name, refs)
                    self._checkpoint(seg.name)
                if entries or refs:
                    self._write_idx(seg.name, _pack_entries(entries), end)
                    self._count("segments_repaired")
                else:
                    os.unlink(path)  # nothing in it ever became durable and visible
                    self.segments.pop(seg.name, None)
                    self.seg_names.pop(seg.id, None)
                    self._sync_dir(self.nodes_dir)
                    return
                sealed = entries
            seg.sealed = True
            self.seg_refs.pop(seg.name, None)  # sealed: its refs are in the ref files
            # The batches before scan_pos are indexed already (the scans of a live writer's
            # segment and the .idx of its valid batches agree, both following the file).
            self._add_entries(seg, [entry for entry in sealed if entry[1] >= seg.scan_pos])
        finally:
            os.close(fd)  # releases the lock if we took it

    def _scan(self, fd: int, start: int) -> tuple[list[Entry], list[tuple[RefRecord, bool]], int]:
        """Valid batches from ``start`` (0 or a batch boundary) to the end of the file: node
        entries, ref records (with a damaged flag), end."""
        size = os.fstat(fd).st_size
        if start == 0:
            if size < len(SEGMENT_MAGIC):
                return [], [], 0
            head = os.pread(fd, len(SEGMENT_MAGIC), 0)
            if head not in SEGMENT_MAGICS:
                if head[:6] == SEGMENT_MAGIC[:6] and head[6:] > SEGMENT_MAGIC_2[6:]:
                    raise StoreError(f"{self._where()}: a segment has a newer format: {head!r}")
                return [], [], 0  # a torn header: nothing valid follows it
            start = len(SEGMENT_MAGIC)
        entries: list[Entry] = []
        refs: list[tuple[RefRecord, bool]] = []
        pos = start
        piece = _SCAN_PIECE
        while pos < size:
            want = min(piece, size - pos)
            buf = _pread_all(fd, want, pos)
            self._count("scanned_bytes", len(buf))
            got, got_refs, used = _parse_batches(memoryview(buf), pos)
            entries += got
            refs += got_refs
            if len(buf) < want or want == size - pos:
                pos += used
                break  # read to the end of the file (it may have been cut short meanwhile)
            pos += used
            if used == len(buf):
                piece *= 2  # all valid: on with the rest
            elif buf[used] == 0:
                # no record starts with 0x00: the zeros a live writer writes ahead, or a
                # zero-filled torn tail. A read of the whole rest would stop here too.
                break
            else:
                # a batch cut by the end of this piece, or damage whose verdict depends on
                # the batch after it: the rest in one read, as one buffer
                piece = size - pos
        return entries, refs, pos

    def _load_idx(self, segment: str) -> memoryview | None:
        """The entries of the segment's .idx (``count * 45`` bytes), None if it is absent or
        damaged."""
        try:
            raw = _read_file(os.path.join(self.nodes_dir, _idx_name(segment)))
        except FileNotFoundError:
            return None
        head, tail = _IDX_HEAD.size, _U64.size
        if len(raw) < head + tail or raw[:8] != INDEX_MAGIC:
            return None
        _, _, count = _IDX_HEAD.unpack_from(raw)
        if len(raw) != head + count * _IDX_ENTRY.size + tail:
            return None
        if _U64.unpack_from(raw, len(raw) - tail)[0] != _xxh(memoryview(raw)[:-tail]):
            return None
        return memoryview(raw)[head:-tail]

    def _read_idx(self, segment: str) -> list[Entry] | None:
        raw = self._load_idx(segment)
        return None if raw is None else list(_IDX_ENTRY.iter_unpack(raw))

    def _write_idx(
        self, segment: str, entries: bytes | bytearray, end: int, sync_dir: bool = True
    ) -> None:
        """Write the .idx of ``segment``: ``entries`` are its packed entries (45 bytes each)."""
        head = _IDX_HEAD.pack(INDEX_MAGIC, end, len(entries) // _IDX_ENTRY.size)
        checksum = xxhash.xxh3_64(head)
        checksum.update(entries)
        tmp = os.path.join(
            self.nodes_dir, f"{TMP_PREFIX}{secrets.token_hex(8)}-{_idx_name(segment)}"
        )
        self._write_durably(tmp, [head, entries, _U64.pack(checksum.intdigest())])
        os.rename(tmp, os.path.join(self.nodes_dir, _idx_name(segment)))
        if sync_dir:
            self._sync_dir(self.nodes_dir)
        self._count("segments_sealed")

    def list_addresses(self) -> set[bytes]:
        """Every address of every segment (from the .idx files, this object's entries and
        scans of unsealed segments: the table holds no addresses)."""
        self.refresh()
        out: set[bytes] = set()
        for seg in list(self.segments.values()):
            w = self.writer
            if w is not None and seg is w.seg:
                entries = list(_IDX_ENTRY.iter_unpack(bytes(w.idx)))
            else:
                entries = self._entries_of(seg)
            out.update(address for address, _, _ in entries)
        return out

    # ------------------------------------------------------------------------------ reads

    def locate(self, address: bytes) -> list[tuple[str | None, int]]:
        """Candidate records of ``address``: (segment name, record offset), unconfirmed. The
        segment name is None if the segment has vanished (GC)."""
        names = self.seg_names
        return [(names.get(loc >> _SEG_SHIFT), loc & _OFF_MASK) for loc in self.table.find(address)]

    def read_many(self, wanted: list[tuple[bytes, list[tuple[str | None, int]]]]) -> Found:
        """Read and verify the records of ``wanted`` (addresses and their candidates). None
        for an address none of whose candidates holds it (or whose segment has vanished:
        GC); CorruptNode if the record indexed for it is damaged and no other copy is good."""
        out: dict[bytes, bytes | None] = {}
        fds: dict[str, int | None] = {}
        memo: dict[str, dict[int, bytes]] = {}
        try:
            for address, places in wanted:
                data: bytes | None = None
                damage: CorruptNode | None = None
                for name, offset in places:
                    fd = self._open_segment(fds, name)
                    if fd is None or name is None:
                        continue
                    try:
                        data = self._read_record(fd, name, address, offset, memo)
                    except CorruptNode as exc:
                        damage = damage or exc
                        continue
                    if data is not None:
                        break
                if data is None and damage is not None:
                    raise damage
                out[address] = data
        except OSError as exc:
            raise StoreError(f"{self._where()}: cannot read nodes: {exc}") from exc
        finally:
            _close_all(fds)
        return out

    def absent(self, addresses: list[bytes]) -> list[bytes]:
        """Those of ``addresses`` that no indexed record holds (confirmed on disk). A record
        whose header is damaged counts as holding what the index says it holds."""
        present = self._present(addresses)
        return [a for a in addresses if a not in present]

    def _present(self, addresses: Iterable[bytes], synced_only: bool = False) -> set[bytes]:
        """Those of ``addresses`` an indexed record holds (confirmed by its header). With
        ``synced_only`` (what a write may skip), records in another live writer's segment
        do not count: this process may see them in the page cache before their writer's
        fdatasync returns, and a commit of ours must not name nodes a power loss can take."""
        out: set[bytes] = set()
        segments = self.segments
        own = self.writer.seg.name if self.writer is not None else None
        fds: dict[str, int | None] = {}
        memo: dict[str, dict[int, bytes]] = {}
        head = _NODE_HEAD.size
        try:
            # the common case first: no slot holds the tag (a new node), no header to read
            for address in self.table.hits(list(addresses)):
                for name, offset in self.locate(address):
                    if synced_only and name != own:
                        seg = segments.get(name) if name is not None else None
                        if seg is None or not seg.sealed:
                            continue
                    fd = self._open_segment(fds, name)
                    if fd is None or name is None:
                        continue
                    raw = os.pread(fd, head, offset)
                    if len(raw) == head:
                        tag, _, stored = _NODE_HEAD.unpack(raw)
                        if tag == NODE_TAG and stored == address:
                            out.add(address)
                            break
                    if self._indexed_at(name, offset, memo) == address:
                        out.add(address)  # a damaged header: present, and reads say so
                        break
        except OSError as exc:
            raise StoreError(f"{self._where()}: cannot read nodes: {exc}") from exc
        finally:
            _close_all(fds)
        return out

    def _open_segment(self, fds: dict[str, int | None], name: str | None) -> int | None:
        """A read-only descriptor of segment ``name`` (kept in ``fds``), None if it is gone."""
        if name is None:
            return None
        if name not in fds:
            try:
                fds[name] = os.open(os.path.join(self.nodes_dir, name), os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                fds[name] = None
        return fds[name]

    def _indexed_at(
        self, name: str, offset: int, memo: dict[str, dict[int, bytes]]
    ) -> bytes | None:
        """The address the segment's own index (.idx, else a scan) puts at ``offset``: what
        a record whose header does not match was written for (the slow path of a damaged
        header or of a tag shared by two addresses)."""
        at = memo.get(name)
        if at is None:
            seg = self.segments.get(name) or _Segment(0, name, sealed=True)
            at = memo[name] = {off: address for address, off, _ in self._entries_of(seg)}
        return at.get(offset)

    def _read_record(
        self, fd: int, name: str, address: bytes, offset: int, memo: dict[str, dict[int, bytes]]
    ) -> bytes | None:
        """The data of ``address``'s record at ``offset``, verified; None if the record there
        is another address's; CorruptNode if it is this address's but damaged."""
        head = _NODE_HEAD.size
        where = f"segment {name} offset {offset}"
        record = os.pread(fd, head + _READ_AHEAD, offset)
        length = -1
        if len(record) >= head:
            tag, length, stored = _NODE_HEAD.unpack_from(record)
            if tag != NODE_TAG or stored != address:
                length = -1
        if length < 0:
            if self._indexed_at(name, offset, memo) != address:
                return None
            if len(record) < head:
                raise CorruptNode(address, f"record truncated ({where})")
            raise CorruptNode(address, f"damaged record header ({where})")
        if len(record) < head + length:
            record += _pread_all(fd, head + length - len(record), offset + len(record))
            if len(record) < head + length:
                raise CorruptNode(address, f"record truncated ({where})")
        data = record[head : head + length]
        try:
            return verify_node(address, data)
        except CorruptNode as exc:
            raise CorruptNode(address, f"{exc.reason} ({where})") from None

    # ----------------------------------------------------------------------------- writes

    def append(self, nodes: Mapping[bytes, bytes]) -> None:
        """Validate the whole batch, then write the absent nodes (and the staged ones) as one
        batch, synced."""
        check_batch(nodes)
        self._write_batch(nodes, [])

    def stage(self, nodes: Mapping[bytes, bytes], verified: bool = False) -> None:
        """Keep ``nodes`` (validated, unless the caller computed every address from its
        bytes itself: ``verified``) to be written with this object's next batch. Their sizes
        are checked here in any case: a node too large for a record must not be staged,
        where it would fail every later batch of this object."""
        if not verified:
            check_batch(nodes)
        _check_sizes(nodes.items())
        self.staged.update(nodes)

    def _unstage(self, taken: Mapping[bytes, bytes]) -> None:
        staged = self.staged
        for address in taken:
            staged.pop(address, None)

    def _write_batch(self, nodes: Mapping[bytes, bytes], refs: list[RefRecord]) -> None:
        """Write the absent ones of ``nodes`` and of the staged nodes, and ``refs``, as one
        batch (one fdatasync), unless there is nothing to write."""
        # a snapshot: stage() may add nodes from the event loop while this runs in a worker
        # thread; only what this batch wrote may leave the staging area
        taken = dict(self.staged)
        if taken:
            nodes = {**taken, **nodes}
        present = self._present(nodes, synced_only=True)
        new = [(a, d) for a, d in nodes.items() if a not in present]
        if not new and not refs:
            self._unstage(taken)
            return
        _check_sizes(new)
        w = self.writer
        if w is not None and (
            w.broken or w.suspect or w.end >= self.segment_size or w.count >= self.segment_records
        ):
            self.seal_own()
            w = None
        if w is None:
            w = self._new_segment()
        start = w.end if w.end else len(SEGMENT_MAGIC_2)
        parts, size, entries, idx = _encode_batch(new, start, refs)
        if not w.end:
            parts.insert(0, SEGMENT_MAGIC_2)
            size += len(SEGMENT_MAGIC_2)
        zeros = self._zeros_after(w, w.end + size, size)
        w.suspect = True
        try:
            _pwritev_all(w.fd, parts, w.end)
            if zeros:
                zeros = self._write_zeros(w, w.end + size, zeros)
            self._sync_fd(w.fd)
            if not w.dir_synced:
                self._sync_dir(self.nodes_dir)
                w.dir_synced = True
            w.filled = max(w.filled, w.end + size + zeros)
        except OSError as exc:
            # Whatever reached the file after w.end is not acknowledged; never append after it.
            w.broken = True
            w.suspect = False
            raise StoreError(f"{self._where()}: cannot write nodes: {exc}") from exc
        w.end += size
        w.idx += idx
        w.count += len(entries)
        self._add_entries(w.seg, entries)
        self._unstage(taken)
        if refs:
            self._note_refs(w.seg.name, [(ref, False) for ref in refs])
        w.suspect = False
        w.small_run = w.small_run + 1 if size <= PREFILL_SMALL else 0
        with self._stats_lock:
            stats = self.stats
            stats["batches"] += 1
            stats["nodes_written"] += len(entries)
            stats["bytes_written"] += size
            stats["prefill_bytes"] += zeros

    def _zeros_after(self, w: _Writer, end: int, size: int) -> int:
        """How many zeros to write after a batch of ``size`` bytes that ends at ``end``: a
        chunk if the batch grows the file and ``w`` writes small batches (PREFILL_AFTER)."""
        if (
            end <= w.filled
            or size > PREFILL_SMALL
            or w.small_run + 1 < PREFILL_AFTER
            or w.prefill_off
        ):
            return 0
        return max(0, min(self._prefill_chunk(), self.segment_size - end))

    def _write_zeros(self, w: _Writer, at: int, count: int) -> int:
        """Write ``count`` zeros at ``at`` (after a batch, before its sync); the count written.
        Zeros are only an optimisation: if they do not fit (a full disk, a file size limit),
        the file is cut back to ``at`` and ``w`` writes no more of them, and the batch goes on."""
        full, rest = divmod(count, len(_ZEROS))
        try:
            _pwritev_all(w.fd, [_ZEROS] * full + ([_ZEROS[:rest]] if rest else []), at)
            return count
        except OSError:
            w.prefill_off = True
            try:
                os.ftruncate(w.fd, at)
            except OSError:
                pass  # zeros left after the batch are no batch: harmless
            return 0

    def _prefill_chunk(self) -> int:
        return min(PREFILL_CHUNK, max(4096, self.segment_size // 8))

    def _reconcile(self, w: _Writer) -> None:
        """Read back ``w``'s segment after an interrupted batch (``w.suspect``): the batch
        may be durable, and other processes may have read its ref record, so it must be
        indexed (and sealed) like every batch before it, as a crash repair would."""
        # the interrupted batch may not be synced yet: make it durable before it is indexed,
        # sealed, or its ref record trusted (as _follow does for another writer's segment)
        self._sync_fd_now(w.fd)
        entries, refs, end = self._scan(w.fd, 0)
        self._add_entries(w.seg, [e for e in entries if e[1] >= w.end])
        w.idx = bytearray(_pack_entries(entries))
        w.count = len(entries)
        w.end = end
        if refs:
            self._note_refs(w.seg.name, refs)
        w.suspect = False

    def _retire(self, w: _Writer) -> None:
        """Cut ``w``'s zeros off the file (sealed or closed)."""
        if w.suspect or w.broken:
            return  # its end is not known here: zeros after it are harmless anyway
        try:
            # (the file's size, not ``filled``: an interruption may have left that behind)
            if os.fstat(w.fd).st_size > w.end:
                os.ftruncate(w.fd, w.end)
        except OSError:
            pass  # zeros after the last batch are never read as one: harmless

    def _new_segment(self) -> _Writer:
        self._seq += 1
        name = f"{self.writer_id}-{self._seq:06d}.seg"
        tmp = os.path.join(self.nodes_dir, TMP_PREFIX + name)
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            if not _try_lock(fd):  # pragma: no cover - a brand-new file nobody else knows
                raise StoreError(f"{self._where()}: cannot lock new segment {tmp}")
            os.rename(tmp, os.path.join(self.nodes_dir, name))
        except BaseException:
            os.close(fd)
            _unlink_quietly(tmp)
            raise
        seg = _Segment(self._new_id(), name, sealed=False)
        self._register(seg)
        self.writer = _Writer(seg, fd)
        self._count("segments_created")
        return self.writer

    def seal_own(self) -> None:
        """Finish this object's segment: write its .idx, release its lock."""
        w = self.writer
        if w is None:
            return
        self.writer = None
        try:
            if w.suspect:
                self._reconcile(w)
            self._retire(w)
            if w.seg.name in self.seg_refs:  # its ref records go to the ref files first
                self._checkpoint(w.seg.name)
            if w.end == 0:
                os.unlink(os.path.join(self.nodes_dir, w.seg.name))
                self.segments.pop(w.seg.name, None)
                self.seg_names.pop(w.seg.id, None)
            else:
                self._write_idx(w.seg.name, w.idx, w.end)
                w.seg.sealed = True
            self.seg_refs.pop(w.seg.name, None)
        finally:
            os.close(w.fd)

    def delete(self, addresses: list[object]) -> None:
        doomed = {a for a in addresses if isinstance(a, bytes) and is_address(a)}
        if not doomed:
            return
        self.refresh()
        self.seal_own()
        plan: list[tuple[_Segment, list[Entry]]] = []
        for seg in list(self.segments.values()):
            entries = self._entries_of(seg)
            if not any(a in doomed for a, _, _ in entries):
                continue
            if not seg.sealed:
                raise StoreError(
                    f"{self._where()}: cannot delete nodes from segment {seg.name}: another "
                    f"process is still writing it (run GC while no other process writes)"
                )
            plan.append((seg, entries))
        if not plan:
            return
        # Copy the survivors (verbatim records) into new sealed segments, durably, first.
        kept: set[bytes] = set()
        pending: list[tuple[bytes, bytes]] = []
        pending_size = 0
        for seg, entries in plan:
            fd = os.open(os.path.join(self.nodes_dir, seg.name), os.O_RDONLY | os.O_CLOEXEC)
            try:
                for address, offset, length in entries:
                    if address in doomed or address in kept:
                        continue
                    record = _pread_all(fd, _NODE_HEAD.size + length, offset)
                    pending.append((address, record[_NODE_HEAD.size :]))
                    kept.add(address)
                    pending_size += len(record)
                    if pending_size >= self.segment_size:
                        self._write_sealed_segment(pending)
                        pending, pending_size = [], 0
            finally:
                os.close(fd)
        if pending:
            self._write_sealed_segment(pending)
        self._sync_dir(self.nodes_dir)
        # Only then drop the old segments.
        for seg, _ in plan:
            _unlink_quietly(os.path.join(self.nodes_dir, _idx_name(seg.name)))
            _unlink_quietly(os.path.join(self.nodes_dir, seg.name))
            self.segments.pop(seg.name, None)
            self.seg_names.pop(seg.id, None)
        self._sync_dir(self.nodes_dir)
        self._rebuild_index()

    def _entries_of(self, seg: _Segment) -> list[Entry]:
        if seg.sealed:
            entries = self._read_idx(seg.name)
            if entries is not None:
                return entries
        try:
            fd = os.open(os.path.join(self.nodes_dir, seg.name), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return []
        try:
            return self._scan(fd, 0)[0]  # sealed: its ref records are in the ref files
        finally:
            os.close(fd)

    def _write_sealed_segment(self, nodes: list[tuple[bytes, bytes]]) -> None:
        """A new segment holding ``nodes`` in one batch, with its .idx (used by GC). The .idx
        is renamed into place before the segment, so the segment is sealed when it appears."""
        self._seq += 1
        name = f"{self.writer_id}-{self._seq:06d}.seg"
        parts, size, _, idx = _encode_batch(nodes, len(SEGMENT_MAGIC))
        parts.insert(0, SEGMENT_MAGIC)
        tmp = os.path.join(self.nodes_dir, TMP_PREFIX + name)
        self._write_durably(tmp, parts)
        self._write_idx(name, idx, size + len(SEGMENT_MAGIC), sync_dir=False)
        os.rename(tmp, os.path.join(self.nodes_dir, name))
        self._count("segments_created")

    # ------------------------------------------------------------------------------- refs

    def _ref_path(self, name: str) -> str:
        return os.path.join(self.refs_dir, _ref_file(name))

    def _load_ref(self, path: str, name: str | None) -> tuple[str, bytes | None, int] | None:
        try:
            raw = _read_file(path)
        except FileNotFoundError:
            return None
        return self._ref_of(raw, path, name)

    def _ref_of(self, raw: bytes, path: str, name: str | None) -> tuple[str, bytes | None, int]:
        """The decoded ref file ``path`` (bytes ``raw``), of ref ``name`` if given, else of
        the name its file name says; StoreError if it is neither."""
        decoded = _decode_ref(raw)
        if decoded is None or (name is not None and decoded[0] != name):
            raise StoreError(f"{self._where()}: ref file {path} is damaged")
        if name is None and _ref_file(decoded[0]) != os.path.basename(path):
            raise StoreError(f"{self._where()}: ref file {path} does not match its name")
        return decoded

    def _load_ref_kept(self, name: str) -> tuple[str, bytes | None, int] | None:
        """:meth:`_load_ref` of ``name``'s ref file, read again only if the file was
        replaced since. A ref file is never changed in place (it is written whole under
        another name, then renamed over), and this object keeps the file it read open, so
        that file's inode number cannot be reused meanwhile: the path still naming the same
        device and inode means the same bytes. One ``stat`` instead of open, read, close
        and decode, on every ``cas_ref`` (callers hold ``_ref_mutex``)."""
        path = self._ref_path(name)
        kept = self._ref_files.get(name)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            st = None
        if kept is not None:
            if st is not None and kept[1] == st.st_dev and kept[2] == st.st_ino:
                return kept[3]
            del self._ref_files[name]
            os.close(kept[0])
        if st is None:
            return None
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return self._load_ref(path, name)  # replaced or deleted just now
        try:
            fst = os.fstat(fd)
            decoded = self._ref_of(_pread_all(fd, fst.st_size, 0), path, name)
        except BaseException:
            os.close(fd)
            raise
        if len(self._ref_files) >= _KEPT_REF_FILES:
            oldest = next(iter(self._ref_files))
            os.close(self._ref_files.pop(oldest)[0])
        self._ref_files[name] = (fd, fst.st_dev, fst.st_ino, decoded)
        return decoded

    def _lock_refs(self, wait: bool = True) -> bool:
        """Take refs/.lock (reentrant within this object: callers hold _ref_mutex); without
        ``wait``, False instead of waiting for another holder."""
        if self._ref_lock_depth == 0:
            try:
                fcntl.flock(self.lock_fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
        self._ref_lock_depth += 1
        return True

    def _unlock_refs(self) -> None:
        self._ref_lock_depth -= 1
        if self._ref_lock_depth == 0:
            fcntl.flock(self.lock_fd, fcntl.LOCK_UN)

    def _note_refs(self, segment: str, refs: list[tuple[RefRecord, bool]]) -> None:
        held = self.seg_refs.setdefault(segment, {})
        for (name, version, value), damaged in refs:
            prior = held.get(name)
            if prior is None or prior[0] <= version:
                held[name] = (version, value, damaged)

    def _logged(self, name: str) -> tuple[int, bytes | None, bool] | None:
        """The newest record of ``name`` in the unsealed segments (None: there is none)."""
        best: tuple[int, bytes | None, bool] | None = None
        for held in self.seg_refs.values():
            rec = held.get(name)
            if rec is not None and (best is None or rec[0] > best[0]):
                best = rec
        return best

    def _resolve(self, name: str) -> tuple[int, bytes | None]:
        """(version, value) of ``name``: the newer of its ref file and its newest record in
        an unsealed segment; (0, None) for a ref that never existed."""
        loaded = self._load_ref_kept(name)
        version, value = (0, None) if loaded is None else (loaded[2], loaded[1])
        logged = self._logged(name)
        if logged is not None and (loaded is None or logged[0] > version):
            if logged[2]:
                raise StoreError(
                    f"{self._where()}: the newest record of ref {name!r} is in a damaged batch"
                )
            version, value = logged[0], logged[1]
        return version, value

    def _checkpoint(self, segment: str) -> None:
        """Write the ref records of ``segment`` that are newer than the ref files into them
        (durably), so the segment can be sealed: sealed segments' records are never read."""
        held = self.seg_refs.get(segment)
        if not held:
            return
        with self._ref_mutex:
            self._lock_refs()
            try:
                wrote = False
                for name, (version, value, damaged) in sorted(held.items()):
                    if damaged:
                        continue
                    loaded = self._load_ref(self._ref_path(name), name)
                    if loaded is not None and loaded[2] >= version:
                        continue
                    self._write_ref_file(name, value, version)
                    wrote = True
                if wrote:
                    self._sync_dir(self.refs_dir)
            finally:
                self._unlock_refs()

    def _write_ref_file(self, name: str, value: bytes | None, version: int) -> None:
        tmp = os.path.join(self.refs_dir, TMP_PREFIX + secrets.token_hex(8))
        try:
            self._write_durably(tmp, _encode_ref(name, value, version))
            os.rename(tmp, self._ref_path(name))
        except BaseException:
            _unlink_quietly(tmp)
            raise

    def read_ref(self, name: str) -> bytes | None:
        try:
            with self._ref_mutex:
                self.refresh()  # other processes' ref records in their segments
                return self._resolve(name)[1]
        except OSError as exc:
            raise StoreError(f"{self._where()}: cannot read ref {name!r}: {exc}") from exc

    def cas_ref(self, name: str, expected: bytes | None, new: bytes | None) -> bool:
        try:
            with self._ref_mutex:
                self._lock_refs()
                try:
                    return self._cas_locked(name, expected, new)
                finally:
                    self._unlock_refs()
        except OSError as exc:
            raise StoreError(f"{self._where()}: cannot update ref {name!r}: {exc}") from exc

    def quick_cas_ref(self, name: str, expected: bytes | None, new: bytes | None) -> bool | None:
        """:meth:`cas_ref` if it is quick, for the event loop's thread: the staged nodes are
        few (at most INLINE_BYTES), the last fdatasyncs were fast, this object's segment has
        room for them (no sealing), no other live writer's segment must be read, and neither
        the ref mutex nor ``refs/.lock`` is held by anyone else. None (nothing done) if not.
        (Segments that appeared or vanished since this object last looked also send it to
        the worker: reading another writer's new segment may take long.) A batch that grows
        the file and writes zeros ahead (PREFILL_AFTER, ~1 ms every ~17 commits) stays here
        too: on a worker it cost ~0.6 ms more (two thread hand-offs), ~30 us per commit."""
        w = self.writer
        staged = self.staged
        size = sum(map(len, staged.values()))
        # where the batch would end at most: records (38-byte heads), the ref record, the
        # commit record, the segment header
        reach = 0 if w is None else w.end + size + 38 * len(staged) + 64 + len(name)
        if new is not None:
            reach += len(new)
        if (
            not staged
            or size > INLINE_BYTES
            or not self.sync_seconds < INLINE_SYNC_SECONDS
            or w is None
            or w.broken
            or w.suspect
            or reach >= self.segment_size
            or w.count + len(staged) >= self.segment_records
            or any(not seg.sealed and seg.name != w.seg.name for seg in self.segments.values())
        ):
            return None
        if not self._ref_mutex.acquire(blocking=False):
            return None
        try:
            if not self._lock_refs(wait=False):
                return None
            try:
                listing = self._listing()
                if not self._listing_is_known(listing[0]):
                    return None
                self._count("cas_inline")
                return self._cas_locked(name, expected, new, listing)
            finally:
                self._unlock_refs()
        except OSError as exc:
            raise StoreError(f"{self._where()}: cannot update ref {name!r}: {exc}") from exc
        finally:
            self._ref_mutex.release()

    def _cas_locked(
        self,
        name: str,
        expected: bytes | None,
        new: bytes | None,
        listing: tuple[set[str], set[str]] | None = None,
    ) -> bool:
        self._count("cas")
        self.refresh(listing)  # every record written under the lock is visible now
        version, current = self._resolve(name)
        if self.staged:
            # Staged nodes (a commit) and the ref record naming it: one batch, one sync.
            # On a lost race the nodes are still written (callers cache them as stored).
            ok = current == expected
            changed = ok and new != current
            self._write_batch({}, [(name, version + 1, new)] if changed else [])
            return ok
        if current != expected:
            return False
        path = self._ref_path(name)
        if new != current:
            if new is not None:
                self._write_ref_file(name, new, version + 1)
            elif self._logged(name) is not None:
                self._write_ref_file(name, None, version + 1)  # a record says otherwise
            else:
                os.unlink(path)
        # Also when nothing changed: what we read may be a crashed writer's unsynced rename.
        self._sync_dir(self.refs_dir)
        return True

    def list_refs(self) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        try:
            with self._ref_mutex:
                self.refresh()
                names: set[str] = set()
                for held in self.seg_refs.values():
                    names.update(held)
                for entry in os.scandir(self.refs_dir):
                    if entry.name.endswith(".ref") and not entry.name.startswith("."):
                        loaded = self._load_ref(entry.path, None)
                        if loaded is not None:
                            names.add(loaded[0])
                for name in names:
                    value = self._resolve(name)[1]
                    if value is not None:
                        out[name] = value
        except OSError as exc:
            raise StoreError(f"{self._where()}: cannot list refs: {exc}") from exc
        return out

    # ---------------------------------------------------------------------------- closing

    def close(self, seal: bool = False) -> None:
        """Release every file descriptor; with ``seal``, first seal this object's segment."""
        try:
            if seal:
                if self.staged:
                    self._write_batch({}, [])
                self.seal_own()
        finally:
            if self.writer is not None:
                self._retire(self.writer)
                os.close(self.writer.fd)
                self.writer = None
            for fd, _, _, _ in self._ref_files.values():
                os.close(fd)
            self._ref_files.clear()
            if self.lock_fd >= 0:
                os.close(self.lock_fd)
                self.lock_fd = -1


def _close_all(fds: dict[str, int | None]) -> None:
    for fd in fds.values():
        if fd is not None:
            os.close(fd)


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


async def _offload(where: str, fn: Callable[..., _T], *args: Any) -> _T:
    """Run blocking ``fn(*args)`` in the loop's executor: one thread hop (aiofiles)."""
    try:
        return await aiofiles.os.wrap(fn)(*args)
    except OSError as exc:
        raise StoreError(f"{where}: I/O error: {exc}") from exc


async def _offload_shielded(where: str, fn: Callable[..., _T], *args: Any) -> _T:
    """:func:`_offload` that finishes even if the caller is cancelled: a write or an index
    update must never be abandoned half-way by a thread the caller stopped waiting for."""
    with anyio.CancelScope(shield=True):
        result = await _offload(where, fn, *args)
    return result


def _path_from_url(url: object) -> str:
    if not isinstance(url, str):
        raise StoreError(f"file store URL must be a string, got {type(url).__name__}")
    parts = urlsplit(url)
    if parts.scheme != "file":
        raise StoreError(f"not a file:// URL: {url!r}")
    if parts.netloc:
        raise StoreError(
            f"file store URL {url!r} names a host ({parts.netloc!r}): use file:///absolute/path"
        )
    if parts.query or parts.fragment:
        raise StoreError(f"file store URL {url!r}: no query or fragment is allowed")
    path = unquote(parts.path)
    if not path.startswith("/"):
        raise StoreError(
            f"file store URL {url!r}: path {path!r} is not absolute: use file:///absolute/path"
        )
    if "\0" in path:
        raise StoreError(f"file store URL {url!r}: path contains a NUL character")
    return os.path.normpath(path)


def _int_option(options: dict[str, object], name: str, default: int, minimum: int) -> int:
    value = options.pop(name, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise StoreError(f"file store option {name} must be an int >= {minimum}, got {value!r}")
    return value


class FileStore:
    """A durable NodeStore in a directory (see the module docstring for the on-disk layout)."""

    def __init__(self, url: str, core: _Core) -> None:
        self.url = url
        self._core = core
        #: Counters: fsyncs (every fsync/fdatasync issued), batches, nodes_written, ...
        self.stats = core.stats
        # Uncontended acquires do not yield (fast_acquire): every method holding them
        # yields in its thread hop, or explicitly (the inline commit of cas_ref)
        self._mutex = anyio.Lock(fast_acquire=True)  # open/refresh/append/delete/close
        self._ref_lock = anyio.Lock(fast_acquire=True)  # one cas_ref at a time per object
        self._closed = False
        # Incremented when a refresh starts (under the mutex). A reader that missed after
        # seeing epoch E can skip its own refresh if one with a larger epoch has finished:
        # that one listed the directory after the miss.
        self._epoch = 0
        self._where = core._where()

    @classmethod
    async def open(cls, url: str, **options: object) -> FileStore:
        """Open (creating it if absent) the store at ``file:///abs/path``.

        Options: ``segment_size`` (bytes after which a writer starts a new segment, default
        32 MiB) and ``segment_records`` (nodes after which it does, default 100 000).
        """
        root = _path_from_url(url)
        opts = dict(options)
        segment_size = _int_option(opts, "segment_size", DEFAULT_SEGMENT_SIZE, 1)
        segment_records = _int_option(opts, "segment_records", DEFAULT_SEGMENT_RECORDS, 1)
        if opts:
            raise StoreError(f"unknown file store option(s) for {url!r}: {sorted(opts)}")
        core = _Core(root, segment_size, segment_records)
        try:
            await _offload_shielded(core._where(), core.open)
            await anyio.lowlevel.checkpoint_if_cancelled()
        except StoreError as exc:
            core.close()
            raise StoreError(f"{exc} (url {url!r})") from exc
        except BaseException:
            core.close()
            raise
        return cls(url, core)

    def __repr__(self) -> str:
        return f"FileStore({self.url!r})"

    @property
    def index_bytes(self) -> int:
        """Bytes held by the in-memory index: the table (~21 bytes a node stored) and the
        entries of this object's unsealed segment (45 bytes a node, until it is sealed)."""
        writer = self._core.writer
        return self._core.table.nbytes + (len(writer.idx) if writer is not None else 0)

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosed(f"store {self.url} is closed")

    # ------------------------------------------------------------------------------ nodes

    def _locate(
        self, addresses: list[bytes]
    ) -> tuple[list[tuple[bytes, list[tuple[str | None, int]]]], list[bytes]]:
        """Candidate records of each address (confirmed by the read), and the addresses
        that have none."""
        locate = self._core.locate
        found: list[tuple[bytes, list[tuple[str | None, int]]]] = []
        absent: list[bytes] = []
        for address in addresses:
            places = locate(address)
            if places:
                found.append((address, places))
            else:
                absent.append(address)
        return found, absent

    async def _refresh(self, seen_epoch: int | None = None) -> None:
        """Refresh the index from disk, unless a refresh that started after ``seen_epoch``
        was read has finished meanwhile."""
        async with self._mutex:
            self._check_open()
            if seen_epoch is not None and self._epoch > seen_epoch:
                return
            self._epoch += 1
            await _offload_shielded(self._where, self._core.refresh)

    async def _read(self, addresses: list[bytes]) -> dict[bytes, bytes]:
        if self._core.staged:
            staged = dict(self._core.staged)  # a writer thread may clear it meanwhile
            if any(a in staged for a in addresses):
                rest = [a for a in addresses if a not in staged]
                read = await self._read(rest) if rest else {}
                return {a: staged[a] if a in staged else read[a] for a in addresses}
        epoch = self._epoch
        found, absent = self._locate(addresses)
        if absent:
            await self._refresh(epoch)
            found, absent = self._locate(addresses)
            if absent:
                raise NodeNotFound(absent[0])
        got = await _offload(self._where, self._core.read_many, found) if found else {}
        vanished = [a for a, data in got.items() if data is None]
        if vanished:  # GC (here or in another process) moved them: look again once
            await self._refresh()
            found, absent = self._locate(vanished)
            if absent:
                raise NodeNotFound(absent[0])
            got.update(await _offload(self._where, self._core.read_many, found))
        out: dict[bytes, bytes] = {}
        for address in addresses:
            data = got[address]
            if data is None:
                raise NodeNotFound(address)
            out[address] = data
        return out

    async def get(self, address: bytes) -> bytes:
        self._check_open()
        check_address(address)
        return (await self._read([address]))[address]

    async def get_many(self, addresses: Iterable[bytes]) -> dict[bytes, bytes]:
        self._check_open()
        wanted: list[bytes] = []
        for address in addresses:
            wanted.append(check_address(address))
        if not wanted:
            await anyio.lowlevel.checkpoint()
            return {}
        return await self._read(list(dict.fromkeys(wanted)))

    async def put_many(self, nodes: Mapping[bytes, bytes]) -> None:
        self._check_open()
        batch = dict(nodes)
        async with self._mutex:
            self._check_open()
            await _offload_shielded(self._where, self._core.append, batch)

    async def missing(self, addresses: Iterable[bytes]) -> set[bytes]:
        self._check_open()
        epoch = self._epoch
        wanted: list[bytes] = []
        for address in addresses:
            if not is_address(address):
                check_address(address)  # raises
            wanted.append(address)
        wanted = list(dict.fromkeys(wanted))
        # Addresses without a candidate are absent without I/O; candidates are confirmed
        # by reading their record headers.
        core = self._core
        absent: list[bytes] = []
        maybe: list[bytes] = []
        for address in wanted:
            (maybe if core.table.find(address) else absent).append(address)
        if maybe:
            absent += await _offload(self._where, core.absent, maybe)
        else:
            await anyio.lowlevel.checkpoint()
        if absent:
            await self._refresh(epoch)
            absent = await _offload(self._where, core.absent, absent)
        return set(absent)

    async def list_addresses(self) -> set[bytes]:
        self._check_open()
        async with self._mutex:
            self._check_open()
            self._epoch += 1
            addresses = await _offload_shielded(self._where, self._core.list_addresses)
        return addresses

    async def delete_many(self, addresses: Iterable[bytes]) -> None:
        self._check_open()
        doomed: list[object] = list(addresses)
        async with self._mutex:
            self._check_open()
            self._epoch += 1
            await _offload_shielded(self._where, self._core.delete, doomed)

    # ------------------------------------------------------------------------------- refs

    def stage(self, nodes: Mapping[bytes, bytes], *, verified: bool = False) -> None:
        """Hand over nodes to be written with this object's next write: the next
        ``cas_ref`` writes them and its ref record in one batch with one sync (what a
        transaction's commit costs), as would the next ``put_many`` or ``aclose``. Until
        then they are readable here but not durable: a ref must not name them before.
        Each address is checked against its bytes, as ``put_many`` does, unless
        ``verified``: the caller computed every address from those bytes itself (the
        tree layer's own new nodes, store/nodes.py)."""
        self._check_open()
        self._core.stage(nodes, verified)

    async def get_ref(self, name: str) -> bytes | None:
        self._check_open()
        check_ref_name(name)
        async with self._mutex:
            self._check_open()
            return await _offload_shielded(self._where, self._core.read_ref, name)

    async def cas_ref(self, name: str, expected: bytes | None, new: bytes | None) -> bool:
        self._check_open()
        check_ref_name(name)
        check_ref_value(expected, "expected")
        check_ref_value(new, "new")
        async with self._mutex, self._ref_lock:
            self._check_open()
            # A small commit (staged nodes and their ref record, one fdatasync of ~50 kB)
            # is written on this thread: the two thread wake-ups of an offload cost more
            # than that fdatasync on a small machine. Anything larger or slower, or that
            # would wait for a lock, goes to a worker thread as before.
            done = self._core.quick_cas_ref(name, expected, new)
            if done is not None:
                # yield, but never raise a cancellation now: the commit is durable, and its
                # caller must learn so (as from the shielded worker path)
                await anyio.lowlevel.cancel_shielded_checkpoint()
                return done
            return await _offload_shielded(self._where, self._core.cas_ref, name, expected, new)

    async def list_refs(self) -> dict[str, bytes]:
        self._check_open()
        async with self._mutex:
            self._check_open()
            return await _offload_shielded(self._where, self._core.list_refs)

    # ---------------------------------------------------------------------------- closing

    async def aclose(self) -> None:
        """Seal this object's segment (so reopening loads its index instead of scanning it)
        and release its files and locks. Idempotent."""
        if self._closed:
            return
        self._closed = True
        with anyio.CancelScope(shield=True):
            async with self._mutex, self._ref_lock:
                await _offload(self._where, self._core.close, True)
