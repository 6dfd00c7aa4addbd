"""Caching wrappers around the pipeline's sources, and the final-result cache.

`CachingSampleSource` is a SampleSource: the pipeline cannot tell it from the sampler it wraps,
except that only cache misses reach the sampler. Because sample seeds derive from the request
seed and the sample index, a k=16 request after a k=8 one finds its first 8 samples cached and
draws only the last 8.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any

from grm.cache.codec import (
    CorruptValueError,
    decode_principles,
    decode_result,
    decode_sample,
    encode_principles,
    encode_result,
    encode_sample,
)
from grm.cache.keys import Kind, SampleKeys, model_known, principles_key, result_key
from grm.cache.layer import GrmCache
from grm.cache.usage import current_usage
from grm.core.plan import SamplingJob
from grm.core.singleflight import SingleFlight, leader_gave_up, settle_failed
from grm.core.types import (
    ModelInfo,
    Sample,
    SampleSpec,
    ScoreItem,
    ScoreResult,
    ScoreStatus,
    Timings,
)
from grm.scoring.pipeline import PrincipleSource, SampleSource, stream_of
from grm.scoring.principles import PrincipleSet


def _restamp(sample: Sample, spec: SampleSpec) -> Sample:
    return sample if sample.spec == spec else replace(sample, spec=spec)


class CachingSampleSource:
    """Serves each spec from the cache when it can; only misses go to `inner`, in one call.

    Valid new samples are stored; invalid ones are not (a backend error is often transient).
    Identical specs requested concurrently in this process are drawn once (single-flight).
    Other attributes (capacity, load) are those of `inner`.
    """

    def __init__(self, inner: SampleSource, cache: GrmCache) -> None:
        self.inner = inner
        self.cache = cache
        self._inflight: dict[str, asyncio.Future[Sample]] = {}

    @property
    def info(self) -> ModelInfo:
        return self.inner.info

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    async def sample(self, job: SamplingJob, specs: Sequence[SampleSpec]) -> list[Sample]:
        """Samples for `specs` in their order (fewer only if `inner` returned fewer).

        Keys use the job's pinned model when it has one (the pool then draws only from
        samplers serving it), else the model `inner` reports now.
        """
        model = job.model or self.inner.info
        if not model_known(model):  # e.g. a pool before its first reply: no lookup is safe
            got = list(await self.inner.sample(job, specs))
            current_usage().samples_generated += len(got)
            await self._store(job, model, [(None, s) for s in got])
            return got
        lead, follow, futures = self._claim(list(map(_sample_keys(model, job), specs)))
        out: list[Sample | None] = [None] * len(specs)
        try:
            if lead:
                await self._lead(job, specs, lead, futures, out)
        except BaseException as exc:
            for fut in futures.values():
                settle_failed(fut, exc)
            raise
        finally:
            for key, fut in futures.items():
                if not fut.done():
                    fut.cancel()  # inner returned no sample for it: followers draw it themselves
                if self._inflight.get(key) is fut:
                    del self._inflight[key]
        retry = [i for i, fut in follow if not await self._follow(fut, specs[i], out, i)]
        if retry:  # their leaders gave up (cancelled): draw those ourselves, in one call
            redo = await self.sample(job, [specs[i] for i in retry])
            by_spec = {s.spec: s for s in redo}
            for i in retry:
                out[i] = by_spec.get(specs[i])
        return [s for s in out if s is not None]

    def stream(self, job: SamplingJob, specs: Sequence[SampleSpec]) -> AsyncIterator[list[Sample]]:
        """`sample` as a stream: cached samples first (one batch), then `inner`'s stream of
        the misses as they arrive (stored as they come), and samples another caller in this
        process is drawing when it has them. Closing the stream early cancels the draw."""
        return self._stream(job, specs)

    async def _stream(
        self, job: SamplingJob, specs: Sequence[SampleSpec]
    ) -> AsyncIterator[list[Sample]]:
        model = job.model or self.inner.info
        usage = current_usage()
        if not model_known(model):  # e.g. a pool before its first reply: no lookup is safe
            async for batch in stream_of(self.inner, job, specs):
                usage.samples_generated += len(batch)
                await self._store(job, model, [(None, s) for s in batch])
                yield batch
            return
        lead, follow, futures = self._claim(list(map(_sample_keys(model, job), specs)))
        events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        for i, fut in follow:
            fut.add_done_callback(lambda f, i=i: events.put_nowait(("follow", (i, f))))
        pump: asyncio.Task[None] | None = None
        retry: list[SampleSpec] = []
        try:
            found, misses = await self._lookup(specs, lead, futures)
            hits = [_restamp(s, specs[i]) for key, s in found.items() for i in lead[key]]
            spec_key = {specs[lead[k][0]]: k for k in misses}
            if hits:
                yield hits
            if misses:
                pump = asyncio.ensure_future(self._pump(job, model, spec_key, events))
            waiting = len(follow) + (1 if misses else 0)
            while waiting:
                kind, value = await events.get()
                if kind == "end":
                    waiting -= 1
                    if value is not None:
                        raise value
                elif kind == "lead":
                    out = []
                    for sample in value:
                        key = spec_key.get(sample.spec)
                        if key is None or futures[key].done():
                            out.append(sample)
                            continue
                        futures[key].set_result(sample)
                        out.extend(_restamp(sample, specs[i]) for i in lead[key])
                        self.cache.stats.sample.shared += len(lead[key]) - 1
                    usage.samples_generated += len(value)
                    yield out
                else:  # another caller's sample, or its leader gave up
                    waiting -= 1
                    i, fut = value
                    if fut.cancelled():
                        retry.append(specs[i])  # its leader gave up: draw it ourselves
                    elif (exc := fut.exception()) is not None:
                        raise exc
                    else:
                        self.cache.stats.sample.shared += 1
                        usage.samples_reused += 1
                        yield [_restamp(fut.result(), specs[i])]
        except BaseException as exc:
            for fut in futures.values():
                settle_failed(fut, exc)
            raise
        finally:
            if pump is not None:
                pump.cancel()
                await asyncio.gather(pump, return_exceptions=True)
            for key, fut in futures.items():
                if not fut.done():
                    fut.cancel()  # inner returned no sample for it: followers draw it themselves
                if self._inflight.get(key) is fut:
                    del self._inflight[key]
        if retry:  # their leaders gave up (cancelled): draw those ourselves
            async for batch in self._stream(job, retry):
                yield batch

    async def _lookup(
        self,
        specs: Sequence[SampleSpec],
        lead: dict[str, list[int]],
        futures: dict[str, asyncio.Future[Sample]],
    ) -> tuple[dict[str, Sample], list[str]]:
        """(the cached sample of each key this call leads that the cache holds; the keys
        missing). Cached ones settle their single-flight futures."""
        stats = self.cache.stats.sample
        keys = list(lead)
        found: dict[str, Sample] = {}
        misses: list[str] = []
        corrupt: list[str] = []
        for key, value in zip(keys, await self.cache.get(Kind.SAMPLE, keys), strict=True):
            hit = None
            if value is not None:
                try:
                    hit = decode_sample(key, value, specs[lead[key][0]])
                except CorruptValueError:
                    stats.corrupt += 1
                    corrupt.append(key)
            if hit is None:
                stats.misses += 1
                misses.append(key)
            else:
                stats.hits += 1
                current_usage().samples_reused += len(lead[key])
                futures[key].set_result(hit)
                found[key] = hit
                stats.shared += len(lead[key]) - 1
        if corrupt:
            await self.cache.delete(Kind.SAMPLE, corrupt)
        return found, misses

    async def _pump(
        self,
        job: SamplingJob,
        model: ModelInfo,
        wanted: dict[SampleSpec, str],
        events: asyncio.Queue[tuple[str, Any]],
    ) -> None:
        """`inner`'s stream of the `wanted` specs (→ their keys) into `events`, storing the
        valid samples as they come."""
        error: BaseException | None = None
        try:
            async for batch in stream_of(self.inner, job, list(wanted)):
                events.put_nowait(("lead", batch))
                await self._store(job, model, [(wanted.get(s.spec), s) for s in batch])
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            error = exc
        events.put_nowait(("end", error))

    def _claim(
        self, keys: Sequence[str]
    ) -> tuple[
        dict[str, list[int]],
        list[tuple[int, asyncio.Future[Sample]]],
        dict[str, asyncio.Future[Sample]],
    ]:
        """Split a request's sample keys: those this call draws (key → positions; each gets a
        future other callers can wait on) and those another call in this process is drawing
        now (position, its future)."""
        loop = asyncio.get_running_loop()
        lead: dict[str, list[int]] = {}
        follow: list[tuple[int, asyncio.Future[Sample]]] = []
        for i, key in enumerate(keys):
            if key in lead:
                lead[key].append(i)
            elif (fut := self._inflight.get(key)) is not None:
                follow.append((i, fut))
            else:
                lead[key] = [i]
                self._inflight[key] = loop.create_future()
        return lead, follow, {key: self._inflight[key] for key in lead}

    async def _lead(
        self,
        job: SamplingJob,
        specs: Sequence[SampleSpec],
        lead: dict[str, list[int]],
        futures: dict[str, asyncio.Future[Sample]],
        out: list[Sample | None],
    ) -> None:
        stats = self.cache.stats.sample
        usage = current_usage()

        def settle(key: str, sample: Sample) -> None:
            futures[key].set_result(sample)
            place(key, sample)
            stats.shared += len(lead[key]) - 1

        def place(key: str, sample: Sample) -> None:
            for i in lead[key]:
                out[i] = _restamp(sample, specs[i])

        found, misses = await self._lookup(specs, lead, futures)
        for key, hit in found.items():
            place(key, hit)
        if not misses:
            return

        wanted = [specs[lead[key][0]] for key in misses]
        model = job.model or self.inner.info
        got = await self.inner.sample(job, wanted)
        if len(got) == len(wanted):
            pairs = list(zip(misses, got, strict=True))
        else:  # a partial answer (e.g. a deadline in a remote pool): match by spec
            by_spec = {s.spec: s for s in got}
            pairs = [(k, by_spec[w]) for k, w in zip(misses, wanted, strict=True) if w in by_spec]
        usage.samples_generated += len(pairs)
        for key, sample in pairs:
            settle(key, sample)
        await self._store(job, model, list(pairs))

    async def _store(
        self, job: SamplingJob, model: ModelInfo, pairs: list[tuple[str | None, Sample]]
    ) -> None:
        """Store the valid samples under the model that answered (a source may learn it then;
        a pinned job's samples all come from its model)."""
        answered = job.model or self.inner.info
        if not model_known(answered):
            return
        to_store = []
        keys: SampleKeys | None = None
        for key, sample in pairs:
            if sample.valid:
                if key is None or answered != model:
                    keys = keys or _sample_keys(answered, job)
                    key = keys(sample.spec)
                to_store.append((key, encode_sample(key, sample)))
        await self.cache.put(Kind.SAMPLE, to_store)

    async def _follow(
        self, fut: asyncio.Future[Sample], spec: SampleSpec, out: list[Sample | None], i: int
    ) -> bool:
        """Take another call's sample for position i; False when its leader gave up."""
        try:
            sample = await asyncio.shield(fut)
        except asyncio.CancelledError:
            if leader_gave_up(fut):
                return False
            raise
        self.cache.stats.sample.shared += 1
        current_usage().samples_reused += 1
        out[i] = _restamp(sample, spec)
        return True


class CachingPrincipleSource:
    """A PrincipleSource that serves principle sets from the cache.

    `inner.generate(n, seed)` cannot draw a subset of the n sets, so any miss regenerates all
    n (set i is deterministic, so the cached ones come out the same); a full hit costs nothing.
    `model` names the principle generator's model; without it `inner.info` is read on every
    call (a remote source may learn it from its replies). An unknown model is not cached.
    """

    def __init__(
        self, inner: PrincipleSource, cache: GrmCache, *, model: ModelInfo | None = None
    ) -> None:
        if model is None and not isinstance(getattr(inner, "info", None), ModelInfo):
            raise TypeError("CachingPrincipleSource needs model= when the source has no .info")
        self.inner = inner
        self.cache = cache
        self.model = model
        self._flight: SingleFlight[list[Any]] = SingleFlight()

    @property
    def info(self) -> ModelInfo:
        if self.model is not None:
            return self.model
        info = self.inner.info  # type: ignore[attr-defined]
        assert isinstance(info, ModelInfo)
        return info

    async def generate(self, job: SamplingJob, n: int, seed: int) -> list[Any]:
        """n principle sets (PrincipleSet from the cache, whatever `inner` returns otherwise)."""
        model = self.info
        if not model_known(model):
            return list(await self.inner.generate(job, n, seed))
        keys = [
            principles_key(model, job.context, job.responses, seed, i, job.params, job.reference)
            for i in range(n)
        ]
        sets, shared = await self._flight.run(
            "\n".join(keys), lambda: self._generate(keys, job, n, seed)
        )
        if shared:
            self.cache.stats.principles.shared += 1
            current_usage().principles_reused += len(sets)
        return list(sets)

    async def _generate(self, keys: list[str], job: SamplingJob, n: int, seed: int) -> list[Any]:
        stats = self.cache.stats.principles
        usage = current_usage()
        found: list[PrincipleSet | None] = []
        corrupt = []
        for key, value in zip(keys, await self.cache.get(Kind.PRINCIPLES, keys), strict=True):
            hit = None
            if value is not None:
                try:
                    hit = decode_principles(key, value)
                except CorruptValueError:
                    stats.corrupt += 1
                    corrupt.append(key)
            found.append(hit)
        hits = sum(s is not None for s in found)
        stats.hits += hits
        stats.misses += n - hits
        if corrupt:
            await self.cache.delete(Kind.PRINCIPLES, corrupt)
        if hits == n:
            usage.principles_reused += n
            return list(found)
        sets = list(await self.inner.generate(job, n, seed))
        usage.principles_generated += len(sets)
        to_store = []
        for key, s, cached in zip(keys, sets, found, strict=False):
            if cached is not None:
                continue
            principle_set = PrincipleSet(
                text=str(getattr(s, "text", "") or ""),
                seed=int(getattr(s, "seed", 0) or 0),
                tokens_generated=int(getattr(s, "tokens_generated", 0) or 0),
                latency_ms=float(getattr(s, "latency_ms", 0.0) or 0.0),
            )
            if principle_set.text.strip():
                to_store.append((key, encode_principles(key, principle_set)))
        await self.cache.put(Kind.PRINCIPLES, to_store)
        return sets


class ResultCache:
    """Final results keyed by the request (k, k_meta, aggregation, meta RM included).

    Only complete results are stored: a partial (deadline, budget) or degraded (meta RM down)
    result is a fact about that moment, not about the request. A hit comes back under the new
    request's id, with the lookup time as its total time. `model` is the sampler's model
    (`sampler.info`); a result that reports another model (it changed mid-request) is not
    stored.
    """

    def __init__(
        self,
        cache: GrmCache,
        *,
        meta_rm: str = "",
        principles_model: ModelInfo | None = None,
    ) -> None:
        self.cache = cache
        self.meta_rm = meta_rm
        self.principles_model = principles_model
        self._flight: SingleFlight[ScoreResult] = SingleFlight()

    def key(self, item: ScoreItem, model: ModelInfo) -> str:
        return result_key(model, item, meta_rm=self.meta_rm, principles_model=self.principles_model)

    async def get(
        self, item: ScoreItem, model: ModelInfo, key: str | None = None
    ) -> ScoreResult | None:
        """The cached result of this request, or None (always None for an unknown model).
        `key`: `self.key(item, model)` when the caller has it already."""
        if not model_known(model):
            return None
        started = time.perf_counter()
        stats = self.cache.stats.result
        key = key or self.key(item, model)
        [value] = await self.cache.get(Kind.RESULT, [key])
        result = None
        if value is not None:
            try:
                result = decode_result(key, value, len(item.responses))
            except CorruptValueError:
                stats.corrupt += 1
                await self.cache.delete(Kind.RESULT, [key])
        if result is None:
            stats.misses += 1
            return None
        stats.hits += 1
        usage = current_usage()
        usage.result_hit = True
        usage.samples_reused += len(result.samples)
        return replace(
            result,
            request_id=item.request_id,
            timings=Timings(total_ms=(time.perf_counter() - started) * 1000),
        )

    @staticmethod
    def cacheable(item: ScoreItem, model: ModelInfo, result: ScoreResult) -> bool:
        """Only full results of exactly this request, made by `model`."""
        return (
            model_known(model)
            and (result.model is None or result.model == model)
            and result.status is ScoreStatus.COMPLETE
            and result.k_requested == item.k
            and result.k_valid >= item.k
            and len(result.rewards) == len(item.responses)
        )

    async def put(
        self, item: ScoreItem, model: ModelInfo, result: ScoreResult, key: str | None = None
    ) -> bool:
        """Store the result if it is cacheable; True when it was handed to the store."""
        if not self.cacheable(item, model, result):
            return False
        key = key or self.key(item, model)
        await self.cache.put(Kind.RESULT, [(key, encode_result(key, result))])
        return True

    async def get_or_compute(
        self,
        item: ScoreItem,
        model: ModelInfo,
        compute: Callable[[], Awaitable[ScoreResult]],
    ) -> ScoreResult:
        """A cached result, or `compute()` run once for all identical concurrent requests."""
        key = self.key(item, model)  # once: it encodes and hashes the whole request
        hit = await self.get(item, model, key)
        if hit is not None:
            return hit

        async def compute_and_store() -> ScoreResult:
            result = await compute()
            await self.put(item, model, result, key)
            return result

        result, shared = await self._flight.run(key, compute_and_store)
        if shared:
            self.cache.stats.result.shared += 1
            current_usage().result_hit = True
            result = replace(result, request_id=item.request_id)
        return result


def _sample_keys(model: ModelInfo, job: SamplingJob) -> SampleKeys:
    """The keys of `job`'s samples from `model` (every path keys samples this one way)."""
    return SampleKeys(model, job.context, job.responses, job.params, job.reference)
