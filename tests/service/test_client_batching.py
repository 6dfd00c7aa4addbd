"""`score_many`: splitting any number of items into ScoreBatch calls the server accepts.

The splitting is pure (grm.client.batching) and checked with hypothesis against real protobuf
sizes; both clients then run against a real suite (tests.support.servers) whose message limit is
1 MiB, so the split is forced by the transport itself, and examples/sdk_batch.py runs as a
child process against it.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grm.backends.base import GenerationRequest
from grm.client import (
    DEFAULT_MAX_BATCH_ITEMS,
    NO_RETRY,
    AsyncGrmClient,
    GrmClient,
    ScoredItem,
)
from grm.client._common import RetryPolicy
from grm.client.batching import BatchRun, item_cost, plan_batches, varint_size
from grm.core.errors import (
    DeadlineExceededError,
    InvalidArgumentError,
    ResourceExhaustedError,
    UnavailableError,
)
from grm.core.types import Aggregation, ScoreResult, ScoreStatus
from grm.rpc.convert import score_request
from grm.rpc.server import MiB
from grm.v1 import reward_pb2
from tests.support.scripted import keyword_judge
from tests.support.servers import LOOPBACK, ROOT, child_env, running_suite

EXAMPLE = ROOT / "examples" / "sdk_batch.py"
LONG = 30_000  # chars per long response: ~34 items fill the suite's 1 MiB message limit


def item(i: int, *, size: int = 0, **fields: Any) -> dict[str, Any]:
    """Two responses, the good one first on even items; `size` pads the good one."""
    good, bad = "good " + "x" * size, "bad"
    responses = [good, bad] if i % 2 == 0 else [bad, good]
    return {"query": f"question {i}", "responses": responses, **fields}


def expected(i: int) -> tuple[float, float]:
    return (9.0, 2.0) if i % 2 == 0 else (2.0, 9.0)


def record_calls(client: GrmClient | AsyncGrmClient) -> list[reward_pb2.ScoreBatchRequest]:
    """Record every ScoreBatch request the client sends (retries included)."""
    sent: list[reward_pb2.ScoreBatchRequest] = []
    send: Callable[..., Any] = client._stub.ScoreBatch

    def recording(request: reward_pb2.ScoreBatchRequest, **kwargs: Any) -> Any:
        sent.append(request)
        return send(request, **kwargs)

    client._stub.ScoreBatch = recording  # type: ignore[method-assign]
    return sent


# --- pure splitting ------------------------------------------------------------------------


costs_st = st.lists(st.one_of(st.none(), st.integers(min_value=2, max_value=500)), max_size=60)


@given(costs=costs_st, max_bytes=st.integers(1, 1500), max_items=st.integers(1, 10))
def test_every_item_lands_in_exactly_one_batch_in_order(
    costs: list[int | None], max_bytes: int, max_items: int
) -> None:
    batches, oversize = plan_batches(costs, max_bytes=max_bytes, max_items=max_items)
    sent = [i for b in batches for i in b]
    fits = [i for i, c in enumerate(costs) if c is not None and c <= max_bytes]
    assert sent == fits  # each fitting item once, in input order
    assert oversize == [i for i, c in enumerate(costs) if c is not None and c > max_bytes]
    for b in batches:
        assert b and len(b) <= max_items
        assert sum(costs[i] or 0 for i in b) <= max_bytes
    # greedy: a batch was closed only because it was full or the next item did not fit
    for b, nxt in itertools.pairwise(batches):
        used = sum(costs[i] or 0 for i in b)
        assert len(b) == max_items or used + (costs[nxt[0]] or 0) > max_bytes


requests_st = st.lists(
    st.builds(
        lambda q, rs, k, budget: score_request(q, rs, k=k, latency_budget_ms=budget),
        st.text(max_size=300),
        st.lists(st.text(max_size=400), min_size=1, max_size=6),
        st.one_of(st.none(), st.integers(1, 64)),
        st.integers(0, 100_000),
    ),
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(requests=requests_st, max_bytes=st.integers(20, 6000), max_items=st.integers(1, 12))
def test_batch_run_calls_fit_the_limits_by_real_byte_size(
    requests: list[reward_pb2.ScoreRequest], max_bytes: int, max_items: int
) -> None:
    run = BatchRun(requests, max_bytes=max_bytes, max_items=max_items)
    seen = []
    for call in run.calls:
        assert call.request.ByteSize() <= max_bytes
        assert len(call.request.items) == len(call.indices) <= max_items
        assert list(call.request.items) == [requests[i] for i in call.indices]
        seen.extend(call.indices)
    assert seen == sorted(seen) and len(set(seen)) == len(seen)
    for call in run.calls:
        run.record(call, [_result(len(requests[i].responses)) for i in call.indices])
    results = run.results()
    assert [r.index for r in results] == list(range(len(requests)))
    for r in results:
        if r.index in seen:
            assert r.ok and r.rewards is not None
        else:  # too big for any call: its own error, never a reward
            assert isinstance(r.error, InvalidArgumentError) and r.rewards is None
            assert r.error.field == f"items[{r.index}]"
            assert item_cost(requests[r.index]) > max_bytes


def _result(n: int) -> ScoreResult:
    return ScoreResult(
        rewards=(5.0,) * n,
        votes=(5,) * n,
        k_requested=1,
        k_used=1,
        k_valid=1,
        invalid_samples=0,
        status=ScoreStatus.COMPLETE,
        best=tuple(range(n)),
        aggregation=Aggregation.VOTE,
    )


def test_item_cost_sums_to_the_batch_size() -> None:
    reqs = [score_request("q", ["x" * n]) for n in (0, 1, 126, 127, 128, 20_000, 3 * MiB)]
    assert sum(item_cost(r) for r in reqs) == reward_pb2.ScoreBatchRequest(items=reqs).ByteSize()
    assert [varint_size(v) for v in (0, 127, 128, 16383, 16384)] == [1, 1, 2, 2, 3]


def test_bad_items_fail_alone_and_call_failures_fail_only_their_items() -> None:
    items: list[Any] = [
        item(0),
        {"query": "q", "responses": ["a"], "colour": "red"},  # not a ScoreRequest field
        {"query": "q", "responses": ["a"], "aggregation": "median"},
        item(3, latency_budget_ms=50),
        item(4),
    ]
    run = BatchRun(items, max_bytes=10_000, max_items=1, latency_budget_ms=800)
    assert [c.indices for c in run.calls] == [(0,), (3,), (4,)]
    # the call-level budget fills in, an item's own budget wins
    assert [c.request.items[0].latency_budget_ms for c in run.calls] == [800, 50, 800]
    run.record(run.calls[0], [_result(2)])
    run.record(run.calls[1], UnavailableError("sampler pool down"))
    server_error = InvalidArgumentError("must not be empty", field="items[0].query")
    run.record(run.calls[2], [server_error])
    out = run.results()
    assert [o.status for o in out] == [
        "complete",
        "INVALID_ARGUMENT",
        "INVALID_ARGUMENT",
        "UNAVAILABLE",
        "INVALID_ARGUMENT",
    ]
    assert out[1].error is not None and out[1].error.field == "items[1]"
    assert out[2].error is not None and out[2].error.field == "items[2]"
    # the server named the item within its call (items[0]); the caller sees its own index
    assert isinstance(out[4].error, InvalidArgumentError)
    assert out[4].error.field == "items[4].query" and str(out[4].error).endswith("empty")
    assert all(o.rewards is None for o in out[1:])
    with pytest.raises(RuntimeError):
        BatchRun([item(0)], max_bytes=10_000).results()  # a call never recorded


def test_default_max_batch_items_is_the_aggregators() -> None:
    from grm.services.aggregator.main import OPTIONS, AggregatorSettings

    [option] = [o for o in OPTIONS if o.flag == "--max-batch-items"]
    assert DEFAULT_MAX_BATCH_ITEMS == option.default
    assert AggregatorSettings(server=LOOPBACK, samplers=()).max_batch_items == option.default


# --- both clients against the suite ---------------------------------------------------------

ONE_MIB = replace(LOOPBACK, max_message_mb=1)


def check_scored(out: list[ScoredItem], skip: frozenset[int] = frozenset()) -> None:
    for r in out:
        if r.index in skip:
            continue
        assert r.ok, r.error
        assert r.rewards == expected(r.index) and r.status == "complete"


async def test_async_client_splits_under_the_real_message_limit() -> None:
    items: list[Any] = [item(i, size=LONG, k=2) for i in range(80)]
    items[7] = {"query": "huge", "responses": ["good " + "y" * LONG] * 40}  # ~1.2 MB alone
    items[11] = item(11, k=0)  # the server rejects it, within its call
    async with (
        running_suite(server=ONE_MIB) as suite,
        AsyncGrmClient(suite.address, max_message_mb=1, timeout=30, retry=NO_RETRY) as client,
    ):
        # One call with everything exceeds the limit: the transport refuses it.
        with pytest.raises(ResourceExhaustedError):
            await client.score_batch(items[:40])
        sent = record_calls(client)
        out = await client.score_many(items, concurrency=2, latency_budget_ms=20_000)
    sizes = [len(r.items) for r in sent]
    assert all(r.ByteSize() <= MiB for r in sent)
    assert {i.latency_budget_ms for r in sent for i in r.items} == {20_000}
    assert [r.index for r in out] == list(range(80))
    assert len(sizes) >= 3 and sum(sizes) == 79  # split by size; the oversize one never sent
    assert max(sizes) < 40
    huge, bad = out[7], out[11]
    assert isinstance(huge.error, InvalidArgumentError) and huge.error.field == "items[7]"
    assert "message limit" in str(huge.error) and huge.rewards is None
    assert isinstance(bad.error, InvalidArgumentError) and bad.error.field == "items[11].k"
    check_scored(out, skip=frozenset({7, 11}))


async def test_sync_client_splits_by_item_count_with_per_call_deadlines() -> None:
    async with running_suite() as suite:

        def use() -> tuple[list[ScoredItem], list[int], list[ScoredItem]]:
            with GrmClient(suite.address, timeout=30) as client:
                sent = record_calls(client)
                out = client.score_many(
                    (item(i, k=2) for i in range(10)), max_batch_items=3, timeout=20
                )
                tiny = client.score_many(
                    [item(0, size=2000), item(1)], max_message_bytes=1000, timeout=20
                )
            return out, [len(r.items) for r in sent], tiny

        out, sizes, tiny = await asyncio.to_thread(use)
    assert sizes[:4] == [3, 3, 3, 1]
    check_scored(out)
    assert tiny[0].status == "INVALID_ARGUMENT" and tiny[1].rewards == expected(1)
    assert all(r.result is not None and r.result.status_detail == "" for r in out)


async def test_a_failed_call_is_an_error_per_item_never_a_zero() -> None:
    async with AsyncGrmClient("127.0.0.1:1", retry=NO_RETRY, timeout=5) as client:
        out = await client.score_many([item(0), item(1)], max_batch_items=1)
    assert [r.status for r in out] == ["UNAVAILABLE", "UNAVAILABLE"]
    assert all(isinstance(r.error, UnavailableError) and r.rewards is None for r in out)


class FlakyJudge:
    """keyword_judge, except that the first `failures` generations for a query containing
    "flaky" break the model (the item then comes back UNAVAILABLE: no valid sample)."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.seen: dict[str, int] = {}

    def __call__(self, request: GenerationRequest) -> str:
        query = request.messages[-1]["content"]
        if "flaky" in query:
            key = next(w for w in query.split() if w.startswith("flaky"))
            self.seen[key] = self.seen.get(key, 0) + 1
            if self.seen[key] <= self.failures:
                return "<error>"
        return keyword_judge(request)


FAST_RETRY = RetryPolicy(max_attempts=4, initial_backoff_s=0.01, max_backoff_s=0.05)


@pytest.mark.parametrize("blocking", [False, True])
async def test_score_many_retries_only_the_items_that_came_back_unavailable(
    blocking: bool,
) -> None:
    items = [item(0, k=1), {**item(1, k=1), "query": "question flaky1"}, item(2, k=1)]
    items.append({**item(3, k=1), "query": "question flaky3"})
    judge = FlakyJudge(failures=2)  # two bad tries each, the third is fine
    async with running_suite(script=judge, max_attempts=1) as suite:
        if blocking:

            def run() -> tuple[list[ScoredItem], list[reward_pb2.ScoreBatchRequest]]:
                with GrmClient(suite.address, timeout=30, retry=FAST_RETRY) as client:
                    sent = record_calls(client)
                    return client.score_many(items), sent

            out, sent = await asyncio.to_thread(run)
        else:
            async with AsyncGrmClient(suite.address, timeout=30, retry=FAST_RETRY) as client:
                sent = record_calls(client)
                out = await client.score_many(items)
    assert [r.rewards for r in out] == [expected(i) for i in range(4)]
    # the first call had all four; each retry only the two flaky ones
    assert [len(call.items) for call in sent] == [4, 2, 2]
    assert [r.query for r in sent[1].items] == ["question flaky1", "question flaky3"]


async def test_score_many_retries_stop_at_the_deadline_with_a_typed_status() -> None:
    judge = FlakyJudge(failures=10**6)  # never recovers
    policy = RetryPolicy(max_attempts=1000, initial_backoff_s=0.2, multiplier=1.0)
    items = [item(0, k=1), {**item(1, k=1), "query": "question flaky1"}]
    async with (
        running_suite(script=judge, max_attempts=1) as suite,
        AsyncGrmClient(suite.address, retry=policy) as client,
    ):
        sent = record_calls(client)
        started = time.monotonic()
        out = await client.score_many(items, timeout=1.0)
        elapsed = time.monotonic() - started
    assert out[0].rewards == expected(0)
    # the last try's outcome: still down, or out of time on that try; never a reward
    assert out[1].status in ("UNAVAILABLE", "DEADLINE_EXCEEDED") and out[1].rewards is None
    # Pauses of 0.1 s (half the 0.2 s cap, on average) inside a 1 s deadline: a few retries,
    # far fewer than the policy's 1000 (the deadline, not the count, ended them).
    assert 2 <= len(sent) < 20
    assert elapsed < 1.0 + 5.0  # generous: a loaded machine only delays the replies


async def test_score_and_score_batch_take_deadlines_and_latency_budgets() -> None:
    """A budget shorter than one sample is missed and says so; without one, nothing is said."""
    async with (
        running_suite(delay=0.3) as suite,
        AsyncGrmClient(suite.address, timeout=30, retry=NO_RETRY) as client,
    ):
        one = await client.score("q", ["good", "bad"], k=2, timeout=10, latency_budget_ms=50)
        batch = await client.score_batch(
            [item(0, k=2), item(1, k=2, latency_budget_ms=60)], timeout=10, latency_budget_ms=50
        )
        plain = await client.score("q2", ["good", "bad"], k=2, timeout=10)
        with pytest.raises(DeadlineExceededError):
            await client.score("q3", ["good", "bad"], k=2, timeout=0.1)
    assert one.status_detail.startswith("budget 50 ms missed")
    assert [b.status_detail[:13] for b in batch if isinstance(b, ScoreResult)] == [
        "budget 50 ms ",
        "budget 60 ms ",
    ]
    assert plain.status_detail == "" and plain.status is ScoreStatus.COMPLETE


# --- the CLI example -----------------------------------------------------------------------


async def test_sdk_batch_example_scores_a_jsonl_file(tmp_path: Path) -> None:
    lines = [json.dumps({"id": f"item-{i}", **item(i)}) for i in range(5)]
    lines.insert(2, "{not json")
    lines.append(json.dumps({"id": "empty", "query": "", "responses": ["x"]}))
    path = tmp_path / "items.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    async with running_suite() as suite:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(EXAMPLE),
            "--target",
            suite.address,
            "--k",
            "2",
            "--max-batch-items",
            "2",
            "--timeout",
            "30",
            str(path),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=child_env(),
        )
        stdout, stderr = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 1, stderr.decode()  # some lines failed
    records = [json.loads(line) for line in stdout.decode().splitlines()]
    assert [r["id"] for r in records] == [
        "item-0",
        "item-1",
        None,
        "item-2",
        "item-3",
        "item-4",
        "empty",
    ]
    for r, i in zip([records[0], records[1], *records[3:6]], range(5), strict=True):
        assert r["status"] == "complete" and tuple(r["rewards"]) == expected(i)
    assert records[2]["status"] == "INVALID_ARGUMENT" and records[2]["line"] == 3
    assert records[6]["status"] == "INVALID_ARGUMENT" and "rewards" not in records[6]
    assert records[6]["error"]["field"].endswith("query")
    assert "5 scored, 2 failed" in stderr.decode()
