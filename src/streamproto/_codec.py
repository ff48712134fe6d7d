"""Codecs: how a channel's values become chunk payloads and back.

Rules for this file:

1. The wire does not change: a codec maps one value to one chunk payload (``bytes``) and back.
   Chunks stay opaque to the protocol; producers and subscribers agree on the codec out of
   band (per channel), as they agree on what ``args`` mean.
2. Pure: a codec is two functions, no state and no I/O. Encoding a value the codec cannot
   represent is the local application's misuse (:class:`LocalProtocolError`
   INVALID_ARGUMENT); decoding bytes it cannot read raises :class:`DecodeError`
   (DECODE_FAILED), which the adapters hand to the reader with the chunk's seq.
3. ``bytes`` stay the default: :data:`BYTES` passes payloads through untouched.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

from ._errors import ErrorCode, LocalProtocolError, StreamProtoError

__all__ = ["BYTES", "JSON", "Codec", "DecodeError", "FunctionCodec", "JsonCodec", "msgpack_codec"]

_V = TypeVar("_V")
_V_co = TypeVar("_V_co", covariant=True)


class DecodeError(StreamProtoError):
    """A chunk's payload is not a value of the codec (code DECODE_FAILED). ``seq`` is the
    chunk's seq when a subscription raised it (0 when unknown); ``data`` its payload."""

    def __init__(self, message: str, data: bytes, seq: int = 0) -> None:
        super().__init__(ErrorCode.DECODE_FAILED, message)
        self.data = data
        self.seq = seq


class Codec(Protocol[_V]):
    """Turns values of type ``_V`` into chunk payloads and back (one value, one chunk)."""

    @property
    def name(self) -> str:
        """A short name for logs and errors (``"json"``)."""
        ...

    def encode(self, value: _V) -> bytes:
        """The payload of ``value``. Raises :class:`LocalProtocolError` INVALID_ARGUMENT
        when the value cannot be encoded."""
        ...

    def decode(self, data: bytes) -> _V:
        """The value of ``data``. Raises :class:`DecodeError` when it is not one."""
        ...


class FunctionCodec(Generic[_V]):
    """A codec from two functions: ``encode(value) -> bytes`` and ``decode(bytes) -> value``.
    Whatever they raise (``ValueError``, ``TypeError``...) becomes INVALID_ARGUMENT on encode
    and :class:`DecodeError` on decode."""

    __slots__ = ("_decode", "_encode", "_name")

    def __init__(
        self, name: str, encode: Callable[[_V], bytes], decode: Callable[[bytes], _V]
    ) -> None:
        self._name = name
        self._encode = encode
        self._decode = decode

    @property
    def name(self) -> str:
        """The name given."""
        return self._name

    def encode(self, value: _V) -> bytes:
        """See :meth:`Codec.encode`."""
        try:
            data = self._encode(value)
        except Exception as exc:
            raise LocalProtocolError(
                ErrorCode.INVALID_ARGUMENT,
                f"{self._name} cannot encode a {type(value).__name__}: {exc}",
            ) from exc
        if type(data) is not bytes:
            raise LocalProtocolError(
                ErrorCode.INVALID_ARGUMENT,
                f"{self._name} encoder returned {type(data).__name__}, not bytes",
            )
        return data

    def decode(self, data: bytes) -> _V:
        """See :meth:`Codec.decode`."""
        try:
            return self._decode(data)
        except Exception as exc:
            raise DecodeError(f"not {self._name}: {type(exc).__name__}: {exc}", data) from exc

    def __repr__(self) -> str:
        return f"<codec {self._name}>"


def _identity(data: bytes) -> bytes:
    return data


def _bytes_only(value: bytes) -> bytes:
    if not isinstance(value, bytes | bytearray | memoryview):
        raise TypeError("expected bytes")
    return bytes(value)


#: Payloads as they are (the default when a channel has no codec).
BYTES: FunctionCodec[bytes] = FunctionCodec("bytes", _bytes_only, _identity)


class JsonCodec(FunctionCodec[_V]):
    """JSON text in UTF-8, compact (``separators=(",", ":")``), NaN and infinities refused.
    ``JsonCodec[T]()`` types the values as ``T`` (a claim: JSON is not checked against it);
    :data:`JSON` is ``JsonCodec[Any]``."""

    def __init__(self) -> None:
        super().__init__("json", _json_encode, _json_decode)


def _json_encode(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def _json_decode(data: bytes) -> Any:
    return json.loads(data.decode("utf-8"), parse_constant=_no_constant)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


#: JSON values (:class:`JsonCodec`).
JSON: JsonCodec[Any] = JsonCodec()


def msgpack_codec() -> FunctionCodec[Any]:
    """MessagePack values (the ``streamproto[msgpack]`` extra). Raises
    :class:`LocalProtocolError` INVALID_STATE when ``msgpack`` is not installed."""
    try:
        import msgpack  # type: ignore[import-untyped, import-not-found, unused-ignore]  # noqa: PLC0415 - an optional extra
    except ImportError:
        raise LocalProtocolError(
            ErrorCode.INVALID_STATE, "msgpack is not installed: pip install streamproto[msgpack]"
        ) from None
    return FunctionCodec(
        "msgpack",
        lambda value: bytes(msgpack.packb(value, use_bin_type=True)),
        lambda data: msgpack.unpackb(data, raw=False, strict_map_key=False),
    )
