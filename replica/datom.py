"""Datoms, entity ids, clock stamps, and how datoms become index keys (docs/datoms.md).

Entity ids (and tx ids, which are entity ids) are non-negative integers below 2**128:
``replica_id << 64 | counter``, so any peer allocates them offline without collisions, and the
entities one replica creates sort together. Ids below 2**64 (replica id 0) are free for users
who bring their own ids (DataScript style).

A stamp orders transactions across peers: ``(wall_ms, counter)`` of a hybrid logical clock,
then the tx id, as 28 bytes that sort in time order (12 bytes of clock, 16 of tx id).

Index keys (``E``/``TX`` = 16 bytes big-endian, ``A`` = the ident as an escaped string,
``V`` = the value encoding of replica/values.py, ``S`` = the 28-byte stamp, ``op`` = 1 for an
assertion and 0 for a retraction)::

    eavt   E A V        -> S        current datoms
    aevt   A E V        -> S
    avet   A V E        -> S
    vaet   V:E A E      -> S        ref attributes only; V is the referenced entity id
    heavt  E A V S op   -> b""      history: every assertion and retraction
    haevt  A E V S op   -> b""
    log    S E A V op   -> b""      the transaction log, in stamp order
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from replica.values import _dec_str, _enc_str, decode_value, encode_value

INDEXES = ("eavt", "aevt", "avet", "vaet")
HISTORY = ("heavt", "haevt")
TREES = (*INDEXES, *HISTORY, "log")

MAX_EID = (1 << 128) - 1
_STAMP = struct.Struct(">QI")


@dataclass(frozen=True, slots=True)
class Datom:
    """A fact: entity ``e`` has value ``v`` for attribute ``a``, asserted (``added``) or
    retracted in transaction ``tx``. Unpacks like a tuple: ``e, a, v, tx, added = d``."""

    e: int
    a: str
    v: Any
    tx: int
    added: bool = True

    def __iter__(self) -> Iterator[Any]:
        return iter((self.e, self.a, self.v, self.tx, self.added))

    def __getitem__(self, i: int) -> Any:
        return (self.e, self.a, self.v, self.tx, self.added)[i]

    def __len__(self) -> int:
        return 5

    def __repr__(self) -> str:
        return (
            f"#datom [{self.e} {self.a} {self.v!r} {self.tx} {'true' if self.added else 'false'}]"
        )


def new_replica_id() -> int:
    """A random 64-bit replica id (never 0: id 0 is the users' own id space)."""
    while True:
        rid = int.from_bytes(os.urandom(8), "big")
        if rid:
            return rid


def eid_bytes(e: int) -> bytes:
    return e.to_bytes(16, "big")


def eid_from(buf: bytes, pos: int) -> int:
    return int.from_bytes(buf[pos : pos + 16], "big")


def attr_bytes(a: str) -> bytes:
    return _enc_str(a.encode())


@dataclass(frozen=True, slots=True, order=True)
class Stamp:
    """Hybrid logical clock stamp of a transaction, plus its tx id as the tie breaker."""

    wall_ms: int
    counter: int
    tx: int

    def encode(self) -> bytes:
        return _STAMP.pack(self.wall_ms, self.counter) + eid_bytes(self.tx)

    @classmethod
    def decode(cls, buf: bytes, pos: int = 0) -> Stamp:
        wall, counter = _STAMP.unpack_from(buf, pos)
        return cls(wall, counter, eid_from(buf, pos + 12))

    def next(self, tx: int, now_ms: int | None = None) -> Stamp:
        """The stamp of a transaction causally after this one, at local time ``now_ms``."""
        now = int(time.time() * 1000) if now_ms is None else now_ms
        if now > self.wall_ms:
            return Stamp(now, 0, tx)
        return Stamp(self.wall_ms, self.counter + 1, tx)


ZERO_STAMP = Stamp(0, 0, 0)
STAMP_LEN = 28


# -- keys ------------------------------------------------------------------------------------


def current_keys(e: int, a: str, v: Any, is_ref: bool) -> tuple[bytes, bytes, bytes, bytes | None]:
    """Keys of one current datom in eavt, aevt, avet and (refs only) vaet."""
    eb = eid_bytes(e)
    ab = attr_bytes(a)
    vb = encode_value(v)
    return (
        eb + ab + vb,
        ab + eb + vb,
        ab + vb + eb,
        eid_bytes(v) + ab + eb if is_ref else None,
    )


def eavt_tuple(key: bytes, value: bytes, added: bool = True) -> tuple[int, str, Any, int, bool]:
    """A current eavt entry as the plain tuple ``(e, a, v, tx, added)`` the query layer uses."""
    raw, pos = _dec_str(key, 16)
    v, _ = decode_value(key, pos)
    return (eid_from(key, 0), raw.decode(), v, eid_from(value, 12), added)


def aevt_tuple(key: bytes, value: bytes) -> tuple[int, str, Any, int, bool]:
    raw, pos = _dec_str(key, 0)
    v, _ = decode_value(key, pos + 16)
    return (eid_from(key, pos), raw.decode(), v, eid_from(value, 12), True)


def avet_tuple(key: bytes, value: bytes) -> tuple[int, str, Any, int, bool]:
    raw, pos = _dec_str(key, 0)
    v, pos = decode_value(key, pos)
    return (eid_from(key, pos), raw.decode(), v, eid_from(value, 12), True)


def vaet_tuple(key: bytes, value: bytes) -> tuple[int, str, Any, int, bool]:
    raw, pos = _dec_str(key, 16)
    return (eid_from(key, pos), raw.decode(), eid_from(key, 0), eid_from(value, 12), True)


def decode_eavt(key: bytes, value: bytes, added: bool = True) -> Datom:
    return Datom(*eavt_tuple(key, value, added))


def decode_aevt(key: bytes, value: bytes) -> Datom:
    return Datom(*aevt_tuple(key, value))


def decode_avet(key: bytes, value: bytes) -> Datom:
    return Datom(*avet_tuple(key, value))


def decode_vaet(key: bytes, value: bytes) -> Datom:
    return Datom(*vaet_tuple(key, value))


def decode_heavt(key: bytes) -> tuple[Datom, bytes]:
    """A history datom and its stamp bytes."""
    e = eid_from(key, 0)
    raw, pos = _dec_str(key, 16)
    v, pos = decode_value(key, pos)
    stamp = key[pos : pos + STAMP_LEN]
    return Datom(e, raw.decode(), v, eid_from(stamp, 12), key[-1] == 1), stamp


def decode_haevt(key: bytes) -> tuple[Datom, bytes]:
    raw, pos = _dec_str(key, 0)
    e = eid_from(key, pos)
    v, pos = decode_value(key, pos + 16)
    stamp = key[pos : pos + STAMP_LEN]
    return Datom(e, raw.decode(), v, eid_from(stamp, 12), key[-1] == 1), stamp


def decode_log(key: bytes) -> tuple[Datom, bytes]:
    stamp = key[:STAMP_LEN]
    e = eid_from(key, STAMP_LEN)
    raw, pos = _dec_str(key, STAMP_LEN + 16)
    v, pos = decode_value(key, pos)
    return Datom(e, raw.decode(), v, eid_from(stamp, 12), key[-1] == 1), stamp
