"""`grm serve sampler`: one critique sampler pod (embedded llama.cpp or TGI backend)."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from grm.backends.embedded import EmbeddedSettings
from grm.backends.lifecycle import BackendLifecycle, build_backend
from grm.core.templates import load_templates
from grm.core.validation import Limits
from grm.sampler.logic import CritiqueSampler
from grm.sampler.service import CritiqueServicer
from grm.server import GrmServer, ServerSettings, serve
from grm.settings import (
    BACKEND_OPTIONS,
    MODEL_OPTIONS,
    BackendSettings,
    Option,
    add_options,
    backend_settings,
    resolve,
    server_options,
    server_settings,
)
from grm.v1 import critique_pb2, critique_pb2_grpc

DEFAULT_PORT = 50053
OPTIONS = [
    *server_options(DEFAULT_PORT),
    *MODEL_OPTIONS,
    *BACKEND_OPTIONS,
    Option("--concurrency", int, None, "samples generated at once (default: backend capacity)"),
    Option("--max-new-tokens-limit", int, Limits.max_new_tokens, "largest max_new_tokens"),
]


@dataclass(frozen=True)
class SamplerSettings:
    server: ServerSettings
    model: EmbeddedSettings
    template: str
    concurrency: int | None
    limits: Limits
    log_level: str
    backend: BackendSettings = field(default_factory=BackendSettings)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_options(parser, OPTIONS)


def build_settings(args: argparse.Namespace, environ: Mapping[str, str]) -> SamplerSettings:
    v = resolve(args, OPTIONS, environ)
    return SamplerSettings(
        server=server_settings(v, environ),
        model=EmbeddedSettings(
            model_path=v["model_path"], n_ctx=v["n_ctx"], n_threads=v["n_threads"]
        ),
        template=v["template"],
        concurrency=v["concurrency"],
        limits=Limits(max_new_tokens=v["max_new_tokens_limit"]),
        log_level=v["log_level"],
        backend=backend_settings(v),
    )


def build_server(settings: SamplerSettings, sampler: CritiqueSampler) -> GrmServer:
    servicer = CritiqueServicer(sampler, limits=settings.limits)
    return GrmServer(
        settings.server,
        register=[lambda s: critique_pb2_grpc.add_CritiqueServiceServicer_to_server(servicer, s)],
        service_names=[critique_pb2.DESCRIPTOR.services_by_name["CritiqueService"].full_name],
    )


async def run(settings: SamplerSettings, **_: Any) -> None:
    """Serve until SIGTERM; health is SERVING while the backend is (loaded / TGI healthy)."""
    backend = build_backend(settings.backend, settings.model)
    sampler = CritiqueSampler(
        backend, load_templates(settings.template), concurrency=settings.concurrency
    )
    server = build_server(settings, sampler)
    life = BackendLifecycle(backend, server, health_interval_s=settings.backend.health_interval_s)
    await serve(server, warm_up=life.warm_up, close=life.close)
