"""One server interceptor for every service: domain errors -> gRPC status, and RPC metrics.

Handlers raise ``activekd.errors`` exceptions; the client sees the status of the same name with
the message unchanged (plus a ``google.rpc.BadRequest`` field violation when the error names a
field). Anything else becomes INTERNAL, logged with its traceback.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from activekd.errors import ActiveKDError
from activekd.server import metrics

log = logging.getLogger("activekd.rpc")


def _rpc_type(handler: grpc.RpcMethodHandler) -> str:
    if handler.request_streaming and handler.response_streaming:
        return "bidi_stream"
    if handler.request_streaming:
        return "client_stream"
    if handler.response_streaming:
        return "server_stream"
    return "unary"


async def _abort_for(exc: BaseException, context: grpc.aio.ServicerContext, method: str) -> None:
    """Abort the call with the status that ``exc`` maps to (never returns)."""
    if isinstance(exc, ActiveKDError):
        code = getattr(grpc.StatusCode, exc.code, grpc.StatusCode.INTERNAL)
        message = str(exc)
        log.info("rpc rejected", extra={"method": method, "code": code.name, "error": message})
        field = getattr(exc, "field", None)
        if field:
            detail = any_pb2.Any()
            detail.Pack(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(
                            field=field, description=message
                        )
                    ]
                )
            )
            status = status_pb2.Status(
                code=getattr(code_pb2, code.name), message=message, details=[detail]
            )
            await context.abort_with_status(rpc_status.to_status(status))
        await context.abort(code, message)
    log.exception("rpc failed", extra={"method": method}, exc_info=exc)
    await context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}")


def _final_code(context: grpc.aio.ServicerContext, exc: BaseException | None) -> str:
    code = context.code() if hasattr(context, "code") else None
    if isinstance(code, grpc.StatusCode):
        return code.name
    if exc is None:
        return "OK"
    if isinstance(exc, ActiveKDError):
        return exc.code
    return "UNKNOWN" if isinstance(exc, grpc.aio.AbortError) else "INTERNAL"


class ServerInterceptor(grpc.aio.ServerInterceptor):
    """Maps errors and records ``grpc_server_*`` metrics for every method of every service."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        rpc_type = _rpc_type(handler)

        if handler.response_streaming:
            inner = handler.unary_stream or handler.stream_stream

            async def stream_behavior(
                request: Any, context: grpc.aio.ServicerContext
            ) -> AsyncIterator[Any]:
                metrics.rpc_started(method, rpc_type)
                start, failure = time.perf_counter(), None
                try:
                    result = inner(request, context)
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
                    metrics.rpc_handled(
                        method, rpc_type, _final_code(context, failure), time.perf_counter() - start
                    )

            wrapped: Any = stream_behavior
        else:
            inner = handler.unary_unary or handler.stream_unary

            async def unary_behavior(request: Any, context: grpc.aio.ServicerContext) -> Any:
                metrics.rpc_started(method, rpc_type)
                start, failure = time.perf_counter(), None
                try:
                    return await inner(request, context)
                except grpc.aio.AbortError as exc:
                    failure = exc
                    raise
                except Exception as exc:
                    failure = exc
                    await _abort_for(exc, context, method)
                finally:
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
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
