"""A model of an engine's prefix cache, for the dev servers' `--prefix-cost-ms` option.

Engines keep the attention state of prompt prefixes they computed (vLLM's automatic prefix
caching, SGLang's RadixAttention, TGI's prefix caching) and skip recomputing them: a request
pays prefill only for the tokens after the longest prefix the server has seen. Like vLLM, this
model cuts the prompt into fixed blocks of tokens, names each block by a hash of every token up
to its end (a block is reused only after the same whole prefix), and keeps the most recently
used blocks (LRU). A request's extra latency is proportional to its tokens not in the cache,
and prefills run one at a time per server (`Prefill`), so recomputed prefixes queue.

One cache per server: the k samples of one item sent to one endpoint pay for their shared
prefix once; spread over four endpoints they pay for it on each.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
from collections.abc import Sequence

BLOCK_TOKENS = 16  # vLLM's default block size


class PrefixCache:
    """Blocks of prompt prefixes a server has computed, most recently used last."""

    def __init__(self, capacity_blocks: int = 65_536, block_tokens: int = BLOCK_TOKENS) -> None:
        self.capacity = capacity_blocks
        self.block = block_tokens
        self._blocks: collections.OrderedDict[bytes, None] = collections.OrderedDict()
        self.hit_tokens = 0
        self.miss_tokens = 0

    def _chain(self, token_ids: Sequence[int]) -> list[bytes]:
        """One key per full block: the hash of the previous block's key and this block."""
        keys: list[bytes] = []
        key = b""
        for start in range(0, len(token_ids) - self.block + 1, self.block):
            chunk = ",".join(map(str, token_ids[start : start + self.block])).encode()
            key = hashlib.blake2b(key + chunk, digest_size=12).digest()
            keys.append(key)
        return keys

    def admit(self, token_ids: Sequence[int]) -> int:
        """Tokens of this prompt not in the cache (what prefill computes); the prompt's blocks
        are cached afterwards."""
        keys = self._chain(token_ids)
        cached = 0
        for key in keys:
            if key not in self._blocks:
                break
            cached += 1
        for key in keys:
            self._blocks[key] = None
            self._blocks.move_to_end(key)
        while len(self._blocks) > self.capacity:
            self._blocks.popitem(last=False)
        fresh = len(token_ids) - cached * self.block
        self.hit_tokens += len(token_ids) - fresh
        self.miss_tokens += fresh
        return fresh


class Prefill:
    """A server's prefill: one prompt at a time (the compute-bound phase of an engine's step;
    decoding, the scripted latency, overlaps), each paying `cost_ms` per 1,000 tokens not in
    the prefix cache. A request that shares a prefix with one being computed waits for it
    and then reads the prefix from the cache, as an engine batching both would."""

    def __init__(self, cost_ms: float, capacity_blocks: int) -> None:
        self.cost_ms = cost_ms
        self.cache = PrefixCache(capacity_blocks)
        self._lock = asyncio.Lock()

    async def run(self, token_ids: Sequence[int]) -> None:
        if self.cost_ms <= 0:
            return
        async with self._lock:
            fresh = self.cache.admit(token_ids)
            await asyncio.sleep(self.cost_ms * fresh / 1_000_000)
