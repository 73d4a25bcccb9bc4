"""The one rule for every id a caller names that ends up in a Redis key or a file name.

An **id segment** is 1-100 characters of ASCII letters, digits and ``._:-``, starting with a
letter or digit (:data:`ID_SEGMENT`). The kinds of id are built from it:

=================  =========================================================================
pool id            segments joined by ``/``, 1-200 chars, no ``..`` (a folder under the store)
request id         the same shape as a pool id (``golden-r1``, ``<experiment>/round-3``,
                   a uuid's hex)
experiment id      1-128 chars of letters, digits and ``._-`` (no ``:``, no ``/``: it names a
                   checkpoint folder and sits inside the experiment's Redis hash tag)
dataset name       one segment
array name         a letter, then up to 63 letters, digits or ``_`` (a ``.npy`` file name)
=================  =========================================================================

Every check raises :class:`~activekd.errors.InvalidArgument` naming the field, and echoes at
most a short prefix of the value (:func:`~activekd.errors.shown`). docs/security.md documents
the same table.
"""

from __future__ import annotations

import re

from activekd.errors import InvalidArgument, shown

#: The one documented id pattern: one segment of a pool or request id, a dataset name.
ID_SEGMENT = r"[A-Za-z0-9][A-Za-z0-9._:\-]{0,99}"
#: Longest pool id or request id.
MAX_PATH_ID = 200
#: Longest experiment id.
MAX_EXPERIMENT_ID = 128

_PATH_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:\-]*(?:/[A-Za-z0-9][A-Za-z0-9._:\-]*)*")
_EXPERIMENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_ARRAY_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
_SEGMENT_CHARS = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:\-]*")


def _is_path_id(value: object) -> bool:
    return (
        isinstance(value, str)
        and 0 < len(value) <= MAX_PATH_ID
        and _PATH_ID.fullmatch(value) is not None
        and ".." not in value
    )


def check_segment(value: str, what: str, field: str | None = None, max_len: int = 100) -> str:
    """``value`` if it is one id segment of at most ``max_len`` chars, else InvalidArgument."""
    if (
        not isinstance(value, str)
        or not 0 < len(value) <= max_len
        or _SEGMENT_CHARS.fullmatch(value) is None
    ):
        raise InvalidArgument(
            f"{what} {shown(value)} must be 1-{max_len} chars of letters, digits and '._:-' "
            "(no '/')",
            field=field,
        )
    return value


def check_pool_id(pool_id: str) -> str:
    """``pool_id`` if it is valid: 1-200 chars, ``/``-separated segments, no ``..``."""
    if not _is_path_id(pool_id):
        raise InvalidArgument(
            f"pool id {shown(pool_id)} is invalid: use 1-200 chars of letters, digits, '._:-', "
            "segments separated by '/'",
            field="pool_id",
        )
    return pool_id


def check_request_id(request_id: str) -> str:
    """``request_id`` if it has the shape of a pool id (``<experiment>/round-<r>``, a uuid)."""
    if not _is_path_id(request_id):
        raise InvalidArgument(
            f"request_id {shown(request_id)} is invalid: use 1-200 chars of letters, digits, "
            "'._:-', segments separated by '/'",
            field="request_id",
        )
    return request_id


def check_experiment_id(experiment_id: str) -> str:
    """``experiment_id`` if it is a valid id (1-128 of letters, digits, ``._-``), else
    InvalidArgument."""
    if not isinstance(experiment_id, str) or _EXPERIMENT_ID.fullmatch(experiment_id) is None:
        raise InvalidArgument(
            f"experiment id {shown(experiment_id)} is invalid: use 1-128 letters, digits, '._-', "
            "starting with a letter or digit",
            field="experiment_id",
        )
    return experiment_id


def student_pool_id(experiment_id: str, round_: int) -> str:
    """The default output pool of a round's student scores: ``<experiment>/round-<r>/student``."""
    return f"{experiment_id}/round-{round_}/student"


def teacher_targets_pool_id(experiment_id: str, round_: int) -> str:
    """The pool of a round's distillation targets, ``<experiment>/round-<r>/teacher``: the
    teacher's probabilities in the experiment pool's rows and item ids (adapted when the
    experiment adapts its teacher). The trainer writes it when TrainRound asks
    (``write_teacher_targets``): the experiment service does for a strategy that selects on the
    teacher's probabilities (``pcoreset_teacher``), then selects on it."""
    return f"{experiment_id}/round-{round_}/teacher"


def check_array_name(name: str, field: str | None = "chunk.arrays") -> str:
    """``name`` if it can name a stored array (a letter, then up to 63 letters, digits, ``_``)."""
    if not isinstance(name, str) or _ARRAY_NAME.fullmatch(name) is None:
        raise InvalidArgument(f"array name {shown(name)} is invalid", field=field)
    return name


__all__ = [
    "ID_SEGMENT",
    "MAX_EXPERIMENT_ID",
    "MAX_PATH_ID",
    "check_array_name",
    "check_experiment_id",
    "check_pool_id",
    "check_request_id",
    "check_segment",
    "student_pool_id",
    "teacher_targets_pool_id",
]
