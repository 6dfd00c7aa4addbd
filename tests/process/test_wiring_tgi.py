"""`grm serve sampler --backend tgi`: the real sampler process against the scripted TGI dev server.

Real servers on port 0 throughout: the dev server (HTTP, in this process), the sampler as a
child process started through the `grm` command line, and the aggregator front door.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from grm.cli.up import UpSettings, add_up_options, aggregator_args, backend_args, up_options
from grm.client import AsyncGrmClient
from grm.core.types import ScoreStatus
from grm.rpc.server import wait_serving
from grm.services.aggregator.main import AggregatorSettings, build
from grm.v1 import common_pb2, critique_pb2, critique_pb2_grpc, reward_pb2, reward_pb2_grpc
from grm_dev.devtgi import DevTgiSettings, start_dev_server
from grm_dev.devtgi.engines import ScriptedEngine
from tests.support.redis_server import free_port
from tests.support.servers import LOOPBACK, child_env
from tests.support.tgi_support import dev_tgi, generate_bodies

RESPONSES = ["bad one", "good one"]


@contextlib.asynccontextmanager
async def sampler_process(tmp_path: Path, tgi_url: str, *extra: str) -> AsyncIterator[str]:
    """`grm serve sampler --backend tgi` as a child process; yields its address once bound."""
    port_file = tmp_path / f"sampler-{free_port()}.port"
    log = (tmp_path / "sampler.log").open("ab")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "grm.cli.main", "serve", "sampler", "--host", "127.0.0.1",
        "--port", "0", "--port-file", str(port_file), "--grace-s", "1",
        "--backend", "tgi", "--tgi-url", tgi_url, "--health-interval-s", "0.2", *extra,
        stdout=log, stderr=log, env=child_env(),
    )  # fmt: skip
    try:
        for _ in range(300):
            if port_file.exists() or proc.returncode is not None:
                break
            await asyncio.sleep(0.05)
        assert port_file.exists(), (tmp_path / "sampler.log").read_text()
        yield f"127.0.0.1:{port_file.read_text().strip()}"
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        log.close()


async def health(address: str) -> int:
    async with grpc.aio.insecure_channel(address) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=2
        )
    return int(reply.status)


async def until_health(address: str, status: int, within_s: float = 10.0) -> None:
    for _ in range(int(within_s / 0.05)):
        if await health(address) == status:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{address} never reached health status {status}")


async def test_sampler_process_on_tgi_scores_end_to_end_and_refuses_over_long_prompts(
    tmp_path: Path,
) -> None:
    async with (
        dev_tgi(max_total_tokens=3000) as tgi,
        sampler_process(tmp_path, tgi.url) as sampler,
    ):
        await wait_serving(sampler, within_s=15)
        agg = build(AggregatorSettings(server=LOOPBACK, samplers=(sampler,)))
        await agg.server.start()
        await agg.server.set_serving(True)
        try:
            async with AsyncGrmClient(agg.server.address, timeout=20) as client:
                result = await client.score("q", RESPONSES, k=4, max_new_tokens=64)
            assert result.status is ScoreStatus.COMPLETE and result.k_used == 4
            assert result.votes == (8, 36) and result.best == (1,)
            assert result.model is not None and result.model.backend == "tgi"
            assert result.model.model_id == "grm-devtgi/scripted"
            bodies = generate_bodies(tgi)
            assert len(bodies) == 4 and len({b["parameters"]["seed"] for b in bodies}) == 4

            # A prompt over the server's max_input_tokens: INVALID_ARGUMENT, never sampled —
            # from the sampler itself and through the aggregator, over real channels.
            long = ["long " * 3000, "short"]
            async with grpc.aio.insecure_channel(sampler) as channel:
                stub = critique_pb2_grpc.CritiqueServiceStub(channel)
                request = critique_pb2.CritiqueRequest(
                    query="q",
                    responses=long,
                    specs=[common_pb2.SampleSpec(index=0, seed=1, order=[0, 1])],
                )
                try:
                    await stub.Sample(request, timeout=10)
                    raise AssertionError("the sampler accepted an over-long prompt")
                except grpc.aio.AioRpcError as exc:
                    assert exc.code() is grpc.StatusCode.INVALID_ARGUMENT, exc
                    assert "input tokens" in (exc.details() or "")
            async with grpc.aio.insecure_channel(agg.server.address) as channel:
                front = reward_pb2_grpc.RewardServiceStub(channel)
                try:
                    await front.Score(reward_pb2.ScoreRequest(query="q", responses=long, k=4))
                    raise AssertionError("the aggregator scored an over-long prompt")
                except grpc.aio.AioRpcError as exc:
                    assert exc.code() is grpc.StatusCode.INVALID_ARGUMENT, exc
                    assert "input tokens" in (exc.details() or "")
            assert len(generate_bodies(tgi)) == 4  # nothing more was generated
        finally:
            await agg.server.stop(0)
            await agg.close()


async def test_sampler_readiness_follows_the_tgi_server(tmp_path: Path) -> None:
    port = free_port()
    serving = health_pb2.HealthCheckResponse.SERVING
    not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
    async with sampler_process(tmp_path, f"http://127.0.0.1:{port}") as sampler:
        # TGI is not there yet: the sampler runs, but is not ready.
        await asyncio.sleep(0.5)
        assert await health(sampler) == not_serving
        tgi = await start_dev_server(ScriptedEngine(), DevTgiSettings(), port=port)
        try:
            await until_health(sampler, serving)
        finally:
            await tgi.close()
        # TGI went away: NOT_SERVING (the watcher polls every 0.2 s) ...
        await until_health(sampler, not_serving)
        # ... and back: SERVING again.
        tgi = await start_dev_server(ScriptedEngine(), DevTgiSettings(), port=port)
        try:
            await until_health(sampler, serving)
        finally:
            await tgi.close()


def test_grm_up_passes_backend_and_cache_flags_to_its_children() -> None:
    parser = argparse.ArgumentParser()
    add_up_options(parser)
    args = parser.parse_args(
        ["--backend", "tgi", "--tgi-url", "http://a:80,http://b:80", "--redis-url", "redis://r/0"]
    )
    settings = UpSettings(**up_options(args))
    assert backend_args(settings) == ["--backend", "tgi", "--tgi-url", "http://a:80,http://b:80"]
    # the aggregator fills unset sampling fields with the decoding profile of the samplers'
    # backend (grm.core.decoding): an engine's for tgi, the embedded model's by default
    assert aggregator_args(settings, {}) == ["--decoding", "served", "--redis-url", "redis://r/0"]
    default = UpSettings(**up_options(parser.parse_args([])))
    assert backend_args(default) == [] and aggregator_args(default, {}) == [
        "--decoding",
        "embedded",
    ]
    assert aggregator_args(default, {"GRM_BACKEND": "tgi"})[:2] == ["--decoding", "served"]
