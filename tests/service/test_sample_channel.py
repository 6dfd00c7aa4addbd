"""SampleChannel: the aggregator's pool sends many requests' samples over one long-lived call
per sampler. Real samplers on loopback ports and the production pool; only the model is
scripted. What must hold: jobs share a call (and a write when started together), a job's own
failure stays its own, a stopping sampler finishes what it runs and refuses the rest, old
calls close once their jobs are done, and a sampler without SampleChannel is still served."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from pathlib import Path

import pytest

from grm.client import NO_RETRY, AsyncGrmClient
from grm.core.errors import InvalidArgumentError
from grm.core.plan import SamplingJob
from grm.core.types import Context, SampleSpec, SamplingParams, ScoreStatus
from grm.core.validation import Limits
from grm.rpc.security import ClientSecurity
from grm.rpc.server import GrmServer
from grm.services.aggregator.pool import UNAVAILABLE_REASON, RemoteSamplerPool
from grm.services.bootstrap import grpc_server
from grm.services.sampler.channel import STOPPING
from grm.services.sampler.main import SERVICE
from grm.services.sampler.service import CritiqueServicer
from grm.v1 import critique_pb2_grpc
from tests.support.polling import eventually
from tests.support.servers import (
    LOOPBACK,
    RunningSampler,
    TrackingBackend,
    running_suite,
    start_sampler,
)
from tests.support.volumes import SecretVolume

RESPONSES = ("bad one", "good one")
JOB = SamplingJob(Context.from_query("q"), RESPONSES, SamplingParams())


def _specs(n: int, first: int = 0) -> list[SampleSpec]:
    return [
        SampleSpec(index=first + i, attempt=0, seed=10 + first + i, order=(0, 1)) for i in range(n)
    ]


async def test_concurrent_requests_share_one_call_and_one_write() -> None:
    sampler = await start_sampler(TrackingBackend(capacity=16, delay=0.05))
    pool = RemoteSamplerPool([sampler.address])
    try:
        # Started in the same loop iteration: six jobs, one call, one message.
        results = await asyncio.gather(*(pool.sample(JOB, _specs(2, 2 * i)) for i in range(6)))
        assert all(s.valid for samples in results for s in samples)
        assert [[s.spec.index for s in r] for r in results] == [
            [2 * i, 2 * i + 1] for i in range(6)
        ]
        (ep,) = pool.endpoints
        assert ep.mux is not None and ep.mux.calls_opened == 1 and ep.mux.writes == 1
        assert ep.outstanding == 0 and sampler.backend.finished == 12
        # Later requests ride the same call.
        assert all(s.valid for s in await pool.sample(JOB, _specs(3, 20)))
        assert ep.mux.calls_opened == 1 and ep.mux.writes == 2
    finally:
        await pool.close()
        await sampler.stop()


async def _one_then_two_10_ms_apart(
    sampler_interval_ms: float, pool_interval_s: float
) -> tuple[int, int]:
    """A job alone, then two started 10 ms apart right after it (all unbudgeted, each done at
    once): the pool's (writes, reads) on the sampler's call."""
    sampler = await start_sampler(
        TrackingBackend(capacity=16), channel_write_interval_ms=sampler_interval_ms
    )
    pool = RemoteSamplerPool([sampler.address], channel_write_interval_s=pool_interval_s)
    try:
        assert all(s.valid for s in await pool.sample(JOB, _specs(1)))  # quiet: at once
        (ep,) = pool.endpoints
        assert ep.mux is not None and (ep.mux.writes, ep.mux.reads) == (1, 1)
        second = asyncio.ensure_future(pool.sample(JOB, _specs(1, 1)))
        await asyncio.sleep(0.01)
        third = asyncio.ensure_future(pool.sample(JOB, _specs(1, 2)))
        results = await asyncio.gather(second, third)
        assert [[s.spec.index for s in r if s.valid] for r in results] == [[1], [2]]
        assert ep.mux.calls_opened == 1
        return ep.mux.writes, ep.mux.reads
    finally:
        await pool.close()
        await sampler.stop()


async def test_under_load_jobs_started_between_two_writes_share_the_later_one() -> None:
    """Writes are `channel_write_interval_s` apart (1 s here, far above the 10 ms between the
    jobs): the two started within the interval after the first share the next message.
    Without the pacing they would go in two (the first write is long done)."""
    writes, _ = await _one_then_two_10_ms_apart(sampler_interval_ms=0, pool_interval_s=1.0)
    assert writes == 2


async def test_under_load_samples_finished_between_two_replies_share_the_later_one() -> None:
    """The sampler's replies are paced the same way (1 s here): two jobs that finish 10 ms
    apart within the interval after the first reply come back in one message, not two."""
    writes, reads = await _one_then_two_10_ms_apart(sampler_interval_ms=1000, pool_interval_s=0)
    assert (writes, reads) == (3, 2)  # the aggregator did not wait: one write per job


async def test_a_job_with_a_latency_budget_is_not_held_for_others_to_share_its_write() -> None:
    """Within the interval a budgeted job (it races its vote) goes at once, on both sides; a
    job without one would wait the whole interval (30 s here): its own send and its reply."""
    sampler = await start_sampler(TrackingBackend(capacity=16), channel_write_interval_ms=30_000)
    pool = RemoteSamplerPool([sampler.address], channel_write_interval_s=30.0)
    try:
        assert all(s.valid for s in await pool.sample(JOB, _specs(1)))  # quiet: at once
        budgeted = SamplingJob.from_relative(
            JOB.context, RESPONSES, JOB.params, now=time.monotonic(), time_left_s=20.0,
            vote_in_s=10.0,
        )  # fmt: skip
        samples = []
        stream = pool.stream(budgeted, _specs(2, 1))
        async with asyncio.timeout(10):  # give-up bound; the pacing alone would take 30 s
            async for batch in stream:
                samples.extend(batch)
        assert sorted(s.spec.index for s in samples if s.valid) == [1, 2]
        (ep,) = pool.endpoints
        assert ep.mux is not None and ep.mux.writes == 2
    finally:
        await pool.close()
        await sampler.stop()


async def test_a_rejected_job_fails_alone_and_the_call_goes_on() -> None:
    sampler = await start_sampler(limits=Limits(max_response_chars=10))
    pool = RemoteSamplerPool([sampler.address])
    too_long = SamplingJob(Context.from_query("q"), ("x" * 50, "ok"), SamplingParams())
    try:
        with pytest.raises(InvalidArgumentError) as caught:
            await pool.sample(too_long, _specs(2))
        assert caught.value.field is not None and caught.value.field.startswith("responses")
        assert all(s.valid for s in await pool.sample(JOB, _specs(2)))
        (ep,) = pool.endpoints
        assert ep.mux is not None and ep.mux.calls_opened == 1 and ep.outstanding == 0
    finally:
        await pool.close()
        await sampler.stop()


async def test_a_stopping_sampler_finishes_its_jobs_and_refuses_new_ones() -> None:
    staying = await start_sampler(TrackingBackend(capacity=1, delay=0.3))
    leaving = await start_sampler(TrackingBackend(capacity=1, delay=0.3))
    drained = asyncio.Event()
    leaving.server.on_drain.append(drained.set)
    pool = RemoteSamplerPool([staying.address, leaving.address])
    try:
        first = asyncio.ensure_future(pool.sample(JOB, _specs(2)))
        await eventually(
            lambda: staying.backend.running == 1 and leaving.backend.running == 1,
            "one sample running on each sampler",
        )
        stopping = asyncio.ensure_future(leaving.stop(grace=30))  # ends sooner: jobs done
        await drained.wait()
        second = await pool.sample(JOB, _specs(2, 2))
        refused = [s for s in second if not s.valid]
        assert len(refused) == 1 and refused[0].finish_reason == "error"
        assert UNAVAILABLE_REASON in refused[0].invalid_reason
        assert STOPPING in refused[0].invalid_reason
        assert [s.sampler for s in second if s.valid] == [staying.address]
        # The job that was running when the sampler began to stop finished there.
        assert {s.sampler for s in await first if s.valid} == {staying.address, leaving.address}
        await stopping  # the call ended once its job was done; nothing was cut
        assert leaving.backend.finished == 1 and leaving.backend.cancelled == 0
        # Marked down: the next request goes to the sampler that stays.
        third = await pool.sample(JOB, _specs(2, 4))
        assert all(s.valid and s.sampler == staying.address for s in third)
    finally:
        await pool.close()
        await staying.stop()
        await leaving.stop()


async def test_rotated_calls_close_once_their_jobs_are_done() -> None:
    sampler = await start_sampler(TrackingBackend(capacity=4, delay=0.05))
    pool = RemoteSamplerPool([sampler.address], channel_max_age_s=0.0)  # every job: a new call
    try:
        for i in range(3):
            assert all(s.valid for s in await pool.sample(JOB, _specs(2, 2 * i)))
        (ep,) = pool.endpoints
        assert ep.mux is not None and ep.mux.calls_opened == 3
        # The two older calls stop writing, the sampler ends them: only the newest stays.
        await eventually(lambda: ep.mux is not None and ep.mux.open_calls == 1, "old calls end")
    finally:
        await pool.close()
        await sampler.stop()


class _OlderServicer(CritiqueServicer):
    """A sampler from before SampleChannel (the generated base answers UNIMPLEMENTED)."""

    SampleChannel = critique_pb2_grpc.CritiqueServiceServicer.SampleChannel  # type: ignore[assignment]


async def _older_sampler() -> tuple[GrmServer, RunningSampler]:
    running = await start_sampler(TrackingBackend(capacity=4))
    servicer = _OlderServicer(running.sampler)
    add = critique_pb2_grpc.add_CritiqueServiceServicer_to_server
    server = grpc_server(LOOPBACK, add, servicer, SERVICE)
    await server.start()
    await server.set_serving(True)
    return server, running


@pytest.mark.parametrize("anytime", [False, True], ids=["sample", "stream"])
async def test_an_older_sampler_is_served_through_sample_stream(anytime: bool) -> None:
    server, running = await _older_sampler()
    pool = RemoteSamplerPool([server.address])
    job = SamplingJob(JOB.context, RESPONSES, JOB.params, vote_at=time.monotonic() + 30)
    try:
        for first in (0, 2):  # the first learns it, the second goes straight to SampleStream
            if anytime:
                got = [s async for batch in pool.stream(job, _specs(2, first)) for s in batch]
            else:
                got = await pool.sample(JOB, _specs(2, first))
            assert len(got) == 2 and all(s.valid for s in got)
        (ep,) = pool.endpoints
        assert ep.channel_ok is False and ep.outstanding == 0 and ep.samples_sent == 4
        assert running.backend.finished == 4
    finally:
        await pool.close()
        await server.stop(0)
        await running.stop()


async def test_each_call_carries_the_token_as_it_is_when_the_call_opens(tmp_path: Path) -> None:
    volume = SecretVolume(tmp_path / "auth", {"token": b"first-token"})
    server = replace(LOOPBACK, auth_token="first-token", auth_token_file=volume.path("token"))
    sampler = await start_sampler(server=server)
    following = ClientSecurity.load(token="first-token", token_file=volume.path("token"))
    pool = RemoteSamplerPool([sampler.address], security=following, channel_max_age_s=0.0)
    without = RemoteSamplerPool([sampler.address])
    try:
        assert all(s.valid for s in await pool.sample(JOB, _specs(2)))
        volume.update({"token": b"second-token"})  # the sampler refuses the first token now
        assert all(s.valid for s in await pool.sample(JOB, _specs(2, 2)))  # a new call
        (refused,) = await without.sample(JOB, _specs(1))
        assert not refused.valid and "UNAUTHENTICATED" in refused.invalid_reason
        assert sampler.backend.finished == 4
    finally:
        await pool.close()
        await without.close()
        await sampler.stop()


async def test_a_job_over_the_samplers_message_limit_fails_and_the_next_call_works() -> None:
    # The sampler takes messages up to 1 MiB; the job below is about 1.5 MB.
    server = replace(LOOPBACK, max_message_mb=1)
    sampler = await start_sampler(limits=Limits(max_response_chars=2_000_000), server=server)
    pool = RemoteSamplerPool([sampler.address])
    huge = SamplingJob(Context.from_query("q"), ("x" * 1_500_000, "ok"), SamplingParams())
    try:
        (failed,) = await pool.sample(huge, _specs(1))
        assert not failed.valid and failed.finish_reason == "error"
        assert "RESOURCE_EXHAUSTED" in failed.invalid_reason
        assert all(s.valid for s in await pool.sample(JOB, _specs(2, 1)))  # on a new call
        (ep,) = pool.endpoints
        assert ep.mux is not None and ep.mux.calls_opened == 2 and ep.outstanding == 0
    finally:
        await pool.close()
        await sampler.stop()


async def test_the_aggregator_can_be_told_to_use_sample_stream_calls_only() -> None:
    """`--sample-channel false` (GRM_SAMPLE_CHANNEL): the older protocol, as a kill switch."""
    async with running_suite(samplers=2, sample_channel=False) as suite:
        async with AsyncGrmClient(suite.address, retry=NO_RETRY) as client:
            for budget in (0, 30_000):
                result = await client.score(
                    "q", list(RESPONSES), k=4, include_samples=True, latency_budget_ms=budget
                )
                assert result.status is ScoreStatus.COMPLETE and result.k_used == 4
        pool = suite.aggregator.pool
        assert not pool.use_channel and all(ep.mux is None for ep in pool.endpoints)
        assert sum(ep.samples_sent for ep in pool.endpoints) == 8
