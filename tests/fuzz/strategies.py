"""Hypothesis strategies derived from the activekd.v1 proto descriptors, and the RPC cases.

Nothing here names a message field or an RPC: :func:`messages` walks ``Descriptor.fields`` and
:func:`rpc_cases` walks ``DESCRIPTOR.services_by_name`` of the four service modules, so a new RPC,
field, enum value or nested message is fuzzed without an edit here.

Values are hostile but well typed: integer edges (0, -1, the type's min and max), NaN/inf floats,
strings that probe paths, URLs, NUL, unicode and length ("", 5,000 chars), enums with numbers the
proto does not define, repeated fields of up to 4 items, maps, one field per oneof, nested messages
to depth 3 (``google.protobuf.Struct`` included). A few ids of objects the fuzz stack seeded
(:data:`KNOWN_STRINGS`) are mixed in so requests get past "not found" into deeper code.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf import descriptor as _d
from google.protobuf import message_factory
from google.protobuf.message import Message
from hypothesis import strategies as st

from activekd.v1 import experiment_pb2, selection_pb2, teacher_pb2, trainer_pb2

#: the service modules fuzzed; every service of each one's DESCRIPTOR is enumerated
SERVICE_MODULES = (selection_pb2, teacher_pb2, trainer_pb2, experiment_pb2)

#: ids of things the fuzz stack seeds (tests/fuzz/conftest.py), array names, strategy names:
#: drawn sometimes so a request finds a real pool and gets past NOT_FOUND. Builtin dataset names
#: and experiment ids are left out on purpose: with them an accepted ScorePool / AdvanceRound could
#: score 60,000 images or train a student for minutes (see docs/reliability.md, "Fuzzing").
KNOWN_STRINGS = (
    "fz/pool",
    "fz/test",
    "images",
    "labels",
    "probs",
    "features",
    "random",
    "entropy",
    "margin",
    "kcenter",
    "pcoreset",
    "badge",
    "cpu",
    "p0",
    "p1",
    "steps",
)

#: strings every string field may get
HOSTILE_STRINGS = (
    "",
    "x" * 5000,
    "../",
    "../../../../etc/passwd",
    "a/../b",
    "/etc/hostname",
    "file:///etc/hostname",
    "http://127.0.0.1:1/",
    "s3://bucket/key",
    "\x00",
    "a\x00b",
    "ü∑😀",
    "\u202e\ufeff",
    " ",
    "-1",
    "%s%n",
    "{experiment_id}",
    "*",
    "akd:*",
)

_INT32 = (0, 1, -1, 2, 7, 64, 65, 1000, 2**31 - 1, -(2**31))
_INT64 = (0, 1, -1, 2, 64, 1000, 2**31, 2**53 + 1, 2**63 - 1, -(2**63))
_UINT32 = (0, 1, 2, 64, 2**31, 2**32 - 1)
_UINT64 = (0, 1, 2, 64, 2**32, 2**63, 2**64 - 1)
_FLOATS = (0.0, -0.0, 1.0, -1.0, math.nan, math.inf, -math.inf, 1e308, 5e-324)

F = _d.FieldDescriptor
_INT_RANGES: dict[int, tuple[tuple[int, ...], int, int]] = {
    F.TYPE_INT32: (_INT32, -(2**31), 2**31 - 1),
    F.TYPE_SINT32: (_INT32, -(2**31), 2**31 - 1),
    F.TYPE_SFIXED32: (_INT32, -(2**31), 2**31 - 1),
    F.TYPE_INT64: (_INT64, -(2**63), 2**63 - 1),
    F.TYPE_SINT64: (_INT64, -(2**63), 2**63 - 1),
    F.TYPE_SFIXED64: (_INT64, -(2**63), 2**63 - 1),
    F.TYPE_UINT32: (_UINT32, 0, 2**32 - 1),
    F.TYPE_FIXED32: (_UINT32, 0, 2**32 - 1),
    F.TYPE_UINT64: (_UINT64, 0, 2**64 - 1),
    F.TYPE_FIXED64: (_UINT64, 0, 2**64 - 1),
}

#: how deep nested messages go (a message at the last level is left empty)
MAX_DEPTH = 3
MAX_REPEATED = 4


def strings() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(HOSTILE_STRINGS),
        st.sampled_from(KNOWN_STRINGS),
        st.text(max_size=24),
        st.text(alphabet="abz09._:/-", min_size=1, max_size=24),
    )


def byte_strings() -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.sampled_from((b"", b"\x00", b"\x00" * 5000, b"\xff" * 64, b"\x89PNG\r\n\x1a\n")),
        st.binary(max_size=64),
    )


def scalar(field: _d.FieldDescriptor) -> st.SearchStrategy[Any]:
    """A value of a non-message field, by ``field.type``."""
    t = field.type
    if t in _INT_RANGES:
        edges, lo, hi = _INT_RANGES[t]
        return st.one_of(st.sampled_from(edges), st.integers(lo, hi))
    if t == F.TYPE_DOUBLE:
        return st.one_of(st.sampled_from(_FLOATS), st.floats())
    if t == F.TYPE_FLOAT:
        return st.one_of(st.sampled_from(_FLOATS[:-2]), st.floats(width=32))
    if t == F.TYPE_BOOL:
        return st.booleans()
    if t == F.TYPE_STRING:
        return strings()
    if t == F.TYPE_BYTES:
        return byte_strings()
    if t == F.TYPE_ENUM:
        assert field.enum_type is not None
        numbers = sorted(v.number for v in field.enum_type.values)
        unknown = (-1, max(numbers) + 1, 99, 2**31 - 1)  # proto3 enums are open
        return st.one_of(st.sampled_from(numbers), st.sampled_from(unknown))
    raise TypeError(f"no strategy for field {field.full_name} of type {t}")  # pragma: no cover


def _message_class(descriptor: _d.Descriptor) -> type[Message]:
    return message_factory.GetMessageClass(descriptor)


def _is_map(field: _d.FieldDescriptor) -> bool:
    mt = field.message_type
    return mt is not None and mt.GetOptions().map_entry


def _value(field: _d.FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
    """One value of ``field`` (a message, or a scalar), ignoring repetition."""
    if field.message_type is not None:
        return messages(field.message_type, depth - 1)
    return scalar(field)


def _field_value(field: _d.FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
    """What to assign to ``field``: a dict for a map, a list for a repeated field, else a value."""
    entry = field.message_type
    if entry is not None and _is_map(field):
        key_f = entry.fields_by_name["key"]
        val_f = entry.fields_by_name["value"]
        return st.dictionaries(scalar(key_f), _value(val_f, depth), max_size=MAX_REPEATED)
    if field.is_repeated:
        return st.lists(_value(field, depth), max_size=MAX_REPEATED)
    return _value(field, depth)


def _assign(msg: Message, field: _d.FieldDescriptor, value: Any) -> None:
    target = getattr(msg, field.name) if field.is_repeated else None
    entry = field.message_type
    if entry is not None and _is_map(field):
        val_f = entry.fields_by_name["value"]
        for k, v in value.items():
            if val_f.type == F.TYPE_MESSAGE:
                target[k].CopyFrom(v)  # type: ignore[index]
            else:
                target[k] = v  # type: ignore[index]
    elif field.is_repeated:
        if field.type == F.TYPE_MESSAGE:
            for v in value:
                target.add().CopyFrom(v)  # type: ignore[union-attr]
        else:
            target.extend(value)  # type: ignore[union-attr]
    elif field.type == F.TYPE_MESSAGE:
        getattr(msg, field.name).CopyFrom(value)
    else:
        setattr(msg, field.name, value)


_CACHE: dict[tuple[str, int], st.SearchStrategy[Message]] = {}


def messages(descriptor: _d.Descriptor, depth: int = MAX_DEPTH) -> st.SearchStrategy[Message]:
    """Messages of type ``descriptor``: each field present or not, one member per oneof (or none),
    nested messages down to ``depth`` levels (below that, an empty message)."""
    key = (descriptor.full_name, depth)
    if key in _CACHE:
        return _CACHE[key]
    cls = _message_class(descriptor)
    if depth <= 0:
        strategy: st.SearchStrategy[Message] = st.just(cls())
        _CACHE[key] = strategy
        return strategy
    plain = {
        f.name: _field_value(f, depth)
        for f in descriptor.fields
        if f.containing_oneof is None or _synthetic(f)  # proto3 `optional` is a 1-field oneof
    }
    oneofs = [o for o in descriptor.oneofs if not (len(o.fields) == 1 and _synthetic(o.fields[0]))]
    by_name = descriptor.fields_by_name

    @st.composite
    def build(draw: st.DrawFn) -> Message:
        msg = cls()
        values = draw(st.fixed_dictionaries({}, optional=plain)) if plain else {}
        for name, value in values.items():
            _assign(msg, by_name[name], value)
        for oneof in oneofs:
            chosen = draw(st.sampled_from([None, *oneof.fields]))
            if chosen is not None:
                _assign(msg, chosen, draw(_field_value(chosen, depth)))
        return msg

    strategy = build()
    _CACHE[key] = strategy
    return strategy


def _synthetic(field: _d.FieldDescriptor) -> bool:
    oneof = field.containing_oneof
    return oneof is not None and oneof.name.startswith("_") and len(oneof.fields) == 1


@dataclass(frozen=True)
class RpcCase:
    """One method of one activekd.v1 service."""

    service: str  # full name, activekd.v1.SelectionService
    method: str  # short name, SelectBatch
    input: _d.Descriptor
    output: _d.Descriptor
    client_streaming: bool
    server_streaming: bool

    @property
    def path(self) -> str:
        return f"/{self.service}/{self.method}"

    @property
    def kind(self) -> str:
        """The grpc channel method: unary_unary, unary_stream, stream_unary or stream_stream."""
        return (
            f"{'stream' if self.client_streaming else 'unary'}_"
            f"{'stream' if self.server_streaming else 'unary'}"
        )

    @property
    def request_class(self) -> type[Message]:
        return _message_class(self.input)

    @property
    def response_class(self) -> type[Message]:
        return _message_class(self.output)

    def requests(self) -> st.SearchStrategy[Any]:
        """A request message, or for client-streaming methods a list of 1-4 of them."""
        one = messages(self.input)
        return st.lists(one, min_size=1, max_size=MAX_REPEATED) if self.client_streaming else one

    def __str__(self) -> str:
        return self.path


def rpc_cases(modules: Sequence[Any] = SERVICE_MODULES) -> list[RpcCase]:
    """Every method of every service in ``modules`` (the proto ``DESCRIPTOR``s), in proto order."""
    cases = []
    for module in modules:
        for service in module.DESCRIPTOR.services_by_name.values():
            for m in service.methods:
                cases.append(
                    RpcCase(
                        service.full_name,
                        m.name,
                        m.input_type,
                        m.output_type,
                        m.client_streaming,
                        m.server_streaming,
                    )
                )
    return cases


def raw_bodies() -> st.SearchStrategy[bytes]:
    """Random request bodies (most do not parse as any message)."""
    return st.one_of(
        st.binary(min_size=1, max_size=256),
        st.sampled_from((b"\xff", b"\x0a\xff\xff\xff\xff\x0f", b"\x08" * 11, b"\x0b\x0c", b"\x12")),
    )


def undecodable(raw: bytes, case: RpcCase) -> bool:
    """True when ``raw`` does not parse as the request message of ``case``."""
    try:
        case.request_class.FromString(raw)
    except Exception:
        return True
    return False


def iter_fields(descriptor: _d.Descriptor, depth: int = MAX_DEPTH) -> Iterator[str]:
    """Full names of every field reachable from ``descriptor`` within ``depth`` (for reports)."""
    for f in descriptor.fields:
        yield f.full_name
        if f.message_type is not None and depth > 1 and not _is_map(f):
            yield from iter_fields(f.message_type, depth - 1)


__all__ = [
    "HOSTILE_STRINGS",
    "KNOWN_STRINGS",
    "MAX_DEPTH",
    "SERVICE_MODULES",
    "RpcCase",
    "iter_fields",
    "messages",
    "raw_bodies",
    "rpc_cases",
    "scalar",
    "undecodable",
]
