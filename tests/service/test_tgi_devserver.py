"""The TGI dev server itself: admission (429), metrics, health, faults, grammars, its CLI."""

from __future__ import annotations

import asyncio
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from grm.core.grammar import scores_gbnf, scores_regex, scores_suffix_gbnf, scores_suffix_regex
from grm.core.parsing import extract_scores
from grm_dev.devtgi import FaultSettings
from grm_dev.devtgi.engines import ScoreGrammar, ScriptedEngine, UnsupportedGrammar, parse_grammar
from grm_dev.devtgi.main import main as devtgi_main
from tests.support.tgi_support import dev_tgi, exchanges

PROMPT = (
    "Judge.\n[The Begin of Response 1]\nA good reply.\n[The End of Response 1]\n"
    "[The Begin of Response 2]\nA bad reply.\n[The End of Response 2]\n"
)


def body(**params: object) -> dict[str, object]:
    return {"inputs": PROMPT, "parameters": {"max_new_tokens": 64, "details": True, **params}}


async def test_requests_beyond_max_concurrent_requests_get_429_overloaded() -> None:
    faults = FaultSettings(latency_ms=300)
    async with (
        dev_tgi(faults=faults, max_concurrent_requests=2) as server,
        aiohttp.ClientSession() as http,
    ):

        async def post() -> tuple[int, dict[str, object]]:
            async with http.post(f"{server.url}/generate", json=body(seed=1)) as resp:
                return resp.status, await resp.json()

        replies = await asyncio.gather(*(post() for _ in range(5)))
        metrics = await (await http.get(f"{server.url}/metrics")).text()
    statuses = sorted(status for status, _ in replies)
    assert statuses == [200, 200, 429, 429, 429]
    assert {"error": "Model is overloaded", "error_type": "overloaded"} in [r for _, r in replies]
    assert 'tgi_request_failure{err="overloaded"} 3' in metrics
    assert "tgi_request_success 2" in metrics


async def test_metrics_use_tgi_names_and_show_the_queue() -> None:
    from grm_dev.devtgi.engines import GenerateCall, Generated, ScriptedEngine

    class OneAtATime(ScriptedEngine):
        capacity = 1

        async def generate(self, call: GenerateCall) -> Generated:
            await asyncio.sleep(0.2)
            return await super().generate(call)

    async with dev_tgi(OneAtATime()) as server, aiohttp.ClientSession() as http:
        tasks = [
            asyncio.create_task(http.post(f"{server.url}/generate", json=body(seed=s)))
            for s in (1, 2, 3)
        ]
        await asyncio.sleep(0.1)
        during = await (await http.get(f"{server.url}/metrics")).text()
        for response in await asyncio.gather(*tasks):
            response.release()
        after = await (await http.get(f"{server.url}/metrics")).text()
    assert "tgi_queue_size 2" in during and "tgi_batch_current_size 1" in during
    for name in (
        "# TYPE tgi_request_count counter",
        "tgi_request_count 3",
        "tgi_queue_size 0",
        "# TYPE tgi_request_duration histogram",
        'tgi_request_duration_bucket{le="+Inf"} 3',
        "tgi_request_duration_count 3",
        "tgi_request_queue_duration_sum",
        "tgi_request_generated_tokens_sum",
        "tgi_request_input_length_count 3",
        "tgi_batch_current_size 0",
    ):
        assert name in after, name


async def test_health_is_503_until_the_engine_is_loaded() -> None:
    from grm_dev.devtgi import DevTgiSettings, start_dev_server
    from grm_dev.devtgi.engines import ScriptedEngine

    class SlowEngine(ScriptedEngine):
        async def start(self) -> None:
            await asyncio.sleep(0.3)

    server = await start_dev_server(SlowEngine(), DevTgiSettings(), wait_ready=False)
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{server.url}/health") as resp:
                assert resp.status == 503
                assert await resp.json() == {"error": "unhealthy", "error_type": "healthcheck"}
            async with http.post(f"{server.url}/generate", json=body()) as resp:
                assert resp.status == 503
            await asyncio.sleep(0.5)
            async with http.get(f"{server.url}/health") as resp:
                assert resp.status == 200
    finally:
        await server.close()


async def test_scripted_outputs_and_the_text_faults() -> None:
    faults = FaultSettings(sequence=("ok", "garbage", "wrong-count"))
    async with dev_tgi(faults=faults) as server, aiohttp.ClientSession() as http:
        texts = []
        for seed in (1, 2, 3):
            async with http.post(f"{server.url}/generate", json=body(seed=seed)) as resp:
                texts.append((await resp.json())["generated_text"])
        async with http.post(f"{server.url}/", json={**body(), "stream": True}) as resp:
            assert resp.status == 422
    ok, garbage, wrong = texts
    assert extract_scores(ok, 2).scores == (9, 2)
    assert extract_scores(garbage, 2).scores is None
    assert extract_scores(wrong, 2).reason.startswith("expected 2")
    assert [x.status for x in exchanges(server, "/generate")] == [200, 200, 200]


async def test_padded_judgements_have_a_real_critiques_length_and_still_parse() -> None:
    """`--analysis-words`: the benchmarks' replies as long as a served GRM's (~300 tokens)."""
    async with (
        dev_tgi(ScriptedEngine(analysis_words=150)) as server,
        aiohttp.ClientSession() as http,
    ):
        async with http.post(f"{server.url}/generate", json=body(max_new_tokens=1024)) as resp:
            reply = await resp.json()
    details = reply["details"]
    assert details["finish_reason"] == "eos_token"
    assert 300 <= details["generated_tokens"] == len(details["tokens"]) <= 400
    assert extract_scores(reply["generated_text"], 2).scores == (9, 2)


async def test_the_seed_decides_details_seed_and_greedy_reports_none() -> None:
    async with dev_tgi() as server, aiohttp.ClientSession() as http:
        async with http.post(f"{server.url}/generate", json=body(do_sample=True, seed=42)) as r:
            assert (await r.json())["details"]["seed"] == 42
        async with http.post(f"{server.url}/generate", json=body(do_sample=True)) as r:
            assert (await r.json())["details"]["seed"] > 0  # drawn by the server, reported
        async with http.post(f"{server.url}/generate", json=body(do_sample=False)) as r:
            assert (await r.json())["details"]["seed"] is None
        async with http.post(f"{server.url}/generate", json=body(max_new_tokens=5)) as r:
            reply = await r.json()
    assert reply["details"]["finish_reason"] == "length"
    assert reply["details"]["generated_tokens"] == 5


async def test_latency_is_fixed_or_lognormal_around_its_median() -> None:
    lognormal = FaultSettings(latency_ms=40, latency_dist="lognormal", latency_sigma=0.5, seed=3)
    async with dev_tgi(faults=lognormal) as server:
        draws = [server.state.latency_s() for _ in range(400)]
    assert 0.032 < statistics.median(draws) < 0.048
    assert min(draws) < 0.025 and max(draws) > 0.08  # spread both ways
    async with dev_tgi(faults=FaultSettings(latency_ms=150)) as server:
        assert {server.state.latency_s() for _ in range(5)} == {0.15}
        async with aiohttp.ClientSession() as http:
            t0 = time.perf_counter()
            async with http.post(f"{server.url}/generate", json=body()) as resp:
                await resp.read()
            assert time.perf_counter() - t0 >= 0.15  # applied to the request


def test_only_the_score_regexes_are_translated_to_gbnf() -> None:
    for n in (1, 2, 5):
        full = parse_grammar({"type": "regex", "value": scores_regex(n)})
        assert full == ScoreGrammar("full", n) and full.gbnf == scores_gbnf(n)
        suffix = parse_grammar({"type": "regex", "value": scores_suffix_regex(n)})
        assert suffix == ScoreGrammar("suffix", n) and suffix.gbnf == scores_suffix_gbnf(n)
    assert parse_grammar(None) is None
    for unsupported in (
        {"type": "regex", "value": "[a-z]+"},
        {"type": "regex", "value": scores_regex(2) + "x"},
        {"type": "regex", "value": ""},
        {"type": "json", "value": {"type": "object"}},
    ):
        with pytest.raises(UnsupportedGrammar):
            parse_grammar(unsupported)


def test_fault_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="sum to at most 1"):
        FaultSettings(rate_429=0.7, rate_500=0.4)
    with pytest.raises(ValueError, match="unknown fault"):
        FaultSettings(sequence=("boom",))
    with pytest.raises(SystemExit):
        devtgi_main(["--scripted", "--error-429-rate", "2"])


def test_the_command_line_serves_until_sigterm(tmp_path: Path) -> None:
    port_file = tmp_path / "port"
    command = [sys.executable, "-m", "grm_dev.devtgi", "--scripted", "--port", "0"]
    command += ["--port-file", str(port_file), "--max-concurrent-requests", "7"]
    proc = subprocess.Popen([*command, "--latency-ms", "5"], stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(200):
            if port_file.exists() and port_file.read_text():
                break
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.05)
        url = f"http://127.0.0.1:{port_file.read_text()}"

        async def probe() -> tuple[dict[str, object], str]:
            async with aiohttp.ClientSession() as http:
                for _ in range(100):
                    async with http.get(f"{url}/health") as resp:
                        if resp.status == 200:
                            break
                    await asyncio.sleep(0.05)
                info = await (await http.get(f"{url}/info")).json()
                async with http.post(f"{url}/generate", json=body(seed=5)) as resp:
                    text = (await resp.json())["generated_text"]
                return info, text

        info, text = asyncio.run(probe())
        assert info["max_concurrent_requests"] == 7 and info["model_id"] == "grm-devtgi/scripted"
        assert extract_scores(text, 2).scores == (9, 2)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
