"""The `grm` command line."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import sys
from collections.abc import Awaitable, Callable, Iterator
from typing import IO, Any

from grm.core.decoding import EMBEDDED
from grm.core.errors import GrmError
from grm.core.types import Aggregation, PrincipleMode
from grm.core.validation import Defaults, Limits, build_item
from grm.rpc import loop


def _add_scoring_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--k", type=int, default=None, help="samples per item (default 4)")
    p.add_argument(
        "--k-meta", type=int, default=None, help="samples kept by meta-vote (default k/2)"
    )
    p.add_argument(
        "--aggregation", choices=[a.value for a in Aggregation], default=None, help="default: vote"
    )
    p.add_argument("--principle-mode", choices=[m.value for m in PrincipleMode], default=None)
    p.add_argument("--temperature", type=float, default=None, help="default 0.5")
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument(
        "--max-new-tokens",
        type=int,
        default=None,
        help="default: the decoding profile's (1024 for engines, 256 for the embedded model)",
    )
    p.add_argument(
        "--grammar",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="constrain outputs to end in a score line (default: off for engines, on embedded)",
    )
    p.add_argument(
        "--force-scores",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="force a score line after a cut-off sample instead of re-drawing it "
        "(default: off for engines, on embedded)",
    )
    p.add_argument("--seed", type=int, default=None, help="request seed (default 0)")


def _flag_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The Score fields the user set on the command line (unset ones are left out)."""
    fields = {
        "k": args.k,
        "k_meta": args.k_meta,
        "aggregation": Aggregation(args.aggregation) if args.aggregation else None,
        "principle_mode": PrincipleMode(args.principle_mode) if args.principle_mode else None,
        "temperature": args.temperature,
        "top_p": args.top_p,
        "max_new_tokens": args.max_new_tokens,
        "grammar": args.grammar,
        "force_scores": args.force_scores,
        "seed": args.seed,
    }
    return {k: v for k, v in fields.items() if v is not None}


def _item_builder(args: argparse.Namespace) -> Any:
    """In process: items validated here with the embedded model's decoding profile."""
    return functools.partial(
        build_item,
        **_flag_fields(args),
        limits=Limits(),
        defaults=Defaults.for_profile(EMBEDDED),
    )


def _request_builder(args: argparse.Namespace) -> Any:
    """Through --target: requests carrying only what the line and the flags set, so the
    server's defaults (its decoding profile) decide the rest; the server validates."""
    from grm.core.errors import InvalidArgumentError
    from grm.rpc.convert import score_request

    flags = _flag_fields(args)

    def build(fields: dict[str, Any]) -> Any:
        line = dict(fields)
        turns = line.pop("turns", None)
        if turns:
            line["query"] = turns
        try:
            return score_request(**line, **flags, include_samples=args.details)
        except (TypeError, ValueError) as exc:
            raise InvalidArgumentError(f"not a valid request: {exc}") from None

    return build


@contextlib.contextmanager
def _files(args: argparse.Namespace) -> Iterator[tuple[IO[bytes], IO[str]]]:
    """The input file and the output (a file or stdout)."""
    with contextlib.ExitStack() as stack:
        stream = stack.enter_context(open(args.file, "rb"))
        out = (
            stack.enter_context(open(args.output, "w", encoding="utf-8"))
            if args.output
            else sys.stdout
        )
        yield stream, out


async def _score_with(
    args: argparse.Namespace,
    score: Callable[[Any], Awaitable[Any]],
    build: Callable[[dict[str, Any]], Any] | None = None,
) -> int:
    """Score the file with `score` (local pipeline or remote client): the same records."""
    from grm.cli.scorefile import run_scorefile

    if build is None:
        make = _item_builder(args)

        def build(fields: dict[str, Any]) -> Any:
            return make(**fields)

    with _files(args) as (stream, out):
        ok, failed = await run_scorefile(
            stream,
            out,
            build,
            score,
            details=args.details,
            concurrency=args.concurrency,
            progress=not args.quiet,
        )
    print(f"scored {ok} item(s), {failed} failed", file=sys.stderr)
    return 0 if failed == 0 else 3


async def _score_local(args: argparse.Namespace) -> int:
    from grm.cli.local import build_local_stack

    stack = build_local_stack(
        model_path=args.model_path,
        n_ctx=args.n_ctx,
        meta_rm=args.meta_rm,
        meta_rm_url=args.meta_rm_url,
    )
    try:
        await stack.start()
        return await _score_with(args, stack.pipeline.score)
    finally:
        await stack.close()


async def _score_remote(args: argparse.Namespace) -> int:
    """`grm score FILE --target HOST:PORT`: scored by the service through the client SDK."""

    from grm.client import AsyncGrmClient
    from grm.rpc.options import CLIENT_SECURITY_OPTIONS, client_security, resolve

    security = client_security(resolve(args, CLIENT_SECURITY_OPTIONS, os.environ), os.environ)
    async with AsyncGrmClient(args.target, timeout=args.timeout, security=security) as client:

        async def score(request: Any) -> Any:
            return await client.score_request(request)

        return await _score_with(args, score, _request_builder(args))


_SERVICES = {
    "aggregator": "grm.services.aggregator.main",
    "principles": "grm.services.principles.main",
    "sampler": "grm.services.sampler.main",
}


def _add_serve_parser(sub: Any) -> None:
    import importlib

    serve = sub.add_parser("serve", help="run one service (the container entrypoint)")
    which = serve.add_subparsers(dest="service", required=True)
    for name, module in _SERVICES.items():
        p = which.add_parser(name, help=f"the {name} service")
        importlib.import_module(module).add_arguments(p)


def _add_up_parser(sub: Any) -> None:
    up = sub.add_parser("up", help="run the whole suite locally (front door on 127.0.0.1:50051)")
    up.add_argument("--host", default="127.0.0.1", help="address every service listens on")
    up.add_argument("--port", type=int, default=50051, help="the front door's port (0 = any)")
    up.add_argument("--samplers", type=int, default=2, help="critique sampler processes")
    up.add_argument("--model-path", default=None, help="GGUF file (default: SmolLM2-135M)")
    up.add_argument("--n-ctx", type=int, default=4096, help="model context length")
    up.add_argument(
        "--threads-per-sampler", type=int, default=None, help="default: cores / samplers"
    )
    up.add_argument("--meta-rm", default="agreement", help="agreement | llm | none")
    up.add_argument("--port-file", default=None, help="write the front door's port here")
    up.add_argument("--startup-timeout", type=float, default=180.0, help="seconds")
    from grm.cli.up import add_up_options

    add_up_options(up)


def _serve(args: argparse.Namespace) -> int:
    import importlib
    import logging
    import os

    module = importlib.import_module(_SERVICES[args.service])
    settings = module.build_settings(args, os.environ)
    logging.basicConfig(
        level=settings.log_level.upper(),
        format=f"%(asctime)s {args.service} %(levelname)s %(name)s: %(message)s",
    )
    loop.run(module.run(settings))
    return 0


def _up(args: argparse.Namespace) -> int:
    import logging

    from grm.cli.up import UpSettings, run_up, up_options

    logging.basicConfig(level="INFO", format="%(asctime)s grm-up %(levelname)s: %(message)s")
    settings = UpSettings(
        host=args.host,
        port=args.port,
        samplers=args.samplers,
        model_path=args.model_path,
        n_ctx=args.n_ctx,
        threads_per_sampler=args.threads_per_sampler,
        meta_rm=args.meta_rm,
        port_file=args.port_file,
        startup_timeout_s=args.startup_timeout,
        **up_options(args),
    )
    return loop.run(run_up(settings))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="grm", description="GRM Suite: generative reward scoring")
    parser.add_argument(
        "--event-loop",
        choices=loop.CHOICES,
        default=None,
        help=f"auto (uvloop when installed), uvloop or asyncio; also {loop.ENV}, which the "
        "processes this command starts inherit",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    score = sub.add_parser("score", help="score a JSONL file of {id, query, responses}")
    score.add_argument("file", help='input JSONL: {"id", "query", "responses": [...]} per line')
    score.add_argument("-o", "--output", help="write results here instead of stdout")
    score.add_argument("--details", action="store_true", help="include every sample")
    score.add_argument("--concurrency", type=int, default=1, help="items in progress at once")
    score.add_argument("--quiet", action="store_true", help="no progress bar")
    score.add_argument("--model-path", default=None, help="GGUF file (default: SmolLM2-135M)")
    score.add_argument("--n-ctx", type=int, default=4096, help="model context length")
    score.add_argument(
        "--meta-rm", default="agreement", help="meta RM for meta-vote: agreement|llm|http|none"
    )
    score.add_argument(
        "--meta-rm-url", default=None, help="http meta RM: /classify or /predict URL"
    )
    score.add_argument(
        "--target", default=None, help="score through a running RewardService at HOST:PORT"
    )
    score.add_argument(
        "--timeout", type=float, default=600.0, help="--target: seconds per item (deadline)"
    )
    from grm.rpc.options import CLIENT_SECURITY_OPTIONS, add_options

    add_options(score, CLIENT_SECURITY_OPTIONS)  # --target over TLS / with a bearer token
    _add_scoring_args(score)
    _add_serve_parser(sub)
    _add_up_parser(sub)
    _add_tool_parsers(sub)
    return parser


def _add_tool_parsers(sub: Any) -> None:
    """Tools that are not services: SPCT data, and (with grm-suite-dev) the TGI and
    OpenAI-compatible stand-ins and the benchmarks."""
    from grm.cli import spct_data

    spct = sub.add_parser(
        "spct-data", help="SPCT training data (RFT + meta-RM) from labeled preferences"
    )
    spct_data.add_arguments(spct)
    dev_tgi = sub.add_parser(
        "dev-tgi", help="a TGI-compatible HTTP server (embedded model or --scripted outputs)"
    )
    dev_openai = sub.add_parser(
        "dev-openai",
        help="an OpenAI-compatible HTTP server speaking as vLLM, SGLang, llama.cpp or TGI",
    )
    bench = sub.add_parser("bench", help="benchmarks: each prints a table and writes JSON")
    try:
        from grm_dev.bench.__main__ import add_parsers as add_bench_parsers
        from grm_dev.devtgi.main import add_arguments as add_devtgi_arguments
    except ImportError:  # the runtime image: no development tools
        for p in (dev_tgi, dev_openai, bench):
            p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
        return
    add_devtgi_arguments(dev_tgi)
    add_bench_parsers(bench.add_subparsers(dest="scenario", required=True))
    try:
        from grm_dev.devopenai.main import add_arguments as add_devopenai_arguments
    except ImportError:  # an older grm-suite-dev install
        dev_openai.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
        return
    add_devopenai_arguments(dev_openai)


def _dev_tools_missing(command: str) -> int:
    print(
        f"grm: error: `grm {command}` is a development tool; install it with "
        "`pip install -e ./dev` from a source checkout (scripts/dev.sh setup does)",
        file=sys.stderr,
    )
    return 2


def _command(argv: list[str]) -> str | None:
    """The subcommand, read before the parser is built (building it loads the services)."""
    tokens = iter(argv)
    for token in tokens:
        if token == "--event-loop":
            next(tokens, None)  # its value
        elif not token.startswith("-"):
            return token
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if _command(argv) in ("serve", "up"):
        # Before anything loads grpc (the parser loads the services); `up`'s children inherit.
        loop.service_grpc_defaults()
    args = build_parser().parse_args(argv)
    if args.event_loop:
        os.environ[loop.ENV] = args.event_loop  # `grm up`'s children follow
    try:
        if args.command == "score":
            if args.target:
                return loop.run(_score_remote(args))
            return loop.run(_score_local(args))
        if args.command == "serve":
            return _serve(args)
        if args.command == "up":
            return _up(args)
        if args.command in ("dev-tgi", "dev-openai", "bench") and hasattr(args, "rest"):
            return _dev_tools_missing(args.command)
        if args.command == "dev-tgi":
            from grm_dev.devtgi.main import run as run_devtgi

            loop.run(run_devtgi(args))
            return 0
        if args.command == "dev-openai":
            from grm_dev.devopenai.main import run as run_devopenai

            loop.run(run_devopenai(args))
            return 0
        if args.command == "spct-data":
            from grm.cli.spct_data import run_cli as run_spct_cli

            asyncio.run(run_spct_cli(args))
            return 0
        if args.command == "bench":
            from grm_dev.bench.__main__ import run as run_bench

            return run_bench(args)
    except GrmError as exc:
        print(f"grm: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a missing input file, a port already in use
        print(f"grm: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
