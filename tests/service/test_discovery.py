"""Sampler pool discovery: EndpointSlices → ready addresses → RemoteSamplerPool.

The pure parts are checked directly; the watcher runs with the official `kubernetes` client
against kmock's Kubernetes emulator on a loopback port (the real HTTP list/watch protocol).
kmock ignores label selectors, so its answers also carry other services' slices — exactly
what the watcher must filter out itself. The end-to-end test scores through an aggregator
built by `grm.services.aggregator.main.build` whose samplers are real gRPC servers found
through kmock.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import kmock as km
import pytest
from kubernetes import client

from grm.client import NO_RETRY, AsyncGrmClient
from grm.core.errors import UnavailableError
from grm.core.plan import SamplingJob
from grm.core.types import Context, SampleSpec, SamplingParams
from grm.services.aggregator import discovery
from grm.services.aggregator.discovery import (
    EndpointSliceWatcher,
    apply_event,
    backoff_delay,
    pod_namespace,
    ready_addresses,
)
from grm.services.aggregator.main import AggregatorSettings, add_arguments, build, build_settings
from grm.services.aggregator.pool import UNAVAILABLE_REASON, RemoteSamplerPool
from tests.support.polling import eventually
from tests.support.servers import LOOPBACK, TrackingBackend, start_principles, start_sampler

SERVICE = "grm-sampler"
NS = "default"
RESOURCE = "discovery.k8s.io/v1/endpointslices"
SLICES_URL = f"/apis/discovery.k8s.io/v1/namespaces/{NS}/endpointslices"
RESPONSES = ["bad one", "good one"]


def endpoint_slice(
    name: str,
    ips: list[str],
    *,
    port: int = 50053,
    service: str = SERVICE,
    ready: bool | None = True,
    terminating: bool = False,
    ports: list[dict[str, Any]] | None = None,
    address_type: str = "IPv4",
) -> dict[str, Any]:
    """An EndpointSlice as the API serves it (one endpoint per IP)."""
    conditions: dict[str, Any] = {"terminating": terminating}
    if ready is not None:
        conditions["ready"] = ready
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "namespace": NS,
            "labels": {discovery.SERVICE_LABEL: service},
        },
        "addressType": address_type,
        "ports": ports
        if ports is not None
        else [
            {"name": "grpc", "port": port, "protocol": "TCP"},
            {"name": "metrics", "port": 9090, "protocol": "TCP"},
        ],
        "endpoints": [{"addresses": [ip], "conditions": dict(conditions)} for ip in ips],
    }


# --- pure logic ------------------------------------------------------------------------


def test_ready_addresses_keep_ready_endpoints_of_the_service_on_its_grpc_port() -> None:
    slices = [
        endpoint_slice("a", ["10.0.0.1", "10.0.0.2"]),
        endpoint_slice("b", ["10.0.0.3"], ready=None),  # unset = ready
        endpoint_slice("c", ["10.0.0.4"], ready=False),
        endpoint_slice("d", ["10.0.0.5"], ready=True, terminating=True),
        endpoint_slice("e", ["10.9.9.9"], service="other"),
        endpoint_slice("f", ["10.0.0.6"], ports=[{"name": "", "port": 7000}]),  # only port
        endpoint_slice("g", ["10.0.0.7"], ports=[]),  # no port: unusable
        endpoint_slice(
            "h", ["10.0.0.8"], ports=[{"name": "x", "port": 1}, {"name": "y", "port": 2}]
        ),
        endpoint_slice("i", ["fd00::1"], address_type="IPv6"),
        endpoint_slice("j", ["sampler.example"], address_type="FQDN"),
    ]
    assert ready_addresses(slices, SERVICE) == {
        "10.0.0.1:50053",
        "10.0.0.2:50053",
        "10.0.0.3:50053",
        "10.0.0.6:7000",
        "[fd00::1]:50053",
    }
    assert ready_addresses(slices, "other") == {"10.9.9.9:50053"}
    assert ready_addresses([], SERVICE) == frozenset()


def test_apply_event_follows_adds_changes_deletes_and_relabels() -> None:
    state: dict[str, Any] = {}
    a = endpoint_slice("a", ["10.0.0.1"])
    assert apply_event(state, "ADDED", a, SERVICE)
    assert not apply_event(state, "MODIFIED", a, SERVICE)  # no change
    assert not apply_event(state, "ADDED", endpoint_slice("o", ["10.9.9.9"], service="x"), SERVICE)
    a2 = endpoint_slice("a", ["10.0.0.1", "10.0.0.2"])
    assert apply_event(state, "MODIFIED", a2, SERVICE)
    assert ready_addresses(state.values(), SERVICE) == {"10.0.0.1:50053", "10.0.0.2:50053"}
    b = endpoint_slice("b", ["10.0.0.3"])
    assert apply_event(state, "ADDED", b, SERVICE)
    # relabelled away from the service: gone
    assert apply_event(state, "MODIFIED", endpoint_slice("b", ["10.0.0.3"], service="x"), SERVICE)
    assert apply_event(state, "DELETED", a2, SERVICE)
    assert not apply_event(state, "DELETED", a2, SERVICE)
    assert not apply_event(state, "BOOKMARK", a, SERVICE)
    assert state == {}


def test_backoff_is_exponential_bounded_and_jittered() -> None:
    assert backoff_delay(0) == 0.0
    low = [backoff_delay(n, base_s=1.0, cap_s=8.0, rng=lambda: 0.0) for n in range(1, 7)]
    high = [backoff_delay(n, base_s=1.0, cap_s=8.0, rng=lambda: 1.0) for n in range(1, 7)]
    assert high == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert low == [h / 2 for h in high]
    assert all(0.5 <= backoff_delay(3, base_s=1.0, rng=lambda: 0.37) / 4 <= 1.0 for _ in range(3))


def test_pod_namespace_from_the_service_account_mount(tmp_path: Path) -> None:
    file = tmp_path / "namespace"
    file.write_text("grm-prod\n")
    assert pod_namespace(file) == "grm-prod"
    assert pod_namespace(tmp_path / "missing") == "default"


def _settings(env: dict[str, str]) -> AggregatorSettings:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return build_settings(parser.parse_args([]), env)


def test_settings_for_kubernetes_discovery() -> None:
    s = _settings(
        {
            "GRM_SAMPLER_DISCOVERY": "kubernetes",
            "GRM_SAMPLER_SERVICE": "rel-grm-sampler",
            "GRM_SAMPLER_NAMESPACE": "team-a",
        }
    )
    assert (s.sampler_discovery, s.sampler_service, s.sampler_namespace) == (
        "kubernetes",
        "rel-grm-sampler",
        "team-a",
    )
    assert s.samplers == ()  # may start empty
    with pytest.raises(SystemExit, match="--sampler-service"):
        _settings({"GRM_SAMPLER_DISCOVERY": "kubernetes"})
    with pytest.raises(SystemExit, match="--samplers"):
        _settings({})
    with pytest.raises(SystemExit, match="GRM_SAMPLER_DISCOVERY"):
        _settings({"GRM_SAMPLER_DISCOVERY": "dns", "GRM_SAMPLERS": "a:1"})
    static = _settings({"GRM_SAMPLERS": "a:1,b:2"})
    assert static.sampler_discovery == "static" and static.samplers == ("a:1", "b:2")


async def test_static_sampler_list_builds_no_watcher() -> None:
    # build() makes a grpc.aio server, so it runs inside the event loop like the real main.
    assert build(_settings({"GRM_SAMPLERS": "a:1,b:2"})).discovery is None


# --- the pool's run-time membership ----------------------------------------------------


JOB = SamplingJob(Context.from_query("q"), tuple(RESPONSES), SamplingParams())


def _specs(n: int) -> list[SampleSpec]:
    return [SampleSpec(index=i, attempt=0, seed=10 + i, order=(0, 1)) for i in range(n)]


async def test_empty_pool_reports_unavailable_and_no_capacity() -> None:
    pool = RemoteSamplerPool([])
    assert pool.load() == (0, 0) and pool.plan(_specs(2)) == []
    samples = await pool.sample(JOB, _specs(2))
    assert [s.valid for s in samples] == [False, False]
    assert all(s.invalid_reason.startswith(UNAVAILABLE_REASON) for s in samples)
    pool.update_addresses(["127.0.0.1:1"])
    assert pool.addresses == ["127.0.0.1:1"] and pool.load() == (1, 0)
    pool.update_addresses([])
    assert pool.load() == (0, 0)
    await pool.close()


async def test_a_removed_sampler_finishes_its_in_flight_call_then_closes() -> None:
    slow = await start_sampler(TrackingBackend(capacity=2, delay=0.3))
    fast = await start_sampler(TrackingBackend(capacity=2))
    pool = RemoteSamplerPool([slow.address])
    try:
        call = asyncio.ensure_future(pool.sample(JOB, _specs(2)))
        await eventually(lambda: slow.backend.running == 2, "both samples running")
        (gone,) = pool.endpoints
        pool.update_addresses([fast.address])
        assert pool.addresses == [fast.address]
        assert gone.retired and gone.channel is not None  # still serving its call
        samples = await call
        assert all(s.valid and s.sampler == slow.address for s in samples)
        await eventually(lambda: gone.channel is None, "the retired channel closed")
        more = await pool.sample(JOB, _specs(2))
        assert all(s.valid and s.sampler == fast.address for s in more)
        assert slow.backend.finished == 2 and slow.backend.cancelled == 0
    finally:
        await pool.close()
        await slow.stop()
        await fast.stop()


# --- the watcher against kmock ---------------------------------------------------------


def _api_client(url: str) -> Any:
    return client.ApiClient(client.Configuration(host=url.rstrip("/")))


@pytest.fixture
def api(kmock: km.KubernetesEmulator) -> Iterator[Any]:
    """The official client pointed at kmock, which must know the resource up front (else
    it answers the first list with 404 while no slice exists yet)."""
    kmock.resources[RESOURCE] = {}
    api_client = _api_client(str(kmock.url))
    yield api_client
    api_client.close()


@pytest.fixture
async def watched(
    api: Any,
) -> AsyncIterator[tuple[RemoteSamplerPool, EndpointSliceWatcher]]:
    """A pool fed by a watcher (fast back-off); nothing started yet."""
    pool = RemoteSamplerPool([])
    watcher = EndpointSliceWatcher(
        SERVICE,
        NS,
        pool.update_addresses,
        api_client=api,
        backoff_base_s=0.05,
        backoff_cap_s=0.2,
    )
    yield pool, watcher
    await watcher.close()
    await pool.close()


async def create(kmock: km.KubernetesEmulator, obj: dict[str, Any]) -> None:
    resp = await kmock.post(SLICES_URL, json=obj)
    assert resp.status == 200, await resp.text()


async def patch(kmock: km.KubernetesEmulator, name: str, obj: dict[str, Any]) -> None:
    resp = await kmock.patch(f"{SLICES_URL}/{name}", json=obj)
    assert resp.status == 200, await resp.text()


async def delete(kmock: km.KubernetesEmulator, name: str) -> None:
    resp = await kmock.delete(f"{SLICES_URL}/{name}")
    assert resp.status == 200, await resp.text()


def members(pool: RemoteSamplerPool) -> set[str]:
    return set(pool.addresses)


async def test_slices_added_changed_and_deleted_drive_the_pool(
    kmock: km.KubernetesEmulator, watched: tuple[RemoteSamplerPool, EndpointSliceWatcher]
) -> None:
    pool, watcher = watched
    await create(kmock, endpoint_slice("s-1", ["10.0.0.1"]))
    await watcher.start()
    await eventually(lambda: members(pool) == {"10.0.0.1:50053"}, "the listed slice")
    await create(kmock, endpoint_slice("s-2", ["10.0.0.2", "10.0.0.3"]))
    await eventually(
        lambda: members(pool) == {"10.0.0.1:50053", "10.0.0.2:50053", "10.0.0.3:50053"},
        "the watched new slice",
    )
    assert pool.load() == (3, 0)  # the k planner sees the pool grow
    # one endpoint stops being ready, another starts terminating
    changed = endpoint_slice("s-2", ["10.0.0.2"])
    changed["endpoints"].append({"addresses": ["10.0.0.3"], "conditions": {"ready": False}})
    await patch(kmock, "s-2", {"endpoints": changed["endpoints"]})
    await eventually(
        lambda: members(pool) == {"10.0.0.1:50053", "10.0.0.2:50053"}, "not-ready removed"
    )
    await delete(kmock, "s-1")
    await eventually(lambda: members(pool) == {"10.0.0.2:50053"}, "the deleted slice's pod gone")
    await delete(kmock, "s-2")
    await eventually(lambda: members(pool) == set(), "an empty pool")
    assert pool.load() == (0, 0)
    assert watcher.lists == 1  # all of it through one watch


async def test_slices_of_other_services_are_ignored(
    kmock: km.KubernetesEmulator, watched: tuple[RemoteSamplerPool, EndpointSliceWatcher]
) -> None:
    pool, watcher = watched
    await create(kmock, endpoint_slice("other-1", ["10.9.0.1"], service="grm-principles"))
    await create(kmock, endpoint_slice("mine-1", ["10.0.0.1"]))
    await watcher.start()
    await eventually(lambda: members(pool) == {"10.0.0.1:50053"}, "own slice only")
    await create(kmock, endpoint_slice("other-2", ["10.9.0.2"], service="grm-principles"))
    await create(kmock, endpoint_slice("mine-2", ["10.0.0.2"]))
    await eventually(lambda: "10.0.0.2:50053" in members(pool), "own new slice")
    assert members(pool) == {"10.0.0.1:50053", "10.0.0.2:50053"}
    # The emulator did hand the other service's slices over (it ignores label selectors),
    # and the selector was sent all the same.
    lists = list(kmock[km.action.LIST])
    assert lists and all(
        r.params.get("labelSelector") == f"{discovery.SERVICE_LABEL}={SERVICE}" for r in lists
    )
    resp = await kmock.get(SLICES_URL, params={"labelSelector": lists[0].params["labelSelector"]})
    names = {item["metadata"]["name"] for item in (await resp.json())["items"]}
    assert {"other-1", "other-2"} <= names


async def test_an_expired_watch_relists_and_continues(
    kmock: km.KubernetesEmulator, watched: tuple[RemoteSamplerPool, EndpointSliceWatcher]
) -> None:
    pool, watcher = watched
    gate = asyncio.Event()

    async def expiring() -> AsyncIterator[Any]:
        yield b""  # headers out: the watch is open
        await gate.wait()
        yield {
            "type": "ERROR",
            "object": {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old"},
        }

    kmock[km.action.WATCH][:1] << expiring()  # only the first watch expires
    await create(kmock, endpoint_slice("s-1", ["10.0.0.1"]))
    await watcher.start()
    await eventually(lambda: members(pool) == {"10.0.0.1:50053"}, "the first list")
    # Changed while the first watch delivered nothing: only a relist can see it.
    await delete(kmock, "s-1")
    await create(kmock, endpoint_slice("s-2", ["10.0.0.2"]))
    assert members(pool) == {"10.0.0.1:50053"}
    gate.set()
    await eventually(lambda: members(pool) == {"10.0.0.2:50053"}, "the relisted state")
    assert watcher.lists == 2
    await create(kmock, endpoint_slice("s-3", ["10.0.0.3"]))
    await eventually(
        lambda: members(pool) == {"10.0.0.2:50053", "10.0.0.3:50053"}, "the next watch's events"
    )


async def test_api_errors_keep_the_last_set_and_recover(
    kmock: km.KubernetesEmulator, watched: tuple[RemoteSamplerPool, EndpointSliceWatcher]
) -> None:
    pool, watcher = watched
    gate = asyncio.Event()
    failing = True

    async def broken_watch() -> AsyncIterator[Any]:
        yield b""
        await gate.wait()
        yield {
            "type": "ERROR",
            "object": {"kind": "Status", "code": 500, "reason": "InternalError", "message": "x"},
        }

    kmock[km.action.WATCH][:1] << broken_watch()
    await create(kmock, endpoint_slice("s-1", ["10.0.0.1", "10.0.0.2"]))
    await watcher.start()
    await eventually(lambda: len(members(pool)) == 2, "the first list")
    # From now on the API answers 500 to lists and watches.
    kmock["get", km.resource("discovery.k8s.io", "v1", "endpointslices"), lambda: failing] << 500
    gate.set()
    await eventually(lambda: watcher.failures >= 3, "several failed retries")
    assert members(pool) == {"10.0.0.1:50053", "10.0.0.2:50053"}  # never emptied
    await delete(kmock, "s-1")
    await create(kmock, endpoint_slice("s-2", ["10.0.0.3"]))
    failing = False
    await eventually(lambda: members(pool) == {"10.0.0.3:50053"}, "recovered")
    await eventually(lambda: watcher.failures == 0, "a healthy watch")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_unreachable_api_keeps_the_start_set_and_recovers() -> None:
    port = _free_port()
    api_client = _api_client(f"http://127.0.0.1:{port}")
    pool = RemoteSamplerPool(["static-sampler:50053"])  # the static start set
    watcher = EndpointSliceWatcher(
        SERVICE,
        NS,
        pool.update_addresses,
        api_client=api_client,
        backoff_base_s=0.05,
        backoff_cap_s=0.2,
        request_timeout_s=2.0,
    )
    try:
        await watcher.start()
        await eventually(lambda: watcher.failures >= 2, "failed connection attempts")
        assert pool.addresses == ["static-sampler:50053"]
        async with km.KubernetesEmulator() as emulator, km.Server(emulator, port=port):
            emulator.resources[RESOURCE] = {}
            await create(emulator, endpoint_slice("s-1", ["10.0.0.1"]))
            await eventually(lambda: members(pool) == {"10.0.0.1:50053"}, "the API back")
            await watcher.close()
            assert not watcher.running
    finally:
        await watcher.close()
        await pool.close()
        api_client.close()


async def test_close_stops_the_watcher(
    kmock: km.KubernetesEmulator, watched: tuple[RemoteSamplerPool, EndpointSliceWatcher]
) -> None:
    pool, watcher = watched
    await create(kmock, endpoint_slice("s-1", ["10.0.0.1"]))
    await watcher.start()
    await eventually(lambda: members(pool) == {"10.0.0.1:50053"}, "the first list")
    await eventually(lambda: len(list(kmock[km.action.WATCH])) == 1, "the watch open")
    assert watcher.running
    await watcher.close()  # interrupts the blocked watch read
    assert not watcher.running
    requests = len(list(kmock))
    await create(kmock, endpoint_slice("s-2", ["10.0.0.2"]))
    assert len(list(kmock)) == requests + 1  # only our create: no relist or re-watch
    assert members(pool) == {"10.0.0.1:50053"}


# --- end to end ------------------------------------------------------------------------


async def test_aggregator_discovers_samplers_and_drops_a_removed_one(
    kmock: km.KubernetesEmulator, api: Any
) -> None:
    samplers = [await start_sampler(TrackingBackend(capacity=4)) for _ in range(2)]
    principles = await start_principles()
    settings = AggregatorSettings(
        server=LOOPBACK,
        samplers=(),
        principles=(principles.address,),
        sampler_discovery="kubernetes",
        sampler_service=SERVICE,
        sampler_namespace=NS,
    )
    aggregator = build(settings, kube_api_client=api)
    assert aggregator.discovery is not None and aggregator.pool.addresses == []
    await aggregator.server.start()
    await aggregator.warm_up()
    await aggregator.server.set_serving(True)
    try:
        async with AsyncGrmClient(aggregator.server.address, timeout=10, retry=NO_RETRY) as c:
            # nothing discovered yet: an error, never a reward
            with pytest.raises(UnavailableError):
                await c.score("q", RESPONSES, k=2)
            for i, s in enumerate(samplers):  # one slice per sampler: each has its own port
                port = int(s.address.rsplit(":", 1)[1])
                await create(kmock, endpoint_slice(f"sampler-{i}", ["127.0.0.1"], port=port))
            both = {s.address for s in samplers}
            await eventually(lambda: members(aggregator.pool) == both, "both samplers")
            result = await c.score("q", RESPONSES, k=8, include_samples=True)
            assert result.rewards == (2.0, 9.0) and result.k_used == 8
            assert {x.sampler for x in result.samples} == both
            await delete(kmock, "sampler-1")
            left = samplers[0].address
            await eventually(lambda: aggregator.pool.addresses == [left], "one sampler left")
            before = samplers[1].backend.finished
            result = await c.score("another q", RESPONSES, k=4, include_samples=True)
            assert result.rewards == (2.0, 9.0) and result.k_used == 4
            assert {x.sampler for x in result.samples} == {left}
            assert samplers[1].backend.finished == before
    finally:
        await aggregator.server.stop(0)
        await aggregator.close()
        assert not aggregator.discovery.running
        for s in [*samplers, principles]:
            await s.stop(0)
