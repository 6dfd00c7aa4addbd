"""The dev servers' prefix-cache model (`--prefix-cost-ms`): what a prompt pays for."""

from __future__ import annotations

from grm_dev.devtgi.prefix import Prefill, PrefixCache

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


async def test_prefill_pays_per_thousand_fresh_tokens_one_prompt_at_a_time() -> None:
    import asyncio

    off = Prefill(0.0, 100)
    await off.run(SHARED)
    assert off.cache.miss_tokens == 0  # no model without a cost
    prefill = Prefill(1.0, 100)
    await asyncio.gather(prefill.run(SHARED), prefill.run([*SHARED, 1]))
    # The second waited for the first and then found the shared prefix cached.
    assert prefill.cache.miss_tokens == 161 and prefill.cache.hit_tokens == 160
