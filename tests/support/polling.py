"""Waiting on a condition that other tasks make true, bounded by a give-up time."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def eventually(condition: Callable[[], bool], what: str, within_s: float = 15.0) -> None:
    """Poll until `condition` holds; fail after `within_s` seconds (a give-up bound far above
    the milliseconds these conditions take, so a loaded machine does not fail the test)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for: {what}")
        await asyncio.sleep(0.02)
