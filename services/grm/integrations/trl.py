"""TRL: a reward function for `GRPOTrainer(reward_funcs=[...])`.

    from grm.integrations.trl import grm_reward_func
    reward = grm_reward_func("127.0.0.1:50051", group_size=8, k=4)
    trainer = GRPOTrainer(model=..., reward_funcs=[reward], ...)

TRL calls `reward(prompts=[...], completions=[...], **dataset_columns)` and expects one float
per completion, or None where the function has no reward (TRL ignores None; with every reward
function None for a row it warns and that row gets NaN). Prompts and completions are strings,
or conversations (lists of {"role", "content"}) in conversational datasets.

With `reference_column="answer"` (any dataset column), that column's value of each row is
passed to the judge as the reference answer (reference-guided scoring); off by default.

Completions of the same prompt (the G generations of a GRPO group, which TRL passes repeated)
are scored together: one multi-response Score per `group_size` of them (keep it at most the
server's --max-responses, 16 by default); `group=False` scores each alone. A completion whose
Score failed gets None — never 0, which would be a real (and terrible) reward. The function's
`__name__` ("grm" by default) names its column in TRL's logs.

`grm_reward_func_async` is the same as an `async def` (TRL runs coroutine reward functions
concurrently with the others); it keeps one AsyncGrmClient per event loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from grm.client import AsyncGrmClient, GrmClient
from grm.core.errors import GrmError, InvalidArgumentError
from grm.integrations.groups import (
    DEFAULT_BATCH_ITEMS,
    DEFAULT_GROUP_SIZE,
    ItemOutcome,
    as_query,
    as_reference,
    as_response,
    plan_groups,
    score_groups,
    score_groups_async,
    spread,
)

log = logging.getLogger(__name__)

RewardFunc = Callable[..., list[float | None]]
AsyncRewardFunc = Callable[..., Awaitable[list[float | None]]]


def _references(column: str | None, n: int, kwargs: dict[str, Any]) -> list[str] | None:
    """The reference answers of a call from the dataset column TRL passed (None: off)."""
    if column is None:
        return None
    values = kwargs.get(column)
    if values is None or len(values) != n:
        raise InvalidArgumentError(
            f"reference_column {column!r}: TRL passed no such column with {n} values "
            f"(columns: {sorted(kwargs)})"
        )
    return [as_reference(v) for v in values]


def _rewards(outcomes: Sequence[ItemOutcome], name: str) -> list[float | None]:
    failed = [o for o in outcomes if isinstance(o, GrmError)]
    if failed:
        log.warning(
            "%s: %d of %d completions not scored (reward None): %s",
            name,
            len(failed),
            len(outcomes),
            failed[0],
        )
    return [None if isinstance(o, GrmError) else o for o in outcomes]


def grm_reward_func(
    target: str | None = None,
    *,
    client: GrmClient | None = None,
    group: bool = True,
    group_size: int = DEFAULT_GROUP_SIZE,
    batch_items: int = DEFAULT_BATCH_ITEMS,
    timeout: float | None = 600.0,
    name: str = "grm",
    reference_column: str | None = None,
    **score_fields: Any,
) -> RewardFunc:
    """A TRL reward function over the suite at `target` (or an existing `client`).

    `score_fields` go into every Score (k, k_meta, aggregation, temperature, ...);
    `reference_column` names the dataset column holding each row's reference answer.
    """
    if client is None and target is None:
        raise ValueError("give the aggregator's address (target) or a GrmClient")
    plan_groups([], [], group=group, group_size=group_size)  # validates group_size
    lock = threading.Lock()
    clients: list[GrmClient] = [client] if client is not None else []

    def get_client() -> GrmClient:
        with lock:
            if not clients:
                clients.append(GrmClient(target, timeout=timeout))  # type: ignore[arg-type]
            return clients[0]

    def reward(
        prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any
    ) -> list[float | None]:
        queries = [as_query(p) for p in prompts]
        responses = [as_response(c) for c in completions]
        refs = _references(reference_column, len(responses), kwargs)
        groups = plan_groups(
            queries, responses, group=group, group_size=group_size, references=refs
        )
        c = get_client()
        outcomes = score_groups(
            lambda items: c.score_batch(items, timeout=timeout),
            groups,
            score_fields,
            batch_items=batch_items,
        )
        return _rewards(spread(groups, outcomes, len(responses)), name)

    reward.__name__ = reward.__qualname__ = name
    reward.close = lambda: [c.close() for c in clients]  # type: ignore[attr-defined]
    return reward


def grm_reward_func_async(
    target: str,
    *,
    group: bool = True,
    group_size: int = DEFAULT_GROUP_SIZE,
    batch_items: int = DEFAULT_BATCH_ITEMS,
    timeout: float | None = 600.0,
    name: str = "grm",
    reference_column: str | None = None,
    **score_fields: Any,
) -> AsyncRewardFunc:
    """As grm_reward_func, an `async def`; the ScoreBatch calls run concurrently."""
    plan_groups([], [], group=group, group_size=group_size)
    clients: dict[asyncio.AbstractEventLoop, AsyncGrmClient] = {}

    async def reward(
        prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any
    ) -> list[float | None]:
        queries = [as_query(p) for p in prompts]
        responses = [as_response(c) for c in completions]
        refs = _references(reference_column, len(responses), kwargs)
        groups = plan_groups(
            queries, responses, group=group, group_size=group_size, references=refs
        )
        loop = asyncio.get_running_loop()
        c = clients.get(loop)
        if c is None:
            c = clients[loop] = AsyncGrmClient(target, timeout=timeout)
        outcomes = await score_groups_async(
            lambda items: c.score_batch(items, timeout=timeout),
            groups,
            score_fields,
            batch_items=batch_items,
        )
        return _rewards(spread(groups, outcomes, len(responses)), name)

    async def close() -> None:
        loop = asyncio.get_running_loop()
        c = clients.pop(loop, None)
        if c is not None:
            await c.close()

    reward.__name__ = reward.__qualname__ = name
    reward.aclose = close  # type: ignore[attr-defined]
    return reward
