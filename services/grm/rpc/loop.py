"""The event loop every process runs on (uvloop when it is installed, else asyncio's own),
and the garbage collector's settings for a long-running server.

uvloop runs the loop, its timers and its sockets in C (libuv): the same async code costs
less CPU per callback and per socket read/write, which is most of what a sampler does between
two generations (the HTTP request to the engine and its reply). `GRM_EVENT_LOOP` (or
`grm --event-loop`) chooses: `auto` (default: uvloop if importable), `uvloop` (required:
an error when missing) or `asyncio` (the standard loop, e.g. to rule uvloop out).
"""

from __future__ import annotations

import asyncio
import gc
import os
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, TypeVar

T = TypeVar("T")

ENV = "GRM_EVENT_LOOP"
CHOICES = ("auto", "uvloop", "asyncio")


def loop_factory(
    choice: str | None = None, env: Mapping[str, str] = os.environ
) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The factory of the chosen loop (None: asyncio's default)."""
    choice = (choice or env.get(ENV) or "auto").strip().lower()
    if choice not in CHOICES:
        raise ValueError(f"{ENV} must be one of {', '.join(CHOICES)}, not {choice!r}")
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise RuntimeError(f"{ENV}=uvloop but uvloop is not installed") from None
        return None
    return uvloop.new_event_loop  # type: ignore[no-any-return]


def loop_name(loop: asyncio.AbstractEventLoop | None = None) -> str:
    """`uvloop` or `asyncio`: what a process runs on (logged at start-up, read by tests)."""
    loop = loop or asyncio.get_running_loop()
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"


def run(main: Coroutine[Any, Any, T], *, choice: str | None = None) -> T:
    """`asyncio.run(main)` on the chosen loop."""
    with asyncio.Runner(loop_factory=loop_factory(choice)) as runner:
        return runner.run(main)


GC_GEN0_THRESHOLD = 50_000  # allocations between young collections (CPython's default: 700)


def settle_gc() -> None:
    """Once a server is warm: move what start-up allocated (modules, settings, channels) out
    of the collector's reach (`gc.freeze`) and collect the young generation less often.

    A sampler allocates thousands of short-lived objects per sample (HTTP, JSON, protobuf);
    with the default threshold the cyclic collector ran every few samples and rescanned
    every long-lived object each time (~6% of a sampler's CPU in a profile). Reference
    counting still frees almost everything at once; the collector only finds cycles.
    """
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)
