"""Bounded load through real processes (`grm bench load`): within capacity, beyond the
admission limit, and a short soak whose aggregator memory must stay flat.

Latencies (served and rejected calls, p50/p99) are printed and written to the JSON, never
asserted; what is asserted is behaviour: no error within capacity, only fast-path
RESOURCE_EXHAUSTED beyond it, and no growth of RSS or sockets over the soak.
"""

from __future__ import annotations

import json
from pathlib import Path

from grm_dev.bench.__main__ import main

MAX_INFLIGHT = 6
RSS_GROWTH_LIMIT_KIB = 4 * 1024  # over ~15 s / thousands of calls after the warm-up
SOCKET_TOLERANCE = 2


def test_load_within_capacity_beyond_the_limit_and_a_flat_soak(tmp_path: Path) -> None:
    argv = [
        "load", "--k", "2", "--max-inflight", str(MAX_INFLIGHT), "--concurrency", "4",
        "--duration-s", "3", "--overload-concurrency", "24", "--overload-s", "3",
        "--soak-s", "20", "--soak-warmup-s", "5", "--rss-interval-s", "1",
        "--latency-ms", "20", "--out", str(tmp_path),
    ]  # fmt: skip
    assert main(argv) == 0
    doc = json.loads((tmp_path / "load.json").read_text())
    assert doc["admission"] == {"max_inflight_requests": MAX_INFLIGHT}

    capacity = doc["capacity"]
    assert capacity["served"] > 0
    assert capacity["rejected"] == 0 and capacity["errors"] == {}  # within capacity: no error

    overload = doc["overload"]
    assert overload["served"] > 0 and overload["rejected"] > 0
    assert overload["errors"] == {}  # beyond it: served or RESOURCE_EXHAUSTED, nothing else
    reject = overload["rejection_latency"]
    assert reject["p99_ms"] >= reject["p50_ms"] > 0

    soak = doc["soak"]
    assert soak["served"] > 0 and soak["rejected"] == 0 and soak["errors"] == {}
    assert len(soak["rss_samples"]) >= 5
    growth = soak["rss_last_kib"] - soak["rss_first_kib"]
    print(
        f"\nadmission limit {MAX_INFLIGHT}: rejections p50 {reject['p50_ms']:.1f} ms, "
        f"p99 {reject['p99_ms']:.1f} ms ({overload['rejected']} rejected, "
        f"{overload['served']} served); soak {soak['served']} calls, RSS "
        f"{soak['rss_first_kib']} -> {soak['rss_last_kib']} KiB (max {soak['rss_max_kib']}), "
        f"sockets {soak['sockets_first']} -> {soak['sockets_last']}"
    )
    assert growth <= RSS_GROWTH_LIMIT_KIB, f"aggregator RSS grew {growth} KiB during the soak"
    assert soak["sockets_last"] <= soak["sockets_first"] + SOCKET_TOLERANCE
