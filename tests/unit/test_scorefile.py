"""`grm score`: JSONL in, one record per line out, bad lines reported and the rest scored."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from grm.cli.scorefile import run_scorefile
from grm.core.templates import load_templates
from grm.core.validation import build_item
from grm.scoring.critique import CritiqueSampler
from grm.scoring.pipeline import ScoringPipeline
from tests.support.scripted import ScriptedBackend

ROOT = Path(__file__).resolve().parents[2]

LINES = [
    b'{"id": "a", "query": "q1", "responses": ["good", "bad"]}',
    b"{not json",
    b'{"id": "c", "query": "q3", "responses": []}',
    b'{"id": "d", "query": "q4", "responses": ["bad \xff\xfe", "good"]}',
    b"",
    b'{"id": "e", "query": [{"role": "user", "content": "hi"}], "responses": ["good"]}',
    b'["not", "an", "object"]',
    b'{"id": "g", "query": [{"content": "no role"}], "responses": ["good"]}',
]


async def test_records_in_order_with_line_numbered_errors() -> None:
    pipeline = ScoringPipeline(CritiqueSampler(ScriptedBackend(), load_templates()))
    out = io.StringIO()
    ok, failed = await run_scorefile(
        io.BytesIO(b"\n".join(LINES) + b"\n"),
        out,
        lambda fields: build_item(k=2, **fields),
        pipeline.score,
        concurrency=3,
        progress=False,
    )
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert (ok, failed) == (2, 5)
    assert [r.get("id") for r in records] == ["a", None, "c", None, "e", None, "g"]
    assert records[0]["rewards"] == [9.0, 2.0] and records[0]["k_used"] == 2
    assert records[1]["line"] == 2 and "not valid JSON" in records[1]["error"]["message"]
    assert records[2]["error"] == {
        "code": "INVALID_ARGUMENT",
        "field": "responses",
        "message": "responses: at least one response is required",
    }
    assert records[3]["line"] == 4 and "UTF-8" in records[3]["error"]["message"]
    assert records[4]["rewards"] == [9.0]
    assert records[5]["line"] == 7 and "JSON object" in records[5]["error"]["message"]
    assert records[6]["error"]["field"] == "query[0]"
    assert all("rewards" not in r for r in records if "error" in r)


@pytest.mark.model
def test_grm_score_end_to_end_on_the_real_model(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_bytes(
        b'{"id": "x", "query": "What is 2 + 2?", "responses": ["4", "5"]}\n'
        b'{"id": "y", "query": "Say hi.", "responses": []}\n'
    )
    out = tmp_path / "out.jsonl"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "grm.cli.main",
            "score",
            str(src),
            "--k",
            "2",
            "--max-new-tokens",
            "32",
            "--details",
            "-o",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT / "services")},
    )
    assert proc.returncode == 3, proc.stderr  # one line failed
    assert "item" in proc.stderr and "scored 1 item(s), 1 failed" in proc.stderr
    x, y = (json.loads(line) for line in out.read_text().splitlines())
    assert x["id"] == "x" and len(x["rewards"]) == 2 and x["k_requested"] == 2
    assert all(1 <= r <= 10 for r in x["rewards"]) and x["k_used"] >= 1
    assert x["model"]["backend"] == "embedded"
    assert len(x["samples"]) >= 2 and all("seed" in s and "order" in s for s in x["samples"])
    assert y["error"]["field"] == "responses" and y["line"] == 2
