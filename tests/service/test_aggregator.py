"""The front door over real servers: fan-out across two samplers, validation through the
interceptor, separate mode, meta-vote, batches, deadlines, lost samplers, grpcurl, --target."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from grm.cli import main as cli
from grm.client import NO_RETRY, AsyncGrmClient
from grm.core.errors import InvalidArgumentError, UnavailableError
from grm.core.templates import load_templates
from grm.core.types import ScoreResult, ScoreStatus
from grm.core.validation import Limits
from grm.metarm import make_meta_rm
from grm.scoring.critique import CritiqueSampler
from grm.scoring.pipeline import ScoringPipeline
from grm.services.aggregator.main import AggregatorSettings, build
from grm.services.aggregator.pool import UNAVAILABLE_REASON
from grm.v1 import reward_pb2, reward_pb2_grpc
from tests.support.scripted import keyword_judge, shown_responses
from tests.support.servers import LOOPBACK, ROOT, TrackingBackend, child_env, running_suite

RESPONSES = ["bad one", "good one"]
GRPCURL = Path(sys.executable).with_name("grpcurl")


def check_rewards(result: ScoreResult) -> None:
    """The keyword judge's verdict: 2 for 'bad one', 9 for 'good one' — never a zero."""
    assert result.rewards == (2.0, 9.0)
    assert result.best == (1,)


async def test_one_request_is_spread_across_both_samplers() -> None:
    async with running_suite() as suite, AsyncGrmClient(suite.address, timeout=10) as client:
        result = await client.score("q", RESPONSES, k=8, include_samples=True)
        check_rewards(result)
        assert result.status is ScoreStatus.COMPLETE and result.k_used == 8
        by_sampler = {s.address: 0 for s in suite.samplers}
        for sample in result.samples:
            by_sampler[sample.sampler] += 1
        assert list(by_sampler.values()) == [4, 4]
        assert [s.backend.finished for s in suite.samplers] == [4, 4]
        # Each sample was drawn once, with its own seed and order, on exactly one sampler.
        seeds = [r.seed for s in suite.samplers for r in s.backend.requests]
        assert len(set(seeds)) == 8
        stats = suite.aggregator.pool.stats()
        assert [v["samples_sent"] for v in stats.values()] == [4, 4]


async def test_single_sample_requests_alternate_between_samplers() -> None:
    async with running_suite() as suite, AsyncGrmClient(suite.address, timeout=10) as client:
        for _ in range(4):
            check_rewards(await client.score("q", RESPONSES, k=1))
        assert [s.backend.finished for s in suite.samplers] == [2, 2]


async def test_separate_mode_takes_principles_from_the_principle_service() -> None:
    async with running_suite() as suite, AsyncGrmClient(suite.address, timeout=10) as client:
        result = await client.score(
            "q", RESPONSES, k=4, principle_mode="separate", include_samples=True
        )
        check_rewards(result)
        assert suite.principles.backend.finished == 4  # one principle set per sample
        assert {s.principles for s in result.samples} == {"accuracy (60%), tone (40%)."}
        prompts = [r.messages[-1]["content"] for s in suite.samplers for r in s.backend.requests]
        assert len(prompts) == 4
        assert all("accuracy (60%), tone (40%)." in p for p in prompts)
        assert result.timings.principles_ms > 0


async def test_meta_vote_keeps_k_meta_samples() -> None:
    async with running_suite() as suite, AsyncGrmClient(suite.address, timeout=10) as client:
        result = await client.score(
            "q", RESPONSES, k=4, k_meta=2, aggregation="meta-vote", include_samples=True
        )
        check_rewards(result)
        assert result.k_used == 2 and result.k_valid == 4
        assert sum(result.used) == 2
        assert all(m is not None for m in result.meta_scores)


LIMITS = Limits(max_responses=4, max_k=8, max_response_chars=100)
BAD_REQUESTS = [
    ({"responses": []}, "responses"),
    ({"responses": ["a"] * 5}, "responses"),
    ({"k": 0}, "k"),
    ({"k": 9}, "k"),
    ({"responses": ["fine", "x" * 101]}, "responses[1]"),
    ({"k": 2, "k_meta": 3, "aggregation": "meta-vote"}, "k_meta"),
]


async def test_bad_requests_are_invalid_argument_naming_the_field() -> None:
    async with running_suite(limits=LIMITS) as suite:
        channel = grpc.aio.insecure_channel(suite.address)
        stub = reward_pb2_grpc.RewardServiceStub(channel)
        client = AsyncGrmClient(suite.address, timeout=5)
        try:
            for fields, field in BAD_REQUESTS:
                kwargs = {"query": "q", "responses": RESPONSES, **fields}
                # Raw status through a real channel: the interceptor did the mapping.
                from grm.rpc.convert import score_request

                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await stub.Score(score_request(**kwargs), timeout=5)
                assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT, fields
                assert info.value.details().startswith(f"{field}: "), info.value.details()
                # The SDK turns it back into the core error, field included.
                with pytest.raises(InvalidArgumentError) as err:
                    await client.score(**kwargs)
                assert err.value.field == field
            assert sum(s.backend.finished for s in suite.samplers) == 0
        finally:
            await client.close()
            await channel.close()


def broken_for_query(request) -> str:  # type: ignore[no-untyped-def]
    """Unparseable output whenever the query says 'broken'."""
    if "broken" in request.messages[-1]["content"]:
        return "I refuse to give scores."
    return keyword_judge(request)


async def test_batch_reports_each_item_and_one_bad_item_fails_only_itself() -> None:
    async with running_suite(script=broken_for_query) as suite:
        async with AsyncGrmClient(suite.address, timeout=10) as client:
            out = await client.score_batch(
                [
                    {"query": "q", "responses": RESPONSES, "k": 2},
                    {"query": "q", "responses": RESPONSES, "k": 0},
                    {"query": "broken", "responses": RESPONSES, "k": 2},
                    {"query": "q2", "responses": RESPONSES[::-1], "k": 4},
                ]
            )
    assert isinstance(out[0], ScoreResult)
    check_rewards(out[0])
    assert isinstance(out[1], InvalidArgumentError) and out[1].field == "items[1].k"
    assert isinstance(out[2], UnavailableError) and "no valid sample" in str(out[2])
    assert isinstance(out[3], ScoreResult) and out[3].rewards == (9.0, 2.0)


async def test_batch_with_a_slow_item_answers_within_the_overall_deadline() -> None:
    async with running_suite(delay=0.3, capacity=1) as suite:
        async with AsyncGrmClient(suite.address, retry=NO_RETRY) as client:
            out = await client.score_batch(
                [
                    {"query": "q", "responses": RESPONSES, "k": 2},
                    {"query": "q", "responses": RESPONSES, "k": 16},
                ],
                timeout=1.5,
            )
    # A reply at all means it came before the 1.5 s deadline (else DEADLINE_EXCEEDED), with a
    # status per item.
    # The samplers (one sample at a time, 0.3 s each) finish ~8 samples in time; which
    # item gets them is up to their queues. The big item votes over what finished.
    small, big = out
    if isinstance(small, ScoreResult):
        check_rewards(small)
        assert small.k_used == 2 or small.status is ScoreStatus.PARTIAL
    else:
        assert small.code == "DEADLINE_EXCEEDED"
    assert isinstance(big, ScoreResult)
    check_rewards(big)
    assert big.status is ScoreStatus.PARTIAL and 1 <= big.k_used < 16


# Both go as one job per sampler on its SampleChannel call: without a budget the sampler
# answers the job in one update, with one (far from binding here) sample by sample. Every
# failure must end the same way on both.
BUDGETS = pytest.mark.parametrize("budget", [0, 30_000], ids=["unary", "stream"])


@BUDGETS
async def test_deadline_reaches_the_samplers_and_stops_their_work(budget: int) -> None:
    async with running_suite(delay=0.3, capacity=1) as suite:
        async with AsyncGrmClient(suite.address, retry=NO_RETRY) as client:
            # A result (not DEADLINE_EXCEEDED) means it arrived within the 1 s deadline.
            result = await client.score(
                "q", RESPONSES, k=8, timeout=1.0, include_samples=True, latency_budget_ms=budget
            )
        check_rewards(result)
        assert result.status is ScoreStatus.PARTIAL
        assert 1 <= result.k_used < 8
        assert any("deadline" in s.invalid_reason for s in result.samples if not s.valid)
        await asyncio.sleep(0.1)
        for s in suite.samplers:  # nothing keeps generating after the deadline
            assert s.backend.running == 0 and s.sampler.in_flight == 0
            assert s.backend.cancelled >= 1


@BUDGETS
async def test_a_caller_that_goes_away_cancels_the_work_on_every_sampler(budget: int) -> None:
    async with running_suite(delay=5.0, capacity=1) as suite:
        async with grpc.aio.insecure_channel(suite.address) as channel:
            stub = reward_pb2_grpc.RewardServiceStub(channel)
            call = stub.Score(
                reward_pb2.ScoreRequest(
                    query="q", responses=RESPONSES, k=4, latency_budget_ms=budget
                )
            )
            for _ in range(100):
                if all(s.backend.running for s in suite.samplers):
                    break
                await asyncio.sleep(0.02)
            assert [s.backend.running for s in suite.samplers] == [1, 1]
            call.cancel()
            for _ in range(100):
                if not any(s.backend.running for s in suite.samplers):
                    break
                await asyncio.sleep(0.02)
        for s in suite.samplers:
            assert s.backend.running == 0 and s.backend.finished == 0
            assert s.backend.cancelled == 1 and s.sampler.queued == 0


@BUDGETS
async def test_a_sampler_stopped_mid_request_is_resampled_elsewhere(budget: int) -> None:
    async with running_suite(delay=0.4, capacity=1) as suite:
        async with AsyncGrmClient(suite.address, timeout=10, retry=NO_RETRY) as client:
            task = asyncio.ensure_future(
                client.score("q", RESPONSES, k=4, include_samples=True, latency_budget_ms=budget)
            )
            await asyncio.sleep(0.2)
            await suite.samplers[1].stop(0)  # in-flight RPCs die with it
            result = await task
            check_rewards(result)
            assert result.status is ScoreStatus.COMPLETE and result.k_used == 4
            lost = [s for s in result.samples if not s.valid]
            assert len(lost) == 2 and all(UNAVAILABLE_REASON in s.invalid_reason for s in lost)
            assert {s.sampler for s in result.samples if s.valid} == {suite.samplers[0].address}
            # The next request goes only to the sampler that is left.
            check_rewards(await client.score("q", RESPONSES, k=2))
            assert suite.samplers[0].backend.finished == 6


@BUDGETS
async def test_a_lost_sampler_and_a_tight_deadline_give_a_partial_result(budget: int) -> None:
    async with running_suite(delay=0.5, capacity=1) as suite:
        async with AsyncGrmClient(suite.address, retry=NO_RETRY) as client:
            task = asyncio.ensure_future(
                client.score("q", RESPONSES, k=4, timeout=1.6, latency_budget_ms=budget)
            )
            await asyncio.sleep(0.2)
            await suite.samplers[1].stop(0)
            result = await task
    check_rewards(result)
    assert result.status is ScoreStatus.PARTIAL and 1 <= result.k_used < 4  # 2 unless slow


@BUDGETS
async def test_all_samplers_gone_is_unavailable_never_a_zero_reward(budget: int) -> None:
    async with running_suite(delay=0.4, capacity=1) as suite:
        async with AsyncGrmClient(suite.address, timeout=10, retry=NO_RETRY) as client:
            task = asyncio.ensure_future(
                client.score("q", RESPONSES, k=4, latency_budget_ms=budget)
            )
            await asyncio.sleep(0.2)
            for s in suite.samplers:
                await s.stop(0)
            with pytest.raises(UnavailableError, match=UNAVAILABLE_REASON):
                await task


async def test_a_killed_sampler_process_mid_request(tmp_path: Path) -> None:
    """Two samplers as real processes; SIGKILL one while it is generating."""
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.support.servers", "sampler", "--delay", "0.5",
            "--port-file", str(tmp_path / f"s{i}.port"), cwd=ROOT, env=child_env(),
        )
        for i in range(2)
    ]  # fmt: skip
    try:
        addresses = []
        for i in range(2):
            port_file = tmp_path / f"s{i}.port"
            for _ in range(200):
                if port_file.exists():
                    break
                await asyncio.sleep(0.05)
            addresses.append(f"127.0.0.1:{port_file.read_text().strip()}")
        agg = build(AggregatorSettings(server=LOOPBACK, samplers=tuple(addresses)))
        await agg.server.start()
        await agg.server.set_serving(True)
        try:
            async with AsyncGrmClient(agg.server.address, timeout=20, retry=NO_RETRY) as client:
                check_rewards(await client.score("q", RESPONSES, k=2))  # both are up
                task = asyncio.ensure_future(
                    client.score("q", RESPONSES, k=4, include_samples=True)
                )
                await asyncio.sleep(0.3)
                procs[1].send_signal(signal.SIGKILL)
                result = await task
        finally:
            await agg.server.stop(0)
            await agg.close()
        check_rewards(result)
        assert result.k_used == 4 and result.invalid_samples == 2
        lost = [s for s in result.samples if not s.valid]
        assert all(UNAVAILABLE_REASON in s.invalid_reason for s in lost)
        assert {s.sampler for s in result.samples if s.valid} == {addresses[0]}
    finally:
        for p in procs:
            if p.returncode is None:
                p.send_signal(signal.SIGTERM)
            await asyncio.wait_for(p.wait(), 10)
    assert procs[0].returncode == 0  # the survivor shut down cleanly on SIGTERM


async def test_grpcurl_with_reflection() -> None:
    async with running_suite() as suite:
        listed = await asyncio.to_thread(
            subprocess.run,
            [str(GRPCURL), "-plaintext", suite.address, "list"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert listed.returncode == 0, listed.stderr
        services = set(listed.stdout.split())
        assert {"grm.v1.RewardService", "grpc.health.v1.Health"} <= services
        body = json.dumps({"query": "q", "responses": RESPONSES, "k": 4, "includeSamples": True})
        scored = await asyncio.to_thread(
            subprocess.run,
            [str(GRPCURL), "-plaintext", "-d", body, suite.address, "grm.v1.RewardService/Score"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert scored.returncode == 0, scored.stderr
        reply = json.loads(scored.stdout)
        assert reply["rewards"] == [2, 9] and reply["k_used"] == 4
        assert reply["status"] == "SCORE_STATUS_COMPLETE"
        assert len({s["sampler"] for s in reply["samples"]}) == 2
        bad = await asyncio.to_thread(
            subprocess.run,
            [
                str(GRPCURL),
                "-plaintext",
                "-d",
                json.dumps({"query": "q", "responses": [], "k": 4}),
                suite.address,
                "grm.v1.RewardService/Score",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert bad.returncode != 0
        assert "InvalidArgument" in bad.stderr and "responses:" in bad.stderr


async def test_score_target_writes_the_same_records_as_local_scoring(tmp_path: Path) -> None:
    items = tmp_path / "items.jsonl"
    items.write_text(
        "\n".join(
            [
                json.dumps({"id": "a", "query": "q", "responses": RESPONSES}),
                json.dumps({"id": "b", "query": "q", "responses": []}),
                json.dumps(
                    {
                        "id": "c",
                        "query": [{"role": "user", "content": "hi"}],
                        "responses": ["good", "bad", "good too"],
                    }
                ),
            ]
        )
        + "\n"
    )
    remote_out, local_out = tmp_path / "remote.jsonl", tmp_path / "local.jsonl"
    async with running_suite() as suite:
        code = await asyncio.to_thread(
            cli.main,
            [
                "score",
                str(items),
                "--target",
                suite.address,
                "--k",
                "4",
                "--details",
                "--quiet",
                "-o",
                str(remote_out),
            ],
        )
    assert code == 3  # one line failed validation
    # The same items through the in-process pipeline on the same scripted model.
    from grm.cli.scorefile import run_scorefile

    pipeline = ScoringPipeline(
        CritiqueSampler(TrackingBackend(), load_templates()), meta_rm=make_meta_rm("agreement")
    )
    args = cli.build_parser().parse_args(["score", str(items), "--k", "4"])
    build_item = cli._item_builder(args)
    with items.open("rb") as stream, local_out.open("w") as out:
        await run_scorefile(
            stream, out, lambda f: build_item(**f), pipeline.score, details=True, progress=False
        )

    def normalised(path: Path) -> list[dict]:
        text = re.sub(
            r'"(total|principles|sampling|meta|latency_ms)": [0-9.]+', r'"\1": 0', path.read_text()
        )
        return [json.loads(line) for line in text.splitlines()]

    remote, local = normalised(remote_out), normalised(local_out)
    assert remote == local
    assert remote[0]["rewards"] == [2.0, 9.0] and len(remote[0]["samples"]) == 4
    assert remote[1]["error"]["field"] == "responses" and remote[1]["line"] == 2
    assert remote[2]["rewards"] == [9.0, 2.0, 9.0]
    assert remote[2]["model"]["template_version"] == "grm-default-v3"


async def test_orders_reach_the_sampler_and_scores_come_back_in_caller_order() -> None:
    async with running_suite() as suite, AsyncGrmClient(suite.address, timeout=10) as client:
        responses = ["good a", "bad b", "good c", "bad d"]
        result = await client.score("q", responses, k=6, include_samples=True)
        assert result.rewards == (9.0, 2.0, 9.0, 2.0)
        shown = {tuple(shown_responses(r)) for s in suite.samplers for r in s.backend.requests}
        assert len(shown) > 1
        for sample in result.samples:
            assert [responses[i] for i in sample.spec.order] in [list(o) for o in shown]


async def test_raw_score_response_fields() -> None:
    async with running_suite() as suite:
        async with grpc.aio.insecure_channel(suite.address) as channel:
            stub = reward_pb2_grpc.RewardServiceStub(channel)
            reply = await stub.Score(
                reward_pb2.ScoreRequest(query="q", responses=RESPONSES, request_id="r-1"),
                timeout=10,
            )
    assert list(reply.rewards) == [2.0, 9.0] and list(reply.votes) == [8, 36]
    assert reply.k_requested == 4 and reply.k_used == 4  # the server default k
    assert reply.status == reward_pb2.SCORE_STATUS_COMPLETE
    assert reply.request_id == "r-1" and reply.model.model_id == "scripted"
    assert not reply.samples  # only with include_samples
