"""Process-level faults: real `grm serve` children on loopback, killed and restarted for real.

What in-process fault injection cannot show: Redis crashing under a running aggregator, the
principle generator process dying and coming back, a sampler SIGKILLed and restarted on its
port, descriptors and sockets left open in another process, and SIGTERM draining a server
that is under load. Timings are printed (`-s`), never asserted.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from grm.rpc import convert
from grm.rpc.server import channel_options
from grm.v1 import reward_pb2, reward_pb2_grpc
from grm_dev.devtgi import FaultSettings
from tests.support.processes import FdCount, Service, open_fds, services, until
from tests.support.redis_server import RedisServer
from tests.support.servers import TrackingBackend, running_suite, start_sampler
from tests.support.tgi_support import dev_tgi

RESPONSES = ["bad one", "good one"]
EXPECTED = [2.0, 9.0]  # keyword judge and scripted dev server: "bad" 2, "good" 9
FD_TOLERANCE = 2  # descriptors that may differ from the baseline (pooled HTTP connections)
TASK_TOLERANCE = 2  # asyncio tasks that may differ (a pending health probe, a timer)


def request(seed: int, *, k: int = 2, **fields: Any) -> reward_pb2.ScoreRequest:
    return convert.score_request(query="q", responses=RESPONSES, k=k, seed=seed, **fields)


@contextlib.asynccontextmanager
async def reward_stub(address: str) -> AsyncIterator[reward_pb2_grpc.RewardServiceStub]:
    """A raw stub (no client-side retries): each status code is what the server said."""
    async with grpc.aio.insecure_channel(address, options=channel_options()) as channel:
        yield reward_pb2_grpc.RewardServiceStub(channel)


async def outcome(
    stub: reward_pb2_grpc.RewardServiceStub, req: reward_pb2.ScoreRequest, limit_s: float
) -> tuple[reward_pb2.ScoreResponse | grpc.StatusCode, float]:
    """The reply or its status code, and the seconds it took."""
    t0 = time.perf_counter()
    try:
        reply: reward_pb2.ScoreResponse = await stub.Score(req, timeout=limit_s)
    except grpc.aio.AioRpcError as exc:
        return exc.code(), time.perf_counter() - t0
    return reply, time.perf_counter() - t0


def check_reward(reply: reward_pb2.ScoreResponse | grpc.StatusCode) -> reward_pb2.ScoreResponse:
    """A reply with the judge's rewards — a wrong or zero reward fails here."""
    assert isinstance(reply, reward_pb2.ScoreResponse), f"expected a reward, got {reply}"
    assert list(reply.rewards) == EXPECTED
    return reply


def fd_report(name: str, before: FdCount, after: FdCount) -> str:
    return f"{name}: fds {before.total}->{after.total}, sockets {before.sockets}->{after.sockets}"


def back_to(base: FdCount, now: Callable[[], FdCount]) -> Callable[[], bool]:
    def check() -> bool:
        c = now()
        return c.total <= base.total + FD_TOLERANCE and c.sockets <= base.sockets + FD_TOLERANCE

    return check


# ------------------------------------------------------------------ Redis crash and restart


async def test_redis_killed_and_restarted_under_a_running_aggregator(tmp_path: Path) -> None:
    """Cache down = slower, never an error or a wrong reward; back on the same port = hits."""
    redis = RedisServer(password="pw").start()
    sampler = await start_sampler(TrackingBackend(capacity=8))
    agg = Service(
        "aggregator", ["--samplers", sampler.address, "--redis-url", redis.url], tmp_path, "agg"
    )
    try:
        async with services(agg):
            await agg.start()
            async with reward_stub(agg.address) as stub:
                # The first reply tells the aggregator the model (part of result keys).
                check_reward((await outcome(stub, request(0), 10))[0])
                first = check_reward((await outcome(stub, request(1), 10))[0])
                assert first.cache.samples_generated == 2 and not first.cache.result_hit
                again = check_reward((await outcome(stub, request(1), 10))[0])
                assert again.cache.result_hit and again.cache.samples_generated == 0
                with redis.client() as raw:
                    assert raw.dbsize() > 0  # the cache really is this Redis

                redis.kill()
                drawn = sampler.backend.finished
                down_s = []
                for seed in (1, 2, 3, 4, 5, 6):
                    reply, took = await outcome(stub, request(seed), 10)
                    check_reward(reply)  # no error while Redis is gone
                    assert isinstance(reply, reward_pb2.ScoreResponse)
                    assert not reply.cache.result_hit and reply.cache.samples_generated == 2
                    down_s.append(took)
                assert sampler.backend.finished == drawn + 12  # every sample drawn anew

                redis.start()  # same port, empty (no persistence)
                started = time.perf_counter()
                hit: list[reward_pb2.ScoreResponse] = []

                async def cached_again() -> bool:
                    reply = check_reward((await outcome(stub, request(7), 10))[0])
                    if reply.cache.result_hit:
                        hit.append(reply)
                    return bool(hit)

                while not await cached_again():
                    # A give-up bound, not a measurement: the store retries Redis after ~1 s;
                    # 20 s leaves a loaded machine room without hanging the suite on a bug.
                    assert time.perf_counter() - started < 20, "the cache never came back"
                    await asyncio.sleep(0.1)
                recovered_s = time.perf_counter() - started
                with redis.client() as raw:
                    assert raw.dbsize() > 0
            log = agg.log()
        assert "continuing without cache" in log and "available again" in log
        print(
            f"\nredis down: {len(down_s)} requests, max {max(down_s) * 1000:.0f} ms; "
            f"cache hits again {recovered_s:.2f}s after the restart"
        )
    finally:
        await sampler.stop(0)
        redis.stop()


# ------------------------------------------------------------------ principle generator down


async def test_principle_generator_killed_is_unavailable_then_recovers(tmp_path: Path) -> None:
    """No principles = a clear UNAVAILABLE within the deadline; its return heals the aggregator."""
    async with dev_tgi() as tgi:
        sampler = await start_sampler(TrackingBackend(capacity=8))
        principles = Service(
            "principles", ["--backend", "tgi", "--tgi-url", tgi.url], tmp_path, "pg"
        )
        # No cache: cached principle sets would hide the outage.
        agg_args = ["--samplers", sampler.address, "--cache", "false"]
        agg = Service("aggregator", agg_args, tmp_path, "agg")
        try:
            async with services(principles, agg):
                await principles.start()
                agg.args = [*agg_args, "--principles", principles.address]
                await agg.start()
                async with reward_stub(agg.address) as stub:
                    sep = {"principle_mode": "separate", "include_samples": True}
                    ok = check_reward((await outcome(stub, request(1, **sep), 10))[0])
                    assert ok.samples[0].principles.startswith("Correctness")

                    await principles.kill()
                    down = [await outcome(stub, request(s, **sep), 5) for s in (2, 3, 4)]
                    assert [code for code, _ in down] == [grpc.StatusCode.UNAVAILABLE] * 3
                    joint = check_reward((await outcome(stub, request(5), 10))[0])
                    assert joint.status == reward_pb2.SCORE_STATUS_COMPLETE  # joint needs none

                    await principles.start()  # same port, the aggregator keeps running
                    started = time.perf_counter()
                    codes: list[grpc.StatusCode] = []
                    seed = 10
                    while True:
                        seed += 1
                        reply, _ = await outcome(stub, request(seed, **sep), 5)
                        if isinstance(reply, reward_pb2.ScoreResponse):
                            check_reward(reply)
                            break
                        codes.append(reply)
                        # Give-up bound: the channel redials within its 2 s backoff cap and the
                        # readiness probe runs every second; 30 s only stops a broken suite.
                        assert time.perf_counter() - started < 30, f"never recovered: {codes}"
                        await asyncio.sleep(0.1)
                    recovered_s = time.perf_counter() - started
            assert set(codes) <= {grpc.StatusCode.UNAVAILABLE}
            print(
                f"\nprinciples down: UNAVAILABLE in "
                f"{', '.join(f'{t * 1000:.0f}' for _, t in down)} ms (deadline 5 s); "
                f"separate mode scores again {recovered_s:.2f}s after the restart "
                f"({len(codes)} UNAVAILABLE meanwhile)"
            )
        finally:
            await sampler.stop(0)


# ------------------------------------------------------------------ leaks after faults


async def test_no_descriptors_leak_after_kills_5xx_bursts_and_timeouts(tmp_path: Path) -> None:
    """Aggregator and sampler processes end with the sockets they had before the faults."""
    async with dev_tgi(faults=FaultSettings(latency_ms=30, hang_s=1.5)) as tgi:
        tgi_args = ["--backend", "tgi", "--tgi-url", tgi.url, "--tgi-max-in-flight", "4"]
        s0 = Service("sampler", tgi_args, tmp_path, "s0")
        s1 = Service("sampler", tgi_args, tmp_path, "s1")
        agg = Service("aggregator", [], tmp_path, "agg")
        async with services(s0, s1, agg):
            await asyncio.gather(s0.start(), s1.start())
            agg.args = ["--samplers", f"{s0.address},{s1.address}", "--cache", "false"]
            await agg.start()
            async with reward_stub(agg.address) as stub:

                async def burst(n: int, *, k: int, limit_s: float, seed: int) -> list[Any]:
                    calls = [outcome(stub, request(seed + i, k=k), limit_s) for i in range(n)]
                    return [r for r, _ in await asyncio.gather(*calls)]

                # Warm-up at the load the faults run at: every pool at its working size.
                for r in await burst(8, k=4, limit_s=10, seed=0):
                    check_reward(r)
                await asyncio.sleep(0.3)  # let the warm-up's connections settle
                base = {"agg": agg.fds(), "s0": s0.fds(), "s1": s1.fds()}

                # TGI 500 bursts: retried inside the sampler, or an invalid sample re-drawn.
                tgi.state.fault_sequence.extend(["500"] * 12)
                five = await burst(8, k=4, limit_s=10, seed=100)
                # Hung generations past short deadlines: cancelled down the chain.
                tgi.state.fault_sequence.extend(["timeout"] * 8)
                late = await burst(8, k=4, limit_s=0.5, seed=200)
                # A sampler SIGKILLed mid-request, then restarted on its port.
                pending = asyncio.gather(
                    *(outcome(stub, request(300 + i, k=4), 10) for i in range(4))
                )
                assert await until(lambda: tgi.state.admitted > 0, within_s=5)
                await s1.kill()
                killed = [r for r, _ in await pending]
                await s1.start()
                seen_s1 = False
                seed = 400
                started = time.perf_counter()
                while not seen_s1:
                    seed += 1
                    reply = check_reward(
                        (await outcome(stub, request(seed, k=4, include_samples=True), 10))[0]
                    )
                    seen_s1 = any(s.sampler == s1.address for s in reply.samples)
                    # Give-up bound: the pool retries a lost sampler after 2 s (down_for_s)
                    # and redials within 2 s; 20 s only stops a broken suite.
                    assert time.perf_counter() - started < 20, "restarted sampler never used"
                back_s = time.perf_counter() - started

                assert not tgi.state.fault_sequence  # every injected fault was served
                assert all(isinstance(r, reward_pb2.ScoreResponse) for r in five)
                for r in [*five, *killed]:
                    check_reward(r)
                late_codes = {r if isinstance(r, grpc.StatusCode) else "reply" for r in late}
                assert late_codes <= {grpc.StatusCode.DEADLINE_EXCEEDED, "reply"}
                for r in late:
                    if isinstance(r, reward_pb2.ScoreResponse) and r.rewards:
                        assert list(r.rewards) == EXPECTED

                checks = {
                    "agg": back_to(base["agg"], agg.fds),
                    "s0": back_to(base["s0"], s0.fds),
                    "s1": back_to(base["s1"], s1.fds),  # restarted: against the first run
                }
                for check in checks.values():
                    await until(check, within_s=10, interval=0.2)
                after = {"agg": agg.fds(), "s0": s0.fds(), "s1": s1.fds()}
                print()
                for name in base:
                    print(fd_report(name, base[name], after[name]))
                expired = sum(r == grpc.StatusCode.DEADLINE_EXCEEDED for r in late)
                print(f"{expired}/{len(late)} hung calls DEADLINE_EXCEEDED at 0.5 s")
                print(f"killed sampler back in the pool after {back_s:.2f}s")
                for name, check in checks.items():
                    assert check(), fd_report(name, base[name], after[name])


async def test_no_tasks_or_sockets_leak_in_process_after_faults() -> None:
    """The aggregator in this event loop: its tasks and sockets return after lost samplers,
    backend errors, cancelled callers and deadlines."""
    failing = {"on": False}

    def script(req: Any) -> str:
        from tests.support.scripted import keyword_judge

        return "<error>" if failing["on"] else keyword_judge(req)

    async with running_suite(script=script, delay=0.05, capacity=8) as suite:
        async with reward_stub(suite.address) as stub:
            for r, _ in await asyncio.gather(
                *(outcome(stub, request(i, k=4), 10) for i in range(6))
            ):
                check_reward(r)
            await asyncio.sleep(0.2)
            base_tasks = len(asyncio.all_tasks())
            base_fds = open_fds(os.getpid())

            failing["on"] = True  # backend errors: invalid samples, re-drawn, then UNAVAILABLE
            errs = await asyncio.gather(*(outcome(stub, request(100 + i), 10) for i in range(4)))
            failing["on"] = False
            # Deadlines shorter than a generation, and callers that go away.
            late = await asyncio.gather(*(outcome(stub, request(200 + i), 0.02) for i in range(6)))
            gone = [
                asyncio.ensure_future(stub.Score(request(300 + i), timeout=10)) for i in range(4)
            ]
            await asyncio.sleep(0.02)
            for call in gone:
                call.cancel()
            await asyncio.gather(*gone, return_exceptions=True)
            # One sampler stopped mid-request: re-sampled on the other.
            pending = asyncio.gather(*(outcome(stub, request(400 + i, k=4), 10) for i in range(4)))
            await asyncio.sleep(0.02)
            await suite.samplers[1].stop(0)
            for r, _ in await pending:
                check_reward(r)

            def settled() -> bool:
                return (
                    len(asyncio.all_tasks()) <= base_tasks + TASK_TOLERANCE
                    and back_to(base_fds, lambda: open_fds(os.getpid()))()
                )

            await until(settled, within_s=10, interval=0.1)
            tasks, fds = len(asyncio.all_tasks()), open_fds(os.getpid())
            report = fd_report("test process", base_fds, fds)
            print(f"\nin-process: tasks {base_tasks}->{tasks}; {report}")
            assert {c for c, _ in errs} <= {grpc.StatusCode.UNAVAILABLE}
            assert {c if isinstance(c, grpc.StatusCode) else "reply" for c, _ in late} <= {
                grpc.StatusCode.DEADLINE_EXCEEDED,
                "reply",
            }
            assert settled(), f"tasks {base_tasks}->{tasks}, {fd_report('fds', base_fds, fds)}"
            assert suite.aggregator.pool.stats()[suite.samplers[0].address]["outstanding"] == 0


# ------------------------------------------------------------------ SIGTERM under load


async def test_sigterm_under_load_drains_and_refuses_new_requests(tmp_path: Path) -> None:
    """NOT_SERVING at once, in-flight requests answered, new ones UNAVAILABLE, exit in grace.

    A health Watch stays open throughout: the drain must end with the in-flight requests
    (0.6 s of work), not wait out the grace because a watcher is still connected.
    """
    grace_s = 8.0
    sampler = await start_sampler(TrackingBackend(capacity=16, delay=0.6))
    agg = Service(
        "aggregator",
        ["--samplers", sampler.address, "--cache", "false", "--grace-s", str(grace_s)],
        tmp_path,
        "agg",
    )
    try:
        async with services(agg):
            await agg.start()
            async with grpc.aio.insecure_channel(agg.address) as channel:
                stub = reward_pb2_grpc.RewardServiceStub(channel)
                health = health_pb2_grpc.HealthStub(channel)
                watch = health.Watch(health_pb2.HealthCheckRequest(service=""))
                statuses: list[int] = []

                async def follow() -> None:
                    with contextlib.suppress(grpc.aio.AioRpcError):
                        async for msg in watch:
                            statuses.append(msg.status)

                follower = asyncio.ensure_future(follow())
                assert await until(lambda: bool(statuses), within_s=5)
                before: list[Any] = []  # sent before SIGTERM
                after: list[tuple[Any, bool]] = []  # sent after NOT_SERVING (reply, alive)
                inflight = [0]
                hold = asyncio.Event()  # set: workers send nothing new
                draining = asyncio.Event()  # set: health said NOT_SERVING
                stopping = asyncio.Event()

                async def worker(w: int) -> None:
                    seed = w * 1000
                    while not stopping.is_set():
                        if hold.is_set() and not draining.is_set():
                            await asyncio.sleep(0.01)
                            continue
                        seed += 1
                        late = draining.is_set()
                        inflight[0] += 1
                        reply, _ = await outcome(stub, request(seed), 10)
                        inflight[0] -= 1
                        if late:
                            after.append(
                                (reply, agg.proc is not None and agg.proc.returncode is None)
                            )
                            await asyncio.sleep(0.05)
                        else:
                            before.append(reply)

                workers = [asyncio.ensure_future(worker(w)) for w in range(6)]
                # A steady stream first: two rounds answered, then every worker waiting on one.
                assert await until(
                    lambda: len(before) >= 12 and sampler.backend.running >= 8, within_s=10
                )
                hold.set()
                # Every request in flight has reached the sampler: none is still on the wire.
                assert await until(lambda: sampler.backend.running == 2 * inflight[0], within_s=5)
                at_sigterm = inflight[0]
                stop_at = time.monotonic()
                os.kill(agg.pid, signal.SIGTERM)
                assert await until(
                    lambda: health_pb2.HealthCheckResponse.NOT_SERVING in statuses, within_s=2
                )
                draining.set()
                assert agg.proc is not None
                await asyncio.wait_for(agg.proc.wait(), grace_s)
                exit_s = time.monotonic() - stop_at
                stopping.set()
                await asyncio.gather(*workers)
                follower.cancel()
                await asyncio.gather(follower, return_exceptions=True)
            rc = agg.proc.returncode

        assert at_sigterm >= 4
        for r in before:
            check_reward(r)  # in flight at SIGTERM: answered in full
        assert after and all(r == grpc.StatusCode.UNAVAILABLE for r, _ in after)
        refused_draining = sum(alive for _, alive in after)
        assert rc == 0
        print(
            f"\nSIGTERM: {at_sigterm} requests in flight at SIGTERM, all {len(before)} sent "
            f"before it answered; {len(after)} sent after NOT_SERVING all UNAVAILABLE "
            f"({refused_draining} while the process was still draining); exited rc={rc} "
            f"{exit_s:.2f}s after SIGTERM (grace {grace_s}s)"
        )
    finally:
        await sampler.stop(0)
