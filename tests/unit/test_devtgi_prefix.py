"""The dev servers' prefix-cache model (`--prefix-cost-ms`): what a prompt pays for."""

from __future__ import annotations

from grm_dev.devtgi.app import FaultSettings, prefix_delay_s
from grm_dev.devtgi.prefix import PrefixCache

SHARED = list(range(1000, 1160))  # 160 tokens = 10 blocks of 16


def test_a_seen_prefix_is_not_paid_again() -> None:
    cache = PrefixCache()
    assert cache.admit([*SHARED, 1, 2, 3]) == 163  # cold: every token
    # Same prefix, another tail: only the tokens after the cached whole blocks.
    assert cache.admit([*SHARED, 7, 8, 9]) == 3
    assert cache.hit_tokens == 160 and cache.miss_tokens == 166


def test_blocks_match_only_after_the_same_whole_prefix() -> None:
    cache = PrefixCache()
    cache.admit(SHARED)
    # The same later blocks behind a different first token: nothing is reused.
    assert cache.admit([0, *SHARED[1:]]) == 160


def test_least_recently_used_blocks_go_first() -> None:
    cache = PrefixCache(capacity_blocks=10)
    cache.admit(SHARED)
    cache.admit(list(range(5000, 5160)))  # ten other blocks push the first prompt out
    assert cache.admit(SHARED) == 160


def test_the_delay_is_per_thousand_fresh_tokens_and_off_by_default() -> None:
    tokens = [(t, "x") for t in SHARED]
    assert prefix_delay_s(PrefixCache(), FaultSettings(), tokens) == 0.0
    cache = PrefixCache()
    faults = FaultSettings(prefix_cost_ms=50.0)
    assert prefix_delay_s(cache, faults, tokens) == 50.0 * 160 / 1_000_000
    assert prefix_delay_s(cache, faults, tokens) == 0.0
