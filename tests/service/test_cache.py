"""The cache layer: keys, values, the LRU, and the caching sources over both real stores.

Behaviour tests run twice — on the in-memory LRU and on a real redis-server started on a free
loopback port — through the real ScoringPipeline. Only the sample source is a test double
(it counts what it is asked to draw); the cache and Redis are real.
"""

from __future__ import annotations

import asyncio
import json
import logging
import struct
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import replace
from typing import Any

import pytest

from grm.backends.base import GenerationResult
from grm.cache import (
    KEY_VERSION,
    CacheStoreError,
    CacheTTL,
    CachingPrincipleSource,
    CachingSampleSource,
    CorruptValueError,
    GrmCache,
    Kind,
    MemoryStore,
    ResultCache,
    SingleFlight,
    principles_key,
    result_key,
    sample_key,
    track_usage,
)
from grm.cache.codec import (
    _HEADER_LEN,
    ENCODING_VERSION,
    MAGIC,
    decode_principles,
    decode_result,
    decode_sample,
    encode_principles,
    encode_result,
    encode_sample,
)
from grm.cache.keys import key_tag
from grm.cache.redis_store import RedisStore, redact_url
from grm.core.plan import SamplingJob
from grm.core.sampling import derive_seed, sample_spec, to_caller_order
from grm.core.types import (
    Aggregation,
    Context,
    ModelInfo,
    PrincipleMode,
    Sample,
    SampleSpec,
    SamplingParams,
    ScoreItem,
    ScoreResult,
    ScoreStatus,
)
from grm.core.validation import build_item
from grm.metarm.agreement import AgreementMetaRM
from grm.rpc.convert import sample_to_pb
from grm.scoring.critique import to_sample
from grm.scoring.pipeline import ScoringPipeline
from grm.scoring.principles import PrincipleSet
from tests.support.redis_server import RedisServer

MODEL = ModelInfo("test-model", "rev-1", "fake", "grm-default-v1")
RESPONSES = ("A good answer.", "A poor answer.", "Another good answer.")


class CountingSampleSource:
    """A SampleSource whose samples follow from the spec alone; records every spec it draws.

    Scores are a function of the seed in display order, mapped back to the caller's order — the
    same contract as the real sampler, so cached and fresh samples must agree exactly.
    """

    def __init__(
        self,
        info: ModelInfo = MODEL,
        *,
        invalid: Callable[[SampleSpec], bool] = lambda spec: False,
        delay: float = 0.0,
    ) -> None:
        self.info = info
        self.invalid = invalid
        self.delay = delay
        self.calls: list[list[SampleSpec]] = []

    @property
    def drawn(self) -> list[SampleSpec]:
        return [spec for call in self.calls for spec in call]

    async def sample(self, job: SamplingJob, specs: Sequence[SampleSpec]) -> list[Sample]:
        self.calls.append(list(specs))
        if self.delay:
            await asyncio.sleep(self.delay)
        return [self._one(spec, len(job.responses)) for spec in specs]

    def _one(self, spec: SampleSpec, n: int) -> Sample:
        if self.invalid(spec):
            return Sample(
                spec=spec,
                text="I cannot decide.",
                principles=spec.principles,
                critique="",
                scores=None,
                invalid_reason="no \\boxed{} list",
                finish_reason="stop",
            )
        shown = tuple(1 + (spec.seed >> (3 * p)) % 10 for p in range(n))
        return Sample(
            spec=spec,
            text=f"Analysis: seed {spec.seed}.\nScores: \\boxed{{{', '.join(map(str, shown))}}}",
            principles=spec.principles or "Specific Criteria: accuracy (100%).",
            critique=f"seed {spec.seed}",
            scores=to_caller_order(shown, spec.order),
            tokens_generated=40 + spec.seed % 7,
            latency_ms=12.5,
            finish_reason="stop",
            backend_seed=spec.seed,
        )


class CountingPrincipleSource:
    """A PrincipleSource double: set i's text follows from (seed, i); counts its calls."""

    info = replace(MODEL, model_id="principle-model")

    def __init__(self, delay: float = 0.0) -> None:
        self.calls: list[tuple[int, int]] = []
        self.delay = delay

    async def generate(self, job: SamplingJob, n: int, seed: int) -> list[PrincipleSet]:
        self.calls.append((n, seed))
        if self.delay:
            await asyncio.sleep(self.delay)
        sets = []
        for i in range(n):
            s = derive_seed(seed, i, purpose="principles")
            sets.append(PrincipleSet(f"Principle {s}: be correct (100%).", s, 20, 3.0))
        return sets


def make_item(k: int = 8, **kw: Any) -> ScoreItem:
    fields: dict[str, Any] = {"query": "What is 2 + 2?", "responses": RESPONSES, "seed": 7}
    return build_item(k=k, **(fields | kw))


def pipeline(source: Any, cache: GrmCache, **kw: Any) -> ScoringPipeline:
    return ScoringPipeline(CachingSampleSource(source, cache), **kw)


@pytest.fixture(params=["memory", "redis"])
async def cache(request: pytest.FixtureRequest) -> AsyncIterator[GrmCache]:
    """A real cache on each store; Redis tests get their own key prefix (a tenant each)."""
    if request.param == "memory":
        store: Any = MemoryStore()
    else:
        server: RedisServer = request.getfixturevalue("redis_server")
        store = RedisStore(server.url, prefix=f"test-{uuid.uuid4().hex[:12]}")
    c = GrmCache(store)
    yield c
    await c.close()


# --- keys ----------------------------------------------------------------------------------

CTX = Context.from_query("What is 2 + 2?")
SPEC = sample_spec(7, 0, 3)
PARAMS = SamplingParams()
JOB = SamplingJob(CTX, RESPONSES, PARAMS)
PJOB = SamplingJob(CTX, (), PARAMS)  # query-only principles


def _other_order(spec: SampleSpec) -> SampleSpec:
    return replace(spec, order=tuple(reversed(spec.order)))


SAMPLE_KEY_CHANGES: dict[str, dict[str, Any]] = {
    "model_id": {"model": replace(MODEL, model_id="other")},
    "revision": {"model": replace(MODEL, revision="rev-2")},
    "backend": {"model": replace(MODEL, backend="tgi")},
    "template_version": {"model": replace(MODEL, template_version="grm-default-v0")},
    "query": {"context": Context.from_query("What is 2 + 3?")},
    "earlier_turn": {
        "context": Context.from_turns([("system", "Be terse."), ("user", "What is 2 + 2?")])
    },
    "role": {"context": Context.from_turns([("assistant", "What is 2 + 2?")])},
    "responses": {"responses": (*RESPONSES[:2], "A third answer.")},
    "order": {"spec": _other_order(SPEC)},
    "principles": {"spec": replace(SPEC, principles="Be kind (100%).")},
    "seed": {"spec": replace(SPEC, seed=SPEC.seed + 1)},
    "temperature": {"params": replace(PARAMS, temperature=0.7)},
    "top_p": {"params": replace(PARAMS, top_p=0.9)},
    "max_new_tokens": {"params": replace(PARAMS, max_new_tokens=512)},
    "grammar": {"params": replace(PARAMS, grammar=not PARAMS.grammar)},
    "force_scores": {"params": replace(PARAMS, force_scores=not PARAMS.force_scores)},
    "reference": {"reference": "4"},
}


def _sample_key(**kw: Any) -> str:
    args = {"model": MODEL, "context": CTX, "responses": RESPONSES, "spec": SPEC, "params": PARAMS}
    return sample_key(**(args | kw))


@pytest.mark.parametrize("change", SAMPLE_KEY_CHANGES)
def test_sample_key_depends_on_everything_that_determines_the_sample(change: str) -> None:
    assert _sample_key(**SAMPLE_KEY_CHANGES[change]) != _sample_key()


def test_sample_key_ignores_index_and_attempt_and_is_stable() -> None:
    assert _sample_key(spec=replace(SPEC, index=5, attempt=2)) == _sample_key()
    # A key change silently empties every deployment's cache: make it a deliberate one.
    assert _sample_key() == "sample:3:6d93455ad668d6da2b1873de8c4d03b4"


@pytest.mark.parametrize(
    "value",
    [
        0.5,
        1.0,
        0.0,
        -0.0,
        1e-4,
        0.7,
        123456789.125,
        1e15,  # orjson writes these
        1e-05,
        6.4e-05,
        2.5e-10,
        1e16,
        1.5e300,
        2**64,
        -(2**63) - 1,  # json writes these
        'é \u2028 \x7f \x01 \n " \\ 𝄞 \u0000',
        True,
        None,
        [1, [2.5, "x"]],
        2**63,
        -(2**63),
    ],
)
def test_key_encoding_is_the_json_definition_whichever_encoder_writes_it(value: Any) -> None:
    from grm.cache.keys import _canonical

    parts = {"b": [value, {"z": value, "a": "t"}], "a": value}
    expected = json.dumps(
        [KEY_VERSION, "sample", parts], ensure_ascii=False, sort_keys=True, separators=(",", ":")
    )
    assert _canonical(Kind.SAMPLE, parts) == expected.encode("utf-8")


def test_key_encoding_refuses_what_json_refuses() -> None:
    from grm.cache.keys import _canonical

    with pytest.raises(ValueError):  # NaN: json refuses it (orjson would write null)
        _canonical(Kind.SAMPLE, {"t": float("nan")})
    with pytest.raises(UnicodeEncodeError):  # a lone surrogate
        _canonical(Kind.SAMPLE, {"t": "\udcff"})


def test_principles_key_depends_on_seed_index_model_and_params() -> None:
    base = principles_key(MODEL, CTX, (), 7, 0, PARAMS)
    assert principles_key(MODEL, CTX, (), 7, 0, PARAMS) == base
    assert principles_key(MODEL, CTX, (), 8, 0, PARAMS) != base
    assert principles_key(MODEL, CTX, (), 7, 1, PARAMS) != base
    assert principles_key(replace(MODEL, revision="x"), CTX, (), 7, 0, PARAMS) != base
    assert principles_key(MODEL, CTX, ("a",), 7, 0, PARAMS) != base
    assert principles_key(MODEL, CTX, (), 7, 0, replace(PARAMS, temperature=1.0)) != base


def test_result_key_covers_k_aggregation_and_meta_rm_but_not_the_request_id() -> None:
    vote = make_item(8, aggregation=Aggregation.VOTE)
    meta = make_item(8, aggregation=Aggregation.META_VOTE, k_meta=4)
    base = result_key(MODEL, vote)
    assert result_key(MODEL, replace(vote, request_id="other", latency_budget_ms=900)) == base
    assert result_key(MODEL, replace(vote, k_meta=2)) == base  # k_meta means nothing to vote
    assert result_key(MODEL, vote, meta_rm="agreement") == base
    assert result_key(MODEL, make_item(16)) != base
    assert result_key(MODEL, meta, meta_rm="agreement") != base
    assert result_key(MODEL, meta, meta_rm="agreement") != result_key(MODEL, meta, meta_rm="llm")
    assert result_key(MODEL, meta, meta_rm="agreement") != result_key(
        MODEL, replace(meta, k_meta=2), meta_rm="agreement"
    )
    assert result_key(MODEL, replace(vote, seed=8)) != base
    assert result_key(MODEL, make_item(8, temperature=0.7)) != base
    assert result_key(replace(MODEL, template_version="v0"), vote) != base
    assert result_key(MODEL, make_item(8, principles="Be brief.")) != base
    separate = make_item(8, principle_mode=PrincipleMode.SEPARATE)
    assert result_key(MODEL, separate) != base
    assert result_key(MODEL, separate, principles_model=MODEL) != result_key(
        MODEL, separate, principles_model=replace(MODEL, revision="rev-9")
    )


# --- values --------------------------------------------------------------------------------


def _sample(spec: SampleSpec = SPEC) -> Sample:
    return CountingSampleSource()._one(spec, len(spec.order))


def test_sample_value_round_trips_and_is_restamped_with_the_callers_spec() -> None:
    key = _sample_key()
    sample = replace(_sample(), sampler="10.0.0.7:50052")
    value = encode_sample(key, sample)
    assert decode_sample(key, value, SPEC) == sample
    other = replace(SPEC, index=3, attempt=1)
    assert decode_sample(key, value, other) == replace(sample, spec=other)
    assert len(value) < 200  # compact: protobuf, not JSON or pickle


def test_a_drawn_samples_principles_and_critique_are_read_again_from_its_text() -> None:
    """A sample as a sampler makes it (scoring.critique.to_sample) is stored without its
    principles and critique — they are most of its size and parsing its text gives them back."""
    analysis = " ".join(f"point {i}" for i in range(150))
    text = (
        "Specific Criteria: Correctness (60%), Helpfulness (40%).\n"
        f"Analysis: {analysis}\nScores: \\boxed{{9, 2, 5}}"
    )
    result = GenerationResult(text, 300, "stop", latency_ms=120.0, seed=7)
    key = _sample_key()
    for spec in (SPEC, replace(SPEC, principles="Given (100%).")):
        sample = to_sample(spec, result, 3)
        assert sample.valid and sample.critique == analysis
        value = encode_sample(key, sample)
        assert decode_sample(key, value, spec) == sample
        full = len(sample_to_pb(sample).SerializeToString())
        assert value.count(analysis.encode()) == 1  # the critique is not stored twice
        assert value.count(b"Given (100%).") == (1 if spec.principles else 0)  # in the spec
        assert len(value) < full - len(analysis) + 20  # a few bytes say where the parts are
    # Parts that are not in the text (another program's sample) are stored in full.
    odd = replace(to_sample(SPEC, result, 3), principles="Elsewhere.", critique="Not quoted.")
    assert decode_sample(key, encode_sample(key, odd), SPEC) == odd


def test_sample_values_of_the_earlier_encoding_are_still_read() -> None:
    """Values written before parts were stored by place: principles and critique cleared,
    read again by parsing the text (kind byte `S`), until their TTL ends."""
    text = "Specific Criteria: Be right.\nAnalysis: Fine.\nScores: \\boxed{9, 2, 5}"
    sample = to_sample(SPEC, GenerationResult(text, 30, "stop", latency_ms=1.0, seed=7), 3)
    key = _sample_key()
    msg = sample_to_pb(sample)
    msg.ClearField("principles")
    msg.ClearField("critique")
    old = MAGIC + bytes([ENCODING_VERSION]) + b"S" + key_tag(key) + msg.SerializeToString()
    assert decode_sample(key, old, SPEC) == sample
    assert (sample.principles, sample.critique) == ("Be right.", "Fine.")


def test_invalid_samples_cannot_be_encoded() -> None:
    bad = CountingSampleSource(invalid=lambda s: True)._one(SPEC, 3)
    with pytest.raises(ValueError):
        encode_sample(_sample_key(), bad)


def _corruptions() -> dict[str, bytes]:
    key = _sample_key()
    good = encode_sample(key, _sample())
    other_key = _sample_key(spec=replace(SPEC, seed=1))
    out_of_range = sample_to_pb(_sample())
    out_of_range.scores[0] = 11
    header = good[:_HEADER_LEN]
    return {
        "garbage": b"\x00\x01not a value",
        "empty": b"",
        "truncated": good[:-5],
        "plain_text": b"hello",
        "older_encoding": good[:3] + bytes([ENCODING_VERSION + 1]) + good[4:],
        "other_kind": encode_principles(key, PrincipleSet("Be kind.", 1, 2, 3.0)),
        "other_key": encode_sample(other_key, _sample(replace(SPEC, seed=1))),
        "score_out_of_range": header + out_of_range.SerializeToString(),
        "part_outside_text": header[:4]
        + b"O"
        + header[5:]
        + struct.pack("<4I", 0, 0, 5, 10**6)
        + sample_to_pb(_sample()).SerializeToString(),
        "offsets_cut_off": header[:4] + b"O" + header[5:] + b"\x00\x01",
    }


@pytest.mark.parametrize("name", _corruptions())
def test_corrupt_or_foreign_sample_values_are_rejected(name: str) -> None:
    with pytest.raises(CorruptValueError):
        decode_sample(_sample_key(), _corruptions()[name], SPEC)


def test_principle_and_result_values_round_trip() -> None:
    pkey = principles_key(MODEL, CTX, (), 7, 0, PARAMS)
    principle_set = PrincipleSet("Be right.", 5, 20, 3.5)
    assert decode_principles(pkey, encode_principles(pkey, principle_set)) == principle_set
    samples = (_sample(), _sample(sample_spec(7, 1, 3)))
    result = ScoreResult(
        rewards=(6.5, 3.0, 7.0),
        votes=(13, 6, 14),
        k_requested=2,
        k_used=1,
        k_valid=2,
        invalid_samples=0,
        status=ScoreStatus.COMPLETE,
        best=(2,),
        aggregation=Aggregation.META_VOTE,
        samples=samples,
        used=(True, False),
        meta_scores=(0.75, -0.25),
        model=MODEL,
        request_id="r1",
        k_planned=2,
    )
    rkey = result_key(MODEL, make_item(2))
    assert decode_result(rkey, encode_result(rkey, result), 3) == result
    with pytest.raises(CorruptValueError):
        decode_result(rkey, encode_result(rkey, result), 2)  # a value for 3 responses
    with pytest.raises(CorruptValueError):
        decode_result(rkey, encode_result(pkey, result), 3)


# --- the in-memory LRU ---------------------------------------------------------------------


async def test_memory_store_evicts_least_recently_used_past_the_entry_bound() -> None:
    store = MemoryStore(max_entries=2)
    await store.set_many([("a", b"1"), ("b", b"2")], None)
    assert await store.get_many(["a"]) == [b"1"]  # a is now the most recent
    await store.set_many([("c", b"3")], None)
    assert await store.get_many(["a", "b", "c"]) == [b"1", None, b"3"]
    assert store.evictions == 1 and len(store) == 2


async def test_memory_store_is_bounded_by_bytes_and_skips_oversized_values() -> None:
    store = MemoryStore(max_entries=None, max_bytes=100)
    await store.set_many([(f"k{i}", b"x" * 30) for i in range(5)], None)
    assert store.bytes <= 100 and len(store) == 3
    assert await store.get_many(["k0", "k1", "k4"]) == [None, None, b"x" * 30]
    await store.set_many([("huge", b"x" * 200)], None)
    assert await store.get_many(["huge"]) == [None] and len(store) == 3
    assert await store.set_many([("k4", b"y"), ("k5", b"z")], None) == 1  # k4 is kept
    assert await store.get_many(["k4"]) == [b"x" * 30]
    await store.delete_many(["k4", "k2"])
    assert store.bytes == 2 * 2 + 30 + 1 and len(store) == 2


async def test_memory_store_expires_entries() -> None:
    now = [100.0]
    store = MemoryStore(clock=lambda: now[0])
    await store.set_many([("a", b"1")], 10.0)
    await store.set_many([("b", b"2")], None)
    now[0] += 9.9
    assert await store.get_many(["a", "b"]) == [b"1", b"2"]
    now[0] += 0.2
    assert await store.get_many(["a", "b"]) == [None, b"2"] and len(store) == 1


# --- behaviour on both stores through the real pipeline --------------------------------------


async def test_repeat_request_draws_nothing_new(cache: GrmCache) -> None:
    source = CountingSampleSource()
    scorer = pipeline(source, cache)
    first = await scorer.score(make_item(8))
    assert len(source.drawn) == 8
    with track_usage() as usage:
        second = await scorer.score(make_item(8))
    assert len(source.drawn) == 8 and len(source.calls) == 1
    assert (second.votes, second.rewards, second.best) == (first.votes, first.rewards, first.best)
    assert second.samples == first.samples
    assert cache.stats.sample.hits == 8 and cache.stats.sample.misses == 8
    assert cache.stats.sample.stores == 8
    assert (usage.samples_reused, usage.samples_generated) == (8, 0)


async def test_k16_after_k8_draws_exactly_the_8_new_samples(cache: GrmCache) -> None:
    source = CountingSampleSource()
    scorer = pipeline(source, cache)
    small = await scorer.score(make_item(8))
    with track_usage() as usage:
        big = await scorer.score(make_item(16))
    assert len(source.calls) == 2
    assert [s.index for s in source.calls[1]] == list(range(8, 16))
    assert (usage.samples_reused, usage.samples_generated) == (8, 8)
    assert big.samples[:8] == small.samples
    # and the result equals one computed without any cache
    fresh = await ScoringPipeline(CountingSampleSource()).score(make_item(16))
    assert (big.votes, big.samples) == (fresh.votes, fresh.samples)


@pytest.mark.parametrize(
    "change",
    [
        {"temperature": 0.7},
        {"top_p": 0.9},
        {"max_new_tokens": 128},
        {"grammar": True},
        {"force_scores": True},
        {"reference": "4"},
        {"seed": 8},
        {"query": "What is 3 + 3?"},
        {"responses": (*RESPONSES, "A fourth answer.")},
    ],
    ids=lambda c: next(iter(c)),
)
async def test_a_changed_request_parameter_misses(cache: GrmCache, change: dict[str, Any]) -> None:
    source = CountingSampleSource()
    scorer = pipeline(source, cache)
    await scorer.score(make_item(4))
    await scorer.score(make_item(4, **change))
    assert len(source.drawn) == 8 and cache.stats.sample.hits == 0


@pytest.mark.parametrize("field", ["revision", "model_id", "backend", "template_version"])
async def test_another_model_or_older_template_is_never_served(cache: GrmCache, field: str) -> None:
    old = CountingSampleSource(replace(MODEL, **{field: "older"}))
    await pipeline(old, cache).score(make_item(4))
    new = CountingSampleSource(MODEL)
    await pipeline(new, cache).score(make_item(4))
    assert len(new.drawn) == 4 and cache.stats.sample.hits == 0


async def test_invalid_samples_are_not_cached(cache: GrmCache) -> None:
    source = CountingSampleSource(invalid=lambda s: s.index == 2 and s.attempt == 0)
    scorer = pipeline(source, cache)
    first = await scorer.score(make_item(4))
    assert first.k_valid == 4 and first.invalid_samples == 1
    assert len(source.drawn) == 5 and cache.stats.sample.stores == 4
    again = await scorer.score(make_item(4))
    # only the invalid draw is made again; its valid re-sample (attempt 1) is a hit
    assert [(s.index, s.attempt) for s in source.calls[-1]] == [(2, 0)]
    assert len(source.calls) == 3 and again.votes == first.votes


async def test_identical_concurrent_requests_draw_each_sample_once(cache: GrmCache) -> None:
    source = CountingSampleSource(delay=0.05)
    scorer = pipeline(source, cache)
    results = await asyncio.gather(*(scorer.score(make_item(8)) for _ in range(6)))
    assert len(source.drawn) == 8
    assert len({r.votes for r in results}) == 1
    assert len({r.samples for r in results}) == 1
    assert cache.stats.sample.shared == 5 * 8


async def test_overlapping_concurrent_requests_share_the_common_samples(cache: GrmCache) -> None:
    source = CountingSampleSource(delay=0.05)
    scorer = pipeline(source, cache)
    await asyncio.gather(scorer.score(make_item(8)), scorer.score(make_item(12)))
    assert sorted(s.index for s in source.drawn) == list(range(12))


async def test_corrupt_value_is_counted_ignored_and_overwritten(cache: GrmCache) -> None:
    item = make_item(2)
    spec = sample_spec(item.seed, 0, len(item.responses))
    key = sample_key(MODEL, item.context, item.responses, spec, item.sampling)
    other = sample_key(MODEL, item.context, item.responses, replace(spec, seed=1), item.sampling)
    await cache.put(Kind.SAMPLE, [(key, encode_sample(other, _sample(replace(spec, seed=1))))])
    source = CountingSampleSource()
    result = await pipeline(source, cache).score(item)
    assert len(source.drawn) == 2 and result.k_valid == 2
    assert cache.stats.sample.corrupt == 1
    [value] = await cache.store.get_many([key])
    assert value is not None and decode_sample(key, value, spec).spec == spec
    await pipeline(source, cache).score(item)
    assert len(source.drawn) == 2 and cache.stats.sample.corrupt == 1


async def test_principle_sets_are_cached_and_condition_the_sample_keys(cache: GrmCache) -> None:
    principles = CountingPrincipleSource()
    source = CountingSampleSource()
    scorer = pipeline(source, cache, principles=CachingPrincipleSource(principles, cache))
    item = make_item(4, principle_mode=PrincipleMode.SEPARATE)
    first = await scorer.score(item)
    with track_usage() as usage:
        second = await scorer.score(item)
    assert principles.calls == [(4, 7)] and len(source.drawn) == 4
    assert (usage.principles_reused, usage.principles_generated) == (4, 0)
    assert second.votes == first.votes
    assert {s.principles for s in first.samples} == {
        f"Principle {derive_seed(7, i, purpose='principles')}: be correct (100%)." for i in range(4)
    }
    # joint mode's samples are others (no principles in their specs): all drawn anew
    await scorer.score(make_item(4))
    assert len(source.drawn) == 8


async def test_identical_concurrent_principle_requests_generate_once(cache: GrmCache) -> None:
    principles = CountingPrincipleSource(delay=0.05)
    wrapped = CachingPrincipleSource(principles, cache)
    sets = await asyncio.gather(*(wrapped.generate(PJOB, 3, 7) for _ in range(4)))
    assert principles.calls == [(3, 7)]
    assert all([s.text for s in got] == [s.text for s in sets[0]] for got in sets)
    assert cache.stats.principles.shared == 3


async def test_result_cache_serves_a_repeat_without_scoring(cache: GrmCache) -> None:
    source = CountingSampleSource()
    scorer = pipeline(source, cache, meta_rm=AgreementMetaRM())
    results = ResultCache(cache, meta_rm="agreement")
    item = make_item(4, aggregation=Aggregation.META_VOTE, k_meta=2, request_id="first")
    computed = []

    async def compute() -> ScoreResult:
        computed.append(1)
        return await scorer.score(item)

    first = await results.get_or_compute(item, MODEL, compute)
    with track_usage() as usage:
        again = await results.get_or_compute(replace(item, request_id="second"), MODEL, compute)
    assert len(computed) == 1 and len(source.calls) == 1
    assert usage.result_hit and usage.samples_reused == 4 and usage.samples_generated == 0
    assert again.request_id == "second"
    assert (again.votes, again.rewards, again.used, again.meta_scores, again.samples) == (
        first.votes,
        first.rewards,
        first.used,
        first.meta_scores,
        first.samples,
    )
    # another meta RM, k_meta or aggregation is another result
    assert await ResultCache(cache, meta_rm="llm").get(item, MODEL) is None
    assert await results.get(replace(item, k_meta=3), MODEL) is None
    assert await results.get(replace(item, aggregation=Aggregation.VOTE), MODEL) is None
    assert cache.stats.result.hits == 1


async def test_identical_concurrent_results_compute_once(cache: GrmCache) -> None:
    scorer = pipeline(CountingSampleSource(delay=0.05), cache)
    results = ResultCache(cache)
    calls = []

    async def compute(item: ScoreItem) -> ScoreResult:
        calls.append(item.request_id)
        return await scorer.score(item)

    items = [make_item(4, request_id=f"r{i}") for i in range(5)]
    got = await asyncio.gather(
        *(results.get_or_compute(it, MODEL, lambda it=it: compute(it)) for it in items)
    )
    assert len(calls) == 1
    assert [r.request_id for r in got] == [f"r{i}" for i in range(5)]
    assert cache.stats.result.shared == 4


async def test_partial_and_degraded_results_are_not_stored(cache: GrmCache) -> None:
    source = CountingSampleSource(invalid=lambda s: s.index == 0)  # never valid
    item = make_item(3)
    partial = await pipeline(source, cache).score(item)
    assert partial.status is ScoreStatus.PARTIAL
    results = ResultCache(cache)
    assert not await results.put(item, MODEL, partial)
    degraded = replace(partial, status=ScoreStatus.DEGRADED, k_valid=3)
    assert not await results.put(item, MODEL, degraded)
    assert await results.get(item, MODEL) is None and cache.stats.result.stores == 0


async def test_short_ttls_expire(cache: GrmCache) -> None:
    cache.ttl = CacheTTL(sample_s=0.2)
    source = CountingSampleSource()
    scorer = pipeline(source, cache)
    await scorer.score(make_item(2))
    await scorer.score(make_item(2))
    assert len(source.drawn) == 2
    await asyncio.sleep(0.3)
    await scorer.score(make_item(2))
    assert len(source.drawn) == 4


# --- single-flight edge cases ----------------------------------------------------------------


async def test_a_follower_takes_over_when_the_leader_is_cancelled() -> None:
    cache = GrmCache(MemoryStore())
    source = CountingSampleSource(delay=0.1)
    caching = CachingSampleSource(source, cache)
    specs = [sample_spec(7, i, 3) for i in range(3)]
    leader = asyncio.create_task(caching.sample(JOB, specs))
    await asyncio.sleep(0.01)
    follower = asyncio.create_task(caching.sample(JOB, specs))
    await asyncio.sleep(0.01)
    leader.cancel()
    got = await follower
    assert [s.spec for s in got] == specs and all(s.valid for s in got)
    assert len(source.calls) == 2  # the follower drew them itself
    assert not caching._inflight


class StreamingSampleSource(CountingSampleSource):
    """CountingSampleSource with `stream`: one call for all its specs, each spec's sample
    yielded on its own after `delay` (as the remote pool's SampleStream does)."""

    async def stream(self, job: SamplingJob, specs: Sequence[SampleSpec]) -> Any:
        self.calls.append(list(specs))
        for spec in specs:
            if self.delay:
                await asyncio.sleep(self.delay)
            yield [self._one(spec, len(job.responses))]


async def _collect(stream: Any) -> list[Sample]:
    return [s async for batch in stream for s in batch]


async def test_a_stream_serves_cached_samples_first_and_stores_the_new_ones(
    cache: GrmCache,
) -> None:
    source = StreamingSampleSource()
    caching = CachingSampleSource(source, cache)
    specs = [sample_spec(7, i, 3) for i in range(4)]
    await _collect(caching.stream(JOB, specs[:2]))  # the first two are cached now
    batches = [b async for b in caching.stream(JOB, specs)]
    assert sorted(s.spec.index for s in batches[0]) == [0, 1]  # the hits, in one batch
    assert [s.spec.index for b in batches[1:] for s in b] == [2, 3]
    assert source.calls == [specs[:2], specs[2:]]  # one call per stream, misses only
    again = await _collect(caching.stream(JOB, specs))
    assert len(source.calls) == 2 and [s.spec for s in again] == specs  # all cached
    assert again == await caching.sample(JOB, specs)  # the same samples either way


async def test_a_stream_keys_samples_by_the_reference_answer_as_a_batch_does(
    cache: GrmCache,
) -> None:
    """Samples drawn with one reference answer are never served to a request with another
    (the stream path once keyed samples without the reference)."""
    source = StreamingSampleSource()
    caching = CachingSampleSource(source, cache)
    specs = [sample_spec(7, i, 3) for i in range(2)]
    with_reference = replace(JOB, reference="4")
    await _collect(caching.stream(JOB, specs))
    await _collect(caching.stream(with_reference, specs))  # another reference: drawn again
    assert source.calls == [specs, specs]
    await caching.sample(with_reference, specs)  # the stream stored them under the same keys
    await caching.sample(replace(JOB, reference="5"), specs[:1])
    assert source.calls == [specs, specs, specs[:1]]


async def test_concurrent_streams_of_the_same_specs_draw_them_once() -> None:
    cache = GrmCache(MemoryStore())
    source = StreamingSampleSource(delay=0.02)
    caching = CachingSampleSource(source, cache)
    specs = [sample_spec(7, i, 3) for i in range(3)]
    got = await asyncio.gather(*(_collect(caching.stream(JOB, specs)) for _ in range(3)))
    assert source.calls == [specs]
    assert all(sorted(s.spec.index for s in g) == [0, 1, 2] for g in got)
    assert cache.stats.sample.shared == 2 * 3 and not caching._inflight


async def test_a_streaming_follower_takes_over_when_the_leader_is_closed() -> None:
    cache = GrmCache(MemoryStore())
    source = StreamingSampleSource(delay=0.1)
    caching = CachingSampleSource(source, cache)
    specs = [sample_spec(7, i, 3) for i in range(2)]
    leader = asyncio.create_task(_collect(caching.stream(JOB, specs)))
    await asyncio.sleep(0.01)
    follower = asyncio.create_task(_collect(caching.stream(JOB, specs)))
    await asyncio.sleep(0.01)
    leader.cancel()  # e.g. its request voted early
    got = await follower
    assert sorted(s.spec.index for s in got) == [0, 1] and all(s.valid for s in got)
    assert source.calls == [specs, specs]  # the follower drew them itself
    assert not caching._inflight


async def test_an_anytime_vote_through_the_cache_reads_one_stream() -> None:
    """With a latency budget the pipeline streams: one call for all k, the invalid ones
    re-sampled as they arrive, and a repeat served from the cache."""
    cache = GrmCache(MemoryStore())
    source = StreamingSampleSource(invalid=lambda spec: spec.index == 1 and spec.attempt == 0)
    scorer = pipeline(source, cache)
    item = make_item(4, latency_budget_ms=10_000)
    result = await scorer.score(item)
    assert result.k_valid == 4 and result.invalid_samples == 1
    assert [len(c) for c in source.calls] == [4, 1]  # the first draw, then the re-sample
    assert source.calls[1][0].index == 1 and source.calls[1][0].attempt == 1
    again = await scorer.score(item)
    assert again.votes == result.votes and [len(c) for c in source.calls] == [4, 1, 1]


async def test_a_leaders_error_reaches_its_followers_and_is_not_cached() -> None:
    class Failing(CountingSampleSource):
        async def sample(self, *args: Any) -> list[Sample]:
            await super().sample(*args)
            raise CacheStoreError("sampler pool down")  # any exception type will do

    cache = GrmCache(MemoryStore())
    source = Failing(delay=0.05)
    caching = CachingSampleSource(source, cache)
    specs = [sample_spec(7, 0, 3)]
    results = await asyncio.gather(
        *(caching.sample(JOB, specs) for _ in range(3)),
        return_exceptions=True,
    )
    assert all(isinstance(r, CacheStoreError) for r in results)
    assert len(source.calls) == 1 and cache.stats.sample.stores == 0


async def test_single_flight_shares_one_computation() -> None:
    flight: SingleFlight[int] = SingleFlight()
    runs = []

    async def compute() -> int:
        runs.append(1)
        await asyncio.sleep(0.02)
        return 42

    got = await asyncio.gather(*(flight.run("k", compute) for _ in range(4)))
    assert sorted(got) == [(42, False), (42, True), (42, True), (42, True)]
    assert len(runs) == 1 and len(flight) == 0


# --- failure of the store itself -----------------------------------------------------------


class SwitchableStore(MemoryStore):
    """A MemoryStore that can be switched off (raising like a dead Redis would)."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        if self.down:
            raise CacheStoreError("connection refused")
        return await super().get_many(keys)

    async def set_many(self, items: Sequence[tuple[str, bytes]], ttl_s: float | None) -> int:
        if self.down:
            raise CacheStoreError("connection refused")
        return await super().set_many(items, ttl_s)

    async def ping(self) -> None:
        if self.down:
            raise CacheStoreError("connection refused")


async def test_a_failing_store_degrades_to_no_cache_logs_once_and_recovers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = SwitchableStore()
    cache = GrmCache(store, retry_after_s=0.05)
    source = CountingSampleSource()
    scorer = pipeline(source, cache)
    store.down = True
    with caplog.at_level(logging.INFO, logger="grm.cache"):
        for seed in range(5):
            result = await scorer.score(make_item(2, seed=seed))
            assert result.status is ScoreStatus.COMPLETE
            await asyncio.sleep(0.03)
        assert len(source.drawn) == 10
        assert cache.stats.sample.errors >= 1 and cache.stats.sample.bypassed >= 1
        assert cache.stats.outages == 1 and not cache.available
        store.down = False
        for _ in range(50):
            await scorer.score(make_item(2, seed=100))
            if cache.available:
                break
            await asyncio.sleep(0.02)
        assert cache.available
        await scorer.score(make_item(2, seed=101))
        drawn = len(source.drawn)
        await scorer.score(make_item(2, seed=101))
        assert len(source.drawn) == drawn  # caching works again
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "continuing without cache" in warnings[0].getMessage()
    assert any("available again" in r.getMessage() for r in caplog.records)
    await cache.close()


def test_redis_urls_are_checked_and_credentials_never_logged() -> None:
    with pytest.raises(ValueError):
        RedisStore("http://localhost:6379")
    with pytest.raises(ValueError):
        RedisStore("redis://localhost:6379", prefix="")
    store = RedisStore("rediss://user:s3cret@cache.example:6380/2", prefix="tenant-a")
    assert "s3cret" not in store.describe() and "tenant-a" in store.describe()
    assert redact_url("redis://:pw@[::1]:7000/0") == "redis://***@[::1]:7000/0"


def test_the_cache_package_imports_without_grpc() -> None:
    code = "import sys, grm.cache, grm.cache.redis_store; sys.exit('grpc' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


class LearningSource(CountingSampleSource):
    """Like the remote pool: reports a placeholder model until its first reply."""

    def __init__(self) -> None:
        super().__init__(ModelInfo("unknown", backend="remote"))

    async def sample(self, *args: Any) -> list[Sample]:
        got = await super().sample(*args)
        self.info = MODEL
        return got


async def test_nothing_is_cached_under_a_placeholder_model(cache: GrmCache) -> None:
    unknown = CountingSampleSource(ModelInfo("unknown", backend="remote"))
    await pipeline(unknown, cache).score(make_item(2))
    await pipeline(unknown, cache).score(make_item(2))
    assert len(unknown.drawn) == 4 and cache.stats.sample.stores == 0
    results = ResultCache(cache)
    first = await pipeline(unknown, cache).score(make_item(2))
    assert not await results.put(make_item(2), unknown.info, first)
    assert await results.get(make_item(2), unknown.info) is None


async def test_samples_are_stored_under_the_model_that_answered(cache: GrmCache) -> None:
    learning = LearningSource()
    scorer = pipeline(learning, cache)
    await scorer.score(make_item(2, seed=1))  # no lookup under the placeholder, stored after
    assert cache.stats.sample.misses == 0 and cache.stats.sample.stores == 2
    known = CountingSampleSource(MODEL)
    await pipeline(known, cache).score(make_item(2, seed=1))
    assert known.drawn == [] and cache.stats.sample.hits == 2
    results = ResultCache(cache)
    result = await scorer.score(make_item(2, seed=1))
    other = replace(MODEL, revision="rev-2")
    assert not await results.put(make_item(2, seed=1), other, result)  # says another model
    assert await results.put(make_item(2, seed=1), MODEL, result)
