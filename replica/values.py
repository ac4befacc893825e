"""The value order and the byte encodings of datoms in index keys (docs/datoms.md).

Every value a datom can hold is encoded as bytes whose bytewise order is the value order, so
the indexes (prolly trees with byte keys) sort datoms natively in C and every peer, on every
platform, orders them identically. Never ``hash()`` (salted per process), never a Python
``__lt__`` per comparison.

The order is: type rank first, then the value within the type::

    rank  type                         encoding after the rank byte
    0x01  nil (only inside tuples)     -
    0x02  boolean                      0x00 false, 0x01 true
    0x03  integer (long, bigint, ref)  see _enc_int: length-prefixed, sign-aware
    0x04  double                       IEEE 754 bits, sign-flipped so bytes sort numerically
    0x05  bigdec (decimal.Decimal)     sign class, adjusted exponent, digits
    0x06  instant (aware datetime)     microseconds since the epoch, as an integer
    0x07  uuid                         16 bytes
    0x08  string                       UTF-8, 0x00 escaped as 00 01, terminated by 00 00
    0x09  keyword                      as string
    0x0A  symbol                       as string
    0x0B  bytes                        as string
    0x0C  tuple                        each element (with its rank), then 0x00

``bool`` ranks apart from ``int`` (in Python ``True == 1``); ``-0.0`` is stored as ``0.0``;
every NaN as the one canonical quiet NaN (which sorts above +inf).
"""

from __future__ import annotations

import datetime as _dt
import decimal
import math
import struct
import uuid
from typing import Any

from query.types import Keyword, Symbol
from replica.errors import ValueTypeError

R_NIL = 0x01
R_BOOL = 0x02
R_INT = 0x03
R_DOUBLE = 0x04
R_BIGDEC = 0x05
R_INSTANT = 0x06
R_UUID = 0x07
R_STRING = 0x08
R_KEYWORD = 0x09
R_SYMBOL = 0x0A
R_BYTES = 0x0B
R_TUPLE = 0x0C

_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)
_D = struct.Struct(">d")
_Q = struct.Struct(">Q")
_NAN = struct.pack(">Q", 0x7FF8000000000000 ^ 0x8000000000000000)  # flipped like +x
_MAX_INT_BYTES = 120


def _enc_int(n: int) -> bytes:
    """Order-preserving, self-delimiting integer: 0x80+L then L magnitude bytes for n >= 0;
    0x7F-L then the complemented magnitude for n < 0 (longer = more negative = smaller)."""
    if n >= 0:
        length = (n.bit_length() + 7) >> 3
        if length > _MAX_INT_BYTES:
            raise ValueTypeError(n, "integer", "too large to index (more than 960 bits)")
        return bytes((0x80 + length,)) + n.to_bytes(length, "big")
    m = -n
    length = (m.bit_length() + 7) >> 3
    if length > _MAX_INT_BYTES:
        raise ValueTypeError(n, "integer", "too large to index (more than 960 bits)")
    comp = ((1 << (8 * length)) - 1) ^ m
    return bytes((0x7F - length,)) + comp.to_bytes(length, "big")


def _dec_int(buf: bytes, pos: int) -> tuple[int, int]:
    marker = buf[pos]
    if marker >= 0x80:
        length = marker - 0x80
        end = pos + 1 + length
        return int.from_bytes(buf[pos + 1 : end], "big"), end
    length = 0x7F - marker
    end = pos + 1 + length
    comp = int.from_bytes(buf[pos + 1 : end], "big")
    return -(((1 << (8 * length)) - 1) ^ comp), end


def _enc_str(data: bytes) -> bytes:
    if b"\x00" in data:
        data = data.replace(b"\x00", b"\x00\x01")
    return data + b"\x00\x00"


def _dec_str(buf: bytes, pos: int) -> tuple[bytes, int]:
    # a NUL inside the string is always followed by 01, so the first 00 00 is the terminator
    end = buf.index(b"\x00\x00", pos)
    raw = buf[pos:end]
    if b"\x00" in raw:
        raw = raw.replace(b"\x00\x01", b"\x00")
    return raw, end + 2


def _enc_double(x: float) -> bytes:
    if x != x:
        return _NAN
    if x == 0.0:
        x = 0.0
    (bits,) = _Q.unpack(_D.pack(x))
    if bits >> 63:
        bits ^= 0xFFFFFFFFFFFFFFFF
    else:
        bits ^= 0x8000000000000000
    return _Q.pack(bits)


def _dec_double(buf: bytes, pos: int) -> tuple[float, int]:
    (bits,) = _Q.unpack_from(buf, pos)
    if bits >> 63:
        bits ^= 0x8000000000000000
    else:
        bits ^= 0xFFFFFFFFFFFFFFFF
    return _D.unpack(_Q.pack(bits))[0], pos + 8


def _enc_decimal(d: decimal.Decimal) -> bytes:
    if not d.is_finite():
        raise ValueTypeError(d, "bigdec", "NaN and infinite decimals cannot be stored")
    if d.is_zero():
        return b"\x02"
    sign, digits, _ = d.as_tuple()
    text = "".join(map(str, digits)).rstrip("0") or "0"
    body = _enc_int(d.adjusted()) + text.encode() + b"\x00"
    if sign:
        return b"\x01" + bytes(255 - b for b in body)
    return b"\x03" + body


def _dec_decimal(buf: bytes, pos: int) -> tuple[decimal.Decimal, int]:
    cls = buf[pos]
    pos += 1
    if cls == 0x02:
        return decimal.Decimal(0), pos
    if cls == 0x03:
        exp, pos = _dec_int(buf, pos)
        end = buf.index(b"\x00", pos)
        digits = buf[pos:end].decode()
        return decimal.Decimal(f"{digits[0]}.{digits[1:] or '0'}E{exp}").normalize(), end + 1
    # negative: complemented exponent and digits, terminator 0xFF
    # the complemented exponent may itself contain 0xFF bytes: decode it first
    marker = 255 - buf[pos]
    length = marker - 0x80 if marker >= 0x80 else 0x7F - marker
    exp_bytes = bytes(255 - b for b in buf[pos : pos + 1 + length])
    exp, _ = _dec_int(exp_bytes, 0)
    pos += 1 + length
    end = buf.index(b"\xff", pos)
    digits = bytes(255 - b for b in buf[pos:end]).decode()
    value = decimal.Decimal(f"-{digits[0]}.{digits[1:] or '0'}E{exp}").normalize()
    return value, end + 1


def instant_micros(value: _dt.datetime) -> int:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueTypeError(value, "instant", "datetimes must be timezone-aware (e.g. UTC)")
    delta = value - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def micros_instant(micros: int) -> _dt.datetime:
    return _EPOCH + _dt.timedelta(microseconds=micros)


def encode_value(value: Any) -> bytes:
    """The order-preserving bytes of one value (rank byte first)."""
    t = type(value)
    if t is str:
        return b"\x08" + _enc_str(value.encode())
    if t is int:
        return b"\x03" + _enc_int(value)
    if t is bool:
        return b"\x02\x01" if value else b"\x02\x00"
    if t is float:
        return b"\x04" + _enc_double(value)
    if t is Keyword:
        return b"\x09" + _enc_str(value.encode())
    if t is bytes:
        return b"\x0b" + _enc_str(value)
    if t is uuid.UUID:
        return b"\x07" + bytes(value.bytes)
    if t is _dt.datetime:
        return b"\x06" + _enc_int(instant_micros(value))
    if t is decimal.Decimal:
        return b"\x05" + _enc_decimal(value)
    if t is tuple:
        return b"\x0c" + b"".join(encode_value(x) for x in value) + b"\x00"
    if value is None:
        return b"\x01"
    if t is Symbol:
        return b"\x0a" + _enc_str(value.encode())
    raise ValueTypeError(value, None, f"values of type {t.__name__} cannot be stored")


def decode_value(buf: bytes, pos: int = 0) -> tuple[Any, int]:
    """Decode one value at ``pos``; returns it and the position after it."""
    rank = buf[pos]
    pos += 1
    if rank == R_STRING:
        raw, pos = _dec_str(buf, pos)
        return raw.decode(), pos
    if rank == R_INT:
        return _dec_int(buf, pos)
    if rank == R_BOOL:
        return buf[pos] == 1, pos + 1
    if rank == R_DOUBLE:
        return _dec_double(buf, pos)
    if rank == R_KEYWORD:
        raw, pos = _dec_str(buf, pos)
        return Keyword(raw.decode()), pos
    if rank == R_BYTES:
        return _dec_str(buf, pos)
    if rank == R_UUID:
        return uuid.UUID(bytes=bytes(buf[pos : pos + 16])), pos + 16
    if rank == R_INSTANT:
        micros, pos = _dec_int(buf, pos)
        return micros_instant(micros), pos
    if rank == R_BIGDEC:
        return _dec_decimal(buf, pos)
    if rank == R_TUPLE:
        items = []
        while buf[pos] != 0:
            item, pos = decode_value(buf, pos)
            items.append(item)
        return tuple(items), pos + 1
    if rank == R_NIL:
        return None, pos
    if rank == R_SYMBOL:
        raw, pos = _dec_str(buf, pos)
        return Symbol(raw.decode()), pos
    raise ValueError(f"unknown value rank {rank:#x} at {pos - 1}")


def value_key(value: Any) -> bytes:
    """Sort key for values in Python code: ``sorted(values, key=value_key)`` is the value
    order (the same bytes the indexes use)."""
    return encode_value(value)


def is_finite_number(value: Any) -> bool:
    return type(value) is float and math.isfinite(value)
