"""The OpenAI-compatible dev server's CLI: `grm dev-openai`, `python -m grm_dev.devopenai`.

It takes every `grm dev-tgi` flag (engine, model, faults, latency; `--max-concurrent-requests`
is the engine's concurrency, `--max-total-tokens` its context) plus `--dialect` and the
OpenAI-side settings. `start_dev_server(...)` starts one in-process (tests, benchmarks).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from grm.rpc import loop
from grm_dev.devopenai.app import (
    DIALECTS,
    STATE,
    DevOpenAiSettings,
    DevOpenAiState,
    create_app,
)
from grm_dev.devserver import Served, run_until_signal, serve_app
from grm_dev.devtgi.engines import Engine
from grm_dev.devtgi.main import add_arguments as add_devtgi_arguments
from grm_dev.devtgi.main import build_engine
from grm_dev.devtgi.main import build_settings as build_devtgi_settings

log = logging.getLogger("grm_dev.devopenai")

DEFAULT_PORT = 8000  # vLLM's default


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `grm dev-openai` flags: `grm dev-tgi`'s, then the dialect's."""
    add_devtgi_arguments(parser)
    parser.set_defaults(port=DEFAULT_PORT)
    o = parser.add_argument_group("OpenAI-compatible dialect")
    o.add_argument("--dialect", choices=DIALECTS, default="vllm", help="the engine to speak as")
    o.add_argument("--engine-version", default=None, help="version the engine claims")
    o.add_argument("--api-key-file", default=None, help="require this file's key as Bearer")
    o.add_argument(
        "--reject-system-role",
        action="store_true",
        help="the chat template refuses system messages (as Gemma-2's does)",
    )
    o.add_argument("--no-metrics", action="store_true", help="llama.cpp without --metrics")


def build_settings(args: argparse.Namespace) -> DevOpenAiSettings:
    """Typed settings from the parsed flags (ValueError on nonsense)."""
    tgi = build_devtgi_settings(args)
    key = Path(args.api_key_file).read_text("utf-8").strip() if args.api_key_file else None
    return DevOpenAiSettings(
        dialect=args.dialect,
        model_id=args.model_id,
        version=args.engine_version,
        max_concurrent=args.max_concurrent_requests,
        context=args.max_total_tokens,
        api_key=key,
        reject_system_role=args.reject_system_role,
        metrics=not args.no_metrics,
        faults=tgi.faults,
    )


@dataclass
class DevOpenAiServer:
    """A running dev server: its base URL (`.../v1`), root URL, live state and runner."""

    url: str
    root: str
    port: int
    state: DevOpenAiState
    served: Served

    @property
    def loader(self) -> asyncio.Task[None] | None:
        return self.served.loader

    @property
    def runner(self) -> web.AppRunner:
        return self.served.runner

    async def close(self) -> None:
        await self.served.close(self.state)


async def start_dev_server(
    engine: Engine,
    settings: DevOpenAiSettings | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    wait_ready: bool = True,
) -> DevOpenAiServer:
    """Serve on host:port (0 = a free port); a client that goes away cancels its request."""
    app = create_app(engine, settings)
    state = app[STATE]
    served = await serve_app(app, state, host=host, port=port, wait_ready=wait_ready)
    return DevOpenAiServer(f"{served.root}/v1", served.root, served.port, state, served)


async def run(args: argparse.Namespace) -> None:
    """Serve until SIGINT/SIGTERM."""
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    try:
        settings = build_settings(args)
    except (ValueError, OSError) as exc:
        raise SystemExit(f"grm dev-openai: error: {exc}") from None
    server = await start_dev_server(
        build_engine(args), settings, host=args.host, port=args.port, wait_ready=False
    )
    mode = "scripted" if args.scripted else "embedded model"
    log.info("grm dev-openai (%s, %s dialect) on %s", mode, settings.dialect, server.url)
    await run_until_signal("grm dev-openai", server.served, server.close, args.port_file)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="grm dev-openai",
        description="An OpenAI-compatible dev server in a vLLM, SGLang, llama.cpp or TGI dialect.",
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        build_settings(args)
    except (ValueError, OSError) as exc:
        parser.error(str(exc))
    loop.run(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
