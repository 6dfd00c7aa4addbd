"""`grm up --backend tgi` with default settings against a TGI-compatible server whose chat
template rejects the system role (as Gemma-2's, hence DeepSeek-GRM-27B's, does).

The suite's children are real processes; the TGI stand-in runs the scripted judge in this
process and records every exchange, so the test reads what the engine received: one user
turn, the paper's decoding (max_new_tokens >= 1024, no grammar), and no failed request.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

from grm.client import AsyncGrmClient
from grm.core.types import ScoreStatus
from grm_dev.devtgi import DevTgiSettings, start_dev_server
from grm_dev.devtgi.engines import ScriptedEngine
from tests.support.chat_templates import GEMMA2
from tests.support.servers import child_env

RESPONSES = ["a good answer", "a bad answer"]


async def test_grm_up_on_tgi_with_a_template_that_rejects_the_system_role(tmp_path: Path) -> None:
    tgi = await start_dev_server(
        ScriptedEngine(), DevTgiSettings(record=True, chat_template=GEMMA2, bos_token="<bos>")
    )
    port_file = tmp_path / "front.port"
    log = (tmp_path / "up.log").open("wb")
    up = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "grm.cli.main", "up", "--port", "0", "--metrics-port", "0",
        "--port-file", str(port_file), "--samplers", "2",
        "--backend", "tgi", "--tgi-url", tgi.url,
        stdout=asyncio.subprocess.DEVNULL, stderr=log, env=child_env(),
    )  # fmt: skip
    try:
        for _ in range(1200):
            if port_file.exists() or up.returncode is not None:
                break
            await asyncio.sleep(0.1)
        assert port_file.exists(), (tmp_path / "up.log").read_text()
        address = f"127.0.0.1:{port_file.read_text().strip()}"
        async with AsyncGrmClient(address, timeout=60) as client:
            result = await client.score("Which answer is right?", RESPONSES, k=4)
        assert result.status is ScoreStatus.COMPLETE
        assert result.k_used == 4 and result.invalid_samples == 0
        assert result.rewards == (9.0, 2.0)
        exchanges = list(tgi.state.exchanges)
        assert exchanges and all(x.status == 200 for x in exchanges)  # no failed request
        generated = [x.request for x in exchanges if x.path == "/generate"]
        assert len(generated) == 4
        for body in generated:
            assert body["inputs"].startswith("<bos><start_of_turn>user\nYou are a skilled")
            assert body["parameters"]["max_new_tokens"] >= 1024
            assert body["parameters"]["grammar"] is None
        up.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(up.wait(), 60) == 0
    finally:
        if up.returncode is None:
            up.kill()
            await up.wait()
        log.close()
        await tgi.close()
