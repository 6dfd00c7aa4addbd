"""The shared bootstrap of the two backend services (principle generator and critique sampler).

Both run one generation backend behind one gRPC servicer: the same settings (server, model,
backend, template, limits), the same backend lifecycle and the same serve loop; only the
servicer differs. A generation backend inside a service is built from the flags, started,
watched and closed here.

Readiness follows the backend. The embedded model is ready once loaded. A TGI backend is
ready while one of its endpoints answers `/health` (an OpenAI-compatible backend: `/v1/models`):
`warm_up` waits (NOT_SERVING, retrying) until one does — a sampler pod may start before its
engine has loaded the model — and then a watcher polls `backend.healthy()` every
`health_interval_s` and flips the service's gRPC health between SERVING and NOT_SERVING, so
Kubernetes routes no traffic to a sampler whose engine is gone.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc

from grm.backends import BACKEND_KINDS, make_backend
from grm.backends.base import GenerationBackend
from grm.backends.dialects import ENGINES, dialect
from grm.backends.embedded import EmbeddedSettings
from grm.core.decoding import profile_for_backend
from grm.core.errors import UnavailableError
from grm.core.templates import DEFAULT_TEMPLATE, TemplateSet, load_templates
from grm.core.validation import Defaults, Limits
from grm.rpc.health import Readiness, ReadinessWatcher
from grm.rpc.options import (
    Option,
    build_dataclass,
    dataclass_options,
    resolve,
    server_options,
    server_settings,
)
from grm.rpc.security import SecurityConfigError, resolve_token
from grm.rpc.server import GrmServer, ServerSettings, serve

log = logging.getLogger(__name__)


def parse_backend(text: str) -> str:
    value = text.strip().lower()
    if value not in BACKEND_KINDS:
        raise ValueError(f"unknown backend {text!r}; choose {' or '.join(BACKEND_KINDS)}")
    return value


def parse_engine(text: str) -> str:
    """An OpenAI-compatible engine's name (vllm | sglang | llamacpp | tgi)."""
    return dialect(text).name


@dataclass(frozen=True)
class BackendSettings:
    """Which generation backend a sampler or principle generator runs on, and how."""

    backend: str = field(
        default="embedded",
        metadata={"help": "generation backend: embedded | tgi | openai", "parse": parse_backend},
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
    openai_url: tuple[str, ...] = field(
        default=(),
        metadata={
            "help": "OpenAI-compatible base URL(s) (.../v1), comma-separated (--backend openai)"
        },
    )
    engine: str | None = field(
        default=None,
        metadata={
            "help": f"the engine behind --openai-url: {' | '.join(ENGINES)} (default: detected)",
            "parse": parse_engine,
        },
    )
    openai_api_key_file: str | None = field(
        default=None,
        metadata={"help": "file holding the engine's API key (or GRM_OPENAI_API_KEY)"},
    )
    openai_max_in_flight: int | None = field(
        default=None, metadata={"help": "in-flight requests per engine (max: what it reports)"}
    )
    openai_timeout_s: float = field(
        default=300.0, metadata={"help": "longest engine call (the caller's deadline is shorter)"}
    )
    health_interval_s: float = field(
        default=5.0, metadata={"help": "how often readiness re-checks the backend"}
    )
    prefix_locality: bool = field(
        default=True,
        metadata={
            "help": "send one item's samples to the same engine endpoint while it has a free "
            "slot (its prompt prefix is computed once and then cached); false: least loaded"
        },
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
    channel_write_interval_ms: float | None = None  # samplers: SampleChannel reply spacing
    openai_api_key: str | None = field(default=None, repr=False)  # read once at start-up

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
    """Settings from flags > environment > defaults; `--backend tgi` needs `--tgi-url`,
    `--backend openai` needs `--openai-url`; the API key file is read here, once."""
    v = resolve(args, options, environ)
    backend = build_dataclass(BackendSettings, v)
    if backend.backend == "tgi" and not backend.tgi_url:
        raise SystemExit("grm: error: --backend tgi needs --tgi-url (or GRM_TGI_URL)")
    if backend.backend == "openai" and not backend.openai_url:
        raise SystemExit("grm: error: --backend openai needs --openai-url (or GRM_OPENAI_URL)")
    try:
        api_key = resolve_token(
            backend.openai_api_key_file,
            environ,
            file_option="--openai-api-key-file",
            env_name="GRM_OPENAI_API_KEY",
        )
    except SecurityConfigError as exc:
        raise SystemExit(f"grm: error: {exc}") from None
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
        channel_write_interval_ms=v.get("channel_write_interval_ms"),
        openai_api_key=api_key,
    )


async def run_backend_service(
    settings: BackendServiceSettings,
    make_server: Callable[[GenerationBackend, TemplateSet], GrmServer],
) -> None:
    """Serve until SIGTERM; health is SERVING while the backend is (loaded / TGI healthy)."""
    backend = build_backend(settings.backend, settings.model, api_key=settings.openai_api_key)
    server = make_server(backend, load_templates(settings.template))
    life = BackendLifecycle(backend, server, health_interval_s=settings.backend.health_interval_s)
    await serve(server, warm_up=life.warm_up, close=life.close)


def grpc_server(
    settings: ServerSettings, add: Callable[[Any, grpc.aio.Server], None], servicer: Any, name: str
) -> GrmServer:
    """A GrmServer serving one servicer (`add` is the generated add_*Servicer_to_server)."""
    return GrmServer(settings, register=[lambda s: add(servicer, s)], service_names=[name])


def build_backend(
    settings: BackendSettings, model: Any, *, api_key: str | None = None
) -> GenerationBackend:
    """An unstarted backend: TGI or an OpenAI-compatible engine from `settings`, else embedded
    from `model` (EmbeddedSettings)."""
    if settings.backend == "openai":
        return make_backend(
            "openai",
            openai_url=settings.openai_url,
            engine=settings.engine,
            api_key=api_key,
            max_in_flight=settings.openai_max_in_flight,
            request_timeout_s=settings.openai_timeout_s,
            prefix_locality=settings.prefix_locality,
        )
    if settings.backend == "tgi":
        return make_backend(
            "tgi",
            tgi_url=settings.tgi_url,
            max_in_flight=settings.tgi_max_in_flight,
            request_timeout_s=settings.tgi_timeout_s,
            prefix_locality=settings.prefix_locality,
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
        self.start_retry_s = start_retry_s
        self.watcher = ReadinessWatcher(
            self._healthy, server, interval_s=health_interval_s, what="backend"
        )

    @property
    def serving(self) -> bool:
        return bool(self.watcher.serving)

    @property
    def _probe(self) -> Callable[[], Awaitable[bool]] | None:
        probe = getattr(self.backend, "healthy", None)
        return probe if callable(probe) else None

    async def _healthy(self) -> bool:
        probe = self._probe
        return True if probe is None else bool(await probe())

    async def warm_up(self) -> None:
        """Start the backend, retrying while it is unavailable; then watch its health."""
        while True:
            try:
                await self.backend.start()
                break
            except UnavailableError as exc:
                log.warning("backend not available yet (%s); retrying", exc)
                await asyncio.sleep(self.start_retry_s)
        self.watcher.serving = True  # grm.rpc.server.serve turns SERVING when this returns
        if self._probe is not None:
            self.watcher.start()

    async def check(self) -> bool:
        """Probe the backend once and make the service's health follow it; returns healthy."""
        return await self.watcher.check()

    async def close(self) -> None:
        await self.watcher.close()
        await self.backend.close()
