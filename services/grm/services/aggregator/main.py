"""`grm serve aggregator`: the RewardService front door over remote samplers.

Caching: samples, principle sets and final results go through grm.cache — Redis
with `--redis-url` (GRM_REDIS_URL; GRM_REDIS_PASSWORD, GRM_CACHE_PREFIX), else a bounded
in-memory LRU; `--cache false` (GRM_CACHE) turns it off. Redis down = slower, never an error.

OpenRLHF (grm.services.aggregator.http_rm): `--http-port` (GRM_HTTP_PORT; 0 = off) also serves
`POST /get_reward` over HTTP, scoring through this aggregator's own RewardService;
`--http-group` scores the responses of one prompt together, `--http-group-size` at a time.

Sampler pool (grm.services.aggregator.discovery): `--sampler-discovery kubernetes`
(GRM_SAMPLER_DISCOVERY) follows the ready endpoints of `--sampler-service` in
`--sampler-namespace` (default: the pod's own) through its EndpointSlices; `--samplers`, if
given, is the set used until the first list arrives (and while the API never answers).

Readiness (grm.rpc.health.ReadinessWatcher): the front door is SERVING only while a sampler
answers its health check (and the principle generator too when the default principle mode is
separate); every `--readiness-interval-s` the samplers are asked again, with their model, and
health flips both ways. It first turns SERVING once the samplers said which model they serve,
so the first request after a restart finds what other aggregators cached.

Security (grm.rpc.security): `--upstream-tls-*` and `--upstream-auth-token-file` say how the
aggregator dials samplers and principle generators (the token defaults to its own); the HTTP
endpoint's loopback client dials this server with the same TLS settings and its own token.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from grm.backends.base import GenerationBackend
from grm.cache import (
    CacheSettings,
    CachingPrincipleSource,
    CachingSampleSource,
    GrmCache,
    ResultCache,
    build_cache,
)
from grm.client import AsyncGrmClient
from grm.core.decoding import SERVED, parse_profile
from grm.core.planner import KPlanner
from grm.core.templates import DEFAULT_TEMPLATE, load_templates
from grm.core.types import PrincipleMode
from grm.core.validation import Defaults, Limits
from grm.metarm import make_meta_rm
from grm.rpc.health import ReadinessWatcher
from grm.rpc.options import (
    UPSTREAM_OPTIONS,
    Option,
    add_options,
    build_dataclass,
    dataclass_options,
    parse_bool,
    resolve,
    server_options,
    server_settings,
    upstream_security,
)
from grm.rpc.security import PLAINTEXT, ClientSecurity
from grm.rpc.server import GrmServer, ServerSettings, serve, server_token
from grm.scoring.pipeline import PipelineSettings, ScoringPipeline
from grm.services.aggregator.admission import Admission, AdmissionLimits
from grm.services.aggregator.channel import DEFAULT_WRITE_INTERVAL_S
from grm.services.aggregator.discovery import EndpointSliceWatcher, parse_discovery, pod_namespace
from grm.services.aggregator.http_rm import HttpRmSettings, RewardHttpApp
from grm.services.aggregator.pool import RemotePrincipleSource, RemoteSamplerPool
from grm.services.aggregator.scorer import RewardScorer
from grm.services.aggregator.service import RewardServicer
from grm.v1 import reward_pb2, reward_pb2_grpc

DEFAULT_PORT = 50051
_D = Defaults()
LIMIT_FLAGS = {"max_new_tokens": "--max-new-tokens-limit"}


def _help(text: str, **extra: Any) -> dict[str, Any]:
    return {"help": text, **extra}


@dataclass(frozen=True)
class AggregatorSettings:
    server: ServerSettings
    samplers: tuple[str, ...] = field(
        default=(), metadata=_help("sampler addresses, comma-separated (static: required)")
    )
    # "kubernetes": the pool follows the Service's ready endpoints; `samplers` is the start set.
    sampler_discovery: str = field(
        default="static",
        metadata=_help(
            "sampler pool: static (--samplers) | kubernetes (the Service's EndpointSlices)",
            parse=parse_discovery,
        ),
    )
    sampler_service: str = field(
        default="", metadata=_help("kubernetes discovery: the samplers' headless Service")
    )
    sampler_namespace: str = "default"  # --sampler-namespace (default: the pod's own)
    principles: tuple[str, ...] = field(
        default=(), metadata=_help("principle generator addresses (separate mode)")
    )
    template: str = field(
        default=DEFAULT_TEMPLATE, metadata=_help("prompt template version (meta RM prompts)")
    )
    meta_rm: str = field(
        default="agreement", metadata=_help("meta RM: agreement | llm | http | none")
    )
    meta_rm_url: str | None = field(
        default=None,
        metadata=_help("http meta RM: vLLM .../pooling or .../classify, or TEI .../predict URL"),
    )
    meta_rm_model: str = field(
        default="", metadata=_help("http meta RM: model name sent to /classify")
    )
    meta_rm_label: str | None = field(
        default=None, metadata=_help("http meta RM: the /predict label to use")
    )
    meta_rm_chat_template: str | None = field(
        default=None,
        metadata=_help("http meta RM: its chat template (Jinja file); needed for TEI /predict"),
    )
    meta_model_path: str | None = field(
        default=None, metadata=_help("llm meta RM: GGUF file (default: SmolLM2-135M)")
    )
    max_attempts: int = field(
        default=3, metadata=_help("tries per sample index (first draw + re-samples)")
    )
    batch_concurrency: int = field(default=8, metadata=_help("ScoreBatch items scored at once"))
    max_batch_items: int = field(default=256, metadata=_help("largest ScoreBatch"))
    readiness_interval_s: float = field(
        default=1.0,
        metadata=_help("how often readiness re-checks the samplers (and principle generator)"),
    )
    sample_channel: bool = field(
        default=True,
        metadata=_help(
            "send each sampler its share of a request as a job on one long-lived SampleChannel "
            "call per sampler; false: one SampleStream call per share (the older protocol)"
        ),
    )
    channel_write_interval_ms: float = field(
        default=1000 * DEFAULT_WRITE_INTERVAL_S,
        metadata=_help(
            "SampleChannel writes to a sampler at most this often: under load the jobs "
            "started meanwhile share one message (less CPU per sample); 0: every job at once"
        ),
    )
    limits: Limits = field(default_factory=Limits)
    defaults: Defaults = field(default_factory=Defaults)
    log_level: str = "INFO"
    # None: no cache (the CLI sets one unless --cache false: in-memory without --redis-url).
    cache: CacheSettings | None = None
    # None: no OpenRLHF HTTP endpoint (the CLI sets one when --http-port is not 0).
    http: HttpRmSettings | None = None
    admission: AdmissionLimits = field(default_factory=AdmissionLimits)
    # How samplers and principle generators are dialled (TLS, client cert, bearer token).
    upstream: ClientSecurity = PLAINTEXT


# AggregatorSettings fields that are one flag each (the nested ones have their own options).
FLAT_FIELDS = (
    "samplers",
    "sampler_discovery",
    "sampler_service",
    "principles",
    "template",
    "meta_rm",
    "meta_rm_url",
    "meta_rm_model",
    "meta_rm_label",
    "meta_rm_chat_template",
    "meta_model_path",
    "max_attempts",
    "batch_concurrency",
    "max_batch_items",
    "readiness_interval_s",
    "sample_channel",
    "channel_write_interval_ms",
)
OPTIONS = [
    *server_options(DEFAULT_PORT),
    *dataclass_options(AggregatorSettings, only=FLAT_FIELDS[:3]),
    Option("--sampler-namespace", str, None, "kubernetes discovery: its namespace (default: own)"),
    *dataclass_options(AggregatorSettings, only=FLAT_FIELDS[3:]),
    *dataclass_options(AdmissionLimits),
    *dataclass_options(Limits, flags=LIMIT_FLAGS),
    Option("--default-k", int, _D.k, "k when a request leaves it unset"),
    Option(
        "--decoding",
        parse_profile,
        SERVED,
        "decoding defaults of the samplers' backend: served (an engine: the paper's) | embedded",
    ),
    Option("--default-max-new-tokens", int, None, "max_new_tokens default (default: profile's)"),
    Option("--default-temperature", float, None, "temperature default (default: profile's)"),
    Option("--cache", parse_bool, True, "cache samples, principle sets and results"),
    Option("--redis-url", str, None, "cache in Redis (redis:// or rediss://); default in-memory"),
    Option("--http-port", int, 0, "OpenRLHF POST /get_reward on this HTTP port (0 = off)"),
    Option("--http-group", parse_bool, True, "/get_reward: score one prompt's responses together"),
    Option("--http-group-size", int, 8, "/get_reward: responses per Score (<= --max-responses)"),
    Option(
        "--http-labels-as-reference",
        parse_bool,
        False,
        "/get_reward: show each query's label to the judge as its reference answer",
    ),
    *UPSTREAM_OPTIONS,
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_options(parser, OPTIONS)


def build_settings(args: argparse.Namespace, environ: Mapping[str, str]) -> AggregatorSettings:
    v = resolve(args, OPTIONS, environ)
    kubernetes = v["sampler_discovery"] == "kubernetes"
    if kubernetes and not v["sampler_service"]:
        raise SystemExit(
            "grm: error: --sampler-discovery kubernetes needs --sampler-service "
            "(or GRM_SAMPLER_SERVICE)"
        )
    if not kubernetes and not v["samplers"]:
        raise SystemExit("grm: error: the aggregator needs --samplers (or GRM_SAMPLERS)")
    server = server_settings(v, environ)
    upstream = upstream_security(v, environ, server.auth_token, server.auth_token_file)
    if v["http_port"] and server.tls is not None and not upstream.tls:
        raise SystemExit(
            "grm: error: --http-port with --tls-cert needs --upstream-tls-ca: the endpoint's "
            "loopback client verifies this server with it"
        )
    return build_dataclass(
        AggregatorSettings,
        v,
        only=FLAT_FIELDS,
        server=server,
        sampler_namespace=v["sampler_namespace"] or (pod_namespace() if kubernetes else "default"),
        limits=build_dataclass(Limits, v, flags=LIMIT_FLAGS),
        defaults=replace(
            Defaults.for_profile(
                v["decoding"],
                temperature=v["default_temperature"],
                max_new_tokens=v["default_max_new_tokens"],
            ),
            k=v["default_k"],
        ),
        log_level=v["log_level"],
        cache=CacheSettings.from_env(environ, redis_url=v["redis_url"]) if v["cache"] else None,
        http=_http_settings(v, server),
        admission=build_dataclass(AdmissionLimits, v),
        upstream=upstream,
    )


def _http_settings(v: Mapping[str, Any], server: ServerSettings) -> HttpRmSettings | None:
    """The /get_reward endpoint, secured like the gRPC port (its TLS and its token)."""
    if not v["http_port"]:
        return None
    if not 1 <= v["http_group_size"] <= v["max_responses"]:
        raise SystemExit(
            f"grm: error: --http-group-size must be 1..{v['max_responses']} (--max-responses)"
        )
    return HttpRmSettings(
        host=v["host"],
        port=v["http_port"],
        group=v["http_group"],
        group_size=v["http_group_size"],
        batch_items=v["max_batch_items"],
        tls=server.tls,
        token=server_token(server) if server.auth_token else None,
        labels_as_reference=v["http_labels_as_reference"],
    )


@dataclass
class Aggregator:
    """The assembled front door: server plus what must start and close with it."""

    server: GrmServer
    pool: RemoteSamplerPool
    principles: RemotePrincipleSource | None
    meta_backend: GenerationBackend | None
    cache: GrmCache | None = None
    http_settings: HttpRmSettings | None = None
    http: RewardHttpApp | None = None
    upstream: ClientSecurity = PLAINTEXT
    discovery: EndpointSliceWatcher | None = None  # kubernetes discovery of the sampler pool
    readiness_interval_s: float = 1.0
    principles_required: bool = False  # separate mode by default: readiness needs them
    readiness: ReadinessWatcher | None = None

    async def probe(self) -> bool:
        """Ask the samplers (and principle generators) for health and model: ready when a
        sampler serves and, if the default mode needs them, a principle generator does."""
        timeout = max(0.5, self.readiness_interval_s)
        checks = [self.pool.probe(timeout)]
        if self.principles is not None:
            checks.append(self.principles.probe(timeout))
        await asyncio.gather(*checks)
        principles_ok = self.principles is not None and self.principles.ready
        return self.pool.ready and (principles_ok or not self.principles_required)

    async def warm_up(self) -> None:
        """Start what serves with the front door and check its dependencies once; then keep
        its health equal to theirs (run() also waits until they are ready)."""
        if self.discovery is not None:
            await self.discovery.start()
        if self.meta_backend is not None:
            await self.meta_backend.start()
        if self.http_settings is not None and self.http is None:
            self.http = RewardHttpApp(
                AsyncGrmClient(
                    _loopback(self.server),
                    timeout=self.http_settings.timeout_s,
                    security=_loopback_security(self.server.settings, self.upstream),
                ),
                self.http_settings,
            )
            await self.http.start()
        if self.readiness is None:
            self.readiness = ReadinessWatcher(
                self.probe, self.server, interval_s=self.readiness_interval_s, what="samplers"
            )
            await self.readiness.check()
            self.readiness.start()

    async def start(self) -> None:
        """serve()'s warm-up: NOT_SERVING until a sampler answers and said which model it
        serves (so cache keys are right from the first request)."""
        await self.warm_up()
        assert self.readiness is not None
        await self.readiness.wait_ready()

    async def close(self) -> None:
        if self.readiness is not None:
            await self.readiness.close()
        if self.http is not None:
            await self.http.close()
        if self.discovery is not None:
            await self.discovery.close()  # before the pool: no updates into a closed pool
        await self.pool.close()
        if self.principles is not None:
            await self.principles.close()
        if self.meta_backend is not None:
            await self.meta_backend.close()
        if self.cache is not None:
            await self.cache.close()


def build(
    settings: AggregatorSettings,
    *,
    meta_backend_factory: Callable[[], GenerationBackend] | None = None,
    kube_api_client: Any | None = None,
) -> Aggregator:
    """Wire pool → pipeline → scorer → servicer → server (no I/O until started)."""
    templates = load_templates(settings.template)
    pool = RemoteSamplerPool(
        settings.samplers,
        max_message_mb=settings.server.max_message_mb,
        security=settings.upstream,
        use_channel=settings.sample_channel,
        channel_write_interval_s=settings.channel_write_interval_ms / 1000,
    )
    principles = (
        RemotePrincipleSource(
            settings.principles,
            max_message_mb=settings.server.max_message_mb,
            security=settings.upstream,
        )
        if settings.principles
        else None
    )
    meta_backend: GenerationBackend | None = None
    if settings.meta_rm == "llm":
        if meta_backend_factory is None:
            from grm.backends.embedded import EmbeddedBackend, EmbeddedSettings

            meta_backend = EmbeddedBackend(EmbeddedSettings(model_path=settings.meta_model_path))
        else:
            meta_backend = meta_backend_factory()
    meta_rm = make_meta_rm(
        settings.meta_rm,
        backend=meta_backend,
        templates=templates,
        url=settings.meta_rm_url,
        model=settings.meta_rm_model,
        label=settings.meta_rm_label,
        chat_template=settings.meta_rm_chat_template,
    )
    if settings.cache is None:
        cache = None
        pipeline = ScoringPipeline(
            pool,
            principles=principles,
            meta_rm=meta_rm,
            settings=PipelineSettings(max_attempts=settings.max_attempts),
        )
        scorer = RewardScorer(
            pipeline,
            batch_concurrency=settings.batch_concurrency,
            planner=KPlanner(pool.latency),
            pool_load=pool.load,
        )
    else:
        cache = build_cache(settings.cache)
        cached = CachingPrincipleSource(principles, cache) if principles is not None else None
        pipeline = ScoringPipeline(
            CachingSampleSource(pool, cache),
            principles=cached,
            meta_rm=meta_rm,
            settings=PipelineSettings(max_attempts=settings.max_attempts),
        )
        scorer = RewardScorer(
            pipeline,
            batch_concurrency=settings.batch_concurrency,
            results=ResultCache(cache, meta_rm=_meta_rm_identity(settings) if meta_rm else ""),
            principles_model=(lambda: cached.info) if cached is not None else None,
            planner=KPlanner(pool.latency),
            pool_load=pool.load,
        )
    servicer = RewardServicer(
        scorer,
        limits=settings.limits,
        defaults=settings.defaults,
        max_batch_items=settings.max_batch_items,
        admission=Admission(settings.admission),
    )
    server = GrmServer(
        settings.server,
        register=[lambda s: reward_pb2_grpc.add_RewardServiceServicer_to_server(servicer, s)],
        service_names=[reward_pb2.DESCRIPTOR.services_by_name["RewardService"].full_name],
    )
    return Aggregator(
        server,
        pool,
        principles,
        meta_backend,
        cache,
        http_settings=settings.http,
        upstream=settings.upstream,
        discovery=_discovery(settings, pool, kube_api_client),
        readiness_interval_s=settings.readiness_interval_s,
        principles_required=settings.defaults.principle_mode
        in (PrincipleMode.SEPARATE, PrincipleMode.SEPARATE_QUERY),
    )


def _discovery(
    settings: AggregatorSettings, pool: RemoteSamplerPool, api_client: Any | None
) -> EndpointSliceWatcher | None:
    """With kubernetes discovery, a watcher that keeps the pool's address set current."""
    if settings.sampler_discovery != "kubernetes":
        return None
    return EndpointSliceWatcher(
        settings.sampler_service,
        settings.sampler_namespace,
        pool.update_addresses,
        api_client=api_client,
    )


def _loopback(server: GrmServer) -> str:
    """This server's own address as a client dials it (a wildcard host means loopback)."""
    host = server.settings.host
    if host in ("", "0.0.0.0", "::", "[::]"):
        host = "127.0.0.1"
    return f"{host}:{server.port}"


def _loopback_security(server: ServerSettings, upstream: ClientSecurity) -> ClientSecurity:
    """The loopback client: this server's TLS (verified as upstreams are) and its own token."""
    base = upstream if server.tls is not None else PLAINTEXT
    return ClientSecurity(
        tls=base.tls,
        ca_pem=base.ca_pem,
        cert_pem=base.cert_pem,
        key_pem=base.key_pem,
        server_name=base.server_name,
        token=server.auth_token,
        token_file=server.auth_token_file,
    )


def _meta_rm_identity(settings: AggregatorSettings) -> str:
    """What distinguishes one meta RM from another in a cached meta-vote result."""
    if settings.meta_rm == "http":
        parts = [
            settings.meta_rm_url or "",
            settings.meta_rm_model,
            settings.meta_rm_label or "",
            settings.meta_rm_chat_template or "",
        ]
    elif settings.meta_rm == "llm":
        parts = [settings.meta_model_path or "default", settings.template]
    else:
        parts = []
    return ":".join([settings.meta_rm, *parts])


async def run(settings: AggregatorSettings, **_: Any) -> None:
    """Serve until SIGTERM."""
    agg = build(settings)
    warm: Callable[[], Awaitable[None]] = agg.start
    await serve(agg.server, warm_up=warm, close=agg.close)
