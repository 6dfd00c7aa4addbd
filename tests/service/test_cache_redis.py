"""The Redis store against a real redis-server: AUTH, TLS, prefixes, TTLs, and Redis failing.

Redis down, hung or restarted must only make scoring slower, never fail it.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from grm.cache import KEY_VERSION, CacheSettings, CacheTTL, GrmCache, Kind, build_cache
from grm.cache.redis_store import RedisStore
from grm.core.types import ScoreStatus
from tests.service.test_cache import CountingSampleSource, make_item, pipeline
from tests.support.redis_server import RedisServer, free_port


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    with RedisServer(password="s3cret-pw") as srv:
        yield srv


@pytest.fixture
def own_server() -> Iterator[RedisServer]:
    """A server this test may kill, freeze and restart."""
    with RedisServer(password="s3cret-pw") as srv:
        yield srv


def redis_cache(url: str, *, prefix: str | None = None, retry_after_s: float = 0.1) -> GrmCache:
    settings = CacheSettings(
        redis_url=url,
        prefix=prefix or f"test-{uuid.uuid4().hex[:12]}",
        retry_after_s=retry_after_s,
    )
    return build_cache(settings)


async def wait_available(cache: GrmCache, within_s: float = 5.0) -> None:
    """Make requests until the background probe has found the store again."""
    deadline = time.monotonic() + within_s
    while not cache.available and time.monotonic() < deadline:
        await cache.get(Kind.SAMPLE, ["probe"])  # while down this starts the probe
        await asyncio.sleep(0.05)
    assert cache.available, "the cache did not come back"


async def test_values_live_under_the_tenant_prefix_with_the_kinds_ttl(server: RedisServer) -> None:
    a = redis_cache(server.url, prefix="tenant-a")
    a.ttl = CacheTTL(sample_s=3600)
    source = CountingSampleSource()
    await pipeline(source, a).score(make_item(3))
    with server.client() as raw:
        keys = sorted(raw.keys("tenant-a:*"))
        assert len(keys) == 3 and all(
            k.startswith(f"tenant-a:sample:{KEY_VERSION}:".encode()) for k in keys
        )
        assert all(3_590_000 < raw.pttl(k) <= 3_600_000 for k in keys)
        assert all(raw.strlen(k) < 250 for k in keys)  # compact values
    b = redis_cache(server.url, prefix="tenant-b")
    await pipeline(source, b).score(make_item(3))
    assert len(source.drawn) == 6 and b.stats.sample.hits == 0  # tenants do not share
    await pipeline(source, a).score(make_item(3))
    assert len(source.drawn) == 6
    await a.close()
    await b.close()


async def test_settings_from_the_environment_select_redis_with_a_separate_password(
    server: RedisServer,
) -> None:
    url = f"redis://127.0.0.1:{server.port}/0"
    env = {"GRM_REDIS_URL": url, "GRM_REDIS_PASSWORD": "s3cret-pw", "GRM_CACHE_PREFIX": "env"}
    settings = CacheSettings.from_env(env, retry_after_s=0.2, prefix=None)
    assert settings.prefix == "env" and settings.retry_after_s == 0.2
    assert "s3cret-pw" not in repr(settings)
    cache = build_cache(settings)
    assert isinstance(cache.store, RedisStore)
    await cache.store.ping()
    await cache.close()
    assert build_cache(CacheSettings.from_env({})).describe().startswith("memory(")


async def test_a_wrong_password_means_no_cache_not_an_error(
    server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    cache = redis_cache(f"redis://:wrong-pw@127.0.0.1:{server.port}/0")
    source = CountingSampleSource()
    with caplog.at_level(logging.WARNING, logger="grm.cache"):
        for _ in range(3):
            result = await pipeline(source, cache).score(make_item(2))
            assert result.status is ScoreStatus.COMPLETE
    assert len(source.drawn) == 6 and cache.stats.sample.errors >= 1
    [warning] = caplog.records
    assert "continuing without cache" in warning.getMessage()
    assert "wrong-pw" not in warning.getMessage()
    await cache.close()


async def test_no_redis_listening_costs_one_fast_failure() -> None:
    cache = redis_cache(f"redis://127.0.0.1:{free_port()}/0", retry_after_s=60)
    source = CountingSampleSource()
    for seed in range(10):
        await pipeline(source, cache).score(make_item(4, seed=seed))
    assert len(source.drawn) == 40
    assert cache.stats.outages == 1 and cache.stats.sample.errors == 1
    assert cache.stats.sample.bypassed >= 18  # the other lookups and writes skip the store
    await cache.close()


async def test_redis_killed_mid_request_then_restarted_on_the_same_port(
    own_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    cache = redis_cache(own_server.url)
    source = CountingSampleSource(delay=0.2)
    scorer = pipeline(source, cache)
    await scorer.score(make_item(4, seed=1))
    await scorer.score(make_item(4, seed=1))
    assert len(source.drawn) == 4  # cached

    with caplog.at_level(logging.INFO, logger="grm.cache"):
        request = asyncio.create_task(scorer.score(make_item(4, seed=2)))
        await asyncio.sleep(0.1)  # the lookup is done, the samples are being drawn
        own_server.kill()
        result = await request  # storing them fails: the caller does not notice
        assert result.status is ScoreStatus.COMPLETE and result.k_valid == 4
        for seed in (3, 3):
            assert (await scorer.score(make_item(4, seed=seed))).k_valid == 4
        assert len(source.drawn) == 16  # no cache while Redis is down
        assert cache.stats.outages == 1 and not cache.available

        own_server.start()  # same port, empty
        await wait_available(cache)
        await scorer.score(make_item(4, seed=4))
        await scorer.score(make_item(4, seed=4))
        assert len(source.drawn) == 20  # caching works again
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert any("available again" in r.getMessage() for r in caplog.records)
    await cache.close()


async def test_a_restart_between_requests_costs_no_error(own_server: RedisServer) -> None:
    cache = redis_cache(own_server.url)
    source = CountingSampleSource()
    await pipeline(source, cache).score(make_item(2, seed=1))
    own_server.kill()
    own_server.start()  # pooled connections are now dead: one immediate reconnect absorbs it
    await pipeline(source, cache).score(make_item(2, seed=2))
    await pipeline(source, cache).score(make_item(2, seed=2))
    assert len(source.drawn) == 4 and cache.stats.sample.hits == 2
    assert cache.stats.sample.errors == 0 and cache.stats.outages == 0
    await cache.close()


async def test_a_hung_redis_is_timed_out_then_bypassed(own_server: RedisServer) -> None:
    cache = redis_cache(own_server.url)
    source = CountingSampleSource()
    scorer = pipeline(source, cache)
    await scorer.score(make_item(2, seed=1))
    own_server.pause()
    try:
        started = time.perf_counter()
        assert (await scorer.score(make_item(2, seed=1))).k_valid == 2
        first = time.perf_counter() - started
        started = time.perf_counter()
        for seed in range(2, 7):
            assert (await scorer.score(make_item(2, seed=seed))).k_valid == 2
        rest = time.perf_counter() - started
    finally:
        own_server.resume()
    # One op timeout (0.5 s), not redis-py's retries with backoff (3 s of slack for a loaded
    # machine); then the store is bypassed while a background ping probes it.
    assert 0.3 < first < 0.5 + 3.0
    assert rest < 5 * 0.5  # below one op timeout per score: none of them waited for Redis
    assert cache.stats.sample.errors >= 1 and cache.stats.outages == 1
    assert cache.stats.sample.bypassed >= 5
    await wait_available(cache)
    await scorer.score(make_item(2, seed=1))
    assert cache.stats.sample.hits == 2  # the entries from before the freeze are still there
    await cache.close()


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed: cannot make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            *(openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


async def test_rediss_with_auth(tls_files: tuple[Path, Path]) -> None:
    cert, _ = tls_files
    with RedisServer(password="tls-pw", tls=tls_files) as srv:
        assert srv.url.startswith("rediss://:tls-pw@")
        # The private CA through the environment, as a deployment gives it.
        env = {"GRM_REDIS_URL": srv.url, "GRM_REDIS_CA_CERTS": str(cert), "GRM_CACHE_PREFIX": "tls"}
        cache = build_cache(CacheSettings.from_env(env))
        source = CountingSampleSource()
        await pipeline(source, cache).score(make_item(2))
        await pipeline(source, cache).score(make_item(2))
        assert len(source.drawn) == 2 and cache.stats.sample.hits == 2
        assert cache.stats.sample.errors == 0
        await cache.close()


async def test_cross_pod_duplicate_work_is_counted_not_prevented(server: RedisServer) -> None:
    """Two aggregators (own caches, one Redis) get the same request at once: both draw.

    Single-flight is per process; the second write finds the first pod's value and counts a
    duplicate — the number that decides whether a Redis lock would ever pay off.
    """
    prefix = f"pods-{uuid.uuid4().hex[:8]}"
    pod_a, pod_b = redis_cache(server.url, prefix=prefix), redis_cache(server.url, prefix=prefix)
    source_a, source_b = CountingSampleSource(delay=0.1), CountingSampleSource(delay=0.15)
    await asyncio.gather(
        pipeline(source_a, pod_a).score(make_item(4)),
        pipeline(source_b, pod_b).score(make_item(4)),
    )
    assert len(source_a.drawn) == len(source_b.drawn) == 4
    assert pod_a.stats.sample.stores == 4 and pod_a.stats.sample.duplicates == 0
    assert pod_b.stats.sample.stores == 0 and pod_b.stats.sample.duplicates == 4
    await pipeline(source_b, pod_b).score(make_item(4))
    assert len(source_b.drawn) == 4  # and afterwards both pods hit
    await pod_a.close()
    await pod_b.close()


async def test_a_burst_beyond_the_connection_pool_waits_instead_of_failing(
    server: RedisServer,
) -> None:
    # 300 lookups queue for 4 connections. The op timeouts are made generous here (a loaded
    # machine can take longer than the production 0.5 s to serve the queue): the test is about
    # waiting for a pooled connection instead of failing, not about timeouts.
    cache = GrmCache(
        RedisStore(
            server.url,
            prefix="burst",
            max_connections=4,
            connect_timeout_s=30,
            timeout_s=30,
            op_timeout_s=60,
        )
    )
    got = await asyncio.gather(*(cache.get(Kind.SAMPLE, [f"k{i}"]) for i in range(300)))
    assert got == [[None]] * 300
    assert cache.stats.sample.errors == 0 and cache.available
    await cache.close()
