"""The schema machinery: every field of every registered format is checked by its type, the
arity is exact, and the encoders take their fields in the schema's order."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

import msgpack
import pytest

from tests.test_wire import every_datagram, every_message, every_session_datagram
from udpchat import messages as m
from udpchat import session_bytes, wire
from udpchat.schema import Family, Schema
from udpchat.wiretypes import Bin, Bool, DecodeError, Rest, Str, UInt

pytestmark = pytest.mark.unit

TOKEN = bytes(range(8))


def examples() -> list[tuple[Schema[Any], list[Any], tuple[Any, ...]]]:
    """(schema, its valid msgpack array, the outside fields) for one example of every type."""
    out: list[tuple[Schema[Any], list[Any], tuple[Any, ...]]] = []
    for datagram in every_datagram():
        if isinstance(datagram, (wire.Protected, wire.Reset)):
            continue  # not msgpack arrays: test_wire checks them byte by byte
        schema = wire.DATAGRAMS.schema(type(datagram))
        out.append((schema, msgpack.unpackb(schema.encode(datagram)), ()))
    for session in every_session_datagram():
        schema = wire.SESSION.schema(type(session))
        out.append((schema, msgpack.unpackb(schema.encode(session)), (TOKEN, 7)))
    for message in every_message():
        schema = m.MESSAGES.schema(type(message))
        out.append((schema, msgpack.unpackb(m.encode_message(message)), ()))
    return out


def name(case: tuple[Schema[Any], list[Any], tuple[Any, ...]]) -> str:
    return case[0].name


# What each wire type must refuse even where the rest of the array is fine.
WRONG: dict[type, list[object]] = {
    UInt: [True, False, -1, 2**64, 1.0, "1", None],
    Bool: [0, 1, None, "true"],
    Bin: ["text", 0, None, []],
    Str: [b"bytes", 0, None, True],
}


@pytest.mark.parametrize("case", examples(), ids=name)
def test_every_field_refuses_values_of_another_type(
    case: tuple[Schema[Any], list[Any], tuple[Any, ...]],
) -> None:
    schema, values, outside = case
    base = len(schema.header)
    schema.decode(values, *outside)  # the example itself is valid
    for i, wire_type in enumerate(schema.types):
        for wrong in WRONG.get(type(wire_type), []):
            broken = list(values)
            broken[base + i] = wrong
            with pytest.raises(DecodeError):
                schema.decode(broken, *outside)


@pytest.mark.parametrize("case", examples(), ids=name)
def test_a_missing_or_extra_field_is_refused(
    case: tuple[Schema[Any], list[Any], tuple[Any, ...]],
) -> None:
    schema, values, outside = case
    if schema.types and isinstance(schema.types[-1], Rest):
        return  # a DATA takes one to MAX_CHUNKS chunks: test_chunk_rules tests the bounds
    with pytest.raises(DecodeError):
        schema.decode([*values, b"x"], *outside)
    if len(values) > len(schema.header):
        with pytest.raises(DecodeError):
            schema.decode(values[:-1], *outside)


ENCODERS: list[tuple[Callable[..., bytes], type]] = [
    (wire.encode_hello, wire.Hello),
    (wire.encode_challenge, wire.Challenge),
    (wire.encode_join, wire.Join),
    (wire.encode_accept, wire.Accept),
    (wire.encode_reject, wire.Reject),
    (wire.encode_join_payload, wire.JoinPayload),
]


@pytest.mark.parametrize(("encoder", "cls"), ENCODERS, ids=lambda x: getattr(x, "__name__", ""))
def test_encoders_take_the_fields_in_the_schema_order(
    encoder: Callable[..., bytes], cls: type
) -> None:
    params = [p for p in inspect.signature(encoder).parameters if p not in ("size", "version")]
    family = wire.PAYLOADS if cls is wire.JoinPayload else wire.DATAGRAMS
    assert tuple(params) == family.schema(cls).names


def test_session_encoders_take_the_fields_in_the_schema_order() -> None:
    fields = session_bytes.data_fields(1, 2, 3, 1, [b"a", b"b"])
    envelope = wire.Protected(wire.DatagramType.DATA, TOKEN, 9, b"")
    assert wire.decode_session(envelope, fields) == wire.Data(TOKEN, 9, 1, 2, 3, 1, (b"a", b"b"))
    ack = wire.Protected(wire.DatagramType.ACK, TOKEN, 9, b"")
    assert wire.decode_session(ack, session_bytes.ack_fields(4, 5)) == wire.Ack(TOKEN, 9, 4, 5)
    sealed = session_bytes.encode_session(wire.DatagramType.PING, TOKEN, 9, b"s")
    assert wire.decode_datagram(sealed) == wire.Protected(wire.DatagramType.PING, TOKEN, 9, b"s")


def test_the_tag_of_a_shared_class_comes_back_as_its_enum() -> None:
    for kind in wire.SESSION_TYPES:
        decoded = wire.decode_datagram(session_bytes.encode_session(kind, TOKEN, 1, b""))
        assert isinstance(decoded, wire.Protected) and decoded.kind is kind


def test_a_field_without_a_wire_type_is_refused_at_import() -> None:
    family: Family[object] = Family("test")

    with pytest.raises(TypeError, match="wire type"):

        @family.register(1)
        @dataclass(frozen=True)
        class Bare:
            text: str


def test_only_the_last_field_may_take_the_rest() -> None:
    family: Family[object] = Family("test")

    with pytest.raises(TypeError, match="only the last"):

        @family.register(1)
        @dataclass(frozen=True)
        class Misplaced:
            items: Annotated[tuple[bytes, ...], Rest(Bin(), 0, 4)]
            count: Annotated[int, UInt()]
