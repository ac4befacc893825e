"""The canonical codec (docs/format.md sections 1, 2 and 4): frozen vectors and strictness.

The expected bytes below are written by hand from RFC 8949 (Appendix A examples and the core
deterministic encoding rules of section 4.2.1), never produced by ``store.codec``; the literal
addresses were computed once with ``hashlib`` from those literal bytes. Together they freeze the
storage format: a change that alters any encoding or address must fail here, and needs a new
format version (docs/format.md).
"""

from __future__ import annotations

import datetime
import decimal
import fractions
import hashlib
import math
import uuid
from typing import Any

import cbor2
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from store.codec import (
    ADDRESS_LENGTH,
    MAX_DEPTH,
    address_from_str,
    address_of,
    address_to_str,
    decode,
    encode,
    is_address,
)
from store.errors import CodecError, ReplicaError
from store.nodes import decode_node, make_internal, make_leaf

# (python value, canonical bytes as hex). Sources: RFC 8949 Appendix A, and section 4.2.1
# (shortest heads, shortest exact float, map keys sorted bytewise by their encoding).
VECTORS: list[tuple[Any, str]] = [
    # unsigned integers: the value in the head's low bits up to 23, then 1/2/4/8 extra bytes
    (0, "00"),
    (1, "01"),
    (10, "0a"),
    (23, "17"),
    (24, "1818"),
    (25, "1819"),
    (100, "1864"),
    (255, "18ff"),
    (256, "190100"),
    (1000, "1903e8"),
    (65535, "19ffff"),
    (65536, "1a00010000"),
    (1000000, "1a000f4240"),
    (1000000000000, "1b000000e8d4a51000"),
    (2**64 - 1, "1bffffffffffffffff"),
    # negative integers: major type 1 carries -1 - n
    (-1, "20"),
    (-10, "29"),
    (-24, "37"),
    (-25, "3818"),
    (-100, "3863"),
    (-1000, "3903e7"),
    (-(2**64), "3bffffffffffffffff"),
    # beyond 64 bits: bignums, tag 2 (positive) / tag 3 (negative, -1 - n), no leading zeros
    (2**64, "c249010000000000000000"),
    (-(2**64) - 1, "c349010000000000000000"),
    (2**72, "c24a01000000000000000000"),  # 01 and nine zero bytes: a 10-byte string
    # floats: the shortest of half/single/double that holds the value exactly
    (0.0, "f90000"),
    (-0.0, "f98000"),
    (1.0, "f93c00"),
    (1.5, "f93e00"),
    (-4.0, "f9c400"),
    (65504.0, "f97bff"),
    (5.960464477539063e-8, "f90001"),
    (0.00006103515625, "f90400"),
    (100000.0, "fa47c35000"),
    (3.4028234663852886e38, "fa7f7fffff"),
    (1.1, "fb3ff199999999999a"),
    (-4.1, "fbc010666666666666"),
    (1.0e300, "fb7e37e43c8800759c"),
    (math.inf, "f97c00"),
    (-math.inf, "f9fc00"),
    # simple values
    (False, "f4"),
    (True, "f5"),
    (None, "f6"),
    # byte and text strings
    (b"", "40"),
    (b"\x01\x02\x03\x04", "4401020304"),
    ("", "60"),
    ("a", "6161"),
    ("IETF", "6449455446"),
    ('"\\', "62225c"),
    ("\u00fc", "62c3bc"),
    ("\u6c34", "63e6b0b4"),
    ("\U00010151", "64f0908591"),
    ("x" * 24, "7818" + "78" * 24),
    # arrays (tuples encode as arrays too)
    ([], "80"),
    ([1, 2, 3], "83010203"),
    ((1, 2), "820102"),
    ([1, [2, 3]], "8201820203"),
    ([1, [2, 3], [4, 5]], "8301820203820405"),
    (list(range(1, 26)), "98190102030405060708090a0b0c0d0e0f101112131415161718181819"),
    # maps: text keys only, sorted bytewise by encoded key (so shorter keys first)
    ({}, "a0"),
    ({"b": 1, "a": 2}, "a2616102616201"),
    ({"aa": 1, "b": 2}, "a261620262616101"),
    ({"a": 1, "b": [2, 3]}, "a26161016162820203"),
    (["a", {"b": "c"}], "826161a161626163"),
    (
        {"e": "E", "d": "D", "c": "C", "b": "B", "a": "A"},
        "a56161614161626142616361436164614461656145",
    ),
]

# Addresses computed once, outside the code under test:
#   python -c "import hashlib; print('01' + hashlib.sha256(bytes.fromhex(HEX)).hexdigest())"
LITERAL_ADDRESSES = {
    "00": "016e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "a2616102616201": "01b9b2201386523b17e7dacdbf0f469ffebd37a32b4cbb8761d486ba70c2f75ad4",
}

# Tree nodes (docs/format.md section 4), derived by hand:
#   empty leaf [0, [], []]            -> 83 00 80 80
#   leaf [0, [b"a"], [b"b"]]          -> 83 00 81 41 61 81 41 62
#   internal [1, [b"a"], [leaf address (33 bytes: 58 21 ...)], [1]]
EMPTY_LEAF_HEX = "83008080"
EMPTY_LEAF_ADDRESS = "013510d537a3a301739cad5db00710d31dd68f0e5b188d9ab8282aa42f37d42be0"
SMALL_LEAF_HEX = "8300814161814162"
SMALL_LEAF_ADDRESS = "019eaba09afafb89036d1d6b4d30db3c99207ef7c5efc329c4f0ad6507df5bec18"
INTERNAL_HEX = "840181416181" + "5821" + SMALL_LEAF_ADDRESS + "8101"
INTERNAL_ADDRESS = "0197e77679d7c09da3b1799e1f9b8bebe3fdddae16f89dfe33db4089d3249bbfe7"


def _same(a: Any, b: Any) -> bool:
    """Equality that also checks exact types (True is not 1, 1.0 is not 1), treats NaN as equal
    to NaN and tells -0.0 from 0.0; tuples compare as the lists they decode to."""
    if isinstance(a, tuple):
        a = list(a)
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        if math.isnan(a):
            return math.isnan(b)
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return bool(a == b)


# -- vectors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "expected_hex"), VECTORS, ids=[h for _, h in VECTORS])
def test_vector_encodes_to_expected_bytes(value: Any, expected_hex: str) -> None:
    assert encode(value).hex() == expected_hex


@pytest.mark.parametrize(("value", "expected_hex"), VECTORS, ids=[h for _, h in VECTORS])
def test_vector_decodes_to_value(value: Any, expected_hex: str) -> None:
    assert _same(value, decode(bytes.fromhex(expected_hex)))


@pytest.mark.parametrize(("value", "expected_hex"), VECTORS, ids=[h for _, h in VECTORS])
def test_vector_address_is_version_byte_and_sha256(value: Any, expected_hex: str) -> None:
    data = bytes.fromhex(expected_hex)
    expected = b"\x01" + hashlib.sha256(data).digest()
    assert address_of(encode(value)) == expected
    assert len(expected) == ADDRESS_LENGTH and is_address(expected)


@pytest.mark.parametrize(("data_hex", "address_hex"), sorted(LITERAL_ADDRESSES.items()))
def test_literal_addresses(data_hex: str, address_hex: str) -> None:
    assert address_to_str(address_of(bytes.fromhex(data_hex))) == address_hex


def test_nan_encodes_as_canonical_half_nan() -> None:
    assert encode(math.nan).hex() == "f97e00"
    assert math.isnan(decode(bytes.fromhex("f97e00")))


def test_empty_leaf_vector() -> None:
    node, data = make_leaf([], [])
    assert data.hex() == EMPTY_LEAF_HEX
    assert node.address.hex() == EMPTY_LEAF_ADDRESS
    assert node.address == b"\x01" + hashlib.sha256(bytes.fromhex(EMPTY_LEAF_HEX)).digest()


def test_small_leaf_vector() -> None:
    node, data = make_leaf([b"a"], [b"b"])
    assert data.hex() == SMALL_LEAF_HEX
    assert node.address.hex() == SMALL_LEAF_ADDRESS
    assert node.address == b"\x01" + hashlib.sha256(bytes.fromhex(SMALL_LEAF_HEX)).digest()
    back = decode_node(node.address, data)
    assert (back.level, back.keys, back.values, back.count) == (0, [b"a"], [b"b"], 1)


def test_internal_node_vector() -> None:
    child = bytes.fromhex(SMALL_LEAF_ADDRESS)
    node, data = make_internal(1, [b"a"], [child], [1])
    assert data.hex() == INTERNAL_HEX
    assert node.address.hex() == INTERNAL_ADDRESS
    assert node.address == b"\x01" + hashlib.sha256(bytes.fromhex(INTERNAL_HEX)).digest()
    back = decode_node(node.address, data)
    assert (back.level, back.keys, back.children, back.counts) == (1, [b"a"], [child], [1])


# -- round trip ------------------------------------------------------------------------------

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**200), max_value=2**200),
    st.sampled_from([2**63, 2**64 - 1, 2**64, -(2**64), -(2**64) - 1, -(2**63) - 1]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(width=16),
    st.floats(width=32),
    st.text(),
    st.binary(),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=6),
        st.lists(inner, max_size=6).map(tuple),
        st.dictionaries(st.text(max_size=6), inner, max_size=6),
    ),
    max_leaves=40,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_values)
@example(math.nan)
@example([-0.0, 0.0, {"": None, "\x00": b"\x00"}])
def test_round_trip(value: Any) -> None:
    data = encode(value)
    back = decode(data)
    assert _same(value, back)
    assert encode(back) == data


def _short_text_head(key: str) -> bytes:
    """Encoding of a text string shorter than 24 bytes: major type 3, length in the head."""
    utf8 = key.encode()
    assert len(utf8) < 24
    return bytes([0x60 + len(utf8)]) + utf8


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(max_size=4), st.integers(0, 23), min_size=2, max_size=8))
def test_map_keys_sorted_bytewise_by_encoded_key(value: dict[str, int]) -> None:
    # expected bytes by hand: map head, then (key, value) pairs sorted by the key's encoding
    pairs = sorted((_short_text_head(k), bytes([v])) for k, v in value.items())
    expected = bytes([0xA0 + len(value)]) + b"".join(k + v for k, v in pairs)
    assert encode(value) == expected
    assert encode(dict(reversed(list(value.items())))) == expected
    assert decode(expected) == value


def _nest(depth: int, base: Any = 0) -> Any:
    value = base
    for _ in range(depth):
        value = [value]
    return value


def test_nesting_up_to_max_depth_round_trips() -> None:
    value = _nest(MAX_DEPTH)
    data = encode(value)
    assert data == b"\x81" * MAX_DEPTH + b"\x00"
    assert decode(data) == value


def test_nesting_beyond_max_depth_is_rejected_both_ways() -> None:
    with pytest.raises(CodecError):
        encode(_nest(MAX_DEPTH + 1))
    with pytest.raises(CodecError):
        decode(b"\x81" * (MAX_DEPTH + 1) + b"\x00")
    # far deeper must not blow the stack (a RecursionError would escape as a non-CodecError)
    with pytest.raises(CodecError):
        decode(b"\x81" * 100_000 + b"\x00")
    with pytest.raises(CodecError):
        decode(b"\xa1\x61a" * 10_000 + b"\x00")


# -- strictness ------------------------------------------------------------------------------

REJECTED = [
    # tags other than 2 and 3, including those cbor2 would interpret itself
    ("d82361612a", "tag 35 (regex)"),
    ("c11a514b67b0", "tag 1 (epoch datetime)"),
    ("c074323031332d30332d32315432303a30343a30305a", "tag 0 (datetime string)"),
    ("d9010281010a", "tag 258 (set)"),
    ("d8255000112233445566778899aabbccddeeff", "tag 37 (uuid)"),
    ("c48221196ab3", "tag 4 (decimal fraction 273.15)"),
    ("d81c00", "tag 28 (shareable)"),
    ("d81d00", "tag 29 (shared reference)"),
    ("d9ffff00", "unknown tag 65535"),
    ("d9d9f700", "tag 55799 (self-describe)"),
    ("c200", "bignum tag on a non-byte-string"),
    # not canonical
    ("1817", "23 in two bytes"),
    ("190017", "23 in three bytes"),
    ("1b0000000000000001", "1 in nine bytes"),
    ("3800", "-1 in two bytes"),
    ("a2616201616102", "map keys out of order"),
    ("a262616101616202", "longer map key first"),
    ("c24101", "bignum for a small value"),
    ("c24a00010000000000000000", "bignum with a leading zero byte"),
    ("c34100", "negative bignum for a small value"),
    ("fa3fc00000", "1.5 as a single float"),
    ("fb3ff8000000000000", "1.5 as a double"),
    ("fb7ff8000000000000", "NaN as a double"),
    ("f97e01", "NaN with a payload"),
    ("580161", "one-byte string with a 1-byte length head"),
    # indefinite lengths
    ("9f01ff", "indefinite array"),
    ("5f4161ff", "indefinite byte string"),
    ("7f6161ff", "indefinite text string"),
    ("bf616101ff", "indefinite map"),
    # duplicate and non-text map keys
    ("a2616101616102", "duplicate map key"),
    ("a10101", "integer map key"),
    # malformed
    ("", "empty input"),
    ("1a000f42", "truncated integer"),
    ("62", "truncated text string"),
    ("8201", "truncated array"),
    ("a161", "truncated map"),
    ("61ff", "invalid UTF-8"),
    ("ff", "lone break"),
    # trailing garbage after one complete value
    ("00ff", "trailing break byte"),
    ("0000", "two values"),
    ("8000", "trailing value after an array"),
]


@pytest.mark.parametrize(("data_hex", "why"), REJECTED, ids=[w for _, w in REJECTED])
def test_rejected_input(data_hex: str, why: str) -> None:
    with pytest.raises(CodecError):
        decode(bytes.fromhex(data_hex))


def test_rejected_vectors_are_built_as_described() -> None:
    # guard the hand-built inputs above against typos: the non-canonical ones decode to the
    # value they claim when canonicality is not enforced
    lenient = {
        "1817": 23,
        "190017": 23,
        "3800": -1,
        "c24101": 1,
        "c24a00010000000000000000": 2**64,
        "c34100": -1,
        "fa3fc00000": 1.5,
        "a2616201616102": {"a": 2, "b": 1},
        "a262616101616202": {"aa": 1, "b": 2},
    }
    for data_hex, value in lenient.items():
        assert decode(bytes.fromhex(data_hex), canonical=False) == value, data_hex
    assert math.isnan(decode(bytes.fromhex("fb7ff8000000000000"), canonical=False))


@pytest.mark.parametrize(
    "value",
    [
        {1, 2},
        frozenset(),
        datetime.datetime(2013, 3, 21, 20, 4, 0, tzinfo=datetime.UTC),
        datetime.date(2013, 3, 21),
        uuid.UUID(int=0),
        decimal.Decimal("1.5"),
        fractions.Fraction(1, 3),
        object(),
        1j,
        bytearray(b"a"),
        {1: "a"},
        {b"a": 1},
        {None: 1},
        {("a",): 1},
        [{"ok": [1, {2: 3}]}],
        [[set()]],
    ],
    ids=repr,
)
def test_encode_rejects_values_outside_the_model(value: Any) -> None:
    with pytest.raises(CodecError):
        encode(value)


def test_decode_requires_bytes() -> None:
    assert decode(bytearray(b"\x01")) == 1
    assert decode(memoryview(b"\x01")) == 1
    for bad in ("00", None, 0, [0]):
        with pytest.raises(CodecError):
            decode(bad)  # type: ignore[arg-type]


def _mutate(data: bytes, where: int, byte: int) -> bytes:
    """``data`` with one byte replaced, cut short, or one byte appended."""
    i = where % (len(data) + 1)
    kind = where % 3
    if kind == 0 and i < len(data):
        return data[:i] + bytes([byte]) + data[i + 1 :]
    if kind == 1:
        return data[:i]
    return data + bytes([byte])


@settings(max_examples=400, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=40),
        # near misses: a valid encoding with one byte changed, cut short, or extended
        st.builds(
            lambda v, w, b: _mutate(encode(v), w, b),
            _values,
            st.integers(0, 2**16),
            st.integers(0, 255),
        ),
    )
)
def test_decode_raises_only_codec_error(data: bytes) -> None:
    try:
        value = decode(data)
    except CodecError:
        return
    # whatever is accepted is exactly the canonical encoding of what it decodes to
    # (docs/format.md 1: ``cbor2.dumps(value, canonical=True)`` defines the encoding)
    assert cbor2.dumps(value, canonical=True) == data


@pytest.mark.parametrize(
    "data_hex",
    ["f7", "e0", "f0", "f820", "f8ff"],
    ids=["undefined", "simple(0)", "simple(16)", "simple(32)", "simple(255)"],
)
def test_decode_rejects_simple_values_other_than_true_false_null(data_hex: str) -> None:
    with pytest.raises(CodecError):
        decode(bytes.fromhex(data_hex))


@pytest.mark.parametrize("data_hex", ["a1416101", "a1406161"])
def test_decode_rejects_byte_string_map_keys(data_hex: str) -> None:
    with pytest.raises(CodecError):
        decode(bytes.fromhex(data_hex))


@pytest.mark.parametrize("data_hex", ["00ff", "0000", "8000", "f6f6"])
def test_decode_non_canonical_mode_rejects_trailing_bytes(data_hex: str) -> None:
    with pytest.raises(CodecError):
        decode(bytes.fromhex(data_hex), canonical=False)


# -- addresses -------------------------------------------------------------------------------


def test_address_text_form_round_trips() -> None:
    address = address_of(b"\x00")
    text = address_to_str(address)
    assert text == LITERAL_ADDRESSES["00"]
    assert address_from_str(text) == address


@pytest.mark.parametrize(
    "text",
    [
        "",
        "01",
        "zz" * 33,
        "0" * 65,  # odd number of digits
        LITERAL_ADDRESSES["00"][:-2],  # 32 bytes
        LITERAL_ADDRESSES["00"] + "00",  # 34 bytes
        "02" + LITERAL_ADDRESSES["00"][2:],  # unknown address version
        "00" + LITERAL_ADDRESSES["00"][2:],
    ],
)
def test_address_from_str_rejects_bad_text(text: str) -> None:
    with pytest.raises(CodecError):
        address_from_str(text)


@pytest.mark.parametrize(
    "bad", [None, 5, bytes.fromhex(LITERAL_ADDRESSES["00"])], ids=["None", "int", "bytes"]
)
def test_address_from_str_rejects_non_str(bad: Any) -> None:
    with pytest.raises(CodecError):
        address_from_str(bad)


def test_is_address() -> None:
    good = address_of(b"")
    assert is_address(good)
    assert not is_address(good[:-1])
    assert not is_address(good + b"\x00")
    assert not is_address(b"\x02" + good[1:])
    assert not is_address(good.hex())
    assert not is_address(bytearray(good))


def test_codec_error_is_a_value_error_and_a_replica_error() -> None:
    assert issubclass(CodecError, ValueError)
    assert issubclass(CodecError, ReplicaError)
    with pytest.raises(ValueError):
        decode(b"\x18\x17")
    with pytest.raises(ReplicaError):
        encode({1, 2})
