"""The wire types a record's fields are made of, and the one door from msgpack bytes in.

Each :class:`WireType` makes a checker for a field: a function that returns the value when
it is exactly what the protocol allows (``type(value) is ...``, so a boolean is never taken
for an integer, a str never for a bin) and raises :class:`DecodeError` naming the field
otherwise. :mod:`udpchat.schema` compiles records out of them.

:func:`unpack` turns every failure of msgpack (it raises a dozen unrelated types) into
``DecodeError``, so that decoding raises that and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NoReturn

import msgpack

from udpchat.errors import ProtocolError

__all__ = [
    "MAX_UINT", "Array", "Bin", "Bool", "Check", "DecodeError", "Rest", "Str", "UInt",
    "WireType", "fail", "pack", "padded", "unpack",
]

MAX_UINT = (1 << 64) - 1


class DecodeError(ProtocolError, ValueError):
    """Bytes that are not valid udpchat; the receiver counts and drops them."""


def fail(message: str) -> NoReturn:
    raise DecodeError(message)


def _reject_ext(code: int, data: bytes) -> NoReturn:
    fail(f"msgpack extension type {code} is not used by udpchat")


def unpack(data: bytes, limit: int) -> Any:
    """Parse one msgpack value, turning every msgpack failure into ``DecodeError``."""
    if len(data) > limit:
        fail(f"{len(data)} bytes is over the {limit}-byte limit")
    try:
        return msgpack.unpackb(
            data,
            raw=False,
            use_list=True,
            strict_map_key=True,
            ext_hook=_reject_ext,
        )
    except DecodeError:
        raise
    except Exception as exc:  # msgpack raises a dozen unrelated types; one door out.
        raise DecodeError(f"not a msgpack value: {type(exc).__name__}") from None


def pack(value: Any) -> bytes:
    """msgpack-encode (a fresh packer per call: cores run in several threads of one process)."""
    return msgpack.packb(value, use_bin_type=True)


def padded(fields: list[Any], size: int) -> bytes:
    """Encode ``fields`` with a trailing padding bin so the array is ``size`` bytes."""
    bare = pack([*fields, b""])
    missing = size - len(bare)
    if missing <= 0:
        return bare
    # A bin's header grows from 2 to 3 bytes past 255 bytes of content.
    pad_len = missing if missing <= 255 else missing - 1
    out = pack([*fields, bytes(pad_len)])
    assert len(out) == size, len(out)
    return out


Check = Callable[[Any], Any]


class WireType:
    """How one field travels: a checker for what arrives, a conversion for what leaves.

    ``label`` names the field in error messages when its attribute name would not say enough.
    """

    label: str | None = None

    def checker(self, label: str) -> Check:
        raise NotImplementedError

    def to_wire(self, expr: str, ns: dict[str, Any], key: str) -> str:
        """Source of an expression turning the value ``expr`` into what msgpack writes."""
        return expr


class UInt(WireType):
    """An unsigned integer up to ``limit`` (msgpack int, never a bool)."""

    def __init__(self, limit: int = MAX_UINT, *, label: str | None = None) -> None:
        self.limit, self.label = limit, label

    def checker(self, label: str) -> Check:
        limit = self.limit
        message = f"{label} must be an unsigned integer up to {limit}"

        def check(value: Any) -> int:
            if type(value) is int and 0 <= value <= limit:
                return value
            fail(message)

        return check


class Bool(WireType):
    def __init__(self, *, label: str | None = None) -> None:
        self.label = label

    def checker(self, label: str) -> Check:
        message = f"{label} must be a boolean"

        def check(value: Any) -> bool:
            if type(value) is bool:
                return value
            fail(message)

        return check


class Bin(WireType):
    """A msgpack bin (never a str): exactly ``size`` bytes (or empty, with ``or_empty``), or
    from ``min_size`` to ``max_size`` bytes."""

    def __init__(
        self,
        size: int | None = None,
        *,
        min_size: int = 0,
        max_size: int | None = None,
        or_empty: bool = False,
        label: str | None = None,
    ) -> None:
        self.size, self.min_size, self.max_size = size, min_size, max_size
        self.or_empty, self.label = or_empty, label

    def checker(self, label: str) -> Check:
        size, low, high = self.size, self.min_size, self.max_size
        if size is not None:
            message = f"{label} must be {'empty or ' if self.or_empty else ''}{size} bytes"
            if self.or_empty:

                def check_size_or_empty(value: Any) -> bytes:
                    if type(value) is bytes and (len(value) == size or not value):
                        return value
                    fail(message if type(value) is bytes else f"{label} must be binary")

                return check_size_or_empty

            def check_size(value: Any) -> bytes:
                if type(value) is bytes and len(value) == size:
                    return value
                fail(message if type(value) is bytes else f"{label} must be binary")

            return check_size
        if high is not None:
            message = f"{label} must be {low} to {high} bytes" if low else ""
            message = message or f"{label} is longer than {high} bytes"
        else:
            message = f"{label} must be a non-empty bin" if low == 1 else ""
            message = message or f"{label} must be at least {low} bytes"
        top = MAX_UINT if high is None else high

        def check_range(value: Any) -> bytes:
            if type(value) is bytes and low <= len(value) <= top:
                return value
            fail(message if type(value) is bytes else f"{label} must be binary")

        return check_range


class Str(WireType):
    """A msgpack str of at most ``max_bytes`` bytes of UTF-8."""

    def __init__(self, max_bytes: int, *, label: str | None = None) -> None:
        self.max_bytes, self.label = max_bytes, label

    def checker(self, label: str) -> Check:
        high = self.max_bytes
        surely_short = high // 4  # a code point is at most 4 bytes of UTF-8 (3 if a surrogate)
        message = f"{label} is longer than {high} bytes"

        def check(value: Any) -> str:
            if type(value) is not str:
                fail(f"{label} must be a string")
            if len(value) > surely_short and (
                len(value) > high or len(value.encode("utf-8", "surrogatepass")) > high
            ):
                fail(message)
            return value

        return check


class Array(WireType):
    """An array of at most ``max_items`` values of one type; a tuple once decoded."""

    def __init__(self, item: WireType, max_items: int, *, label: str | None = None) -> None:
        self.item, self.max_items, self.label = item, max_items, label

    def checker(self, label: str) -> Check:
        item, high = self.item.checker(f"an item of {label}"), self.max_items
        message = f"{label} must be an array of at most {high} items"

        def check(value: Any) -> tuple[Any, ...]:
            if type(value) is not list or len(value) > high:
                fail(message)
            return tuple([item(x) for x in value])

        return check


class Rest(WireType):
    """The last field only: every remaining value of the array, ``min_items`` to
    ``max_items`` of them, each of one type; a tuple once decoded, spread when encoded."""

    def __init__(
        self, item: WireType, min_items: int, max_items: int, *, label: str | None = None
    ) -> None:
        self.item, self.min_items, self.max_items = item, min_items, max_items
        self.label = label

    def checker(self, label: str) -> Check:
        item = self.item.checker(label)

        def check(values: list[Any]) -> tuple[Any, ...]:
            for value in values:
                item(value)
            return tuple(values)

        return check
