"""The TGI backend against the dev server over loopback HTTP: sampling, limits, errors, retries."""

from __future__ import annotations

import asyncio
import time

import pytest

from grm.backends import make_backend
from grm.backends.embedded import EmbeddedBackend
from grm.backends.tgi import SEED_ZERO_SUBSTITUTE, TgiBackend, TgiSettings
from grm.core.errors import (
    BackendError,
    DeadlineExceededError,
    InvalidArgumentError,
    ResourceExhaustedError,
    UnavailableError,
)
from grm.core.grammar import scores_regex, scores_suffix_regex
from grm.core.parsing import extract_scores
from grm_dev.devtgi import FaultSettings
from grm_dev.devtgi.engines import ScriptedEngine
from tests.support.tgi_support import (
    dev_tgi,
    exchanges,
    generate_bodies,
    judge_request,
    tgi_backend,
)


async def test_k_samples_go_out_as_k_concurrent_sampled_requests_with_distinct_seeds() -> None:
    async with (
        dev_tgi(faults=FaultSettings(latency_ms=300)) as server,
        tgi_backend(server.url) as backend,
    ):
        requests = [judge_request(seed=100 + i) for i in range(8)]
        results = await backend.generate(requests)
    bodies = generate_bodies(server)
    assert len(bodies) == 8
    assert server.state.peak_admitted == 8  # all eight were in flight together
    params = [b["parameters"] for b in bodies]
    assert sorted(p["seed"] for p in params) == list(range(100, 108))
    assert all(p["do_sample"] is True and p["temperature"] == 0.5 for p in params)
    assert all(p["details"] is True and p["top_p"] is None for p in params)
    assert all(p["grammar"] == {"type": "regex", "value": scores_regex(2)} for p in params)
    for request, result in zip(requests, results, strict=True):
        assert not isinstance(result, Exception), result
        assert result.seed == request.seed  # the seed TGI reports in details.seed
        assert extract_scores(result.text, 2).scores == (9, 2)
        assert result.finish_reason == "stop"


async def test_greedy_sends_one_request_with_sampling_off() -> None:
    async with dev_tgi() as server, tgi_backend(server.url) as backend:
        [result] = await backend.generate([judge_request(temperature=0.0)])
    [body] = generate_bodies(server)
    params = body["parameters"]
    assert params["do_sample"] is False
    assert params["temperature"] is None and params["seed"] is None and params["top_p"] is None
    assert not isinstance(result, Exception) and result.seed is None


async def test_seed_zero_is_sent_as_a_positive_seed() -> None:
    async with dev_tgi() as server, tgi_backend(server.url) as backend:
        [result] = await backend.generate([judge_request(seed=0)])
    assert generate_bodies(server)[0]["parameters"]["seed"] == SEED_ZERO_SUBSTITUTE
    assert not isinstance(result, Exception) and result.seed == SEED_ZERO_SUBSTITUTE


async def test_overload_is_retried_with_backoff_and_then_succeeds() -> None:
    faults = FaultSettings(sequence=("429", "429"))
    async with dev_tgi(faults=faults) as server, tgi_backend(server.url) as backend:
        result = await backend.generate_one(judge_request())
        assert backend.stats["overloaded"] == 2
    assert len(generate_bodies(server)) == 3
    assert extract_scores(result.text, 2).scores == (9, 2)


async def test_persistent_overload_is_resource_exhausted_after_bounded_retries() -> None:
    async with (
        dev_tgi(faults=FaultSettings(rate_429=1.0)) as server,
        tgi_backend(server.url, overload_retries=3) as backend,
    ):
        [result] = await backend.generate([judge_request()])
    assert isinstance(result, ResourceExhaustedError), result
    assert result.code == "RESOURCE_EXHAUSTED"
    assert len(generate_bodies(server)) == 4  # the first try and three retries


async def test_overload_retries_end_at_the_deadline() -> None:
    async with (
        dev_tgi(faults=FaultSettings(rate_429=1.0)) as server,
        tgi_backend(server.url, overload_retries=1000, backoff_max_s=0.1) as backend,
    ):
        t0 = time.perf_counter()
        with pytest.raises(ResourceExhaustedError, match="deadline"):
            await backend.generate_one(judge_request(deadline=time.monotonic() + 0.5))
        # the 0.5 s deadline, not 1000 retries (3 s of slack for a loaded machine)
        assert time.perf_counter() - t0 < 0.5 + 3.0
    assert 2 <= len(generate_bodies(server)) < 100


async def test_server_errors_are_retried_on_another_endpoint() -> None:
    async with (
        dev_tgi(faults=FaultSettings(rate_500=1.0)) as broken,
        dev_tgi() as healthy,
        tgi_backend(broken.url, healthy.url) as backend,
    ):
        results = await backend.generate([judge_request(seed=s) for s in range(1, 7)])
    assert all(not isinstance(r, Exception) for r in results), results
    assert len(generate_bodies(healthy)) == 6
    # Once it failed, the broken endpoint is avoided (cool-off), so few requests reach it.
    assert 1 <= len(generate_bodies(broken)) <= 3
    assert all(x.status == 500 for x in exchanges(broken, "/generate"))


async def test_server_errors_everywhere_are_unavailable() -> None:
    faults = FaultSettings(rate_500=1.0)
    async with (
        dev_tgi(faults=faults) as a,
        dev_tgi(faults=faults) as b,
        tgi_backend(a.url, b.url, unavailable_retries=2) as backend,
    ):
        [result] = await backend.generate([judge_request()])
    assert isinstance(result, BackendError) and result.code == "UNAVAILABLE", result
    tries = len(generate_bodies(a)) + len(generate_bodies(b))
    assert tries == 3 and generate_bodies(a) and generate_bodies(b)


async def test_a_refused_connection_is_retried_on_another_endpoint() -> None:
    async with dev_tgi() as a, dev_tgi() as b, tgi_backend(a.url, b.url) as backend:
        await a.runner.cleanup()  # endpoint a goes away after the backend configured it
        results = await backend.generate([judge_request(seed=s) for s in range(1, 5)])
        assert all(not isinstance(r, Exception) for r in results), results
        assert len(generate_bodies(b)) == 4
        await b.runner.cleanup()
        [result] = await backend.generate([judge_request()])
    assert isinstance(result, UnavailableError), result
    assert "unavailable after" in str(result)


async def test_a_dropped_connection_is_retried() -> None:
    # The prompt's rendering opened the connection, so the request dropped without a reply
    # went on a kept-alive one: the HTTP client sends it again on a new connection (as after
    # a server's idle close), not counted as an outage of the endpoint.
    faults = FaultSettings(sequence=("disconnect",))
    async with dev_tgi(faults=faults) as server, tgi_backend(server.url) as backend:
        result = await backend.generate_one(judge_request())
        [endpoint] = backend.pool.endpoints
        assert endpoint.http is not None and endpoint.http.resent == 1
        assert backend.stats["unavailable"] == 0
    assert extract_scores(result.text, 2).scores == (9, 2)
    assert server.state.generate_requests == 2  # the dropped one is not in the exchange log


async def test_connections_dropped_on_every_try_are_an_outage() -> None:
    # Dropped on a new connection too: the endpoint pool counts an outage and tries again.
    faults = FaultSettings(sequence=("disconnect", "disconnect", "disconnect"))
    async with dev_tgi(faults=faults) as server, tgi_backend(server.url) as backend:
        result = await backend.generate_one(judge_request())
        [endpoint] = backend.pool.endpoints
        assert endpoint.http is not None and endpoint.http.resent == 1
        assert backend.stats["unavailable"] == 2
    assert extract_scores(result.text, 2).scores == (9, 2)
    assert server.state.generate_requests == 4


async def test_validation_errors_are_invalid_argument_without_retry() -> None:
    faults = FaultSettings(rate_422=1.0)
    async with dev_tgi(faults=faults) as server, tgi_backend(server.url) as backend:
        [result] = await backend.generate([judge_request()])
    assert isinstance(result, InvalidArgumentError), result
    assert result.code == "INVALID_ARGUMENT" and "injected fault" in str(result)
    assert len(generate_bodies(server)) == 1


async def test_a_hung_request_ends_at_the_callers_deadline() -> None:
    faults = FaultSettings(rate_timeout=1.0)
    async with dev_tgi(faults=faults) as server, tgi_backend(server.url) as backend:
        t0 = time.perf_counter()
        with pytest.raises(DeadlineExceededError):
            await backend.generate_one(judge_request(deadline=time.monotonic() + 0.3))
        # at the 0.3 s deadline; the hang lasts an hour (3 s of slack for a loaded machine)
        assert 0.25 < time.perf_counter() - t0 < 0.3 + 3.0
        # The same through generate(), as the sampler calls it.
        [result] = await backend.generate([judge_request(deadline=time.monotonic() + 0.3)])
        assert isinstance(result, DeadlineExceededError)
        for _ in range(50):  # the server sees the client go away and cancels the request
            if server.state.admitted == 0:
                break
            await asyncio.sleep(0.02)
        assert server.state.admitted == 0


async def test_own_request_timeout_is_unavailable_not_deadline() -> None:
    faults = FaultSettings(rate_timeout=1.0)
    async with (
        dev_tgi(faults=faults) as server,
        tgi_backend(server.url, request_timeout_s=0.2) as backend,
    ):
        [result] = await backend.generate([judge_request()])
    assert isinstance(result, BackendError) and "request_timeout_s" in str(result)


async def test_in_flight_requests_stay_within_max_concurrent_requests() -> None:
    async with (
        dev_tgi(faults=FaultSettings(latency_ms=100), max_concurrent_requests=3) as server,
        tgi_backend(server.url) as backend,
    ):
        assert backend.capacity == 3 and backend.limits is not None
        results = await backend.generate([judge_request(seed=s) for s in range(1, 11)])
    assert all(not isinstance(r, Exception) for r in results)
    assert server.state.peak_admitted == 3
    assert server.state.metrics.counter("tgi_request_failure", err="overloaded") == 0


async def test_callers_beyond_capacity_wait_for_a_slot_not_for_a_429() -> None:
    """generate_one called directly (no capacity semaphore in front): the backend's own
    per-endpoint bound holds the extra calls back until slots free up, or the deadline."""
    async with (
        dev_tgi(faults=FaultSettings(latency_ms=100), max_concurrent_requests=2) as server,
        tgi_backend(server.url) as backend,
    ):
        calls = [backend.generate_one(judge_request(seed=s)) for s in range(1, 7)]
        results = await asyncio.gather(*calls)
        assert len(results) == 6 and backend.stats["waited_for_slot"] >= 4
        assert [e.in_flight for e in backend.endpoints] == [0]
        blockers = [asyncio.create_task(backend.generate_one(judge_request())) for _ in range(2)]
        await asyncio.sleep(0.02)
        with pytest.raises(DeadlineExceededError, match="free TGI slot"):
            await backend.generate_one(judge_request(deadline=time.monotonic() + 0.05))
        await asyncio.gather(*blockers)
    assert server.state.peak_admitted == 2
    assert server.state.metrics.counter("tgi_request_failure", err="overloaded") == 0


async def test_least_in_flight_spreads_requests_over_endpoints() -> None:
    async with (
        dev_tgi(faults=FaultSettings(latency_ms=200), max_concurrent_requests=4) as a,
        dev_tgi(faults=FaultSettings(latency_ms=200), max_concurrent_requests=4) as b,
        tgi_backend(a.url, b.url) as backend,
    ):
        assert backend.capacity == 8
        await backend.generate([judge_request(seed=s) for s in range(1, 9)])
    assert len(generate_bodies(a)) == len(generate_bodies(b)) == 4
    assert a.state.peak_admitted == b.state.peak_admitted == 4


async def test_info_configures_model_identity_and_limits() -> None:
    engine = ScriptedEngine(model_id="org/grm-27b", max_total_tokens=2048)
    async with (
        dev_tgi(engine, max_input_tokens=1500, max_best_of=3) as server,
        tgi_backend(server.url) as backend,
    ):
        assert backend.info.model_id == "org/grm-27b"
        assert backend.info.revision == "scripted-v1" and backend.info.backend == "tgi"
        assert backend.limits is not None
        assert backend.limits.max_input_tokens == 1500
        assert backend.limits.max_total_tokens == 2048
        assert backend.limits.max_best_of == 3
        assert backend.limits.max_concurrent_requests == backend.capacity == 128
        assert await backend.healthy()


async def test_an_endpoint_serving_another_model_is_refused() -> None:
    async with (
        dev_tgi(ScriptedEngine(model_id="model-a")) as a,
        dev_tgi(ScriptedEngine(model_id="model-b")) as b,
        tgi_backend(a.url, b.url) as backend,
    ):
        assert backend.info.model_id == "model-a"
        assert [e.ready for e in backend.endpoints] == [True, False]
        assert "refused" in backend.endpoints[1].error
        await backend.generate([judge_request(seed=s) for s in range(1, 5)])
    assert len(generate_bodies(a)) == 4 and not generate_bodies(b)


async def test_a_prompt_over_max_input_tokens_is_rejected_before_sampling() -> None:
    engine = ScriptedEngine()
    rendered = engine.render_chat([dict(m) for m in judge_request().messages])
    prompt_tokens = len(await engine.tokenize(rendered))
    total = prompt_tokens + 100
    async with dev_tgi(max_total_tokens=total) as server, tgi_backend(server.url) as backend:
        long = judge_request(responses=("word " * 100, "short"), max_new_tokens=16)
        [result] = await backend.generate([long])
        assert isinstance(result, InvalidArgumentError), result
        assert f"takes at most {total - 1} input tokens" in str(result)
        # Fits the input limit: max_new_tokens is capped at the room the server advertises.
        ok = await backend.generate_one(judge_request(max_new_tokens=1024))
        assert ok.tokens_generated > 0
    [body] = generate_bodies(server)  # only the request that fits was sampled
    assert body["parameters"]["max_new_tokens"] == 100
    assert exchanges(server, "/chat_tokenize")


async def test_a_prompt_that_leaves_no_room_to_judge_is_refused_never_truncated() -> None:
    engine = ScriptedEngine()
    rendered = engine.render_chat([dict(m) for m in judge_request().messages])
    total = len(await engine.tokenize(rendered)) + 10
    async with dev_tgi(max_total_tokens=total) as server, tgi_backend(server.url) as backend:
        [result] = await backend.generate([judge_request(max_new_tokens=1024)])
        assert isinstance(result, InvalidArgumentError), result
        assert f"max_total_tokens of {total} leaves 10 new tokens" in str(result)
    assert generate_bodies(server) == []


async def test_a_cut_off_sample_stays_cut_off_unless_forcing_is_asked_for() -> None:
    """The paper's decoding: a sample cut at max_new_tokens is not completed with a forced
    score line (it is invalid and re-drawn); no second request is made."""
    from grm.core.sampling import sample_spec
    from grm.scoring.critique import to_sample

    async with dev_tgi() as server, tgi_backend(server.url) as backend:
        result = await backend.generate_one(judge_request(max_new_tokens=12, grammar=False))
    [body] = generate_bodies(server)
    assert body["parameters"]["max_new_tokens"] == 12 and body["parameters"]["grammar"] is None
    assert result.finish_reason == "length" and "Scores:" not in result.text
    sample = to_sample(sample_spec(0, 0, 2), result, 2)
    assert not sample.valid and "finish reason length" in sample.invalid_reason


async def test_a_score_line_cut_off_by_max_new_tokens_is_completed_when_asked() -> None:
    async with dev_tgi() as server, tgi_backend(server.url) as backend:
        result = await backend.generate_one(judge_request(max_new_tokens=12, force_scores=True))
    first, second = generate_bodies(server)
    assert first["parameters"]["max_new_tokens"] == 12
    assert second["parameters"]["grammar"]["value"] == scores_suffix_regex(2)
    assert second["inputs"].endswith("Scores: \\boxed{")
    assert second["parameters"]["seed"] == first["parameters"]["seed"]
    assert result.finish_reason == "forced_scores"
    assert extract_scores(result.text, 2).scores == (9, 2)


async def test_start_waits_for_health_then_reads_info() -> None:
    class SlowEngine(ScriptedEngine):
        async def start(self) -> None:
            await asyncio.sleep(0.4)

    from grm_dev.devtgi import DevTgiSettings, start_dev_server

    server = await start_dev_server(SlowEngine(), DevTgiSettings(), wait_ready=False)
    try:
        backend = TgiBackend(TgiSettings(urls=(server.url,), startup_timeout_s=5))
        t0 = time.perf_counter()
        await backend.start()
        assert time.perf_counter() - t0 >= 0.3 and server.state.ready
        assert await backend.healthy()
        await backend.close()
    finally:
        await server.close()


async def test_start_without_any_healthy_endpoint_is_unavailable() -> None:
    async with dev_tgi() as server:
        url = server.url
    backend = TgiBackend(TgiSettings(urls=(url,), startup_timeout_s=0.3))
    with pytest.raises(UnavailableError, match="no TGI endpoint became ready"):
        await backend.start()


async def test_an_endpoint_down_at_start_joins_when_it_comes_up() -> None:
    async with dev_tgi() as up:
        from grm_dev.devtgi import DevTgiSettings, start_dev_server

        class SlowEngine(ScriptedEngine):
            async def start(self) -> None:
                await asyncio.sleep(0.5)

        late = await start_dev_server(SlowEngine(), DevTgiSettings(), wait_ready=False)
        try:
            async with tgi_backend(up.url, late.url, probe_interval_s=0.1) as backend:
                assert [e.ready for e in backend.endpoints] == [True, False]
                for _ in range(50):
                    if backend.endpoints[1].ready:
                        break
                    await asyncio.sleep(0.05)
                assert backend.endpoints[1].ready and backend.capacity == 256
        finally:
            await late.close()


STOCK_DICT_WARNING = "ignore:The `dict` method is deprecated:DeprecationWarning"


@pytest.mark.filterwarnings(STOCK_DICT_WARNING)  # text-generation 0.7.0 calls pydantic's .dict()
async def test_pooled_sessions_reuse_connections_the_stock_client_does_not() -> None:
    async with dev_tgi() as server:
        async with tgi_backend(server.url) as pooled:
            for s in range(1, 6):
                await pooled.generate_one(judge_request(seed=s))
        async with tgi_backend(server.url, pooled=False) as stock:
            for s in range(1, 6):
                await stock.generate_one(judge_request(seed=s))
    pooled_peers = {x.peer for x in exchanges(server, "/generate")}
    stock_peers = {x.peer for x in exchanges(server, "/")}
    assert len(pooled_peers) == 1  # five sequential calls, one keep-alive connection
    assert len(stock_peers) == 5  # a new session (connection) per call
    bodies = generate_bodies(server, "/")
    assert all(b["stream"] is False for b in bodies)


@pytest.mark.filterwarnings(STOCK_DICT_WARNING)
async def test_stock_client_maps_errors_the_same_way() -> None:
    async with (
        dev_tgi(faults=FaultSettings(sequence=("429", "500", "ok", "422"))) as a,
        tgi_backend(a.url, pooled=False) as stock,
    ):
        result = await stock.generate_one(judge_request())
        assert extract_scores(result.text, 2).scores == (9, 2)
        with pytest.raises(InvalidArgumentError):
            await stock.generate_one(judge_request())
    assert [x.status for x in exchanges(a, "/")] == [429, 500, 200, 422]


async def test_a_local_chat_template_is_counted_with_tokenize() -> None:
    template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    async with dev_tgi() as server, tgi_backend(server.url, chat_template=template) as backend:
        result = await backend.generate_one(judge_request())
    assert extract_scores(result.text, 2).scores == (9, 2)
    assert exchanges(server, "/tokenize") and not exchanges(server, "/chat_tokenize")
    prompt = generate_bodies(server)[0]["inputs"]
    assert prompt == ScriptedEngine().render_chat(
        [{"role": r, "content": c} for r, c in (m.values() for m in judge_request().messages)]
    )


async def test_identical_prompts_are_rendered_once() -> None:
    async with dev_tgi() as server, tgi_backend(server.url) as backend:
        await backend.generate([judge_request(seed=s) for s in range(1, 6)])
    assert len(exchanges(server, "/chat_tokenize")) == 1
    assert len(generate_bodies(server)) == 5


def test_make_backend_builds_each_kind() -> None:
    tgi = make_backend("tgi", tgi_url="http://a:1, http://b:2/", stop=["x"])
    assert isinstance(tgi, TgiBackend)
    assert [e.url for e in tgi.endpoints] == ["http://a:1", "http://b:2"]
    assert tgi.settings.stop == ("x",)
    embedded = make_backend("embedded", model_path=None, n_ctx=1024)
    assert isinstance(embedded, EmbeddedBackend) and embedded.settings.n_ctx == 1024
    with pytest.raises(ValueError, match="unknown backend"):
        make_backend("vllm")
    with pytest.raises(ValueError, match="tgi_url"):
        make_backend("tgi")
    with pytest.raises(TypeError):
        make_backend("tgi", tgi_url="http://a:1", no_such_setting=1)
