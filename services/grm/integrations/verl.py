"""verl: a custom reward function (`custom_reward_function.path` / `.name`).

    # verl config (ppo_trainer.yaml):
    custom_reward_function:
      path: <site-packages>/grm/integrations/verl.py   # or a file that imports it
      name: compute_score
    # and in the environment of the reward workers: GRM_TARGET=aggregator:50051

verl calls `compute_score(data_source, solution_str, ground_truth, extra_info=None)` once per
response and uses the float it returns. `solution_str` is the response only, so the prompt
must come from `extra_info` — its "query", "question", "prompt" or "problem" entry (verl's
data preprocessing scripts put the question there; a chat prompt as a list of
{"role", "content"} works too). `ground_truth` is shown to the judge as the reference answer
when `configure(use_ground_truth=True)` (reference-guided scoring; off by default: the GRM
then judges without a reference). The reward is the suite's mean score on the 1–10 scale.

verl has no "no reward" value, so a failure raises `GrmRewardError` (with the cause) rather than
returning 0, which would be a real reward. The address comes from `configure(target=...)`
or the GRM_TARGET environment variable (default 127.0.0.1:50051); Score options (k, ...) from
`configure(**fields)`. `compute_score_batch` serves verl's batch reward manager
(`reward_model.reward_manager=batch`), grouping the responses of one prompt into one Score.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from grm.client import GrmClient
from grm.core.errors import GrmError
from grm.integrations.groups import (
    DEFAULT_BATCH_ITEMS,
    DEFAULT_GROUP_SIZE,
    Query,
    as_query,
    as_reference,
    plan_groups,
    score_groups,
    spread,
)

DEFAULT_TARGET = "127.0.0.1:50051"
QUERY_KEYS = ("query", "question", "prompt", "problem")


class GrmRewardError(RuntimeError):
    """The suite could not score a response (verl has no None reward; this stops the step)."""


_lock = threading.Lock()
_state: dict[str, Any] = {
    "target": None,
    "client": None,
    "fields": {},
    "timeout": 600.0,
    "use_ground_truth": False,
}


def configure(
    target: str | None = None,
    *,
    timeout: float | None = 600.0,
    group_size: int = DEFAULT_GROUP_SIZE,
    use_ground_truth: bool = False,
    **score_fields: Any,
) -> None:
    """Set the aggregator address and Score options (k, aggregation, ...) for compute_score;
    `use_ground_truth` shows each response's ground_truth to the judge as its reference."""
    with _lock:
        if _state["client"] is not None:
            _state["client"].close()
        _state.update(
            target=target,
            client=None,
            fields=dict(score_fields),
            timeout=timeout,
            group_size=group_size,
            use_ground_truth=use_ground_truth,
        )


def _client() -> GrmClient:
    with _lock:
        if _state["client"] is None:
            target = _state["target"] or os.environ.get("GRM_TARGET") or DEFAULT_TARGET
            _state["client"] = GrmClient(target, timeout=_state["timeout"])
        return _state["client"]


def query_of(extra_info: Mapping[str, Any] | None) -> Query:
    """The prompt a response answers, from verl's extra_info."""
    for key in QUERY_KEYS:
        value = (extra_info or {}).get(key)
        if value:
            return as_query(_plain(value))
    raise GrmRewardError(
        "grm: extra_info has no prompt: add the question as extra_info['question'] (or 'query',"
        " 'prompt', 'problem') in the dataset; the GRM judges a response against its prompt"
    )


def _plain(value: Any) -> Any:
    """numpy arrays of chat turns (as parquet gives them back) to plain lists."""
    return value.tolist() if hasattr(value, "tolist") else value


def compute_score(
    data_source: str,
    solution_str: str,
    ground_truth: Any,
    extra_info: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> float:
    """verl's custom reward: the suite's reward for one response; raises GrmRewardError."""
    query = query_of(extra_info)
    fields = dict(_state["fields"])
    if _state["use_ground_truth"] and (reference := as_reference(ground_truth)):
        fields["reference"] = reference
    try:
        result = _client().score(query, [solution_str], timeout=_state["timeout"], **fields)
    except GrmError as exc:
        raise GrmRewardError(f"grm: could not score ({data_source}): {exc}") from exc
    return float(result.rewards[0])


def compute_score_batch(
    data_sources: Sequence[str],
    solution_strs: Sequence[str],
    ground_truths: Sequence[Any],
    extra_infos: Sequence[Mapping[str, Any] | None],
    **kwargs: Any,
) -> list[float]:
    """verl's batch reward manager contract; responses of one prompt scored together."""
    queries = [query_of(e) for e in extra_infos]
    references = [as_reference(g) for g in ground_truths] if _state["use_ground_truth"] else None
    groups = plan_groups(
        queries,
        list(solution_strs),
        group=True,
        group_size=_state.get("group_size", DEFAULT_GROUP_SIZE),
        references=references,
    )
    client = _client()
    outcomes = score_groups(
        lambda items: client.score_batch(items, timeout=_state["timeout"]),
        groups,
        _state["fields"],
        batch_items=DEFAULT_BATCH_ITEMS,
    )
    rewards = spread(groups, outcomes, len(solution_strs))
    failed = [(i, r) for i, r in enumerate(rewards) if isinstance(r, GrmError)]
    if failed:
        i, exc = failed[0]
        raise GrmRewardError(
            f"grm: {len(failed)} of {len(rewards)} responses could not be scored; "
            f"first: #{i} ({data_sources[i]}): {exc}"
        )
    return [float(r) for r in rewards]  # type: ignore[arg-type]
