"""Shared server plumbing over real channels: the error interceptor, health, graceful shutdown,
message sizes and typed settings from flags and GRM_* variables."""

from __future__ import annotations

import argparse
import asyncio

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from grm.core.errors import (
    BackendError,
    DeadlineExceededError,
    FailedPreconditionError,
    InvalidArgumentError,
    ResourceExhaustedError,
    UnavailableError,
)
from grm.rpc import convert
from grm.rpc.options import add_options, resolve
from grm.rpc.server import GrmServer, ServerSettings, serve

SETTINGS = ServerSettings(host="127.0.0.1", port=0, grace_s=2.0)
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

ERRORS = {
    "invalid": (InvalidArgumentError("must be positive", field="k"), "INVALID_ARGUMENT"),
    "unavailable": (UnavailableError("sampler down"), "UNAVAILABLE"),
    "backend": (BackendError("llama died"), "UNAVAILABLE"),
    "exhausted": (ResourceExhaustedError("queue full"), "RESOURCE_EXHAUSTED"),
    "deadline": (DeadlineExceededError("too slow"), "DEADLINE_EXCEEDED"),
    "precondition": (FailedPreconditionError("model loading"), "FAILED_PRECONDITION"),
    "bug": (KeyError("secret internal detail"), "INTERNAL"),
}


class Probe:
    """A generic service (raw bytes): raises on demand, echoes, or waits."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.started = asyncio.Event()

    async def raise_(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        raise ERRORS[request.decode()][0]

    async def echo(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return request

    async def slow(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        self.started.set()
        await self.release.wait()
        return b"done"

    def register(self, server: grpc.aio.Server) -> None:
        handlers = {
            "Raise": grpc.unary_unary_rpc_method_handler(self.raise_),
            "Echo": grpc.unary_unary_rpc_method_handler(self.echo),
            "Slow": grpc.unary_unary_rpc_method_handler(self.slow),
        }
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("t.Probe", handlers),)
        )


def make_server(probe: Probe) -> GrmServer:
    return GrmServer(SETTINGS, register=[probe.register], service_names=["t.Probe"])


@pytest.mark.parametrize("kind", sorted(ERRORS))
async def test_interceptor_maps_errors_to_status_codes(kind: str) -> None:
    server = make_server(Probe())
    await server.start()
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await channel.unary_unary("/t.Probe/Raise")(kind.encode(), timeout=5)
    finally:
        await server.stop(0)
    exc, code = ERRORS[kind]
    assert info.value.code().name == code
    if code == "INTERNAL":
        assert info.value.details() == "internal error (KeyError)"  # no internals leak
    else:
        assert info.value.details() == str(exc)
    field = dict(info.value.trailing_metadata() or ()).get(convert.FIELD_METADATA_KEY)
    assert field == ("k" if kind == "invalid" else None)
    back = convert.error_from_status(info.value.code(), info.value.details(), field)
    assert back.code == code and str(back) == info.value.details()


async def test_messages_above_the_grpc_default_of_4_mib_pass() -> None:
    server = make_server(Probe())
    await server.start()
    payload = b"x" * (6 << 20)
    try:
        options = [("grpc.max_receive_message_length", 8 << 20)]
        async with grpc.aio.insecure_channel(server.address, options=options) as channel:
            assert await channel.unary_unary("/t.Probe/Echo")(payload, timeout=10) == payload
    finally:
        await server.stop(0)


async def test_a_port_in_use_is_an_error_not_shared() -> None:
    first = make_server(Probe())
    await first.start()
    try:
        taken = ServerSettings(host="127.0.0.1", port=first.port or 0)
        second = GrmServer(taken, register=[Probe().register], service_names=["t.Probe"])
        with pytest.raises(OSError, match="cannot listen"):
            await second.start()
    finally:
        await first.stop(0)


async def health(address: str, service: str = "") -> int:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=2)
        return reply.status


async def test_health_lifecycle_and_graceful_shutdown() -> None:
    probe = Probe()
    server = make_server(probe)
    loaded = asyncio.Event()
    stop = asyncio.Event()
    closed = []

    async def warm_up() -> None:
        await loaded.wait()  # e.g. loading the model

    async def close() -> None:
        closed.append(True)

    task = asyncio.ensure_future(serve(server, warm_up=warm_up, close=close, stop=stop))
    for _ in range(100):
        if server.port is not None:
            break
        await asyncio.sleep(0.01)
    assert await health(server.address) == NOT_SERVING
    assert await health(server.address, "t.Probe") == NOT_SERVING
    loaded.set()
    for _ in range(100):
        if await health(server.address) == SERVING:
            break
        await asyncio.sleep(0.01)
    assert await health(server.address, "t.Probe") == SERVING

    async with grpc.aio.insecure_channel(server.address) as channel:
        in_flight = asyncio.ensure_future(channel.unary_unary("/t.Probe/Slow")(b"", timeout=10))
        await probe.started.wait()
        stop.set()  # what SIGTERM does
        await asyncio.sleep(0.2)
        assert not task.done()  # still draining the in-flight RPC
        with pytest.raises(grpc.aio.AioRpcError):  # no new RPCs while draining
            await channel.unary_unary("/t.Probe/Echo")(b"x", timeout=2)
        probe.release.set()
        assert await in_flight == b"done"  # the in-flight RPC completed
    await asyncio.wait_for(task, 5)
    assert closed == [True]


async def test_a_failed_warm_up_stops_the_server() -> None:
    server = make_server(Probe())

    async def warm_up() -> None:
        raise FailedPreconditionError("model file missing")

    with pytest.raises(FailedPreconditionError):
        await serve(server, warm_up=warm_up, stop=asyncio.Event())
    with pytest.raises(grpc.aio.AioRpcError):
        await health(server.address)


def test_settings_come_from_flags_then_environment_then_defaults() -> None:
    from grm.services.aggregator import main as aggregator
    from grm.services.sampler import main as sampler

    parser = argparse.ArgumentParser()
    add_options(parser, aggregator.OPTIONS)
    env = {"GRM_SAMPLERS": "a:1, b:2", "GRM_MAX_K": "12", "GRM_PORT": "7000"}
    settings = aggregator.build_settings(parser.parse_args(["--port", "9000"]), env)
    assert settings.samplers == ("a:1", "b:2")
    assert settings.limits.max_k == 12
    assert settings.server.port == 9000  # the flag wins over GRM_PORT
    assert settings.server.max_connection_age_s == 300.0 and settings.meta_rm == "agreement"
    with pytest.raises(SystemExit, match="GRM_MAX_K"):
        aggregator.build_settings(parser.parse_args([]), {**env, "GRM_MAX_K": "many"})
    with pytest.raises(SystemExit, match="samplers"):
        aggregator.build_settings(parser.parse_args([]), {})

    parser = argparse.ArgumentParser()
    sampler.add_arguments(parser)
    settings = sampler.build_settings(parser.parse_args([]), {"GRM_N_THREADS": "1"})
    assert settings.model.n_threads == 1 and settings.server.port == 50053
    assert resolve(parser.parse_args([]), sampler.OPTIONS, {})["concurrency"] is None
