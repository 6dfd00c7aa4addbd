"""Fixtures shared by every kind of test.

Tests are grouped by what they run (each folder's __init__ says more):
- unit/     pure logic and in-process pipelines, no sockets;
- service/  real servers inside the test process on free loopback ports (gRPC, HTTP engine
            stand-ins, redis-server, a Kubernetes API emulator);
- process/  real child processes (`grm serve`, `grm up`, the benchmarks);
- chart/    the Helm chart and the Dockerfile with the real tools;
- model/    the real embedded model (also marked `model`, as are a few others).
Shared code lives in support/.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.redis_server import RedisServer


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One real redis-server for the session; tests keep apart by key prefix."""
    with RedisServer() as server:
        yield server


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A real redis-server of this test's own, which it may kill, freeze and restart."""
    with RedisServer() as server:
        yield server
