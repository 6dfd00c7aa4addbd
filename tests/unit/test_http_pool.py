"""Prefix locality in the HTTP endpoint pool: consistent choice per key, spill-over when busy."""

from __future__ import annotations

import collections

import pytest

from grm.backends.http_pool import EndpointPool, RetryPolicy
from grm.core.errors import FailedPreconditionError

URLS = [f"http://engine-{i}:8000" for i in range(4)]


def _pool(*, locality: bool = True, limit: int = 4, urls: list[str] = URLS) -> EndpointPool:
    pool = EndpointPool(
        urls, engine="TGI", default_limit=limit, retry=RetryPolicy(), locality=locality
    )
    for e in pool.endpoints:
        e.info = {}  # configured (what start-up reads from /info)
    return pool


def _take(pool: EndpointPool, key: str) -> str:
    e = pool.pick(set(), slot=True, affinity=key)
    assert e is not None
    e.in_flight += 1
    return e.url


def test_one_key_stays_on_one_endpoint_while_it_has_room() -> None:
    pool = _pool(limit=8)
    assert len({_take(pool, "item-1") for _ in range(8)}) == 1
    # Another process (a second sampler) ranks the key's endpoints alike.
    assert _take(_pool(limit=8), "item-1") == _take(_pool(limit=8), "item-1")


def test_a_full_endpoint_spills_over_to_the_keys_next_choice() -> None:
    pool = _pool(limit=3)
    urls = [_take(pool, "item-1") for _ in range(8)]
    counts = collections.Counter(urls)
    assert sorted(counts.values()) == [2, 3, 3]  # as few endpoints as their slots allow
    assert urls[:3] == [urls[0]] * 3 and urls[3] != urls[0]
    pool.endpoints[[e.url for e in pool.endpoints].index(urls[0])].in_flight -= 1
    assert _take(pool, "item-1") == urls[0]  # back to the first choice once it has room


def test_keys_spread_over_the_endpoints() -> None:
    pool = _pool(limit=1000)
    firsts = collections.Counter(_take(pool, f"item-{i}") for i in range(400))
    assert set(firsts) == set(URLS)
    assert min(firsts.values()) > 50  # rendezvous hashing: about a quarter each


def test_a_removed_endpoint_moves_only_its_own_keys() -> None:
    full = {f"item-{i}": _take(_pool(limit=1000), f"item-{i}") for i in range(200)}
    three = {f"item-{i}": _take(_pool(limit=1000, urls=URLS[:3]), f"item-{i}") for i in range(200)}
    moved = [k for k in full if full[k] != three[k]]
    assert moved and all(full[k] == URLS[3] for k in moved)


def test_without_locality_or_key_the_least_loaded_endpoint_is_chosen() -> None:
    for pool, key in ((_pool(locality=False), "item-1"), (_pool(), "")):
        assert len({_take(pool, key) for _ in range(4)}) == 4


def test_a_down_endpoint_is_skipped_for_the_next_choice() -> None:
    import time

    pool = _pool(limit=8)
    first = _take(pool, "item-1")
    down = next(e for e in pool.endpoints if e.url == first)
    down.down_until = time.monotonic() + 60
    assert _take(pool, "item-1") != first


def test_an_endpoint_that_is_not_an_http_url_is_refused_at_once() -> None:
    for url in ("tgi:8080", "engine-0:8000", "ftp://engine-0", "http://engine-0:99999"):
        with pytest.raises(FailedPreconditionError, match="not an http:// or https:// URL"):
            _pool(urls=[URLS[0], url])
    pool = _pool(urls=["http://[::1]:8080", "https://engine.example/v1", "http://engine-0"])
    assert len(pool.endpoints) == 3
