"""Smoke runs of the suite benchmarks (`grm bench overhead|fanout|throughput|cache|chaos|all`).

Each scenario runs end to end with tiny settings: the scripted `grm dev-tgi` and `grm up
--backend tgi` as real child processes on loopback. No timing is asserted, only that the
JSON has the expected keys and positive numbers.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from grm_dev.bench.__main__ import main


def _run(tmp_path: Path, *argv: str) -> dict:
    assert main([*argv, "--out", str(tmp_path)]) == 0
    doc = json.loads((tmp_path / f"{argv[0]}.json").read_text())
    assert doc["scenario"] == argv[0] and doc["command"]
    return doc


def test_overhead_smoke(tmp_path: Path) -> None:
    doc = _run(tmp_path, "overhead", "--ks", "1,2", "--reps", "2", "--warmup", "1")
    assert doc["ks"] == [1, 2]
    for k in ("1", "2"):
        r = doc["results"][k]
        for path in ("suite", "direct"):
            assert r[path]["p50_ms"] > 0 and r[path]["p99_ms"] >= r[path]["p50_ms"]
            assert len(doc["times_s"][k][path]) == 2
        assert r["ratio_p50"] > 0 and r["ratio_p99"] > 0


def test_overhead_smoke_on_both_backends(tmp_path: Path) -> None:
    """`--backend both`: the TGI and the openai backend measured in one run, side by side."""
    doc = _run(
        tmp_path, "overhead", "--backend", "both", "--dialect", "sglang",
        "--ks", "2", "--reps", "2", "--warmup", "1", "--samplers", "1",
    )  # fmt: skip
    assert set(doc["by_backend"]) == {"tgi", "openai"} and doc["dialect"] == "sglang"
    for backend in ("tgi", "openai"):
        r = doc["by_backend"][backend]["2"]
        assert r["suite"]["p50_ms"] > 0 and r["direct"]["p50_ms"] > 0 and r["ratio_p50"] > 0
    assert doc["results"] == doc["by_backend"]["tgi"]


def test_fanout_smoke(tmp_path: Path) -> None:
    doc = _run(tmp_path, "fanout", "--ks", "2", "--reps", "2", "--warmup", "1")
    assert doc["ks"] == [1, 2]
    assert doc["results"]["1"]["ratio_p50"] == 1.0
    assert doc["results"]["2"]["p50_ms"] > 0 and doc["results"]["2"]["ratio_p50"] > 0


def test_throughput_smoke(tmp_path: Path) -> None:
    doc = _run(
        tmp_path, "throughput", "--k", "2", "--concurrency", "2",
        "--duration-s", "0.5", "--warmup-s", "0.2",
    )  # fmt: skip
    assert set(doc["results"]) == {"1", "2"}
    for r in doc["results"].values():
        assert r["calls"] > 0 and r["calls_per_s"] > 0
        assert r["samples_per_s"] == r["calls_per_s"] * 2 and r["scaling_vs_first"] > 0


def test_locality_keeps_an_item_on_one_endpoint_and_least_loaded_spreads_it(
    tmp_path: Path,
) -> None:
    """Endpoint counts are logic (rendezvous choice with free slots; least loaded spreads
    k = 4 concurrent samples over 4 idle endpoints), so they are asserted; latency is not."""
    doc = _run(
        tmp_path, "locality", "--items", "3", "--warmup", "1", "--k", "4",
        "--concurrency", "1", "--latency-ms", "20", "--context-words", "200",
    )  # fmt: skip
    on, off = doc["results"]["locality"], doc["results"]["least-loaded"]
    assert on["endpoints_per_item"]["1"] == 3 and on["endpoints_per_item_max"] == 1
    assert off["endpoints_per_item_mean"] > 1
    assert on["prefill_tokens"] < off["prefill_tokens"]
    assert on["p50_ms"] > 0 and off["p50_ms"] > 0


def test_cache_smoke(tmp_path: Path) -> None:
    doc = _run(
        tmp_path, "cache", "--k", "2", "--reps", "2", "--prompts", "2", "--group", "2",
        "--epochs", "2", "--parallel", "4", "--k-incremental", "2,4",
    )  # fmt: skip
    assert doc["hit_miss"]["miss"]["p50_ms"] > 0 and doc["hit_miss"]["hit"]["p50_ms"] > 0
    grpo = doc["grpo"]
    assert grpo["fresh"]["backend_samples"] == 2 * 2 * 2 * 2  # every sample drawn
    assert 0 < grpo["same"]["backend_samples"] < grpo["fresh"]["backend_samples"]
    assert grpo["saved_samples"] > 0
    inc = doc["incremental"]
    assert inc["first"]["backend_samples"] == 2 and inc["cold"]["backend_samples"] == 4
    assert inc["grown"]["backend_samples"] > 0


def test_all_smoke(tmp_path: Path) -> None:
    """`grm bench all --tiny`: every listed scenario runs, plots, and lands in one summary."""
    only = "overhead,fanout,throughput,cache,tgi-client,embedded"
    assert main(["all", "--tiny", "--only", only, "--out", str(tmp_path)]) == 0
    doc = json.loads((tmp_path / "all.json").read_text())
    assert doc["command"].startswith("grm bench all") and doc["wall_s"] > 0
    for name in only.split(","):
        entry = doc["scenarios"][name]
        assert entry["status"] == "ok", entry
        result = json.loads((tmp_path / f"{name}.json").read_text())
        # the scenario's own JSON has its exact command (not `all`'s) and its settings
        assert result["command"] == entry["command"] and result["command"].startswith(
            f"grm bench {name} "
        )
        assert result["settings"]["out"] == str(tmp_path)
    for name in ("overhead", "fanout", "throughput", "cache", "embedded"):
        assert (tmp_path / f"{name}.png").stat().st_size > 0
    assert "overhead" in (tmp_path / "summary.md").read_text()


def test_throughput_with_score_batch_calls(tmp_path: Path) -> None:
    doc = _run(
        tmp_path, "throughput", "--k", "2", "--concurrency", "1", "--batch-items", "3",
        "--samplers", "1", "--duration-s", "0.5", "--warmup-s", "0.2",
    )  # fmt: skip
    assert doc["batch_items"] == 3
    r = doc["results"]["1"]
    cpu = r["cpu_us_per_sample"]
    assert r["suite_cpu_us_per_sample"] == pytest.approx(cpu["aggregator"] + cpu["sampler-0"])
    assert r["calls"] > 0 and r["calls"] % 3 == 0  # whole batches, every item checked
    assert r["samples_per_s"] == r["calls_per_s"] * 2


def test_throughput_cpu_per_service(tmp_path: Path) -> None:
    doc = _run(
        tmp_path, "throughput", "--k", "2", "--concurrency", "2", "--samplers", "2",
        "--duration-s", "0.5", "--warmup-s", "0.2",
    )  # fmt: skip
    cpu = doc["results"]["2"]["cpu_us_per_sample"]
    assert {"aggregator", "sampler-0", "sampler-1", "dev-tgi"} <= set(cpu)
    assert all(v >= 0 for v in cpu.values())


def test_chaos_smoke(tmp_path: Path) -> None:
    """A few seconds of chaos: services killed and restarted, engine faults injected. Every
    reward that came back COMPLETE equals the fault-free replay's, none is 0, and every
    failure has a typed status (correctness, not timing, is asserted)."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (scripts/dev.sh setup installs it)")
    doc = _run(
        tmp_path, "chaos", "--duration-s", "6", "--warmup-s", "1", "--chaos-interval-s", "1.5",
        "--down-s", "1", "--concurrency", "2", "--seed", "3",
    )  # fmt: skip
    assert doc["requests"] > 0 and doc["complete_replayed"] > 0
    assert doc["wrong_rewards"] == 0, doc["wrong_examples"]
    assert doc["replay_failed"] == {}  # every COMPLETE request was compared
    assert doc["zero_rewards"] == 0 and doc["untyped_failures"] == 0
    assert sum(doc["by_status"].values()) == doc["requests"]
    assert doc["chaos_actions"] >= 1 and len(doc["actions"]) == doc["chaos_actions"]
    for side in ("aggregator_before", "aggregator_after"):
        assert doc[side]["fds"] > 0 and doc[side]["rss_kib"] > 0
