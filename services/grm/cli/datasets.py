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

from grm.core.spct import Label

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


@dataclass(frozen=True)
class LabeledItem:
    """A scoring item with a preference label, from any supported input format."""

    item_id: object
    query: str
    turns: tuple[tuple[str, str], ...]
    responses: tuple[str, ...]
    label: Label


def _turns(value: object, field: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    if isinstance(value, str):
        return value, ()
    if isinstance(value, list) and all(
        isinstance(t, dict) and isinstance(t.get("role"), str) and isinstance(t.get("content"), str)
        for t in value
    ):
        return "", tuple((t["role"], t["content"]) for t in value)
    raise ValueError(f"{field} must be a string or a list of {{role, content}} turns")


def _completion(value: object, field: str) -> str:
    """A response given as a string or as a conversation ending in the assistant's turn."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and isinstance(value[-1], dict):
        content = value[-1].get("content")
        if isinstance(content, str):
            return content
    raise ValueError(f"{field} must be a string or a list of turns")


def labeled_item(record: dict, item_id: object) -> LabeledItem:
    """Native `{query, responses, best|labels|score}`, HH-RLHF `{chosen, rejected}` dialogues,
    or generic `{prompt, chosen, rejected}` records; raises ValueError naming the problem."""
    if "responses" in record:
        query, turns = _turns(record.get("query", ""), "query")
        responses = record["responses"]
        if not isinstance(responses, list) or not all(isinstance(r, str) for r in responses):
            raise ValueError("responses must be a list of strings")
        labels = record.get("labels")
        label = Label(
            best=record.get("best"),
            binary=tuple(labels) if isinstance(labels, list) else labels,
            score=record.get("score"),
        )
        label.check(len(responses))
        return LabeledItem(item_id, query, turns, tuple(responses), label)
    if "chosen" in record and "rejected" in record and "prompt" in record:
        query, turns = _turns(record["prompt"], "prompt")
        chosen = _completion(record["chosen"], "chosen")
        rejected = _completion(record["rejected"], "rejected")
        flip = hashlib.sha256(str(item_id).encode()).digest()[0] % 2 == 1
        responses, best = ((rejected, chosen), 1) if flip else ((chosen, rejected), 0)
        return LabeledItem(item_id, query, turns, responses, Label(best=best))
    if isinstance(record.get("chosen"), str) and isinstance(record.get("rejected"), str):
        pair = to_pair(record, str(item_id))
        if pair is None:
            raise ValueError("chosen and rejected dialogues must differ only in the last turn")
        return LabeledItem(item_id, "", pair.turns, pair.responses, Label(best=pair.best))
    raise ValueError(
        "expected {query, responses, best|labels|score}, {prompt, chosen, rejected} "
        "or HH-RLHF {chosen, rejected}"
    )
