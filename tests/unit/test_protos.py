"""The committed generated code must equal a fresh generation from protos/ (no drift)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_generated_code_matches_protos(tmp_path: Path) -> None:
    protos = sorted(
        str(p.relative_to(ROOT / "protos")) for p in (ROOT / "protos/grm/v1").glob("*.proto")
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            "-I",
            str(ROOT / "protos"),
            f"--python_out={tmp_path}",
            f"--pyi_out={tmp_path}",
            f"--grpc_python_out={tmp_path}",
            *protos,
        ],
        check=True,
        cwd=ROOT / "protos",
    )
    fresh = {p.relative_to(tmp_path): p.read_bytes() for p in (tmp_path / "grm/v1").iterdir()}
    committed = {
        p.relative_to(ROOT / "services"): p.read_bytes()
        for p in (ROOT / "services/grm/v1").iterdir()
        if p.name != "__init__.py" and p.is_file()
    }
    assert fresh.keys() == committed.keys(), "run scripts/dev.sh protos"
    stale = [str(k) for k in fresh if fresh[k] != committed[k]]
    assert not stale, f"generated code differs from protos/ in {stale}: run scripts/dev.sh protos"


def test_public_contract_names() -> None:
    from grm.v1 import critique_pb2, principle_pb2, reward_pb2

    assert {m.name for m in reward_pb2.DESCRIPTOR.services_by_name["RewardService"].methods} == {
        "Score",
        "ScoreBatch",
    }
    assert "PrincipleService" in principle_pb2.DESCRIPTOR.services_by_name
    assert "CritiqueService" in critique_pb2.DESCRIPTOR.services_by_name
    fields = reward_pb2.ScoreRequest.DESCRIPTOR.fields_by_name
    for name in (
        "query",
        "responses",
        "k",
        "k_meta",
        "aggregation",
        "latency_budget_ms",
        "principles",
    ):
        assert name in fields
    out = reward_pb2.ScoreResponse.DESCRIPTOR.fields_by_name
    for name in ("rewards", "votes", "k_used", "samples", "status"):
        assert name in out
