"""`grm bench SCENARIO` (also `python -m grm.bench SCENARIO`)."""

from __future__ import annotations

import argparse
import asyncio
import sys

from grm.bench import cache, embedded, fanout, overhead, tgi_client, throughput

SCENARIOS = {
    "embedded": embedded,
    "tgi-client": tgi_client,
    "overhead": overhead,
    "fanout": fanout,
    "throughput": throughput,
    "cache": cache,
}


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register one sub-command per scenario."""
    for name, module in SCENARIOS.items():
        p = sub.add_parser(name, help=(module.__doc__ or "").strip().splitlines()[0])
        module.add_args(p)


def run(args: argparse.Namespace) -> int:
    asyncio.run(SCENARIOS[args.scenario].run(args))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="grm bench")
    add_parsers(parser.add_subparsers(dest="scenario", required=True))
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
