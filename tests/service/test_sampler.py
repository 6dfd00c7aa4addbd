"""CritiqueService and PrincipleService as real servers: samples, load, deadlines, cancellation."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from grm.core.sampling import DEADLINE_REASON, sample_spec
from grm.core.types import Context, SamplingParams
from grm.rpc import convert
from grm.v1 import common_pb2, critique_pb2, critique_pb2_grpc, principle_pb2, principle_pb2_grpc
from tests.support.servers import TrackingBackend, start_principles, start_sampler

RESPONSES = ("bad one", "good one", "good two")


def critique_request(k: int, *, seed: int = 7) -> critique_pb2.CritiqueRequest:
    specs = [sample_spec(seed, j, len(RESPONSES)) for j in range(k)]
    return convert.critique_request(
        Context.from_query("q"), RESPONSES, specs, SamplingParams(max_new_tokens=64)
    )


async def test_sample_returns_every_spec_in_caller_order_with_load_and_model() -> None:
    running = await start_sampler(TrackingBackend(capacity=2))
    try:
        async with grpc.aio.insecure_channel(running.address) as channel:
            stub = critique_pb2_grpc.CritiqueServiceStub(channel)
            request = critique_request(3)
            reply = await stub.Sample(request, timeout=5)
            load = await stub.GetLoad(critique_pb2.LoadRequest(), timeout=5)
    finally:
        await running.stop()
    assert [s.spec.index for s in reply.samples] == [0, 1, 2]
    assert [list(s.spec.order) for s in reply.samples] == [list(s.order) for s in request.specs]
    assert len({tuple(s.spec.order) for s in reply.samples}) > 1
    for s in reply.samples:
        assert s.valid and list(s.scores) == [2, 9, 9]  # caller order despite shuffling
        assert s.backend_seed == s.spec.seed
    assert reply.model.template_version == "grm-default-v3" and reply.model.model_id == "scripted"
    assert reply.load.capacity == 2 and load.in_flight == 0 and load.queued == 0
    assert {r.max_new_tokens for r in running.backend.requests} == {64}


async def test_concurrency_is_bounded_and_load_reports_queue() -> None:
    running = await start_sampler(TrackingBackend(capacity=1, delay=0.3))
    try:
        async with grpc.aio.insecure_channel(running.address) as channel:
            stub = critique_pb2_grpc.CritiqueServiceStub(channel)
            call = asyncio.ensure_future(stub.Sample(critique_request(3), timeout=5))
            await asyncio.sleep(0.15)
            load = await stub.GetLoad(critique_pb2.LoadRequest(), timeout=5)
            assert (load.in_flight, load.queued, load.capacity) == (1, 2, 1)
            reply = await call
    finally:
        await running.stop()
    assert all(s.valid for s in reply.samples)
    assert running.backend.finished == 3


async def test_sampler_stops_at_the_callers_deadline_and_returns_what_finished() -> None:
    running = await start_sampler(TrackingBackend(capacity=1, delay=0.4))
    try:
        async with grpc.aio.insecure_channel(running.address) as channel:
            stub = critique_pb2_grpc.CritiqueServiceStub(channel)
            reply = await stub.Sample(critique_request(4), timeout=1.0)
        await asyncio.sleep(0.05)
    finally:
        await running.stop()
    valid = [s for s in reply.samples if s.valid]
    late = [s for s in reply.samples if not s.valid]
    assert len(valid) in (1, 2) and len(late) == 4 - len(valid)  # 0.4 s each, 1 s deadline
    assert all(s.invalid_reason == DEADLINE_REASON and not s.scores for s in late)
    assert running.backend.running == 0 and running.backend.cancelled == 1
    assert running.sampler.in_flight == 0 and running.sampler.queued == 0


async def test_a_cancelled_call_cancels_the_generation() -> None:
    running = await start_sampler(TrackingBackend(capacity=1, delay=5.0))
    try:
        async with grpc.aio.insecure_channel(running.address) as channel:
            stub = critique_pb2_grpc.CritiqueServiceStub(channel)
            call = stub.Sample(critique_request(2), timeout=30)
            await asyncio.sleep(0.3)
            assert running.backend.running == 1
            call.cancel()
            for _ in range(50):
                if running.backend.running == 0:
                    break
                await asyncio.sleep(0.02)
    finally:
        await running.stop()
    assert running.backend.running == 0
    assert running.backend.cancelled == 1 and running.backend.finished == 0
    assert running.sampler.in_flight == 0 and running.sampler.queued == 0


async def test_malformed_critique_requests_name_the_field() -> None:
    running = await start_sampler()
    try:
        async with grpc.aio.insecure_channel(running.address) as channel:
            stub = critique_pb2_grpc.CritiqueServiceStub(channel)
            bad_order = critique_request(1)
            bad_order.specs[0].order[:] = [0, 0, 1]
            no_specs = critique_request(1)
            del no_specs.specs[:]
            too_long = critique_request(1)
            too_long.sampling.max_new_tokens = 100_000
            for request, field in (
                (bad_order, "specs[0].order"),
                (no_specs, "specs"),
                (too_long, "sampling.max_new_tokens"),
            ):
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await stub.Sample(request, timeout=5)
                assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
                assert info.value.details().startswith(f"{field}: ")
                metadata = dict(info.value.trailing_metadata() or ())
                assert metadata[convert.FIELD_METADATA_KEY] == field
    finally:
        await running.stop()
    assert running.backend.requests == []


async def test_sample_stream_sends_samples_as_they_finish() -> None:
    """Two slots, 0.3 s per sample, four specs: the first two arrive in one update before
    the last two are done; the first update names the model; every update reports the load."""
    running = await start_sampler(TrackingBackend(capacity=2, delay=0.3))
    try:
        async with grpc.aio.insecure_channel(running.address) as channel:
            stub = critique_pb2_grpc.CritiqueServiceStub(channel)
            updates = []
            async for update in stub.SampleStream(critique_request(4), timeout=10):
                updates.append((update, running.backend.finished))
    finally:
        await running.stop()
    assert [finished for _, finished in updates] == [2, 4]  # the first came before the rest
    assert [sorted(s.spec.index for s in u.samples) for u, _ in updates] == [[0, 1], [2, 3]]
    assert updates[0][0].model.model_id == "scripted" and not updates[1][0].model.model_id
    assert all(u.load.capacity == 2 for u, _ in updates)
    assert all(s.valid and list(s.scores) == [2, 9, 9] for u, _ in updates for s in u.samples)


async def test_sample_stream_stops_at_the_deadline_and_reports_the_rest_as_late() -> None:
    running = await start_sampler(TrackingBackend(capacity=1, delay=0.4))
    try:
        async with grpc.aio.insecure_channel(running.address) as channel:
            stub = critique_pb2_grpc.CritiqueServiceStub(channel)
            samples = [
                s
                async for u in stub.SampleStream(critique_request(4), timeout=1.0)
                for s in u.samples
            ]
        await asyncio.sleep(0.05)
    finally:
        await running.stop()
    assert sorted(s.spec.index for s in samples) == [0, 1, 2, 3]
    late = [s for s in samples if not s.valid]
    assert 2 <= len(late) <= 3 and all(s.invalid_reason == DEADLINE_REASON for s in late)
    assert running.backend.running == 0 and running.backend.cancelled == 1
    assert running.sampler.in_flight == 0 and running.sampler.queued == 0


async def test_cancelling_a_sample_stream_cancels_its_generations() -> None:
    running = await start_sampler(TrackingBackend(capacity=4, delay=5.0))
    try:
        async with grpc.aio.insecure_channel(running.address) as channel:
            stub = critique_pb2_grpc.CritiqueServiceStub(channel)
            call = stub.SampleStream(critique_request(3), timeout=30)
            await asyncio.sleep(0.3)
            assert running.backend.running == 3
            call.cancel()
            for _ in range(50):
                if running.backend.running == 0:
                    break
                await asyncio.sleep(0.02)
    finally:
        await running.stop()
    assert running.backend.cancelled == 3 and running.backend.finished == 0
    assert running.sampler.in_flight == 0 and running.sampler.queued == 0


async def test_a_malformed_sample_stream_request_names_the_field() -> None:
    running = await start_sampler()
    try:
        async with grpc.aio.insecure_channel(running.address) as channel:
            stub = critique_pb2_grpc.CritiqueServiceStub(channel)
            no_specs = critique_request(1)
            del no_specs.specs[:]
            with pytest.raises(grpc.aio.AioRpcError) as info:
                async for _ in stub.SampleStream(no_specs, timeout=5):
                    pass
    finally:
        await running.stop()
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details().startswith("specs: ")
    assert dict(info.value.trailing_metadata() or ())[convert.FIELD_METADATA_KEY] == "specs"


async def test_an_empty_order_means_the_identity_order() -> None:
    running = await start_sampler()
    try:
        async with grpc.aio.insecure_channel(running.address) as channel:
            stub = critique_pb2_grpc.CritiqueServiceStub(channel)
            request = critique_pb2.CritiqueRequest(
                query="q", responses=RESPONSES, specs=[common_pb2.SampleSpec(seed=3)]
            )
            reply = await stub.Sample(request, timeout=5)
    finally:
        await running.stop()
    assert list(reply.samples[0].spec.order) == [0, 1, 2]
    assert list(reply.samples[0].scores) == [2, 9, 9]


async def test_principle_service_writes_n_sets_with_distinct_seeds() -> None:
    running = await start_principles()
    try:
        async with grpc.aio.insecure_channel(running.address) as channel:
            stub = principle_pb2_grpc.PrincipleServiceStub(channel)
            reply = await stub.GeneratePrinciples(
                principle_pb2.PrincipleRequest(query="q", n=3, seed=11), timeout=5
            )
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.GeneratePrinciples(
                    principle_pb2.PrincipleRequest(query="q", n=1000), timeout=5
                )
            assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
            assert info.value.details().startswith("n: ")
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.GeneratePrinciples(principle_pb2.PrincipleRequest(n=1), timeout=5)
            assert info.value.details().startswith("query: ")
    finally:
        await running.stop()
    assert [s.text for s in reply.sets] == ["accuracy (60%), tone (40%)."] * 3
    assert len({s.seed for s in reply.sets}) == 3
    assert reply.model.model_id == "scripted"


async def test_principle_service_never_works_past_the_deadline() -> None:
    running = await start_principles(TrackingBackend(lambda r: "Specific Criteria: x.", delay=3))
    try:
        async with grpc.aio.insecure_channel(running.address) as channel:
            stub = principle_pb2_grpc.PrincipleServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.GeneratePrinciples(
                    principle_pb2.PrincipleRequest(query="q"), timeout=0.5
                )
            assert info.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
            await asyncio.sleep(0.1)
    finally:
        await running.stop()
    assert running.backend.running == 0 and running.backend.cancelled == 1
