"""Command line of the TGI dev server: `grm dev-tgi` / `python -m grm_dev.devtgi`.

`add_arguments(parser)` declares the flags, `run(args)` serves until SIGINT/SIGTERM, and
`main(argv)` does both; `start_dev_server(...)` starts one in-process (tests, benchmarks).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from dataclasses import dataclass

from aiohttp import web

from grm.rpc import loop
from grm_dev.devserver import Served, run_until_signal, serve_app
from grm_dev.devtgi.app import STATE, DevTgiSettings, DevTgiState, FaultSettings, create_app
from grm_dev.devtgi.engines import EmbeddedEngine, Engine, ScriptedEngine

log = logging.getLogger("grm_dev.devtgi")

DEFAULT_PORT = 3000  # TGI's router default


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `grm dev-tgi` flags."""
    p = parser
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (0 = any free port)")
    p.add_argument("--port-file", default=None, help="write the bound port to this file")
    p.add_argument(
        "--scripted",
        action="store_true",
        help="serve valid GRM outputs without a model (fault tests, benchmarks)",
    )
    p.add_argument("--model-path", default=None, help="GGUF file (default: SmolLM2-135M)")
    p.add_argument("--n-ctx", type=int, default=4096, help="model context = max_total_tokens")
    p.add_argument("--n-threads", type=int, default=None, help="llama.cpp threads")
    p.add_argument("--model-id", default=None, help="model id reported by /info")
    p.add_argument("--max-concurrent-requests", type=int, default=128, help="beyond: 429")
    p.add_argument("--max-input-tokens", type=int, default=None, help="default: total - 1")
    p.add_argument("--max-total-tokens", type=int, default=None, help="default: n_ctx (8192)")
    p.add_argument(
        "--chat-template",
        default=None,
        help="serve this chat template (a Jinja file, as in tokenizer_config.json) on "
        "/chat_tokenize instead of the engine's; a template error is TGI's 422 template_error",
    )
    p.add_argument("--bos-token", default="", help="bos_token for --chat-template")
    p.add_argument("--eos-token", default="", help="eos_token for --chat-template")
    p.add_argument(
        "--analysis-words",
        type=int,
        default=0,
        help="--scripted: pad each judgement's analysis with this many words (about two "
        "tokens each; a served GRM's critique is ~300 tokens)",
    )
    p.add_argument("--max-best-of", type=int, default=2)
    p.add_argument("--max-stop-sequences", type=int, default=4)
    f = p.add_argument_group("faults (per /generate request)")
    f.add_argument("--latency-ms", type=float, default=0.0, help="added latency (median)")
    f.add_argument("--latency-dist", choices=["fixed", "lognormal"], default="fixed")
    f.add_argument("--latency-sigma", type=float, default=0.5, help="lognormal sigma")
    f.add_argument("--error-429-rate", type=float, default=0.0, help="share answered 429")
    f.add_argument("--error-422-rate", type=float, default=0.0, help="share answered 422")
    f.add_argument("--error-500-rate", type=float, default=0.0, help="share answered 500")
    f.add_argument("--timeout-rate", type=float, default=0.0, help="share that hang")
    f.add_argument("--garbage-rate", type=float, default=0.0, help="share with no score line")
    f.add_argument("--wrong-count-rate", type=float, default=0.0, help="share with n+1 scores")
    f.add_argument("--disconnect-rate", type=float, default=0.0, help="share dropped mid-way")
    f.add_argument(
        "--fault-sequence",
        default="",
        help="faults of the first requests, comma-separated (ok,429,422,500,timeout,garbage,"
        "wrong-count,disconnect), before the rates apply",
    )
    f.add_argument("--hang-s", type=float, default=3600.0, help="how long a timeout hangs")
    f.add_argument("--fault-seed", type=int, default=None, help="seed of the fault draws")
    f.add_argument(
        "--prefix-cost-ms",
        type=float,
        default=0.0,
        help="added latency per 1,000 prompt tokens not already seen as a prefix on this "
        "server (a model of an engine's prefix cache; 0 = off)",
    )
    f.add_argument(
        "--prefix-cache-blocks",
        type=int,
        default=65_536,
        help="prefix cache size in blocks of 16 tokens (least recently used go first)",
    )
    p.add_argument("--log-level", default="INFO")


def build_settings(args: argparse.Namespace) -> DevTgiSettings:
    """Typed settings from the parsed flags (ValueError on nonsense)."""
    faults = FaultSettings(
        latency_ms=args.latency_ms,
        latency_dist=args.latency_dist,
        latency_sigma=args.latency_sigma,
        rate_429=args.error_429_rate,
        rate_422=args.error_422_rate,
        rate_500=args.error_500_rate,
        rate_timeout=args.timeout_rate,
        rate_garbage=args.garbage_rate,
        rate_wrong_count=args.wrong_count_rate,
        rate_disconnect=args.disconnect_rate,
        sequence=tuple(x.strip() for x in args.fault_sequence.split(",") if x.strip()),
        hang_s=args.hang_s,
        seed=args.fault_seed,
        prefix_cost_ms=args.prefix_cost_ms,
        prefix_cache_blocks=args.prefix_cache_blocks,
    )
    return DevTgiSettings(
        max_concurrent_requests=args.max_concurrent_requests,
        max_input_tokens=args.max_input_tokens,
        max_total_tokens=args.max_total_tokens,
        max_best_of=args.max_best_of,
        max_stop_sequences=args.max_stop_sequences,
        model_id=args.model_id,
        faults=faults,
        chat_template=args.chat_template,
        bos_token=args.bos_token,
        eos_token=args.eos_token,
    )


def build_engine(args: argparse.Namespace) -> Engine:
    if args.scripted:
        return ScriptedEngine(
            max_total_tokens=args.max_total_tokens or 8192, analysis_words=args.analysis_words
        )
    from grm.backends.embedded import EmbeddedBackend, EmbeddedSettings

    backend = EmbeddedBackend(
        EmbeddedSettings(model_path=args.model_path, n_ctx=args.n_ctx, n_threads=args.n_threads)
    )
    return EmbeddedEngine(backend)


@dataclass
class DevTgiServer:
    """A running dev server: its URL, live state and runner."""

    url: str
    port: int
    state: DevTgiState
    served: Served

    @property
    def loader(self) -> asyncio.Task[None] | None:
        return self.served.loader

    @property
    def runner(self) -> web.AppRunner:
        return self.served.runner

    async def close(self) -> None:
        """Stop serving, then release the engine (model)."""
        await self.served.close(self.state)


async def start_dev_server(
    engine: Engine,
    settings: DevTgiSettings | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    wait_ready: bool = True,
) -> DevTgiServer:
    """Serve on host:port (0 = a free port). /health answers 503 until the engine is loaded;
    with wait_ready=False the engine loads in the background."""
    app = create_app(engine, settings)
    state = app[STATE]
    served = await serve_app(app, state, host=host, port=port, wait_ready=wait_ready)
    return DevTgiServer(url=served.root, port=served.port, state=state, served=served)


async def run(args: argparse.Namespace) -> None:
    """Serve until SIGINT/SIGTERM."""
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    try:
        settings = build_settings(args)
    except ValueError as exc:
        raise SystemExit(f"grm dev-tgi: error: {exc}") from None
    server = await start_dev_server(
        build_engine(args), settings, host=args.host, port=args.port, wait_ready=False
    )
    mode = "scripted" if args.scripted else "embedded model"
    log.info("grm dev-tgi (%s) listening on %s", mode, server.url)
    await run_until_signal("grm dev-tgi", server.served, server.close, args.port_file)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="grm dev-tgi", description="A TGI-compatible development server (see grm_dev.devtgi)."
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        build_settings(args)
    except ValueError as exc:
        parser.error(str(exc))
    loop.run(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
