"""Standard gRPC health: a servicer whose watchers let a draining server stop, and a client
poll that waits for SERVING (`grm up`, the launcher, tests)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from grm.rpc.security import ClientSecurity, aio_channel


class _LastStatus:
    """A Watch's context that remembers whether the last status written was NOT_SERVING."""

    def __init__(self, context: Any) -> None:
        self._context = context
        self.not_serving = asyncio.Event()

    async def write(self, message: health_pb2.HealthCheckResponse) -> None:
        await self._context.write(message)
        if message.status == health_pb2.HealthCheckResponse.NOT_SERVING:
            self.not_serving.set()
        else:
            self.not_serving.clear()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


class DrainingHealthServicer(health.aio.HealthServicer):
    """grpc's health servicer, whose Watch streams end (after NOT_SERVING) once draining starts.

    A Watch never finishes by itself, so a single watcher (a load balancer, a sidecar, a
    client-side health check) would otherwise hold a stopping server for its whole grace
    period after the real in-flight requests have finished.
    """

    def __init__(self) -> None:
        super().__init__()
        self._draining = asyncio.Event()

    async def Watch(self, request: health_pb2.HealthCheckRequest, context: Any) -> None:
        sent = _LastStatus(context)
        watch = asyncio.ensure_future(super().Watch(request, sent))
        draining = asyncio.ensure_future(self._draining.wait())
        try:
            await asyncio.wait({watch, draining}, return_when=asyncio.FIRST_COMPLETED)
            if not watch.done():
                # The watcher hears NOT_SERVING first; the stream ends only between writes.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(sent.not_serving.wait(), 1.0)
        finally:
            for task in (watch, draining):
                task.cancel()
            await asyncio.gather(watch, draining, return_exceptions=True)

    async def enter_graceful_shutdown(self) -> None:
        await super().enter_graceful_shutdown()
        self._draining.set()


async def wait_serving(
    address: str,
    *,
    within_s: float,
    service: str = "",
    interval: float = 0.1,
    security: ClientSecurity | None = None,
) -> None:
    """Poll a server's health until SERVING (for `grm up` and tests); raises TimeoutError."""
    async with aio_channel(address, security) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        deadline = asyncio.get_running_loop().time() + within_s
        while True:
            try:
                reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"{address} did not become SERVING within {within_s:.0f}s")
            await asyncio.sleep(interval)
