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


__all__ = [
    "Aborted",
    "ActiveKDError",
    "AlreadyExists",
    "FailedPrecondition",
    "InvalidArgument",
    "NotFound",
    "ResourceExhausted",
]
