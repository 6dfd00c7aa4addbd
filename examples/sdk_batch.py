"""Score a JSONL file through the SDK's batching helper (`AsyncGrmClient.score_many`).

    grm up                            # in another terminal
    python examples/sdk_batch.py --target 127.0.0.1:50051 examples/items.jsonl

Input lines are `{"id", "query", "responses": [...]}` plus any ScoreRequest field (`k`,
`aggregation`, `latency_budget_ms`, ...). The file is sent as ScoreBatch calls that fit the
message limit and --max-batch-items, several at once. One JSON line per input line goes to
stdout in input order: `status` (complete / partial / degraded) and `rewards`, or `status`
as an error code with `error` — a line that fails never gets a reward. Exit status 1 when
any line failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from grm.client import DEFAULT_MAX_BATCH_ITEMS, AsyncGrmClient, ScoredItem
from grm.cli.results import error_to_dict
from grm.cli.scorefile import parse_lines


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("file", type=Path, help="JSONL input")
    parser.add_argument("--target", default="127.0.0.1:50051", help="aggregator host:port")
    parser.add_argument("--k", type=int, default=None, help="k for lines that set none")
    parser.add_argument("--timeout", type=float, default=120.0, help="deadline per call (s)")
    parser.add_argument(
        "--latency-budget-ms", type=int, default=None, help="budget for lines that set none"
    )
    parser.add_argument(
        "--max-batch-items",
        type=int,
        default=DEFAULT_MAX_BATCH_ITEMS,
        help="items per ScoreBatch (match the aggregator's --max-batch-items)",
    )
    parser.add_argument(
        "--max-message-mb", type=int, default=64, help="message limit (match the aggregator's)"
    )
    parser.add_argument("--concurrency", type=int, default=4, help="ScoreBatch calls at once")
    return parser.parse_args(argv)


def record(item_id: Any, line: int, scored: ScoredItem) -> dict[str, Any]:
    """The output line of one scored input line."""
    if scored.error is not None:
        return {"status": scored.status, **error_to_dict(scored.error, item_id=item_id, line=line)}
    assert scored.result is not None
    return {
        "id": item_id,
        "line": line,
        "status": scored.status,
        "rewards": list(scored.result.rewards),
        "best": list(scored.result.best),
        "k_used": scored.result.k_used,
    }


async def main(args: argparse.Namespace) -> int:
    lines = list(parse_lines(args.file.read_bytes().splitlines()))
    items = []
    for line in lines:
        if line.error is None:
            fields = {k: v for k, v in (line.fields or {}).items() if k != "id"}
            if args.k is not None:
                fields.setdefault("k", args.k)
            items.append(fields)
    async with AsyncGrmClient(
        args.target, timeout=args.timeout, max_message_mb=args.max_message_mb
    ) as client:
        scored = iter(
            await client.score_many(
                items,
                timeout=args.timeout,
                latency_budget_ms=args.latency_budget_ms,
                max_batch_items=args.max_batch_items,
                concurrency=args.concurrency,
            )
        )
    ok = failed = 0
    for line in lines:
        if line.error is not None:  # not JSON: never sent
            out = {"status": line.error.code, **error_to_dict(line.error, line=line.number)}
        else:
            out = record(line.item_id, line.number, next(scored))
        ok, failed = (ok + 1, failed) if "rewards" in out else (ok, failed + 1)
        print(json.dumps(out))
    print(f"{ok} scored, {failed} failed", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))
