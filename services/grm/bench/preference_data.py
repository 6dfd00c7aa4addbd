"""Labeled preference pairs (Anthropic HH-RLHF format) as GRM scoring items.

Each HH-RLHF record holds two full dialogues that share every turn but the last assistant
turn; the shared turns become the context and the two last turns the responses. The caller
order is randomised per pair (deterministically), so a judge that always prefers position 1
cannot look accurate.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

_TURN = re.compile(r"\n\n(Human|Assistant): ")


@dataclass(frozen=True)
class PreferencePair:
    pair_id: str
    turns: tuple[tuple[str, str], ...]
    responses: tuple[str, str]
    best: int  # index of the preferred (chosen) response in `responses`


def split_dialogue(text: str) -> list[tuple[str, str]]:
    """'\\n\\nHuman: ...\\n\\nAssistant: ...' → [(role, content), ...]."""
    parts = _TURN.split(text)
    turns = []
    for i in range(1, len(parts) - 1, 2):
        role = "user" if parts[i] == "Human" else "assistant"
        turns.append((role, parts[i + 1].strip()))
    return turns


def to_pair(record: dict[str, str], pair_id: str) -> PreferencePair | None:
    """None when the two dialogues do not differ only in their last assistant turn."""
    chosen, rejected = split_dialogue(record["chosen"]), split_dialogue(record["rejected"])
    if not chosen or len(chosen) != len(rejected) or chosen[:-1] != rejected[:-1]:
        return None
    if chosen[-1][0] != "assistant" or rejected[-1][0] != "assistant":
        return None
    a, b = chosen[-1][1], rejected[-1][1]
    if not a or not b or a == b:
        return None
    flip = hashlib.sha256(pair_id.encode()).digest()[0] % 2 == 1
    responses, best = ((b, a), 1) if flip else ((a, b), 0)
    return PreferencePair(pair_id, tuple(chosen[:-1]), responses, best)


def load_pairs(
    path: str | Path, *, limit: int | None = None, max_chars: int | None = None
) -> Iterator[PreferencePair]:
    """Pairs from a .jsonl or .jsonl.gz file, in file order (optionally only short ones)."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    count = 0
    with opener(path, "rt", encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            record = json.loads(line)
            pair = to_pair(record, record.get("id", f"{path.name.split('.')[0]}:{line_no}"))
            if pair is None:
                continue
            size = sum(len(c) for _, c in pair.turns) + sum(len(r) for r in pair.responses)
            if max_chars is not None and size > max_chars:
                continue
            yield pair
            count += 1
            if limit is not None and count >= limit:
                return
