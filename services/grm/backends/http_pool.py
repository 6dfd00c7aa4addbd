"""A pool of HTTP endpoints serving one model: pooled sessions, least-loaded choice, retries.

Every HTTP engine backend (TGI; the OpenAI-compatible engines) needs the same things from its
endpoints, so they live here once, apart from any engine's protocol:

- **kept-alive connections per endpoint**: the generation requests (one per sample) go through
  a lean HTTP/1.1 client (`http1.HttpClient`, a third of aiohttp's CPU per request), the rare
  control calls (health, info, models, metrics) through one pooled `aiohttp.ClientSession`;
  the in-flight bound, not a connection limit, bounds concurrency;
- **least-loaded choice**: the endpoint with the fewest in-flight requests relative to its
  bound, healthy ones first, round-robin among equals;
- **prefix locality**: a call with an `affinity` key (the requests that share a long prompt
  prefix, e.g. the k samples of one item) goes to the same endpoint as the others with that
  key, so the engine computes the prefix once and serves the rest from its prefix cache
  (vLLM's automatic prefix caching, SGLang's RadixAttention, TGI's prefix caching). The
  choice is rendezvous hashing (each key ranks the endpoints by a hash of key and URL: the
  same in every process, and only the keys of an endpoint that joins or leaves move); when
  the first choice has no free slot (or is down) the call spills over to the next in that
  key's ranking, so one item's samples use as few endpoints as their capacity allows;
- **backpressure**: a call that needs a slot waits (until its deadline) while every endpoint
  is full;
- **retries inside the deadline**: an overload (`Retry("overloaded")`, e.g. HTTP 429) is
  retried with full jitter, then RESOURCE_EXHAUSTED; an outage (`Retry("unavailable")`,
  connection errors, 5xx) moves to another endpoint, then UNAVAILABLE. A timeout at the
  caller's deadline is DEADLINE_EXCEEDED; at the backend's own cap, UNAVAILABLE.

The engine's protocol module says how a reply maps onto `Retry` or a final GrmError.
Cancellation reaches the engine: a cancelled call closes its HTTP request.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import hashlib
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp

from grm.backends.http1 import HttpClient, HttpConnectionError, split_url
from grm.core.errors import (
    BackendError,
    DeadlineExceededError,
    FailedPreconditionError,
    GrmError,
    ResourceExhaustedError,
    UnavailableError,
)

T = TypeVar("T")


class Retry(Exception):
    """One attempt failed in a way another attempt may fix."""

    def __init__(self, kind: str, cause: BaseException | str) -> None:
        self.kind = kind  # "overloaded" | "unavailable"
        self.cause = cause
        super().__init__(f"{kind}: {cause}")


@dataclass(frozen=True)
class RetryPolicy:
    """How hard a call tries before it gives up."""

    overload_retries: int = 4  # overloads retried per call (with jitter), then RESOURCE_EXHAUSTED
    unavailable_retries: int = 2  # outages retried per call (another endpoint), then UNAVAILABLE
    backoff_base_s: float = 0.05
    backoff_max_s: float = 2.0
    down_cooloff_s: float = 2.0  # an endpoint that failed is avoided this long


@dataclass
class Endpoint:
    """One engine server: its pooled session (control calls) and connections (generation),
    what it reported at start-up, its live load."""

    url: str
    limit: int
    session: aiohttp.ClientSession | None = None
    http: HttpClient | None = None
    info: dict[str, Any] | None = None  # what the engine reported (None: not configured yet)
    in_flight: int = 0
    down_until: float = 0.0
    last_pick: int = 0
    requests: int = 0
    failures: int = 0
    error: str = ""  # why it is not configured (or was refused: another model)

    @property
    def ready(self) -> bool:
        return self.info is not None and not self.error


def new_session(headers: dict[str, str] | None = None) -> aiohttp.ClientSession:
    """One pooled keep-alive session per endpoint (unbounded pool: the in-flight bound rules);
    `headers` go with every request (e.g. an API key)."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=60.0),
        timeout=aiohttp.ClientTimeout(total=None),
        headers=headers,
    )


class EndpointPool:
    """The endpoints of one backend; `call` runs an operation on the best one, with retries."""

    def __init__(
        self,
        urls: Sequence[str],
        *,
        engine: str,
        default_limit: int,
        retry: RetryPolicy,
        headers: dict[str, str] | None = None,
        locality: bool = True,
    ) -> None:
        self.engine = engine  # for messages: "TGI", "vLLM", ...
        self.retry = retry
        self.locality = locality  # honour calls' affinity keys (else least loaded only)
        self.headers = dict(headers or {})  # sent with every request (never logged)
        for url in urls:  # a typo here would otherwise wait out the start-up timeout
            try:
                split_url(url)
            except ValueError:
                raise FailedPreconditionError(
                    f"{engine} endpoint {url!r} is not an http:// or https:// URL"
                ) from None
        self.endpoints = [Endpoint(url=u, limit=default_limit) for u in urls]
        self.stats: collections.Counter[str] = collections.Counter()
        self._freed: asyncio.Event | None = None  # set whenever a slot frees or an endpoint joins
        self._picks = 0
        self._late: asyncio.Task[None] | None = None  # configures endpoints that were down

    async def start(
        self,
        configure: Callable[[Endpoint], Awaitable[None]],
        *,
        timeout_s: float,
        poll_s: float,
    ) -> None:
        """Open the sessions and configure the endpoints until one is ready (`wait_ready`;
        on its error the sessions are closed again); those still down are configured as they
        come up (`configure_late`, until `close`)."""
        self.open()
        try:
            await self.wait_ready(configure, timeout_s=timeout_s, poll_s=poll_s)
        except GrmError:
            await self.close()
            raise
        if not all(e.ready for e in self.endpoints):
            self._late = asyncio.create_task(self.configure_late(configure, interval_s=poll_s))

    def open(self) -> None:
        """Open one session and one HTTP client per endpoint (inside the running event loop)."""
        self._freed = asyncio.Event()
        for e in self.endpoints:
            if e.session is None:
                e.session = new_session(self.headers or None)
            if e.http is None:
                e.http = HttpClient(e.url, headers=self.headers)

    async def close(self) -> None:
        if self._late is not None:
            self._late.cancel()
            await asyncio.gather(self._late, return_exceptions=True)
            self._late = None
        for e in self.endpoints:
            if e.session is not None:
                await e.session.close()
                e.session = None
            if e.http is not None:
                e.http.close()
                e.http = None

    @property
    def ready(self) -> list[Endpoint]:
        return [e for e in self.endpoints if e.ready]

    def slots_changed(self) -> asyncio.Event:
        """Set whenever a slot frees or an endpoint becomes ready (waiters re-pick)."""
        if self._freed is None:
            self._freed = asyncio.Event()
        return self._freed

    async def probe(self, path: str, *, timeout_s: float = 2.0) -> bool:
        """Whether any configured endpoint answers GET `path` with 200 now; failing ones are
        avoided for the cool-off."""

        async def one(e: Endpoint) -> bool:
            if not e.ready or e.session is None:
                return False
            try:
                timeout = aiohttp.ClientTimeout(total=timeout_s)
                async with e.session.get(f"{e.url}{path}", timeout=timeout) as resp:
                    ok = resp.status == 200
            except (aiohttp.ClientError, TimeoutError):
                ok = False
            if not ok:
                e.down_until = time.monotonic() + self.retry.down_cooloff_s
            return ok

        return any(await asyncio.gather(*(one(e) for e in self.endpoints)))

    async def wait_ready(
        self,
        configure: Callable[[Endpoint], Awaitable[None]],
        *,
        timeout_s: float,
        poll_s: float,
    ) -> None:
        """Configure the endpoints (`configure` reads what the engine reports and sets
        `info`/`error`) until one is ready; UnavailableError naming each endpoint's trouble
        after `timeout_s`. A GrmError from `configure` (a setting the engine cannot honour)
        ends the wait at once."""
        deadline = time.monotonic() + timeout_s
        while True:
            await asyncio.gather(*(configure(e) for e in self.endpoints if not e.ready))
            if self.ready:
                return
            if time.monotonic() >= deadline:
                errors = "; ".join(f"{e.url}: {e.error or 'not ready'}" for e in self.endpoints)
                raise UnavailableError(
                    f"no {self.engine} endpoint became ready in {timeout_s:.0f}s ({errors})"
                )
            await asyncio.sleep(min(0.5, poll_s))

    async def configure_late(
        self, configure: Callable[[Endpoint], Awaitable[None]], *, interval_s: float
    ) -> None:
        """Configure the endpoints that were down at start as they come up (a background
        task); one refused for serving another model stays refused."""
        while not all(e.ready or "refused" in e.error for e in self.endpoints):
            await asyncio.sleep(interval_s)
            await asyncio.gather(
                *(configure(e) for e in self.endpoints if not e.ready and "refused" not in e.error)
            )
            self.slots_changed().set()

    def pick(self, avoid: set[str], slot: bool, affinity: str = "") -> Endpoint | None:
        """The usable endpoint for a call: healthy first, then not yet failed for this call;
        among those the first of `affinity`'s ranking (with locality on), else the least
        loaded."""
        now = time.monotonic()
        usable = [e for e in self.endpoints if e.ready and (not slot or e.in_flight < e.limit)]
        if not usable:
            return None
        rank = _ranking(affinity, tuple(e.url for e in self.endpoints)) if affinity else None
        for choice in (
            [e for e in usable if e.url not in avoid and e.down_until <= now],
            [e for e in usable if e.url not in avoid],
            [e for e in usable if e.down_until <= now],
            usable,
        ):
            if choice:
                if rank is not None and self.locality:
                    best = min(choice, key=lambda e: rank[e.url])
                else:
                    best = min(choice, key=lambda e: (e.in_flight / e.limit, e.last_pick))
                self._picks += 1
                best.last_pick = self._picks
                return best
        return None  # pragma: no cover - `usable` is not empty

    async def _acquire(
        self, avoid: set[str], deadline: float, caller_bound: bool, affinity: str = ""
    ) -> Endpoint:
        """A slot on the chosen endpoint; waits (until the deadline) while all are full."""
        changed = self.slots_changed()
        while True:
            e = self.pick(avoid, slot=True, affinity=affinity)
            if e is not None:
                e.in_flight += 1
                return e
            left = deadline - time.monotonic()
            what = f"waiting for a free {self.engine} slot"
            if left <= 0:
                raise deadline_error(caller_bound, what)
            changed.clear()  # no await since pick(): no release can be missed
            self.stats["waited_for_slot"] += 1
            try:
                await asyncio.wait_for(changed.wait(), timeout=left)
            except TimeoutError:
                raise deadline_error(caller_bound, what) from None

    def _release(self, e: Endpoint) -> None:
        """Synchronous, so a cancelled call can never keep its slot."""
        e.in_flight -= 1
        self.slots_changed().set()

    async def call(
        self,
        op: Callable[[Endpoint, float], Awaitable[T]],
        deadline: float,
        caller_bound: bool,
        *,
        slot: bool,
        affinity: str = "",
    ) -> T:
        """Run `op(endpoint, seconds_left)`, retrying overloads (jitter) and outages (other
        endpoints). `slot`: the call holds one of the endpoint's in-flight slots; `affinity`:
        calls with the same key prefer the same endpoint (prefix locality)."""
        r, name = self.retry, self.engine
        overloads = outages = 0
        avoid: set[str] = set()
        while True:
            if slot:
                e = await self._acquire(avoid, deadline, caller_bound, affinity)
            else:
                picked = self.pick(avoid, slot=False, affinity=affinity)
                if picked is None:
                    raise BackendError(f"no {name} endpoint is configured")
                e = picked
            left = deadline - time.monotonic()
            try:
                if left <= 0:
                    raise out_of_time(caller_bound, f"before the {name} call", overloads, name)
                e.requests += 1
                return await op(e, left)
            except Retry as retry:
                e.failures += 1
                self.stats[retry.kind] += 1
                if retry.kind == "overloaded":
                    overloads += 1
                    if overloads > r.overload_retries:
                        raise ResourceExhaustedError(
                            f"{name} is overloaded ({overloads} overload replies; last from "
                            f"{e.url}: {retry.cause})"
                        ) from None
                    delay = random.uniform(0, min(r.backoff_max_s, r.backoff_base_s * 2**overloads))
                    if time.monotonic() + delay >= deadline:
                        raise ResourceExhaustedError(
                            f"{name} is overloaded and the deadline leaves no time to retry "
                            f"(last from {e.url}: {retry.cause})"
                        ) from None
                else:
                    outages += 1
                    e.down_until = time.monotonic() + r.down_cooloff_s
                    avoid.add(e.url)
                    if outages > r.unavailable_retries:
                        raise BackendError(
                            f"{name} unavailable after {outages} tries (last {e.url}: "
                            f"{retry.cause})"
                        ) from None
                    others = any(
                        x.ready and x.url not in avoid and x.down_until <= time.monotonic()
                        for x in self.endpoints
                    )
                    delay = 0.0 if others else random.uniform(0, r.backoff_base_s * 2**outages)
                    if time.monotonic() + delay >= deadline:
                        raise BackendError(
                            f"{name} unavailable and no time left to retry ({e.url}: {retry.cause})"
                        ) from None
            except TimeoutError:
                e.failures += 1
                raise out_of_time(
                    caller_bound, f"{name} call to {e.url}", overloads, name
                ) from None
            except (aiohttp.ClientError, HttpConnectionError) as exc:  # refused, reset, malformed
                e.failures += 1
                outages += 1
                self.stats["unavailable"] += 1
                e.down_until = time.monotonic() + r.down_cooloff_s
                avoid.add(e.url)
                if outages > r.unavailable_retries:
                    raise BackendError(
                        f"{name} unavailable after {outages} tries (last {e.url}: "
                        f"{type(exc).__name__}: {exc})"
                    ) from None
                delay = 0.0
            finally:
                if slot:
                    self._release(e)
            if delay:
                await asyncio.sleep(delay)


@functools.lru_cache(maxsize=4096)
def _ranking(key: str, urls: tuple[str, ...]) -> dict[str, int]:
    """Rendezvous (highest random weight) order of `urls` for `key`: url → rank, 0 first.
    A stable hash, so every sampler process ranks a key's endpoints alike."""
    weights = {
        url: hashlib.blake2b(f"{key}\0{url}".encode(), digest_size=8).digest() for url in urls
    }
    ordered = sorted(urls, key=lambda url: weights[url], reverse=True)
    return {url: i for i, url in enumerate(ordered)}


def call_deadline(caller: float | None, cap_s: float) -> tuple[float, bool]:
    """(monotonic deadline, whether it is the caller's rather than the backend's own cap)."""
    own = time.monotonic() + cap_s
    if caller is None:
        return own, False
    return (caller, True) if caller <= own else (own, False)


def out_of_time(caller_bound: bool, what: str, overloads: int, engine: str) -> GrmError:
    """The deadline passed while retrying overloads: the cause to report is the overload."""
    if overloads:
        return ResourceExhaustedError(
            f"{engine} is overloaded ({overloads} overload replies); the deadline passed {what}"
        )
    return deadline_error(caller_bound, what)


def deadline_error(caller_bound: bool, what: str) -> GrmError:
    if caller_bound:
        return DeadlineExceededError(f"the deadline passed {what}")
    return BackendError(f"timed out {what} (request_timeout_s)")
