"""Standard gRPC health: a servicer whose watchers let a draining server stop, a watcher that
keeps a server's health equal to what it depends on, and a client poll that waits for SERVING
(`grm up`, the launcher, tests)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from grm.rpc.security import ClientSecurity, aio_channel

log = logging.getLogger(__name__)


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


class Readiness(Protocol):
    """What a watcher drives: a server's SERVING / NOT_SERVING (GrmServer.set_serving)."""

    async def set_serving(self, serving: bool) -> None: ...


class ReadinessWatcher:
    """Keeps a server's health equal to `probe()`: checked every `interval_s`, flipped both
    ways (and logged) when the answer changes.

    A sampler follows its generation backend; the aggregator follows its samplers and, when
    its mode needs one, its principle generator — so a Kubernetes Service routes no traffic to
    a pod that cannot answer. A probe that raises counts as not ready.
    """

    def __init__(
        self,
        probe: Callable[[], Awaitable[bool]],
        server: Readiness,
        *,
        interval_s: float,
        what: str = "dependencies",
    ) -> None:
        self.probe = probe
        self.server = server
        self.interval_s = max(0.05, interval_s)
        self.what = what
        self.serving: bool | None = None  # last state published (None: none yet)
        self._task: asyncio.Task[None] | None = None

    async def check(self) -> bool:
        """Probe once and publish a change; returns whether ready."""
        try:
            ok = bool(await self.probe())
        except Exception as exc:
            log.warning("%s probe failed: %s: %s", self.what, type(exc).__name__, exc)
            ok = False
        if ok != self.serving:
            if self.serving is not None:
                if ok:
                    log.info("%s healthy again: SERVING", self.what)
                else:
                    log.warning("%s unhealthy: NOT_SERVING until they recover", self.what)
            self.serving = ok
            await self.server.set_serving(ok)
        return ok

    async def wait_ready(self, retry_s: float | None = None) -> None:
        """Check until ready (a service's warm-up: NOT_SERVING meanwhile)."""
        while True:
            if await self.check():
                return
            await asyncio.sleep(self.interval_s if retry_s is None else retry_s)

    def start(self) -> None:
        """Check every interval from now on (in the background)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self.check()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
