"""Single-flight: identical concurrent computations in one process run once.

GRPO groups and client retries send identical requests at the same moment; without this each
would miss the cache and generate the same samples. The first caller (the leader) computes;
the others await its outcome. If the leader is cancelled (its own deadline), a follower takes
over instead of failing with someone else's cancellation.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


def leader_gave_up(fut: asyncio.Future[object]) -> bool:
    """True when `fut` was cancelled by its leader while the current task was not cancelled."""
    task = asyncio.current_task()
    return fut.cancelled() and (task is None or task.cancelling() == 0)


def settle_failed(fut: asyncio.Future[T], exc: BaseException) -> None:
    """Pass the leader's failure to followers; a cancellation lets them take over instead."""
    if fut.done():
        return
    if isinstance(exc, Exception):
        fut.set_exception(exc)
        fut.exception()  # mark retrieved: no "never retrieved" warning when nobody follows
    else:
        fut.cancel()


class SingleFlight(Generic[T]):
    """Runs `compute` once per key at a time; concurrent callers of the same key share it."""

    def __init__(self) -> None:
        self._calls: dict[str, asyncio.Future[T]] = {}

    def __len__(self) -> int:
        return len(self._calls)

    async def run(self, key: str, compute: Callable[[], Awaitable[T]]) -> tuple[T, bool]:
        """(value, shared): shared is True when another caller computed it."""
        while (fut := self._calls.get(key)) is not None:
            try:
                return await asyncio.shield(fut), True
            except asyncio.CancelledError:
                if leader_gave_up(fut):
                    continue  # its leader was cancelled: compute it ourselves
                raise
        fut = asyncio.get_running_loop().create_future()
        self._calls[key] = fut
        try:
            value = await compute()
        except BaseException as exc:
            settle_failed(fut, exc)
            raise
        finally:
            if self._calls.get(key) is fut:
                del self._calls[key]
        fut.set_result(value)
        return value, False
