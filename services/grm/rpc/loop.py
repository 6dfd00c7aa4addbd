"""The event loop every process runs on (uvloop when it is installed, else asyncio's own),
and a long-running server's runtime settings: the garbage collector's, and gRPC core's I/O
engine (`service_grpc_defaults`).

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
import sys
from collections.abc import Callable, Coroutine, Mapping, MutableMapping
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


GRPC_EXPERIMENTS = "GRPC_EXPERIMENTS"
# gRPC core's own switches (its `GRPC_EXPERIMENTS` variable: names, `-name` turns one off).
# grpcio 1.80 made the EventEngine TCP client and listener the default for Python; measured
# here on grpcio 1.85, a unary call cost the server ~10% more CPU with them, and a service's
# whole per-sample CPU ~10% more (docs/benchmarks.md). The earlier I/O engine was Python's
# default through grpcio 1.79.
SERVICE_GRPC_EXPERIMENTS = "-event_engine_client,-event_engine_listener"


def service_grpc_defaults(env: MutableMapping[str, str] = os.environ) -> bool:
    """A service process's gRPC core settings, unless the operator set `GRPC_EXPERIMENTS`
    (to anything, empty included: gRPC's own defaults). True when they were set here.

    gRPC reads the variable once, when it is first imported: this runs before that (`grm serve`
    and `grm up`, whose children inherit it); after it, it changes nothing (False). Only
    services take it: a client library must not change its host process's environment.
    """
    if GRPC_EXPERIMENTS in env:
        return False
    if "grpc" in sys.modules:
        return False  # too late for this process: gRPC core has read its configuration
    env[GRPC_EXPERIMENTS] = SERVICE_GRPC_EXPERIMENTS
    return True
