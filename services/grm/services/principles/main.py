"""`grm serve principles`: the principle generator (embedded llama.cpp or TGI backend)."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from grm.backends.base import GenerationBackend
from grm.core.templates import TemplateSet
from grm.rpc.options import add_options
from grm.rpc.server import GrmServer
from grm.scoring.principles import PrincipleGenerator
from grm.services.bootstrap import (
    BackendServiceSettings,
    backend_service_options,
    build_backend_service_settings,
    grpc_server,
    run_backend_service,
)
from grm.services.principles.service import PrincipleServicer
from grm.v1 import principle_pb2, principle_pb2_grpc

DEFAULT_PORT = 50052
OPTIONS = backend_service_options(DEFAULT_PORT)
SERVICE = principle_pb2.DESCRIPTOR.services_by_name["PrincipleService"].full_name
PrincipleSettings = BackendServiceSettings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_options(parser, OPTIONS)


def build_settings(args: argparse.Namespace, environ: Mapping[str, str]) -> PrincipleSettings:
    return build_backend_service_settings(args, environ, OPTIONS)


def build_server(settings: PrincipleSettings, generator: PrincipleGenerator) -> GrmServer:
    servicer = PrincipleServicer(generator, limits=settings.limits, defaults=settings.defaults)
    add = principle_pb2_grpc.add_PrincipleServiceServicer_to_server
    return grpc_server(settings.server, add, servicer, SERVICE)


async def run(settings: PrincipleSettings, **_: Any) -> None:
    """Serve until SIGTERM; health is SERVING while the backend is (loaded / TGI healthy)."""

    def make(backend: GenerationBackend, templates: TemplateSet) -> GrmServer:
        return build_server(settings, PrincipleGenerator(backend, templates))

    await run_backend_service(settings, make)
