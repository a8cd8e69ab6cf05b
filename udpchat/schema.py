"""Formats as data: one schema per datagram, payload and message type.

A format is a frozen dataclass whose fields are annotated with their wire type
(:mod:`udpchat.wiretypes`)::

    @DATAGRAMS.register(DatagramType.CHALLENGE)
    @dataclass(frozen=True, slots=True)
    class Challenge:
        nonce: Annotated[bytes, Bin(8)]
        cookie: Annotated[bytes, Bin(min_size=1, max_size=64)]
        ...

Registering reads those annotations once, at import, and compiles from them the decoder
(arity, then every field checked in order, then the dataclass built) and the encoders (the
fields written in order after the family's header). The field order, names, types and limits
are therefore written once per type, in the dataclass, and cannot drift between decoding and
encoding. Decoders raise ``DecodeError`` and nothing else, and check the arity exactly, so
no field is ignored.

The decoders and encoders are generated Python source (as :mod:`dataclasses` does for
``__init__``), one straight-line function per record: a generic loop over the fields made a
record's decoding 30 to 55 % slower in a micro-benchmark, and these run for every datagram
and message on the hot path. The source holds nothing but field names and integer constants.
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Sequence
from dataclasses import fields as dataclass_fields
from dataclasses import is_dataclass
from typing import Any, Generic, NoReturn, TypeVar

from udpchat.wiretypes import Bin, Check, Rest, WireType, fail, pack, padded

__all__ = ["Family", "Nested", "Schema"]

T = TypeVar("T")
C = TypeVar("C", bound=type)


class Nested(WireType):
    """Another registered record as an array (or nil, with ``nullable``)."""

    def __init__(self, cls: type, *, nullable: bool = False, label: str | None = None) -> None:
        self.cls, self.nullable, self.label = cls, nullable, label

    def checker(self, label: str) -> Check:
        decode = _SCHEMAS[self.cls].decode
        nullable = self.nullable
        message = f"{label} must be {'nil or ' if nullable else ''}an array"

        def check(value: Any) -> Any:
            if type(value) is list:
                return decode(value)
            if value is None and nullable:
                return None
            fail(message)

        return check

    def to_wire(self, expr: str, ns: dict[str, Any], key: str) -> str:
        ns[key] = _SCHEMAS[self.cls].fields
        if self.nullable:
            return f"(None if {expr} is None else {key}({expr}))"
        return f"{key}({expr})"


class Schema(Generic[T]):
    """The compiled format of one dataclass in one family (for one tag).

    ``decode(values, *outside)`` checks the msgpack array ``values`` (header included) and
    builds the dataclass; ``outside`` are the leading fields that travel elsewhere (a session
    datagram's token and packet number are in its clear header, not in its sealed fields).
    ``encode(obj)`` writes it with its header; ``pack(*fields)`` writes the same bytes from
    the field values in order, without building the object; a padded record takes the
    ``size`` to pad to as a last argument of both. ``fields(obj)`` is the list of its wire
    values, to nest it in another record.
    """

    decode: Callable[..., T]
    encode: Callable[..., bytes]
    pack: Callable[..., bytes]
    fields: Callable[[T], list[Any]]

    def __init__(
        self,
        cls: type[T],
        name: str,
        header: tuple[int, ...],
        *,
        tag: int | None = None,
        tag_field: str | None = None,
        outside: tuple[str, ...] = (),
        padded: int = 0,
    ) -> None:
        self.cls, self.name, self.header, self.padded = cls, name, header, padded
        hints = typing.get_type_hints(cls, include_extras=True)
        names = [f.name for f in dataclass_fields(cls)]  # type: ignore[arg-type]
        lead = ((tag_field,) if tag_field else ()) + outside
        if tuple(names[: len(lead)]) != lead:
            raise TypeError(f"{cls.__name__}: fields must start with {lead}")
        if tag_field and (tag is None or not header):
            raise TypeError(f"{cls.__name__}: a tag field needs a tag in the header")
        self.tag, self.tag_field, self.outside = tag, tag_field, outside
        self.names = tuple(names[len(lead) :])  # the fields on the wire, in order
        self.types = tuple(_wire_type(cls, n, hints[n]) for n in self.names)
        for i, wire_type in enumerate(self.types):
            if isinstance(wire_type, Rest) and i != len(self.types) - 1:
                raise TypeError(f"{cls.__name__}.{self.names[i]}: only the last may be Rest")
        self._compile()

    def _compile(self) -> None:
        ns: dict[str, Any] = {"_cls": self.cls, "_pack": pack, "_padded": padded}
        ns["_tag"], ns["_size"] = self.tag, self.padded
        base, names, types = len(self.header), self.names, self.types
        rest = types[-1] if types and isinstance(types[-1], Rest) else None
        fixed = len(names) - (rest is not None)
        # decode: the arity, every field in order, the padding; then the dataclass
        args = [*(["_tag"] if self.tag_field else []), *self.outside]
        body: list[str] = []
        if rest is None:
            expected = fixed + bool(self.padded)
            ns["_arity"] = self._arity_error(expected)
            body.append(f"if len(values) != {base + expected}: _arity(values)")
        else:
            ns["_count"] = self._count_error(rest, names[-1])
            body.append(f"count = len(values) - {base + fixed}")
            body.append(f"if not {rest.min_items} <= count <= {rest.max_items}: _count(count)")
        for i, (name, wire_type) in enumerate(zip(names, types, strict=True)):
            ns[f"_c{i}"] = wire_type.checker(wire_type.label or name)
            at = f"{base + i}:" if wire_type is rest else f"{base + i}"
            args.append(f"_c{i}(values[{at}])")
        if self.padded:
            ns["_pad"] = Bin().checker("padding")
            body.append(f"_pad(values[{base + fixed}])")
        body.append(f"return _cls({', '.join(args)})")
        self.decode = _function("decode", ["values", *self.outside], body, ns, self.name)

        # encoders: the header, then every field in order
        def values(prefix: str) -> list[str]:
            head = [repr(h) for h in self.header]
            if self.tag_field:
                head[-1] = prefix + self.tag_field
            out = []
            for i, (name, wire_type) in enumerate(zip(names, types, strict=True)):
                if wire_type is rest:
                    out.append(f"*{prefix}{name}")
                else:
                    out.append(wire_type.to_wire(prefix + name, ns, f"_w{i}"))
            return head + out

        fields = ", ".join(values("obj.")[base:])
        self.fields = _function("fields", ["obj"], [f"return [{fields}]"], ns, self.name)
        params = [*([self.tag_field] if self.tag_field else []), *names]
        # a padded record ends with the size to pad to: _size unless told otherwise
        size, out = (["size=_size"], "_padded([{}], size)") if self.padded else ([], "_pack([{}])")
        encode = [f"return {out.format(', '.join(values('obj.')))}"]
        self.encode = _function("encode", ["obj", *size], encode, ns, self.name)
        pack_body = [f"return {out.format(', '.join(values('')))}"]
        self.pack = _function("pack", [*params, *size], pack_body, ns, self.name)

    def _arity_error(self, expected: int) -> Callable[[list[Any]], NoReturn]:
        name, base = self.name, len(self.header)

        def arity(values: list[Any]) -> NoReturn:
            fail(f"{name} has {len(values) - base} fields, expected {expected}")

        return arity

    def _count_error(self, rest: Rest, field: str) -> Callable[[int], NoReturn]:
        name, label = self.name, rest.label or field

        def count(found: int) -> NoReturn:
            if found < rest.min_items:
                fail(f"{name} needs at least {rest.min_items} {label}")
            fail(f"{name} has {found} {label}s, more than {rest.max_items}")

        return count


def _wire_type(cls: type, name: str, hint: Any) -> WireType:
    for meta in getattr(hint, "__metadata__", ()):
        if isinstance(meta, WireType):
            return meta
    raise TypeError(f"{cls.__name__}.{name} is not annotated with its wire type")


def _function(
    name: str, params: Sequence[str], body: Sequence[str], ns: dict[str, Any], owner: str
) -> Callable[..., Any]:
    source = f"def {name}({', '.join(params)}):\n" + "".join(f"    {line}\n" for line in body)
    local: dict[str, Any] = {}
    exec(compile(source, f"<{owner} {name}>", "exec"), dict(ns), local)
    function: Callable[..., Any] = local[name]
    function.__qualname__ = f"{owner}.{name}"
    return function


_SCHEMAS: dict[type, Schema[Any]] = {}


class Family(Generic[T]):
    """The records that share one header: the datagrams (``[version, type, ...]``), the
    sealed fields of session datagrams (``[...]``, typed by their clear header), the chat
    messages (``[kind, ...]``), the handshake payloads (``[...]``).

    ``by_tag`` finds the schema that decodes a tag; ``schema(cls)`` the one that encodes a
    class (a class registered for several tags keeps its tag in ``tag_field``).
    """

    def __init__(
        self,
        name: str,
        *,
        version: int | None = None,
        tag_in_header: bool = True,
        outside: tuple[str, ...] = (),
    ) -> None:
        self.name, self.version = name, version
        self.tag_in_header, self.outside = tag_in_header, outside
        self.by_tag: dict[int, Schema[T]] = {}
        self._by_class: dict[type, Schema[T]] = {}

    def register(
        self, *tags: int, tag_field: str | None = None, padded: int = 0
    ) -> Callable[[C], C]:
        """Class decorator: compile ``cls``'s schema and file it under ``tags``.

        ``tag_field``: the class serves several tags and keeps its own in that field.
        ``padded``: the record ends with a padding bin that makes it this many bytes."""

        def decorate(cls: C) -> C:
            if not is_dataclass(cls):
                raise TypeError(f"{cls.__name__} must be a dataclass")
            for tag in tags or (None,):
                head: tuple[int, ...] = () if self.version is None else (self.version,)
                if tag is not None and self.tag_in_header:
                    head += (int(tag),)
                name = getattr(tag, "name", cls.__name__)
                schema: Schema[T] = Schema(
                    typing.cast("type[T]", cls),
                    name,
                    head,
                    tag=tag,
                    tag_field=tag_field,
                    outside=self.outside,
                    padded=padded,
                )
                if tag is not None:
                    self.by_tag[int(tag)] = schema
                self._by_class.setdefault(cls, schema)
                _SCHEMAS.setdefault(cls, schema)
            return cls

        return decorate

    def schema(self, cls: type) -> Schema[T]:
        return self._by_class[cls]

    def encode(self, obj: T) -> bytes:
        """``obj`` with its header, in msgpack."""
        return self._by_class[type(obj)].encode(obj)
