"""The openai backend against a server someone else wrote: llama.cpp's OpenAI-compatible server.

`python -m llama_cpp.server` (llama-cpp-python's `server` extra) serves the bundled SmolLM2
GGUF on a free loopback port, with a context and thread count small enough for two cores.
`grm up --backend openai --openai-url http://127.0.0.1:PORT/v1 --engine llamacpp` scores
through it end to end; the samples' finish reasons and token counts come from that server.
(The same seed need not give the same text twice there: llama.cpp reuses the cached prompt,
and its README warns that logits then differ between batch sizes.) llama-cpp-python answers
`owned_by: "me"` and serves neither `/props` nor `/metrics`, so the engine is named.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from grm.backends.model_files import default_model_path
from grm.client import AsyncGrmClient
from grm.core.parsing import extract_scores
from grm.core.types import ScoreStatus
from grm_dev.bench import suite
from tests.support.openai_support import openai_backend
from tests.support.redis_server import free_port
from tests.support.tgi_support import judge_request

pytestmark = pytest.mark.model

RESPONSES = ["Paris is the capital of France.", "France has no capital."]
MAX_NEW_TOKENS = 64  # small for two cores; the bounded grammar still fits the score line


@contextlib.asynccontextmanager
async def llama_cpp_server(tmp: Path) -> AsyncIterator[str]:
    """llama-cpp-python's server on the default model; yields its `/v1` URL once it serves."""
    port = free_port()
    log = (tmp / "llama-cpp-server.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "llama_cpp.server",
        "--model", str(default_model_path()), "--model_alias", "smollm2-135m-instruct",
        "--host", "127.0.0.1", "--port", str(port),
        "--n_ctx", "2048", "--n_threads", "1", "--n_batch", "256",
        stdout=log, stderr=log,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/v1"
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(600):  # model load, bounded by tries (0.1 s apart)
                assert proc.returncode is None, (tmp / "llama-cpp-server.log").read_text()
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(f"{url}/models") as resp:
                        if resp.status == 200:
                            break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("llama_cpp.server did not come up")
        yield url
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        log.close()


async def test_grm_up_scores_through_a_real_llama_cpp_server(tmp_path: Path) -> None:
    async with (
        llama_cpp_server(tmp_path) as url,
        suite.suite(
            tmp_path, url, backend="openai", samplers=1, env={"GRM_ENGINE": "llamacpp"}
        ) as address,
        AsyncGrmClient(address, timeout=300) as client,
    ):
        result = await client.score(
            "What is the capital of France?",
            RESPONSES,
            k=2,
            max_new_tokens=MAX_NEW_TOKENS,
            grammar=True,  # the tiny model needs the score-line grammar and a forced line
            force_scores=True,
            include_samples=True,
            principle_mode="joint",
        )
    print(  # the report: what the real server returned (pytest -s shows it)
        "llama.cpp server samples:",
        [(s.backend_seed, s.finish_reason, s.scores, s.tokens_generated) for s in result.samples],
    )
    assert result.k_requested == 2 and result.k_used == 2
    assert result.status is ScoreStatus.COMPLETE
    assert result.model is not None and result.model.backend == "openai"
    assert result.model.model_id == "smollm2-135m-instruct"  # from the server's /v1/models
    assert len({s.backend_seed for s in result.samples}) == 2
    assert {s.finish_reason for s in result.samples} <= {"stop", "forced_scores"}
    assert all(0 < s.tokens_generated <= MAX_NEW_TOKENS for s in result.samples)  # its usage


async def test_the_backend_reads_a_real_servers_replies(tmp_path: Path) -> None:
    async with (
        llama_cpp_server(tmp_path) as url,
        openai_backend(url, engine="llamacpp", startup_timeout_s=30) as backend,
    ):
        assert backend.capacity == 1  # no /props: one at a time, as llama-cpp-python runs
        assert backend.info.model_id == "smollm2-135m-instruct"
        short, free = await backend.generate(
            [
                judge_request(seed=11, max_new_tokens=MAX_NEW_TOKENS, force_scores=True),
                judge_request(seed=12, max_new_tokens=8, grammar=False),
            ]
        )
    assert not isinstance(short, Exception) and not isinstance(free, Exception)
    assert short.seed == 11 and short.finish_reason in ("stop", "forced_scores")
    assert extract_scores(short.text, 2).scores is not None  # the bounded grammar held
    assert free.finish_reason == "length" and free.tokens_generated == 8  # cut by max_tokens
