"""The one ``google.protobuf.Struct`` <-> dict conversion (configs travel as Structs).

A Struct holds numbers as doubles: integers are exact only below 2**53, so anything that must be
an exact integer (seeds, ids) travels in its own integer field, never inside a Struct. Integral
floats in a received dict stay floats here; the library's config parsers coerce the fields they
know to be integers (``activekd.student.round_job.coerce_numbers``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from google.protobuf import json_format, struct_pb2

from activekd.errors import InvalidArgument


def dict_to_struct(values: Mapping[str, Any] | None) -> struct_pb2.Struct:
    """A mapping (JSON-like values) as a Struct; None or {} -> an empty Struct."""
    out = struct_pb2.Struct()
    if values:
        out.update(dict(values))
    return out


def struct_to_dict(struct: struct_pb2.Struct | None, name: str = "config") -> dict[str, Any]:
    """A Struct as a plain dict (numbers arrive as floats); None -> {}."""
    if struct is None:
        return {}
    try:
        out = json_format.MessageToDict(struct)
    except ValueError:  # NaN / infinity have no JSON form
        raise InvalidArgument(
            f"{name} holds a number that is NaN or infinite: give finite numbers", field=name
        ) from None
    return out if isinstance(out, dict) else {}
