"""`grm up` end to end: real child processes, the real embedded model, two samplers.

Scores through the Python client, `grm score --target` and grpcurl, checks that one
request's samples were drawn on both samplers, then stops everything with SIGTERM.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from grm.client import AsyncGrmClient
from grm.core.types import ScoreStatus

pytestmark = pytest.mark.model

GRPCURL = Path(sys.executable).with_name("grpcurl")
QUERY = "What is the capital of France?"
RESPONSES = ["The capital of France is Paris.", "France has no capital."]


async def run(*argv: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_grm_up_runs_the_suite_in_child_processes(tmp_path: Path) -> None:
    port_file = tmp_path / "front.port"
    log = (tmp_path / "up.log").open("wb")  # the suite's logs (a pipe could fill up)
    up = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "grm.cli.main", "up", "--port", "0", "--metrics-port", "0",
        "--port-file", str(port_file),
        "--samplers", "2", "--n-ctx", "2048",
        stdout=asyncio.subprocess.PIPE, stderr=log,
    )  # fmt: skip
    try:
        for _ in range(1200):
            if port_file.exists() or up.returncode is not None:
                break
            await asyncio.sleep(0.1)
        assert port_file.exists(), "grm up did not come up"
        address = f"127.0.0.1:{port_file.read_text().strip()}"
        banner = (await asyncio.wait_for(up.stdout.readuntil(b"Ctrl-C"), 10)).decode()
        assert "grpcurl -plaintext" in banner and f"--target {address}" in banner

        async with AsyncGrmClient(address, timeout=120) as client:
            result = await client.score(
                QUERY, RESPONSES, k=2, max_new_tokens=32, include_samples=True
            )
        assert result.k_requested == 2 and 1 <= result.k_used <= 2
        assert result.status in (ScoreStatus.COMPLETE, ScoreStatus.PARTIAL)
        assert all(1 <= r <= 10 for r in result.rewards)
        assert result.model is not None and result.model.backend == "embedded"
        samplers = {s.sampler for s in result.samples}
        assert len(samplers) == 2  # the request's two samples ran on both sampler processes

        items = tmp_path / "items.jsonl"
        items.write_text(json.dumps({"id": 1, "query": QUERY, "responses": RESPONSES}) + "\n")
        code, out, err = await run(
            sys.executable, "-m", "grm.cli.main", "score", str(items), "--target", address,
            "--k", "2", "--max-new-tokens", "32", "--quiet",
        )  # fmt: skip
        assert code == 0, err
        [record] = [json.loads(line) for line in out.splitlines()]
        assert set(record) >= {"id", "rewards", "votes", "best", "tie", "k_used", "status"}
        assert record["id"] == 1 and len(record["rewards"]) == 2

        body = json.dumps(
            {"query": QUERY, "responses": RESPONSES, "k": 2, "sampling": {"max_new_tokens": 32}}
        )
        code, out, err = await run(
            str(GRPCURL), "-plaintext", "-max-time", "120", "-d", body, address,
            "grm.v1.RewardService/Score",
        )  # fmt: skip
        assert code == 0, err
        assert len(json.loads(out)["rewards"]) == 2

        up.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(up.wait(), 60) == 0
    finally:
        if up.returncode is None:
            up.kill()
            await up.wait()
        log.close()
    for target in [address, *samplers]:  # every process is gone
        async with grpc.aio.insecure_channel(target) as channel:
            with pytest.raises(grpc.aio.AioRpcError):
                await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=1
                )
