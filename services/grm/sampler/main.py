"""`grm serve sampler`: one critique sampler pod (embedded backend)."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from grm.backends.embedded import EmbeddedBackend, EmbeddedSettings
from grm.core.templates import load_templates
from grm.core.validation import Limits
from grm.sampler.logic import CritiqueSampler
from grm.sampler.service import CritiqueServicer
from grm.server import GrmServer, ServerSettings, serve
from grm.settings import (
    MODEL_OPTIONS,
    Option,
    add_options,
    resolve,
    server_options,
    server_settings,
)
from grm.v1 import critique_pb2, critique_pb2_grpc

DEFAULT_PORT = 50053
OPTIONS = [
    *server_options(DEFAULT_PORT),
    *MODEL_OPTIONS,
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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_options(parser, OPTIONS)


def build_settings(args: argparse.Namespace, environ: Mapping[str, str]) -> SamplerSettings:
    v = resolve(args, OPTIONS, environ)
    return SamplerSettings(
        server=server_settings(v),
        model=EmbeddedSettings(
            model_path=v["model_path"], n_ctx=v["n_ctx"], n_threads=v["n_threads"]
        ),
        template=v["template"],
        concurrency=v["concurrency"],
        limits=Limits(max_new_tokens=v["max_new_tokens_limit"]),
        log_level=v["log_level"],
    )


def build_server(settings: SamplerSettings, sampler: CritiqueSampler) -> GrmServer:
    servicer = CritiqueServicer(sampler, limits=settings.limits)
    return GrmServer(
        settings.server,
        register=[lambda s: critique_pb2_grpc.add_CritiqueServiceServicer_to_server(servicer, s)],
        service_names=[critique_pb2.DESCRIPTOR.services_by_name["CritiqueService"].full_name],
    )


async def run(settings: SamplerSettings, **_: Any) -> None:
    """Serve until SIGTERM; health turns SERVING once the model is loaded."""
    backend = EmbeddedBackend(settings.model)
    sampler = CritiqueSampler(
        backend, load_templates(settings.template), concurrency=settings.concurrency
    )
    server = build_server(settings, sampler)
    await serve(server, warm_up=backend.start, close=backend.close)
