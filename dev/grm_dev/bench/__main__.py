"""`grm bench SCENARIO` (also `python -m grm_dev.bench SCENARIO`)."""

from __future__ import annotations

import argparse
import asyncio
import sys

from grm_dev.bench import (
    autoscale,
    budgets,
    cache,
    chaos,
    embedded,
    fanout,
    injection,
    load,
    locality,
    overhead,
    report,
    run_all,
    tgi_client,
    throughput,
)

SCENARIOS = {
    "embedded": embedded,
    "tgi-client": tgi_client,
    "overhead": overhead,
    "fanout": fanout,
    "throughput": throughput,
    "cache": cache,
    "injection": injection,
    "planner": budgets,
    "autoscale": autoscale,
    "load": load,
    "chaos": chaos,
    "locality": locality,
}


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register one sub-command per scenario."""
    for name, module in SCENARIOS.items():
        p = sub.add_parser(name, help=(module.__doc__ or "").strip().splitlines()[0])
        module.add_args(p)
    run_all.add_args(sub.add_parser("all", help="every scenario, small settings, one folder"))


def run(args: argparse.Namespace) -> int:
    if args.scenario == "all":
        doc = asyncio.run(run_all.run(args, SCENARIOS))
        return 0 if all(e["status"] != "failed" for e in doc["scenarios"].values()) else 1
    module = SCENARIOS[args.scenario]
    report.set_invocation(args.scenario, args, module.add_args)  # the JSON's exact command
    asyncio.run(module.run(args))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="grm bench")
    add_parsers(parser.add_subparsers(dest="scenario", required=True))
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
