"""One server interceptor for every service: domain errors -> gRPC status, limits, RPC metrics.

Handlers raise ``activekd.errors`` exceptions; the client sees the status of the same name with
the message (plus a ``google.rpc.BadRequest`` field violation when the error names a field).
On top of that, for every method of every service:

- **Undecodable bodies** are INVALID_ARGUMENT on all four RPC kinds: the handler's request
  deserializer is wrapped so a body that does not parse becomes an :class:`Undecodable`
  sentinel, refused before any servicer code sees it (gRPC itself would answer UNKNOWN, or
  INTERNAL for streamed requests).
- **Limits** (:class:`~activekd.server.limits.Limits`): concurrent calls per service and per
  method, request fields such as ``budget``, and the bytes of an UploadPool stream, each
  RESOURCE_EXHAUSTED naming the limit.
- **Infrastructure errors** map without host details: Redis connection errors, and a call to
  another service that failed UNAVAILABLE, are UNAVAILABLE; a full or read-only disk
  RESOURCE_EXHAUSTED / FAILED_PRECONDITION. The details (socket path, file path, target) go to
  the log only.
- **Anything else** is INTERNAL "internal error (logged as <id>)": the exception text, which may
  hold paths or hosts, is logged with its traceback under that id and never sent.
- **Every message is capped** (:data:`MAX_STATUS_MESSAGE_BYTES`), so an echoed 5,000-char id
  cannot overflow the 8 KiB metadata limit (which the client sees as "Stream removed").
"""

from __future__ import annotations

import errno
import inspect
import logging
import secrets
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import grpc
import redis.exceptions
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from activekd.errors import ActiveKDError, InvalidArgument, ResourceExhausted
from activekd.server import metrics
from activekd.server.limits import EXEMPT_PREFIXES, FIELD_CAPS, STREAM_BYTE_CAPS, Limits

log = logging.getLogger("activekd.rpc")

#: The longest status message (UTF-8 bytes) a client gets; longer ones are cut with a note.
MAX_STATUS_MESSAGE_BYTES = 1024
#: The longest field name in a BadRequest violation.
MAX_FIELD_BYTES = 128

#: Redis errors that mean "the state store is not reachable right now": retry later.
REDIS_UNAVAILABLE: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,  # includes BusyLoadingError, AuthenticationError
    redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError,
    redis.exceptions.ReadOnlyError,  # a replica during failover
)
REDIS_UNAVAILABLE_MESSAGE = "state store (Redis) is unavailable; retry"
#: a call this service made to another one failed UNAVAILABLE (the reason names hosts: logged)
DOWNSTREAM_UNAVAILABLE_MESSAGE = "a service this call depends on is unavailable; retry"
STORE_FULL_MESSAGE = "pool store is full"
STORE_READ_ONLY_MESSAGE = "pool store is not writable"
#: EACCES: a file or folder the service may not write or read (a store folder without write
#: permission, or an unreadable file under a data root): no errno says which, so neither is named
ACCESS_DENIED_MESSAGE = (
    "the service may not write or read a file it needs (pool store or data root permissions)"
)
_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


class Undecodable:
    """What the safe deserializer returns for a body that does not parse as ``type_name``."""

    __slots__ = ("error", "type_name")

    def __init__(self, type_name: str, error: BaseException) -> None:
        self.type_name, self.error = type_name, error

    def __repr__(self) -> str:
        return f"Undecodable({self.type_name!r})"

    @property
    def message(self) -> str:
        return f"request body is not a valid {self.type_name}"


class SafeDeserializer:
    """Wraps a request deserializer: a body it cannot parse becomes :class:`Undecodable`."""

    __slots__ = ("inner", "type_name")

    def __init__(self, inner: Callable[[bytes], Any]) -> None:
        self.inner = inner
        owner = getattr(inner, "__self__", None)  # Message.FromString is bound to its class
        descriptor = getattr(owner, "DESCRIPTOR", None)
        self.type_name = str(getattr(descriptor, "name", "") or "request message")

    def __call__(self, raw: bytes) -> Any:
        try:
            return self.inner(raw)
        except Exception as exc:  # DecodeError, or anything a custom deserializer raises
            return Undecodable(self.type_name, exc)


def safe_deserializer(
    deserializer: Callable[[bytes], Any] | None,
) -> Callable[[bytes], Any] | None:
    """``deserializer`` wrapped by :class:`SafeDeserializer` (once; ``None`` stays ``None``)."""
    if deserializer is None or isinstance(deserializer, SafeDeserializer):
        return deserializer
    return SafeDeserializer(deserializer)


def cap_message(text: str, limit: int = MAX_STATUS_MESSAGE_BYTES) -> str:
    """``text`` if it has at most ``limit`` UTF-8 bytes, else its start and "… (N chars)"."""
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")  # lone surrogates
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    suffix = f"… ({len(text)} chars)"
    keep = max(0, limit - len(suffix.encode("utf-8")))
    return data[:keep].decode("utf-8", "ignore") + suffix


def rpc_type_of(handler: grpc.RpcMethodHandler) -> str:
    """unary / client_stream / server_stream / bidi_stream: which handler field is set."""
    if handler.request_streaming and handler.response_streaming:
        return "bidi_stream"
    if handler.request_streaming:
        return "client_stream"
    if handler.response_streaming:
        return "server_stream"
    return "unary"


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what it was raised from or during (a few levels)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(seen) < 8:
        seen.add(id(current))
        yield current
        current = current.__cause__ or (
            None if current.__suppress_context__ else current.__context__
        )


def _rpc_code(exc: grpc.RpcError) -> grpc.StatusCode | None:
    code = getattr(exc, "code", None)
    try:
        return code() if callable(code) else None
    except Exception:  # a half-built error object
        return None


def _infrastructure_status(exc: BaseException) -> tuple[grpc.StatusCode, str] | None:
    """The status of a known infrastructure failure (Redis down, disk full), else ``None``."""
    for cause in _causes(exc):
        if isinstance(cause, REDIS_UNAVAILABLE):
            return grpc.StatusCode.UNAVAILABLE, REDIS_UNAVAILABLE_MESSAGE
        if isinstance(cause, grpc.RpcError) and _rpc_code(cause) == grpc.StatusCode.UNAVAILABLE:
            return grpc.StatusCode.UNAVAILABLE, DOWNSTREAM_UNAVAILABLE_MESSAGE
        if isinstance(cause, OSError) and cause.errno in _FULL_ERRNOS:
            return grpc.StatusCode.RESOURCE_EXHAUSTED, STORE_FULL_MESSAGE
        if isinstance(cause, OSError) and cause.errno == errno.EROFS:
            return grpc.StatusCode.FAILED_PRECONDITION, STORE_READ_ONLY_MESSAGE
        if isinstance(cause, OSError) and cause.errno == errno.EACCES:
            return grpc.StatusCode.FAILED_PRECONDITION, ACCESS_DENIED_MESSAGE
    return None


async def _abort_for(exc: BaseException, context: grpc.aio.ServicerContext, method: str) -> None:
    """Abort the call with the status that ``exc`` maps to (never returns)."""
    if isinstance(exc, ActiveKDError):
        code = getattr(grpc.StatusCode, exc.code, grpc.StatusCode.INTERNAL)
        message = cap_message(str(exc))
        log.info("rpc rejected", extra={"method": method, "code": code.name, "error": message})
        field = getattr(exc, "field", None)
        if field:
            detail = any_pb2.Any()
            detail.Pack(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(
                            field=cap_message(str(field), MAX_FIELD_BYTES), description=message
                        )
                    ]
                )
            )
            status = status_pb2.Status(
                code=getattr(code_pb2, code.name), message=message, details=[detail]
            )
            await context.abort_with_status(rpc_status.to_status(status))
        await context.abort(code, message)
    known = _infrastructure_status(exc)
    if known is not None:
        code, message = known
        level = logging.WARNING if code == grpc.StatusCode.UNAVAILABLE else logging.ERROR
        log.log(level, "rpc failed: %s", message, extra={"method": method}, exc_info=exc)
        await context.abort(code, message)
    error_id = secrets.token_hex(4)
    log.error(
        "rpc failed (error id %s)",
        error_id,
        extra={"method": method, "error_id": error_id},
        exc_info=exc,
    )
    await context.abort(grpc.StatusCode.INTERNAL, f"internal error (logged as {error_id})")


def _final_code(context: grpc.aio.ServicerContext, exc: BaseException | None) -> str:
    code = context.code() if hasattr(context, "code") else None
    if isinstance(code, grpc.StatusCode):
        return code.name
    if exc is None:
        return "OK"
    if isinstance(exc, ActiveKDError):
        return exc.code
    return "UNKNOWN" if isinstance(exc, grpc.aio.AbortError) else "INTERNAL"


def _field_value(message: Any, path: str) -> Any:
    value = message
    for part in path.split("."):
        value = getattr(value, part, None)
        if value is None:
            return None
    return value


class _Slots:
    """Concurrent calls per service and per method; never blocks (over a cap = refused)."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.total = 0
        self.by_method: dict[str, int] = {}
        self._lock = threading.Lock()

    def acquire(self, method: str) -> bool:
        """Count one call of ``method``; ``False`` if exempt. Raises ResourceExhausted when full."""
        if method.startswith(EXEMPT_PREFIXES):
            return False
        short = method.rsplit("/", 1)[-1]
        cap = self.limits.method_limit(method)
        with self._lock:
            running = self.by_method.get(method, 0)
            if cap > 0 and running >= cap:
                raise ResourceExhausted(
                    f"too many concurrent {short} calls (limit {cap}); retry later"
                )
            if 0 < self.limits.max_concurrent <= self.total:
                raise ResourceExhausted(
                    f"too many concurrent calls to this service "
                    f"(limit {self.limits.max_concurrent}); retry later"
                )
            self.total += 1
            self.by_method[method] = running + 1
        return True

    def release(self, method: str) -> None:
        with self._lock:
            self.total -= 1
            left = self.by_method.get(method, 1) - 1
            if left > 0:
                self.by_method[method] = left
            else:
                self.by_method.pop(method, None)


class ServerInterceptor(grpc.aio.ServerInterceptor):
    """Maps errors, enforces ``limits`` and records ``grpc_server_*`` metrics for every method of
    every service. ``limits=None`` means the defaults of :class:`Limits`."""

    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits if limits is not None else Limits()
        self._slots = _Slots(self.limits)

    def running(self, method: str | None = None) -> int:
        """Calls counted now against the service's limit (or ``method``'s, a full name)."""
        return self._slots.total if method is None else self._slots.by_method.get(method, 0)

    def _check(self, short: str, request: Any) -> None:
        """Refuse an undecodable request or a field above its cap."""
        if isinstance(request, Undecodable):
            log.debug(
                "undecodable request",
                extra={"method": short, "error": cap_message(str(request.error), 200)},
            )
            raise InvalidArgument(request.message)
        for path, attr in FIELD_CAPS.get(short, ()):
            limit = int(getattr(self.limits, attr))
            value = _field_value(request, path)
            if limit > 0 and isinstance(value, int) and value > limit:
                raise ResourceExhausted(
                    f"{path} {value} is over this service's limit {limit} "
                    f"(ACTIVEKD_{attr.upper()})",
                    field=path,
                )

    async def _checked(self, requests: AsyncIterator[Any], short: str) -> AsyncIterator[Any]:
        """A request stream whose messages pass :meth:`_check` and the stream's byte cap."""
        attr = STREAM_BYTE_CAPS.get(short)
        cap = int(getattr(self.limits, attr)) if attr else 0
        total = 0
        async for item in requests:
            self._check(short, item)
            if cap > 0:
                total += item.ByteSize()
                if total > cap:
                    raise ResourceExhausted(
                        f"{short} sent more than this service's limit of {cap} bytes "
                        f"(ACTIVEKD_{attr.upper()})"  # type: ignore[union-attr]
                    )
            yield item

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        short = method.rsplit("/", 1)[-1]
        rpc_type = rpc_type_of(handler)
        streaming_request = handler.request_streaming
        slots = self._slots

        def prepare(request: Any) -> Any:
            if streaming_request:
                return self._checked(request, short)
            self._check(short, request)
            return request

        if handler.response_streaming:
            inner = handler.unary_stream or handler.stream_stream

            async def stream_behavior(
                request: Any, context: grpc.aio.ServicerContext
            ) -> AsyncIterator[Any]:
                metrics.rpc_started(method, rpc_type)
                start, failure, counted = time.perf_counter(), None, False
                try:
                    counted = slots.acquire(method)
                    result = inner(prepare(request), context)
                    if inspect.isasyncgen(result):
                        async for item in result:
                            yield item
                    else:
                        await result
                except grpc.aio.AbortError as exc:
                    failure = exc
                    raise
                except Exception as exc:
                    failure = exc
                    await _abort_for(exc, context, method)
                finally:
                    if counted:
                        slots.release(method)
                    metrics.rpc_handled(
                        method, rpc_type, _final_code(context, failure), time.perf_counter() - start
                    )

            wrapped: Any = stream_behavior
        else:
            inner = handler.unary_unary or handler.stream_unary

            async def unary_behavior(request: Any, context: grpc.aio.ServicerContext) -> Any:
                metrics.rpc_started(method, rpc_type)
                start, failure, counted = time.perf_counter(), None, False
                try:
                    counted = slots.acquire(method)
                    return await inner(prepare(request), context)
                except grpc.aio.AbortError as exc:
                    failure = exc
                    raise
                except Exception as exc:
                    failure = exc
                    await _abort_for(exc, context, method)
                finally:
                    if counted:
                        slots.release(method)
                    metrics.rpc_handled(
                        method, rpc_type, _final_code(context, failure), time.perf_counter() - start
                    )

            wrapped = unary_behavior

        factory = {
            "unary": grpc.unary_unary_rpc_method_handler,
            "client_stream": grpc.stream_unary_rpc_method_handler,
            "server_stream": grpc.unary_stream_rpc_method_handler,
            "bidi_stream": grpc.stream_stream_rpc_method_handler,
        }[rpc_type]
        return factory(
            wrapped,
            request_deserializer=safe_deserializer(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )
