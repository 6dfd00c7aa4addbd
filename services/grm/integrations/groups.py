"""What every framework adapter shares: group responses by prompt, score, spread back.

A training step hands over N (prompt, response) pairs, usually G responses per prompt (a GRPO
group). Scoring the responses of one prompt together is what DeepSeek-GRM does best (one
generation judges them side by side, and principles are shared), so the adapters group them
into one multi-response Score — chunked to `group_size`, which must not exceed the server's
`--max-responses` — or score each pair alone. Results come back per pair, in the caller's
order: a float, or the GrmError that item failed with (never a 0).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from grm.client._common import BatchOutcome
from grm.client.batching import DEFAULT_MAX_BATCH_ITEMS
from grm.core.errors import GrmError, InvalidArgumentError

# A query: a plain string, or chat turns as (role, content) pairs (hashable, for grouping).
Query = str | tuple[tuple[str, str], ...]
ItemOutcome = float | GrmError

DEFAULT_GROUP_SIZE = 8
DEFAULT_BATCH_ITEMS = DEFAULT_MAX_BATCH_ITEMS  # the aggregator's default --max-batch-items


@dataclass(frozen=True)
class Group:
    """One Score call: a query and the caller indices of its responses (and the reference
    answer they share, "" for none)."""

    query: Query
    indices: tuple[int, ...]
    responses: tuple[str, ...]
    reference: str = ""


def as_reference(value: Any) -> str:
    """A reference answer from a framework's label (OpenRLHF `labels`, verl `ground_truth`, a
    dataset column): text stays text; numbers, lists and mappings become their JSON."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    value = value.tolist() if hasattr(value, "tolist") else value
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(value)


def as_query(prompt: Any) -> Query:
    """A string stays a string; a conversation ([{role, content}, ...]) becomes turns."""
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, Sequence):
        turns = []
        for turn in prompt:
            if isinstance(turn, Mapping):
                turns.append((str(turn["role"]), _text(turn["content"])))
            else:
                role, content = turn
                turns.append((str(role), _text(content)))
        return tuple(turns)
    raise InvalidArgumentError(f"a prompt must be a string or chat turns, not {type(prompt)}")


def as_response(completion: Any) -> str:
    """A string, or a conversational completion: the text of its (assistant) messages."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Sequence):
        return "\n".join(
            _text(m["content"]) if isinstance(m, Mapping) else _text(m[1]) for m in completion
        )
    raise InvalidArgumentError(f"a completion must be a string or messages, not {type(completion)}")


def _text(content: Any) -> str:
    """Message content: a string, or multimodal parts of which the text parts count."""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        return "".join(
            p.get("text", "") for p in content if isinstance(p, Mapping) and p.get("type") == "text"
        )
    return str(content)


def plan_groups(
    queries: Sequence[Query],
    responses: Sequence[str],
    *,
    group: bool,
    group_size: int,
    references: Sequence[str] | None = None,
) -> list[Group]:
    """Score calls for the pairs: by prompt and reference (first-seen order, chunks of
    group_size) or one each. `references`: one reference answer per pair (None: none)."""
    if len(queries) != len(responses):
        raise InvalidArgumentError(
            f"{len(queries)} prompts but {len(responses)} responses; they must pair up"
        )
    refs = list(references) if references is not None else [""] * len(queries)
    if len(refs) != len(queries):
        raise InvalidArgumentError(
            f"{len(refs)} references for {len(queries)} prompts; they must pair up"
        )
    if group_size < 1:
        raise InvalidArgumentError(f"group_size must be at least 1, not {group_size}")
    if not group:
        return [
            Group(q, (i,), (r,), ref)
            for i, (q, r, ref) in enumerate(zip(queries, responses, refs, strict=True))
        ]
    by_query: dict[tuple[Query, str], list[int]] = {}
    for i, key in enumerate(zip(queries, refs, strict=True)):
        by_query.setdefault(key, []).append(i)
    out = []
    for (q, ref), indices in by_query.items():
        for start in range(0, len(indices), group_size):
            chunk = tuple(indices[start : start + group_size])
            out.append(Group(q, chunk, tuple(responses[i] for i in chunk), ref))
    return out


def requests(groups: Sequence[Group], fields: Mapping[str, Any]) -> list[dict[str, Any]]:
    """score_batch items (score() keywords) for the groups."""
    out = []
    for g in groups:
        item = {"query": g.query, "responses": list(g.responses), **fields}
        if g.reference:
            item["reference"] = g.reference
        out.append(item)
    return out


def spread(groups: Sequence[Group], outcomes: Sequence[BatchOutcome], n: int) -> list[ItemOutcome]:
    """Per-pair outcomes in caller order from per-group outcomes."""
    out: list[ItemOutcome | None] = [None] * n
    for g, outcome in zip(groups, outcomes, strict=True):
        for pos, i in enumerate(g.indices):
            out[i] = outcome if isinstance(outcome, GrmError) else float(outcome.rewards[pos])
    assert all(o is not None for o in out)
    return out  # type: ignore[return-value]


def chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), max(1, size))]


def score_groups(
    score_batch: Callable[[Sequence[Any]], list[BatchOutcome]],
    groups: Sequence[Group],
    fields: Mapping[str, Any],
    *,
    batch_items: int = DEFAULT_BATCH_ITEMS,
) -> list[BatchOutcome]:
    """One ScoreBatch per `batch_items` groups; a failed batch fails each of its groups."""
    out: list[BatchOutcome] = []
    for part in chunks(requests(groups, fields), batch_items):
        try:
            out.extend(score_batch(part))
        except GrmError as exc:
            out.extend([exc] * len(part))
    return out


async def score_groups_async(
    score_batch: Callable[[Sequence[Any]], Awaitable[list[BatchOutcome]]],
    groups: Sequence[Group],
    fields: Mapping[str, Any],
    *,
    batch_items: int = DEFAULT_BATCH_ITEMS,
) -> list[BatchOutcome]:
    """As score_groups, the batches sent concurrently."""
    import asyncio

    async def one(part: Sequence[Any]) -> list[BatchOutcome]:
        try:
            return await score_batch(part)
        except GrmError as exc:
            return [exc] * len(part)

    parts = chunks(requests(groups, fields), batch_items)
    results = await asyncio.gather(*(one(p) for p in parts))
    return [o for r in results for o in r]
