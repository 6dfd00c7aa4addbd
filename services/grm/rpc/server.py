"""gRPC server plumbing shared by the three services.

Every service gets the same hygiene from here: a `grpc.aio` server, the standard health
service (NOT_SERVING until the backend is loaded), server reflection, one interceptor that
maps the GrmError hierarchy to status codes, raised message sizes, keepalive and a maximum
connection age (so clients re-balance onto new pods), and a graceful SIGTERM shutdown.

Transport security (grm.rpc.security): TLS or mutual TLS when a certificate is configured, and
a bearer token every call must carry when one is configured (health and reflection excepted).
With TLS, an optional plaintext port serves only the health service, for kubelet gRPC probes
(they cannot speak TLS).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from grm.rpc.health import DrainingHealthServicer, wait_serving
from grm.rpc.interceptors import AuthInterceptor, ErrorInterceptor
from grm.rpc.loop import loop_name, settle_gc
from grm.rpc.security import ServerTls, TokenSource
from grm.telemetry import ServerTraceInterceptor

log = logging.getLogger(__name__)

MiB = 1 << 20
# Health service name that says only "this process runs" (SERVING from start to shutdown):
# kubelet startup and liveness probes ask for it, so a pod whose dependencies are down (the
# aggregator without samplers, a sampler without its engine) is taken out of the Service by
# readiness ("") but never restarted for it.
LIVENESS_SERVICE = "liveness"


@dataclass(frozen=True)
class ServerSettings:
    """Transport settings common to every service."""

    host: str = "127.0.0.1"
    port: int = 0  # 0 = any free port (the bound port is returned by start())
    grace_s: float = 10.0  # in-flight RPCs get this long to finish on SIGTERM
    max_message_mb: int = 64  # batches of long responses exceed gRPC's 4 MiB default
    keepalive_time_s: float = 30.0
    keepalive_timeout_s: float = 10.0
    max_connection_age_s: float = 300.0  # clients reconnect (and re-balance) after this
    max_connection_age_grace_s: float = 30.0
    port_file: str | None = None  # write the bound port here once listening (for `grm up`)
    metrics_port: int = 0  # Prometheus /metrics on host:metrics_port (0 = off)
    log_format: str = "text"  # text | json (structured, with trace and request ids)
    log_content: bool = False  # log prompts and generations (never by default)
    tls: ServerTls | None = None  # None: plaintext
    auth_token: str | None = field(default=None, repr=False)  # required bearer token
    auth_token_file: str | None = None  # where auth_token came from: re-read when it changes
    health_port: int = 0  # plaintext health-only port for kubelet probes (0 = off)


def server_token(s: ServerSettings) -> TokenSource:
    """The token calls must carry: the file's current content when it came from a file."""
    if s.auth_token_file:
        return TokenSource(s.auth_token, path=s.auth_token_file, option="--auth-token-file")
    return TokenSource(s.auth_token)


def server_options(s: ServerSettings) -> list[tuple[str, Any]]:
    size = s.max_message_mb * MiB
    return [
        ("grpc.max_send_message_length", size),
        ("grpc.max_receive_message_length", size),
        ("grpc.keepalive_time_ms", int(s.keepalive_time_s * 1000)),
        ("grpc.keepalive_timeout_ms", int(s.keepalive_timeout_s * 1000)),
        ("grpc.keepalive_permit_without_calls", 1),
        # Accept client pings as often as our own clients send them (default is 5 minutes,
        # after which a pinging client would be sent GOAWAY "too_many_pings").
        ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
        ("grpc.http2.max_ping_strikes", 0),
        ("grpc.max_connection_age_ms", int(s.max_connection_age_s * 1000)),
        ("grpc.max_connection_age_grace_ms", int(s.max_connection_age_grace_s * 1000)),
        # A port already in use is an error, not silently shared with another process.
        ("grpc.so_reuseport", 0),
    ]


def channel_options(max_message_mb: int = 64) -> list[tuple[str, Any]]:
    """Options for channels between the services and from the client."""
    size = max_message_mb * MiB
    return [
        ("grpc.max_send_message_length", size),
        ("grpc.max_receive_message_length", size),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.enable_retries", 0),  # retries are explicit (client SDK), never hidden
        # A lost peer is redialled at least every 2 s (gRPC's default backoff grows to 120 s),
        # so a sampler or principle generator that comes back is used again within seconds.
        ("grpc.max_reconnect_backoff_ms", 2_000),
    ]


class GrmServer:
    """One grpc.aio server with health, reflection and the error interceptor."""

    def __init__(
        self,
        settings: ServerSettings,
        *,
        register: Sequence[Callable[[grpc.aio.Server], None]],
        service_names: Sequence[str],
    ) -> None:
        self.settings = settings
        interceptors: list[grpc.aio.ServerInterceptor] = [ServerTraceInterceptor()]
        if settings.auth_token:
            interceptors.append(AuthInterceptor(server_token(settings)))
        interceptors.append(ErrorInterceptor())
        self.server = grpc.aio.server(interceptors=interceptors, options=server_options(settings))
        for add in register:
            add(self.server)
        self.health = DrainingHealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.service_names = ["", *service_names]
        reflection.enable_server_reflection(
            [
                *service_names,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ],
            self.server,
        )
        self.port: int | None = None
        # Called when stopping starts, before the grace period: long-lived calls (a sampler's
        # SampleChannel) refuse new work there and end once their running work is done.
        self.on_drain: list[Callable[[], None]] = []
        # Kubelet gRPC probes speak plaintext only: with TLS they get a health-only port.
        self.health_server: grpc.aio.Server | None = None
        self.health_port: int | None = None
        if settings.health_port:
            self.health_server = grpc.aio.server(options=server_options(settings))
            health_pb2_grpc.add_HealthServicer_to_server(self.health, self.health_server)

    @property
    def address(self) -> str:
        return f"{self.settings.host}:{self.port}"

    async def start(self) -> int:
        """Bind and start with health NOT_SERVING; returns the bound port."""
        s = self.settings
        self.port = _bind(self.server, f"{s.host}:{s.port}", s.tls)
        if self.health_server is not None:
            self.health_port = _bind(self.health_server, f"{s.host}:{s.health_port}", None)
        if s.auth_token and s.tls is None:
            log.warning("a bearer token is required but TLS is off: tokens cross in clear text")
        await self.set_serving(False)
        await self.health.set(LIVENESS_SERVICE, health_pb2.HealthCheckResponse.SERVING)
        await self.server.start()
        if self.health_server is not None:
            await self.health_server.start()
        if self.settings.port_file:
            write_port_file(self.settings.port_file, self.port)
        return self.port

    async def set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in self.service_names:
            await self.health.set(name, status)

    async def stop(self, grace: float | None = None) -> None:
        """Health NOT_SERVING, then stop accepting RPCs; in-flight ones get `grace` seconds."""
        await self.health.enter_graceful_shutdown()
        for drain in self.on_drain:
            drain()
        await self.server.stop(self.settings.grace_s if grace is None else grace)
        if self.health_server is not None:
            await self.health_server.stop(0)


def _bind(server: grpc.aio.Server, where: str, tls: ServerTls | None) -> int:
    """Add a (TLS or plaintext) port; a failed bind is an OSError naming the address."""
    try:
        port = (
            server.add_secure_port(where, tls.credentials())
            if tls is not None
            else server.add_insecure_port(where)
        )
    except RuntimeError as exc:  # grpc reports a failed bind this way
        raise OSError(f"cannot listen on {where}: {exc}") from None
    if port == 0:
        raise OSError(f"cannot listen on {where}")
    return port


def write_port_file(path: str, port: int) -> None:
    """Write atomically, so a reader never sees an empty or half-written file."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}")
    tmp.write_text(f"{port}\n", encoding="utf-8")
    tmp.replace(target)


async def serve(
    server: GrmServer,
    *,
    warm_up: Callable[[], Awaitable[None]] | None = None,
    close: Callable[[], Awaitable[None]] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Run a service until SIGTERM/SIGINT (or `stop` is set), then shut down gracefully.

    Health stays NOT_SERVING until `warm_up` (loading the model) returns, so a readiness
    probe never routes traffic to a pod that cannot answer yet.
    """
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        # Not every loop can take signal handlers (Windows: NotImplementedError; a loop outside
        # the main thread, as in tests that run a server in a thread: ValueError/RuntimeError);
        # there `stop` alone ends the service.
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    try:
        _telemetry(server)
        port = await server.start()
        log.info(
            "listening on %s:%d (%s, %s; NOT_SERVING until warm)",
            server.settings.host,
            port,
            _transport(server),
            loop_name(loop),
        )
        if warm_up is not None:
            warm = asyncio.ensure_future(warm_up())
            stopping = asyncio.ensure_future(stop.wait())
            await asyncio.wait({warm, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not warm.done():
                warm.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await warm
            else:
                stopping.cancel()
                warm.result()  # a failed load ends the service (non-zero exit in main)
        if not stop.is_set():
            settle_gc()
            await server.set_serving(True)
            log.info("SERVING on %s:%d", server.settings.host, port)
            await stop.wait()
        log.info("stopping: NOT_SERVING, %.1fs grace for in-flight RPCs", server.settings.grace_s)
    finally:
        await server.stop()
        if close is not None:
            await close()
        for sig in installed:
            loop.remove_signal_handler(sig)
        log.info("stopped")


def _transport(server: GrmServer) -> str:
    """What a log line says about transport security (never the token itself)."""
    s = server.settings
    parts = ["mutual TLS" if s.tls and s.tls.mutual else "TLS" if s.tls else "plaintext"]
    if s.auth_token:
        parts.append("bearer token required")
    if server.health_port:
        parts.append(f"plaintext health on port {server.health_port}")
    return ", ".join(parts)


def _telemetry(server: GrmServer) -> None:
    """Providers from OTEL_* (export only when configured), /metrics, the log format."""
    from grm import telemetry

    s = server.settings
    name = next(
        (telemetry.SERVICE_NAMES[n] for n in server.service_names if n in telemetry.SERVICE_NAMES),
        "grm",
    )
    telemetry.configure_logging(s.log_format, name, content=s.log_content)
    telemetry.setup(name, host=s.host, metrics_port=s.metrics_port)


__all__ = [
    "LIVENESS_SERVICE",
    "GrmServer",
    "ServerSettings",
    "channel_options",
    "serve",
    "wait_serving",
    "write_port_file",
]
