"""The shared bootstrap of the two backend services (principle generator and critique sampler).

Both run one generation backend behind one gRPC servicer: the same settings (server, model,
backend, template, limits), the same backend lifecycle and the same serve loop; only the
servicer differs. A generation backend inside a service is built from the flags, started,
watched and closed here.

Readiness follows the backend. The embedded model is ready once loaded. A TGI backend is
ready while one of its endpoints answers `/health`: `warm_up` waits (NOT_SERVING, retrying)
until one does — a sampler pod may start before its TGI server has loaded the model — and
then a watcher polls `backend.healthy()` every `health_interval_s` and flips the service's
gRPC health between SERVING and NOT_SERVING, so Kubernetes routes no traffic to a sampler
whose TGI is gone.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc

from grm.backends import BACKEND_KINDS, make_backend
from grm.backends.base import GenerationBackend
from grm.backends.embedded import EmbeddedSettings
from grm.core.decoding import profile_for_backend
from grm.core.errors import UnavailableError
from grm.core.templates import DEFAULT_TEMPLATE, TemplateSet, load_templates
from grm.core.validation import Defaults, Limits
from grm.rpc.options import (
    Option,
    build_dataclass,
    dataclass_options,
    resolve,
    server_options,
    server_settings,
)
from grm.rpc.server import GrmServer, ServerSettings, serve

log = logging.getLogger(__name__)


def parse_backend(text: str) -> str:
    value = text.strip().lower()
    if value not in BACKEND_KINDS:
        raise ValueError(f"unknown backend {text!r}; choose {' or '.join(BACKEND_KINDS)}")
    return value


@dataclass(frozen=True)
class BackendSettings:
    """Which generation backend a sampler or principle generator runs on, and how."""

    backend: str = field(
        default="embedded",
        metadata={"help": "generation backend: embedded | tgi", "parse": parse_backend},
    )
    tgi_url: tuple[str, ...] = field(
        default=(), metadata={"help": "TGI endpoint URL(s), comma-separated (--backend tgi)"}
    )
    tgi_max_in_flight: int | None = field(
        default=None, metadata={"help": "in-flight TGI requests per endpoint (max: /info)"}
    )
    tgi_timeout_s: float = field(
        default=300.0, metadata={"help": "longest TGI call (the caller's deadline is shorter)"}
    )
    health_interval_s: float = field(
        default=5.0, metadata={"help": "how often readiness re-checks the backend"}
    )


@dataclass(frozen=True)
class BackendServiceSettings:
    """A principle generator's or a sampler's settings."""

    server: ServerSettings
    model: EmbeddedSettings = field(default_factory=EmbeddedSettings)
    backend: BackendSettings = field(default_factory=BackendSettings)
    template: str = DEFAULT_TEMPLATE
    limits: Limits = field(default_factory=Limits)
    log_level: str = "INFO"
    concurrency: int | None = None  # samplers: generations at once (None: backend capacity)

    @property
    def defaults(self) -> Defaults:
        """Request defaults for callers that leave sampling fields unset: the decoding profile
        of this service's backend (grm.core.decoding; the aggregator sends every field)."""
        return Defaults.for_profile(profile_for_backend(self.backend.backend))


_MODEL_FLAGS = ("model_path", "n_ctx", "n_threads")


def backend_service_options(default_port: int, *extra: Option) -> list[Option]:
    """The flags of a backend service: server, model, backend, template, limits, `extra`."""
    return [
        *server_options(default_port),
        *dataclass_options(EmbeddedSettings, only=_MODEL_FLAGS),
        Option("--template", str, DEFAULT_TEMPLATE, "prompt template version"),
        *dataclass_options(BackendSettings),
        *dataclass_options(
            Limits, only=("max_new_tokens",), flags={"max_new_tokens": "--max-new-tokens-limit"}
        ),
        *extra,
    ]


def build_backend_service_settings(
    args: argparse.Namespace, environ: Mapping[str, str], options: Sequence[Option]
) -> BackendServiceSettings:
    """Settings from flags > environment > defaults; `--backend tgi` needs `--tgi-url`."""
    v = resolve(args, options, environ)
    backend = build_dataclass(BackendSettings, v)
    if backend.backend == "tgi" and not backend.tgi_url:
        raise SystemExit("grm: error: --backend tgi needs --tgi-url (or GRM_TGI_URL)")
    return BackendServiceSettings(
        server=server_settings(v, environ),
        model=build_dataclass(EmbeddedSettings, v, only=_MODEL_FLAGS),
        backend=backend,
        template=v["template"],
        limits=build_dataclass(
            Limits, v, only=("max_new_tokens",), flags={"max_new_tokens": "--max-new-tokens-limit"}
        ),
        log_level=v["log_level"],
        concurrency=v.get("concurrency"),
    )


async def run_backend_service(
    settings: BackendServiceSettings,
    make_server: Callable[[GenerationBackend, TemplateSet], GrmServer],
) -> None:
    """Serve until SIGTERM; health is SERVING while the backend is (loaded / TGI healthy)."""
    backend = build_backend(settings.backend, settings.model)
    server = make_server(backend, load_templates(settings.template))
    life = BackendLifecycle(backend, server, health_interval_s=settings.backend.health_interval_s)
    await serve(server, warm_up=life.warm_up, close=life.close)


def grpc_server(
    settings: ServerSettings, add: Callable[[Any, grpc.aio.Server], None], servicer: Any, name: str
) -> GrmServer:
    """A GrmServer serving one servicer (`add` is the generated add_*Servicer_to_server)."""
    return GrmServer(settings, register=[lambda s: add(servicer, s)], service_names=[name])


class Readiness(Protocol):
    async def set_serving(self, serving: bool) -> None: ...


def build_backend(settings: BackendSettings, model: Any) -> GenerationBackend:
    """An unstarted backend: TGI from `settings`, else embedded from `model` (EmbeddedSettings)."""
    if settings.backend == "tgi":
        return make_backend(
            "tgi",
            tgi_url=settings.tgi_url,
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
    """`warm_up` and `close` for grm.rpc.server.serve, plus the readiness watcher."""

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
        self.serving = True  # grm.rpc.server.serve turns SERVING when this returns
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
