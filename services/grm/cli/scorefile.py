"""`grm score FILE.jsonl`: read items, score them, write one JSON line per item.

A bad line becomes a line-numbered error record and the rest still score; results are written
in input order while up to `concurrency` items are in progress.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import IO, Any

from tqdm import tqdm

from grm.cli.results import error_to_dict, result_to_dict
from grm.core.errors import GrmError, InvalidArgumentError
from grm.core.types import ScoreItem, ScoreResult


@dataclass(frozen=True)
class Line:
    number: int
    item_id: Any
    fields: dict[str, Any] | None
    error: GrmError | None = None


def parse_lines(raw_lines: Iterable[bytes]) -> Iterable[Line]:
    """Decode JSONL input strictly; each problem is reported against its line number."""
    for number, raw in enumerate(raw_lines, start=1):
        if not raw.strip():
            continue
        try:
            data = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            yield Line(
                number,
                None,
                None,
                InvalidArgumentError(f"line is not valid UTF-8 ({exc.reason} at byte {exc.start})"),
            )
            continue
        except json.JSONDecodeError as exc:
            yield Line(
                number, None, None, InvalidArgumentError(f"line is not valid JSON: {exc.msg}")
            )
            continue
        if not isinstance(data, dict):
            yield Line(number, None, None, InvalidArgumentError("line must be a JSON object"))
            continue
        yield Line(number, data.get("id", number), data)


def item_fields(data: dict[str, Any]) -> dict[str, Any]:
    """The build_item keyword arguments from one input object."""
    query = data.get("query", "")
    turns: list[tuple[str, str]] = []
    if isinstance(query, list):
        for i, turn in enumerate(query):
            if not isinstance(turn, dict) or not isinstance(turn.get("role"), str):
                raise InvalidArgumentError(
                    'each turn must be {"role", "content"}', field=f"query[{i}]"
                )
            turns.append((turn["role"], turn.get("content", "")))
        query = ""
    elif not isinstance(query, str):
        raise InvalidArgumentError("must be a string or a list of turns", field="query")
    responses = data.get("responses")
    if not isinstance(responses, list):
        raise InvalidArgumentError("must be a list of strings", field="responses")
    fields: dict[str, Any] = {"query": query, "turns": turns, "responses": responses}
    principles = data.get("principles", "")
    if not isinstance(principles, str):
        raise InvalidArgumentError("must be a string", field="principles")
    fields["principles"] = principles
    reference = data.get("reference", "")
    if not isinstance(reference, str):
        raise InvalidArgumentError("must be a string", field="reference")
    if reference:
        fields["reference"] = reference
    return fields


async def score_lines(
    lines: Iterable[Line],
    build: Callable[[dict[str, Any]], ScoreItem],
    score: Callable[[ScoreItem], Awaitable[ScoreResult]],
    *,
    details: bool,
    concurrency: int,
) -> AsyncIterator[dict[str, Any]]:
    """Yield one record per input line, in input order."""
    limit = asyncio.Semaphore(concurrency)

    async def one(line: Line) -> dict[str, Any]:
        if line.error is not None:
            return error_to_dict(line.error, item_id=line.item_id, line=line.number)
        try:
            item = build(item_fields(line.fields or {}))
        except GrmError as exc:
            return error_to_dict(exc, item_id=line.item_id, line=line.number)
        async with limit:
            try:
                result = await score(item)
            except GrmError as exc:
                return error_to_dict(exc, item_id=line.item_id, line=line.number)
        return result_to_dict(result, item_id=line.item_id, details=details)

    window: list[asyncio.Task[dict[str, Any]]] = []
    try:
        for line in lines:
            window.append(asyncio.create_task(one(line)))
            while len(window) > 2 * concurrency or (window and window[0].done()):
                yield await window.pop(0)
        while window:
            yield await window.pop(0)
    finally:
        for task in window:
            task.cancel()


def encode_record(record: dict[str, Any]) -> str:
    """One output line: readable UTF-8, or JSON escapes where text cannot be UTF-8 (an id
    with a lone surrogate is echoed, not lost)."""
    line = json.dumps(record, ensure_ascii=False)
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(record)
    return line


async def run_scorefile(
    stream: IO[bytes],
    out: IO[str],
    build: Callable[[dict[str, Any]], ScoreItem],
    score: Callable[[ScoreItem], Awaitable[ScoreResult]],
    *,
    details: bool = False,
    concurrency: int = 1,
    progress: bool = True,
) -> tuple[int, int]:
    """Score a JSONL stream; returns (items scored, items failed)."""
    raw_lines = stream.readlines()
    total = sum(1 for r in raw_lines if r.strip())
    ok = failed = 0
    bar = tqdm(total=total, unit="item", file=sys.stderr, disable=not progress, dynamic_ncols=True)
    try:
        async for record in score_lines(
            parse_lines(raw_lines), build, score, details=details, concurrency=concurrency
        ):
            out.write(encode_record(record) + "\n")
            out.flush()
            if "error" in record:
                failed += 1
            else:
                ok += 1
            bar.set_postfix(failed=failed, refresh=False)
            bar.update(1)
    finally:
        bar.close()
    return ok, failed
