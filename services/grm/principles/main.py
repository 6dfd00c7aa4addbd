"""`grm serve principles`: the principle generator (embedded llama.cpp or TGI backend)."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from grm.backends.embedded import EmbeddedSettings
from grm.backends.lifecycle import BackendLifecycle, build_backend
from grm.core.templates import load_templates
from grm.core.validation import Limits
from grm.principles.logic import PrincipleGenerator
from grm.principles.service import PrincipleServicer
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
from grm.v1 import principle_pb2, principle_pb2_grpc

DEFAULT_PORT = 50052
OPTIONS = [
    *server_options(DEFAULT_PORT),
    *MODEL_OPTIONS,
    *BACKEND_OPTIONS,
    Option("--max-new-tokens-limit", int, Limits.max_new_tokens, "largest max_new_tokens"),
]


@dataclass(frozen=True)
class PrincipleSettings:
    server: ServerSettings
    model: EmbeddedSettings
    template: str
    limits: Limits
    log_level: str
    backend: BackendSettings = field(default_factory=BackendSettings)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_options(parser, OPTIONS)


def build_settings(args: argparse.Namespace, environ: Mapping[str, str]) -> PrincipleSettings:
    v = resolve(args, OPTIONS, environ)
    return PrincipleSettings(
        server=server_settings(v, environ),
        model=EmbeddedSettings(
            model_path=v["model_path"], n_ctx=v["n_ctx"], n_threads=v["n_threads"]
        ),
        template=v["template"],
        limits=Limits(max_new_tokens=v["max_new_tokens_limit"]),
        log_level=v["log_level"],
        backend=backend_settings(v),
    )


def build_server(settings: PrincipleSettings, generator: PrincipleGenerator) -> GrmServer:
    servicer = PrincipleServicer(generator, limits=settings.limits)
    return GrmServer(
        settings.server,
        register=[lambda s: principle_pb2_grpc.add_PrincipleServiceServicer_to_server(servicer, s)],
        service_names=[principle_pb2.DESCRIPTOR.services_by_name["PrincipleService"].full_name],
    )


async def run(settings: PrincipleSettings, **_: Any) -> None:
    """Serve until SIGTERM; health is SERVING while the backend is (loaded / TGI healthy)."""
    backend = build_backend(settings.backend, settings.model)
    generator = PrincipleGenerator(backend, load_templates(settings.template))
    server = build_server(settings, generator)
    life = BackendLifecycle(backend, server, health_interval_s=settings.backend.health_interval_s)
    await serve(server, warm_up=life.warm_up, close=life.close)
