"""The server interceptors: one maps the GrmError hierarchy to gRPC status codes, one checks
the bearer token. Every service installs both through GrmServer (tests call through real
channels, since in-process calls skip interceptors).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc

from grm.core.errors import GrmError
from grm.rpc.convert import FIELD_METADATA_KEY, status_code
from grm.rpc.security import bearer_ok, is_open_method

log = logging.getLogger("grm.rpc.server")


@dataclass(frozen=True)
class _Undecodable:
    """A request body that failed to parse (e.g. invalid UTF-8 in a string field)."""

    error: str


def _lenient(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """A deserializer that hands a parse failure to the handler instead of raising.

    grpc reports a raising deserializer as UNKNOWN; a malformed request is the caller's
    fault, so the interceptor turns it into INVALID_ARGUMENT instead.
    """
    if deserializer is None:
        return None

    def parse(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception as exc:  # DecodeError, or whatever a custom deserializer raises
            return _Undecodable(str(exc) or type(exc).__name__)

    return parse


class ErrorInterceptor(grpc.aio.ServerInterceptor):
    """Maps GrmError to its status code; anything unexpected becomes a logged INTERNAL."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is not None and handler.unary_stream is not None:
            if is_open_method(method):
                return handler  # health Watch passes through untouched
            return _guarded_stream(handler, method)
        if handler is None or handler.unary_unary is None:
            return handler  # reflection streams pass through untouched
        inner = handler.unary_unary

        async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await _refuse_undecodable(request, context, method)
            try:
                return await inner(request, context)
            except (asyncio.CancelledError, grpc.aio.AbortError):
                raise
            except Exception as exc:
                await _abort_for(exc, context, method)

        return grpc.unary_unary_rpc_method_handler(
            guarded,
            request_deserializer=_lenient(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )


async def _refuse_undecodable(request: Any, context: grpc.aio.ServicerContext, method: str) -> None:
    """INVALID_ARGUMENT naming `request` when the request's bytes did not decode."""
    if isinstance(request, _Undecodable):
        context.set_trailing_metadata(((FIELD_METADATA_KEY, "request"),))
        log.info("%s -> INVALID_ARGUMENT: undecodable request", method)
        await context.abort(
            grpc.StatusCode.INVALID_ARGUMENT, f"request: cannot be decoded ({request.error})"
        )


async def _abort_for(exc: Exception, context: grpc.aio.ServicerContext, method: str) -> None:
    """End the call with `exc`'s status: a GrmError's code (and field), else a logged
    INTERNAL that names only the exception's type. Called while `exc` is being handled."""
    if isinstance(exc, GrmError):
        if exc.field:
            context.set_trailing_metadata(((FIELD_METADATA_KEY, exc.field),))
        log.info("%s -> %s: %s", method, exc.code, exc)
        await context.abort(status_code(exc), str(exc))
    log.exception("%s failed", method)
    await context.abort(grpc.StatusCode.INTERNAL, f"internal error ({type(exc).__name__})")


def _guarded_stream(handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
    """ErrorInterceptor's mapping for a server-streaming RPC (an error after some messages
    ends the stream with the error's status)."""
    inner = handler.unary_stream

    async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await _refuse_undecodable(request, context, method)
        try:
            if inspect.isasyncgenfunction(inner):
                async for reply in inner(request, context):
                    yield reply
            else:  # a handler that writes through the context (or only aborts)
                await inner(request, context)
        except (asyncio.CancelledError, grpc.aio.AbortError, GeneratorExit):
            raise
        except Exception as exc:
            await _abort_for(exc, context, method)

    return grpc.unary_stream_rpc_method_handler(
        guarded,
        request_deserializer=_lenient(handler.request_deserializer),
        response_serializer=handler.response_serializer,
    )


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Requires `authorization: Bearer <token>`; health checks and reflection stay open.

    The token is compared in constant time and never logged; a rejected call gets
    UNAUTHENTICATED before any servicer code runs. `token` may be a TokenSource (a token
    file re-read when it changes): each call is checked against the current token.
    """

    def __init__(self, token: str | Callable[[], str | None]) -> None:
        self._token = token if callable(token) else (lambda: token)

    def __repr__(self) -> str:
        return "AuthInterceptor(<token>)"

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = handler_call_details.method
        handler = await continuation(handler_call_details)
        if handler is None or is_open_method(method):
            return handler
        token = self._token()
        if token and bearer_ok(handler_call_details.invocation_metadata, token):
            return handler
        log.info("%s -> UNAUTHENTICATED: missing or wrong bearer token", method)
        return _rejecting(handler)


def _rejecting(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """A handler of the same shape as `handler` that answers UNAUTHENTICATED."""

    async def reject(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or invalid bearer token")

    kw = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(reject, **kw)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(reject, **kw)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(reject, **kw)
    return grpc.stream_stream_rpc_method_handler(reject, **kw)
