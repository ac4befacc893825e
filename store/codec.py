"""Canonical CBOR and content addresses (docs/format.md sections 1 and 2).

Encoding is RFC 8949 section 4.2.1 core deterministic encoding as produced by ``cbor2`` with
``canonical=True``: shortest-form integer and length heads, definite lengths, map keys sorted
bytewise by their encoding, floats in the shortest of half/single/double that keeps the value.

Decoding is strict, and a fresh decoder is used per message (cbor2's ``loads``), so no state
(string references, shared values) leaks from one message to the next:

* only the tags in :data:`ALLOWED_TAGS` decode (2 and 3, bignums); every other tag, including
  the ones cbor2 would otherwise interpret (0/1 dates, 35 regex, 36 MIME, 258 sets, ...), is an
  error: a hostile peer must not make us compile a regular expression;
* indefinite lengths, duplicate map keys and non-string map keys are errors;
* nesting is bounded (:data:`MAX_DEPTH`);
* with ``canonical=True`` (the default) the bytes must be exactly what :func:`encode` produces
  for the decoded value, so one value has one encoding and therefore one address.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Mapping
from typing import Any

import cbor2

from store.errors import CodecError

#: Address format version 1: SHA-256 over the node's canonical CBOR bytes.
ADDRESS_VERSION = 1
ADDRESS_PREFIX = bytes([ADDRESS_VERSION])
ADDRESS_LENGTH = 1 + 32
MAX_DEPTH = 64

#: Tags decoded at all. 2/3 are positive/negative bignums (integers beyond 64 bits).
ALLOWED_TAGS = frozenset({2, 3})

# Tags cbor2 decodes natively; each is overridden to fail (see the module docstring).
_CBOR2_SEMANTIC_TAGS = (
    0, 1, 4, 5, 25, 28, 29, 30, 35, 36, 37, 38, 52, 54, 100, 256, 258, 260, 261, 262, 263,
    270, 1004, 1040, 55799,
)  # fmt: skip


def _reject_semantic(decoder: Any) -> Any:
    raise CodecError("CBOR tag not allowed")


_SEMANTIC_DECODERS: Mapping[int, Any] = {tag: _reject_semantic for tag in _CBOR2_SEMANTIC_TAGS}


def _reject_tag(*args: Any) -> Any:
    # cbor2 5.x passes (decoder, tag), 6.x passes (tag, immutable): find the tag either way
    tag = next((a for a in args if isinstance(a, cbor2.CBORTag)), None)
    raise CodecError(f"CBOR tag {tag.tag if tag else '?'} not allowed")


_PLAIN = (str, bytes, int, float, bool, type(None))


def _check_encodable(value: Any, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise CodecError(f"value nested deeper than {MAX_DEPTH}")
    if isinstance(value, _PLAIN):
        return
    if isinstance(value, list | tuple):
        for item in value:
            _check_encodable(item, depth + 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise CodecError(f"map key {key!r} is not a string")
            _check_encodable(item, depth + 1)
        return
    raise CodecError(f"cannot encode a value of type {type(value).__name__}: {value!r:.80}")


def encode(value: Any) -> bytes:
    """Canonical CBOR bytes of ``value`` (None, bool, int, float, str, bytes, list, tuple,
    dict with str keys). Tuples encode as arrays. Raises CodecError for anything else."""
    _check_encodable(value, 0)
    return encode_trusted(value)


def encode_trusted(value: Any) -> bytes:
    """:func:`encode` without the type walk, for values built by our own code (tree nodes)."""
    try:
        return cbor2.dumps(value, canonical=True)
    except (cbor2.CBOREncodeError, ValueError, TypeError) as exc:  # pragma: no cover - guarded
        raise CodecError(f"cannot encode value: {exc}") from exc


def _check_decoded(value: Any) -> None:
    """Only the value model survives decoding: no undefined/simple values, str map keys."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, _PLAIN):
            continue
        if type(v) is list:
            stack.extend(v)
        elif type(v) is dict:
            for key in v:
                if type(key) is not str:
                    raise CodecError(f"map key {key!r:.60} is not a text string")
            stack.extend(v.values())
        else:
            raise CodecError(f"CBOR value {v!r:.60} is outside the value model")


def decode(
    data: bytes, *, canonical: bool = True, max_depth: int = MAX_DEPTH, check_types: bool = True
) -> Any:
    """Decode one CBOR value from ``data`` strictly (see module docstring): exactly one
    value, nothing after it. ``check_types=False`` skips the walk that rejects values outside
    the model (undefined, simple values, byte-string map keys): only for callers that
    validate the decoded structure themselves (tree nodes).

    Raises CodecError on any malformed, non-canonical (when ``canonical``) or disallowed input.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise CodecError(f"expected bytes to decode, got {type(data).__name__}")
    options: dict[str, Any] = {
        "tag_hook": _reject_tag,
        "semantic_decoders": _SEMANTIC_DECODERS,
        "max_depth": max_depth,
        "allow_indefinite": False,
        "allow_duplicate_keys": False,
        "strict_hashable_types": True,
    }
    try:
        if canonical:
            value = cbor2.loads(data, **options)
        else:
            stream = io.BytesIO(data)
            value = cbor2.CBORDecoder(stream, **options).decode()
            if stream.tell() != len(data):
                raise CodecError(f"{len(data) - stream.tell()} bytes after the CBOR value")
    except CodecError:
        raise
    except (cbor2.CBORDecodeError, ValueError, TypeError, RecursionError) as exc:
        # cbor2 wraps errors raised by our hooks; surface ours if that is what happened.
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, CodecError) or "semantic tag" in str(exc):
            raise CodecError(f"CBOR tag not allowed ({exc})") from exc
        raise CodecError(f"malformed CBOR: {exc}") from exc
    if canonical:
        try:
            again = cbor2.dumps(value, canonical=True)
        except Exception as exc:
            raise CodecError(f"decoded value cannot be re-encoded: {exc}") from exc
        if again != bytes(data):
            raise CodecError("CBOR is not in canonical form")
    if check_types:
        _check_decoded(value)
    return value


def address_of(data: bytes) -> bytes:
    """The address of a node's canonical bytes: version prefix + SHA-256 digest (33 bytes)."""
    return ADDRESS_PREFIX + hashlib.sha256(data).digest()


def is_address(value: object) -> bool:
    """True if ``value`` is a well-formed address of a version we know."""
    return (
        isinstance(value, bytes)
        and len(value) == ADDRESS_LENGTH
        and value[:1] == ADDRESS_PREFIX
    )


def address_to_str(address: bytes) -> str:
    """Text form of an address: lowercase hex of all 33 bytes (starts with '01')."""
    return address.hex()


def address_from_str(text: str) -> bytes:
    """Parse the text form of an address (lowercase hex); raises CodecError if it is not."""
    if not isinstance(text, str) or text != text.lower() or text.strip() != text:
        raise CodecError(f"not an address: {text!r:.80}")
    try:
        address = bytes.fromhex(text)
    except ValueError as exc:
        raise CodecError(f"not an address: {text!r:.80}") from exc
    if not is_address(address):
        raise CodecError(f"not an address: {text!r:.80}")
    return address
