"""A generation backend inside a service: built from the flags, started, watched, closed.

Readiness follows the backend. The embedded model is ready once loaded. A TGI backend is
ready while one of its endpoints answers `/health`: `warm_up` waits (NOT_SERVING, retrying)
until one does — a sampler pod may start before its TGI server has loaded the model — and
then a watcher polls `backend.healthy()` every `health_interval_s` and flips the service's
gRPC health between SERVING and NOT_SERVING, so Kubernetes routes no traffic to a sampler
whose TGI is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from grm.backends import make_backend
from grm.backends.base import GenerationBackend
from grm.core.errors import UnavailableError
from grm.settings import BackendSettings

log = logging.getLogger(__name__)


class Readiness(Protocol):
    async def set_serving(self, serving: bool) -> None: ...


def build_backend(settings: BackendSettings, model: Any) -> GenerationBackend:
    """An unstarted backend: TGI from `settings`, else embedded from `model` (EmbeddedSettings)."""
    if settings.kind == "tgi":
        return make_backend(
            "tgi",
            tgi_url=settings.tgi_urls,
            max_in_flight=settings.tgi_max_in_flight,
            request_timeout_s=settings.tgi_timeout_s,
        )
    return make_backend(
        "embedded",
        model_path=getattr(model, "model_path", None),
        n_ctx=getattr(model, "n_ctx", None),
        n_threads=getattr(model, "n_threads", None),
    )


class BackendLifecycle:
    """`warm_up` and `close` for grm.server.serve, plus the readiness watcher."""

    def __init__(
        self,
        backend: GenerationBackend,
        server: Readiness,
        *,
        health_interval_s: float = 5.0,
        start_retry_s: float = 1.0,
    ) -> None:
        self.backend = backend
        self.server = server
        self.health_interval_s = max(0.05, health_interval_s)
        self.start_retry_s = start_retry_s
        self.serving = False
        self._watcher: asyncio.Task[None] | None = None

    @property
    def _probe(self) -> Callable[[], Awaitable[bool]] | None:
        probe = getattr(self.backend, "healthy", None)
        return probe if callable(probe) else None

    async def warm_up(self) -> None:
        """Start the backend, retrying while it is unavailable; then watch its health."""
        while True:
            try:
                await self.backend.start()
                break
            except UnavailableError as exc:
                log.warning("backend not available yet (%s); retrying", exc)
                await asyncio.sleep(self.start_retry_s)
        self.serving = True  # grm.server.serve turns SERVING when this returns
        if self._probe is not None:
            self._watcher = asyncio.create_task(self._watch())

    async def check(self) -> bool:
        """Probe the backend once and make the service's health follow it; returns healthy."""
        probe = self._probe
        if probe is None:
            return True
        try:
            ok = bool(await probe())
        except Exception as exc:  # a failing probe is an unhealthy backend, not a crash
            log.warning("backend health probe failed: %s: %s", type(exc).__name__, exc)
            ok = False
        if ok != self.serving:
            self.serving = ok
            if ok:
                log.info("backend healthy again: SERVING")
            else:
                log.warning("backend unhealthy: NOT_SERVING until it recovers")
            await self.server.set_serving(ok)
        return ok

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.health_interval_s)
            await self.check()

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None
        await self.backend.close()
