"""W3C trace context over gRPC metadata: a server interceptor and a client interceptor.

The server interceptor starts one SERVER span per unary RPC, as a child of the caller's
`traceparent` when there is one; the client interceptor starts a CLIENT span per call and
injects its context, so aggregator → sampler/principles calls join the aggregator's trace.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any

import grpc
from opentelemetry import propagate
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from grm.telemetry.instruments import tracer, unrecorded_parent

# Probes, not requests: health, reflection and the readiness watcher's Describe / GetLoad.
_UNTRACED_PREFIXES = ("/grpc.health.", "/grpc.reflection.")
_UNTRACED_NAMES = ("Describe", "GetLoad")


def traced(method: str) -> bool:
    """Whether a call to `method` gets spans (a probe every second would flood the traces)."""
    return not method.startswith(_UNTRACED_PREFIXES) and _split(method)[1] not in _UNTRACED_NAMES


def _split(method: str) -> tuple[str, str]:
    service, _, name = method.lstrip("/").partition("/")
    return service, name


def _carrier(details: grpc.HandlerCallDetails) -> dict[str, str]:
    return {k: v for k, v in (details.invocation_metadata or ()) if isinstance(v, str)}


def _rpc_span(method: str, kind: SpanKind, parent: Any = None) -> Any:
    """The span of one call (or one job inside a long-lived call): `with _rpc_span(...)`."""
    service, name = _split(method)
    return tracer().start_as_current_span(
        method.lstrip("/"),
        context=parent,
        kind=kind,
        attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": name},
        record_exception=False,
        set_status_on_exception=False,
    )


@contextlib.contextmanager
def carried_span(method: str, carrier: Mapping[str, str]) -> Iterator[Span]:
    """A SERVER span for one job that travelled inside a long-lived call (a SampleChannel
    job), child of the trace context the job carried; an exception marks it failed."""
    with _rpc_span(method, SpanKind.SERVER, propagate.extract(dict(carrier))) as span:
        try:
            yield span
        except asyncio.CancelledError:
            span.set_status(Status(StatusCode.ERROR, "CANCELLED"))
            raise
        except BaseException as exc:
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            raise
        span.set_attribute("rpc.grpc.status_code", 0)


@contextlib.contextmanager
def _server_span(
    method: str, carrier: dict[str, str], context: grpc.aio.ServicerContext
) -> Iterator[Span]:
    """The SERVER span of one RPC (unary or the whole of a stream), child of the caller's
    `traceparent`, with the status code the handler ended with."""
    with _rpc_span(method, SpanKind.SERVER, propagate.extract(carrier)) as span:
        try:
            yield span
        except grpc.aio.AbortError:
            code = context.code()
            if code is not None:
                span.set_attribute("rpc.grpc.status_code", code.value[0])
            span.set_status(Status(StatusCode.ERROR, str(code)))
            raise
        except BaseException as exc:
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            raise
        span.set_attribute("rpc.grpc.status_code", 0)


class ServerTraceInterceptor(grpc.aio.ServerInterceptor):
    """A server span per unary RPC and per server stream (health and reflection pass through)."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or (handler.unary_unary is None and handler.unary_stream is None):
            return handler
        method = handler_call_details.method
        if not traced(method):
            return handler
        if handler.unary_stream is not None:
            return self._streaming(handler, handler_call_details)
        inner = handler.unary_unary
        carrier = _carrier(handler_call_details)

        async def with_span(request: Any, context: grpc.aio.ServicerContext) -> Any:
            with _server_span(method, carrier, context):
                return await inner(request, context)

        return grpc.unary_unary_rpc_method_handler(
            with_span,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    @staticmethod
    def _streaming(
        handler: grpc.RpcMethodHandler, details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler:
        """A server span over the whole of a server-streaming RPC (until its last message)."""
        inner = handler.unary_stream
        method = details.method
        carrier = _carrier(details)

        async def with_span(request: Any, context: grpc.aio.ServicerContext) -> Any:
            with _server_span(method, carrier, context):
                if inspect.isasyncgenfunction(inner):
                    async for reply in inner(request, context):
                        yield reply
                else:  # a handler that writes through the context (or only aborts)
                    await inner(request, context)

        return grpc.unary_stream_rpc_method_handler(
            with_span,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


@contextlib.contextmanager
def client_span(method: str) -> Iterator[tuple[Span, list[tuple[str, str]]]]:
    """A CLIENT span for a call the caller drives itself (a stream it reads to the end), and
    the metadata that carries its context: `with client_span(m) as (span, metadata)`. Under a
    span that is not being recorded, that span stands for it (`unrecorded_parent`): the call
    carries its context."""
    carrier: dict[str, str] = {}
    parent = unrecorded_parent()
    if parent is not None:
        propagate.inject(carrier)
        yield parent, list(carrier.items())
        return
    with _rpc_span(method, SpanKind.CLIENT) as span:
        propagate.inject(carrier)
        yield span, list(carrier.items())


def end_client_span(span: Span, code: grpc.StatusCode) -> None:
    """The status of a call `client_span` covered."""
    span.set_attribute("rpc.grpc.status_code", code.value[0])
    if code is not grpc.StatusCode.OK:
        span.set_status(Status(StatusCode.ERROR, code.name))


class ClientTraceInterceptor(grpc.aio.UnaryUnaryClientInterceptor):
    """A client span per unary call, its context injected as `traceparent` metadata."""

    async def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Awaitable[Any]],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        method = client_call_details.method
        if isinstance(method, bytes):
            method = method.decode()
        if not traced(method):
            return await continuation(client_call_details, request)
        with _rpc_span(method, SpanKind.CLIENT) as span:
            carrier: dict[str, str] = {}
            propagate.inject(carrier)
            metadata = list(client_call_details.metadata or ())
            metadata.extend(carrier.items())
            details = grpc.aio.ClientCallDetails(
                client_call_details.method,
                client_call_details.timeout,
                grpc.aio.Metadata(*metadata),
                client_call_details.credentials,
                client_call_details.wait_for_ready,
            )
            call = await continuation(details, request)
            try:
                code = await call.code()  # the span lasts until the call ends
            except asyncio.CancelledError:
                call.cancel()  # the caller went away: so does the downstream call
                span.set_status(Status(StatusCode.ERROR, "CANCELLED"))
                raise
            span.set_attribute("rpc.grpc.status_code", code.value[0])
            if code is not grpc.StatusCode.OK:
                span.set_status(Status(StatusCode.ERROR, code.name))
            return call
