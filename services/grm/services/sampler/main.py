"""`grm serve sampler`: one critique sampler pod (embedded llama.cpp or TGI backend)."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from grm.backends.base import GenerationBackend
from grm.core.templates import TemplateSet
from grm.rpc.options import Option, add_options
from grm.rpc.server import GrmServer
from grm.scoring.critique import CritiqueSampler
from grm.services.bootstrap import (
    BackendServiceSettings,
    backend_service_options,
    build_backend_service_settings,
    grpc_server,
    run_backend_service,
)
from grm.services.sampler.channel import DEFAULT_WRITE_INTERVAL_S
from grm.services.sampler.service import CritiqueServicer
from grm.v1 import critique_pb2, critique_pb2_grpc

DEFAULT_PORT = 50053
OPTIONS = backend_service_options(
    DEFAULT_PORT,
    Option("--concurrency", int, None, "samples generated at once (default: backend capacity)"),
    Option(
        "--channel-write-interval-ms",
        float,
        1000 * DEFAULT_WRITE_INTERVAL_S,
        "SampleChannel replies at most this often: under load the samples finished meanwhile "
        "share one message (less CPU per sample); 0: every update at once",
    ),
)
SERVICE = critique_pb2.DESCRIPTOR.services_by_name["CritiqueService"].full_name
SamplerSettings = BackendServiceSettings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_options(parser, OPTIONS)


def build_settings(args: argparse.Namespace, environ: Mapping[str, str]) -> SamplerSettings:
    return build_backend_service_settings(args, environ, OPTIONS)


def build_server(settings: SamplerSettings, sampler: CritiqueSampler) -> GrmServer:
    servicer = CritiqueServicer(
        sampler,
        limits=settings.limits,
        defaults=settings.defaults,
        channel_write_interval_s=(
            DEFAULT_WRITE_INTERVAL_S
            if settings.channel_write_interval_ms is None
            else settings.channel_write_interval_ms / 1000
        ),
    )
    add = critique_pb2_grpc.add_CritiqueServiceServicer_to_server
    server = grpc_server(settings.server, add, servicer, SERVICE)
    server.on_drain.append(servicer.drain)
    return server


async def run(settings: SamplerSettings, **_: Any) -> None:
    """Serve until SIGTERM; health is SERVING while the backend is (loaded / TGI healthy)."""

    def make(backend: GenerationBackend, templates: TemplateSet) -> GrmServer:
        sampler = CritiqueSampler(backend, templates, concurrency=settings.concurrency)
        return build_server(settings, sampler)

    await run_backend_service(settings, make)
