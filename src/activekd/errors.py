"""Domain errors raised by the library; the gRPC interceptor maps each to the status of its name.

No gRPC import here: the library stays usable in-process.
"""

from __future__ import annotations


class ActiveKDError(Exception):
    """Base class. ``code`` names the gRPC status code the error maps to.

    ``field`` optionally names the request field at fault; the gRPC layer attaches it as a
    ``google.rpc.BadRequest`` field violation.
    """

    code = "INTERNAL"

    def __init__(self, message: str = "", *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class InvalidArgument(ActiveKDError, ValueError):
    """The request itself is wrong (shape, range, NaN, unknown name...)."""

    code = "INVALID_ARGUMENT"


class NotFound(ActiveKDError, KeyError):
    """A referenced pool, experiment, checkpoint or id does not exist."""

    code = "NOT_FOUND"

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class AlreadyExists(ActiveKDError):
    """Creating something that exists (and overwrite was not asked for)."""

    code = "ALREADY_EXISTS"


class FailedPrecondition(ActiveKDError):
    """The system is not in a state where the request can run (missing inputs, wrong round state)."""

    code = "FAILED_PRECONDITION"


class Aborted(ActiveKDError):
    """A concurrent writer won a compare-and-set; retry after re-reading state."""

    code = "ABORTED"


class ResourceExhausted(ActiveKDError):
    """Too large (message, pool) or over a configured cap."""

    code = "RESOURCE_EXHAUSTED"


class PermissionDenied(ActiveKDError):
    """The caller may not do this: its role is too low, or it named a path or URI outside what
    this service is configured to read (``ACTIVEKD_DATA_ROOTS``, ``ACTIVEKD_SOURCE_SCHEMES``)."""

    code = "PERMISSION_DENIED"


class Unauthenticated(ActiveKDError):
    """No credentials, or credentials this service does not know."""

    code = "UNAUTHENTICATED"


class Unavailable(ActiveKDError):
    """A dependency (the state store) is down for now; the call may be retried."""

    code = "UNAVAILABLE"


#: Characters of a caller's string that :func:`shown` puts into a message by default.
SHOWN_CHARS = 64


def shown(value: object, limit: int = SHOWN_CHARS) -> str:
    """A caller's value as it may appear in an error message: ``repr(value)`` when that is short,
    else the ``repr`` of its first ``limit`` characters plus its length, so a message never
    carries more than a short prefix of what a caller sent (a 5,000-char id would overflow the
    response metadata). ``shown(s) == repr(s)`` for any string of at most ``limit`` chars."""
    if isinstance(value, str):
        if len(value) <= limit:
            return repr(value)
        return f"{value[:limit]!r}… ({len(value)} chars)"
    text = repr(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text)} chars)"


__all__ = [
    "SHOWN_CHARS",
    "Aborted",
    "ActiveKDError",
    "AlreadyExists",
    "FailedPrecondition",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "Unauthenticated",
    "Unavailable",
    "shown",
]
