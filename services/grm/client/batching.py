"""Batching for `score_many`: any number of items in as many ScoreBatch calls as it takes.

Why: one ScoreBatch is bounded twice — by the gRPC message limit (`max_message_mb` on both
ends, 64 MiB by default) and by the aggregator's `--max-batch-items` (256 by default). A
training step or a JSONL file can exceed either, and a batch the server refuses fails every
item in it. So the clients split: items are packed in input order into calls whose exact
serialized size and item count stay within both limits; an item too large to fit any call
gets its own INVALID_ARGUMENT and the others still score.

Sizes are exact, not guessed: in `ScoreBatchRequest` (`repeated ScoreRequest items = 1`)
each item costs its tag (1 byte), its length as a varint, and its `ByteSize()`, so a
batch's serialized size is the sum of its items' costs.

Items that come back with a transient status (UNAVAILABLE, RESOURCE_EXHAUSTED: a sampler
lost mid-item, an admission limit) are sent again in a call of their own (`BatchRun.retry`),
with the client's backoff, as long as the call's deadline allows; the others keep their
outcome.

This module is pure (no I/O): `GrmClient.score_many` and `AsyncGrmClient.score_many` only
send the calls a `BatchRun` plans and hand the replies back to it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from grm.client._common import BatchOutcome, ItemLike, RetryPolicy, as_request
from grm.core.errors import GrmError, InvalidArgumentError
from grm.core.types import ScoreResult
from grm.v1 import reward_pb2

DEFAULT_MAX_BATCH_ITEMS = 256  # the aggregator's default --max-batch-items
DEFAULT_CONCURRENCY = 4  # ScoreBatch calls in flight at once (AsyncGrmClient.score_many)

_ITEMS_TAG_BYTES = 1  # field 1, wire type 2: one byte
_ITEM_FIELD = re.compile(r"^items\[(\d+)\]")


@dataclass(frozen=True)
class ScoredItem:
    """The outcome of one input item: a result or an error, never both, never a fake 0."""

    index: int  # position in the caller's input
    result: ScoreResult | None = None
    error: GrmError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def status(self) -> str:
        """`complete` / `partial` / `degraded`, or the error's code (e.g. `INVALID_ARGUMENT`)."""
        if self.error is not None:
            return self.error.code
        assert self.result is not None
        return str(self.result.status)

    @property
    def rewards(self) -> tuple[float, ...] | None:
        """The rewards (one per response), or None when the item failed."""
        return None if self.result is None else self.result.rewards


@dataclass(frozen=True)
class BatchCall:
    """One ScoreBatch to send: the caller indices of its items and the built request."""

    number: int
    indices: tuple[int, ...]
    request: reward_pb2.ScoreBatchRequest


def varint_size(value: int) -> int:
    """Bytes of a protobuf varint (lengths are never negative)."""
    size = 1
    while value >= 0x80:
        value >>= 7
        size += 1
    return size


def item_cost(request: reward_pb2.ScoreRequest) -> int:
    """What one item adds to a ScoreBatchRequest's serialized size."""
    size = request.ByteSize()
    return _ITEMS_TAG_BYTES + varint_size(size) + size


def plan_batches(
    costs: Sequence[int | None], *, max_bytes: int, max_items: int
) -> tuple[list[list[int]], list[int]]:
    """Pack items (by index, in order) into batches within `max_bytes` and `max_items`.

    `costs[i]` is item i's `item_cost`, or None for an item that is not to be sent. Returns
    the batches and the indices of items that alone exceed `max_bytes`. Greedy in input
    order, so each batch holds items in the order given and results map back trivially.
    """
    if max_items < 1:
        raise ValueError(f"max_items must be at least 1, not {max_items}")
    if max_bytes < 1:
        raise ValueError(f"max_bytes must be at least 1, not {max_bytes}")
    batches: list[list[int]] = []
    oversize: list[int] = []
    current: list[int] = []
    used = 0
    for index, cost in enumerate(costs):
        if cost is None:
            continue
        if cost > max_bytes:
            oversize.append(index)
            continue
        if current and (used + cost > max_bytes or len(current) >= max_items):
            batches.append(current)
            current, used = [], 0
        current.append(index)
        used += cost
    if current:
        batches.append(current)
    return batches, oversize


def with_budget(
    request: reward_pb2.ScoreRequest, latency_budget_ms: int | None
) -> reward_pb2.ScoreRequest:
    """The request with a call-level latency budget, unless it carries its own (a copy)."""
    if not latency_budget_ms or request.latency_budget_ms:
        return request
    copy = reward_pb2.ScoreRequest()
    copy.CopyFrom(request)
    copy.latency_budget_ms = latency_budget_ms
    return copy


def _with_field(error: GrmError, field: str) -> GrmError:
    """The same error (class, code, message) naming another field."""
    message = str(error)
    if error.field and message.startswith(f"{error.field}: "):
        message = message[len(error.field) + 2 :]
    renamed = type(error)(message, field=field)
    renamed.code = error.code
    return renamed


def _item_field(index: int, field: str | None) -> str:
    return f"items[{index}].{field}" if field else f"items[{index}]"


def _renumber(error: GrmError, index: int) -> GrmError:
    """A server error naming `items[j]` of one call, renamed to the caller's `items[index]`."""
    if not error.field or not _ITEM_FIELD.match(error.field):
        return error
    return _with_field(error, _ITEM_FIELD.sub(f"items[{index}]", error.field))


class BatchRun:
    """One `score_many`: the planned calls, then the outcomes as the replies come back."""

    def __init__(
        self,
        items: Iterable[ItemLike],
        *,
        max_bytes: int,
        max_items: int = DEFAULT_MAX_BATCH_ITEMS,
        latency_budget_ms: int | None = None,
    ) -> None:
        self._outcomes: list[ScoredItem | None] = []
        requests: list[reward_pb2.ScoreRequest | None] = []
        for index, item in enumerate(items):
            try:
                requests.append(with_budget(as_request(item), latency_budget_ms))
                self._outcomes.append(None)
            except GrmError as exc:
                requests.append(None)
                error = _with_field(exc, _item_field(index, exc.field))
                self._outcomes.append(ScoredItem(index, error=error))
            except (TypeError, ValueError, KeyError) as exc:  # not score() keywords
                requests.append(None)
                error = InvalidArgumentError(f"not a score item: {exc}", field=f"items[{index}]")
                self._outcomes.append(ScoredItem(index, error=error))
        self._requests = requests
        self._retries = 0
        costs = [None if r is None else item_cost(r) for r in requests]
        batches, oversize = plan_batches(costs, max_bytes=max_bytes, max_items=max_items)
        for index in oversize:
            cost = costs[index]
            error = InvalidArgumentError(
                f"is {cost} bytes serialized, over the {max_bytes}-byte message limit "
                "(shorten it, or raise max_message_mb on client and server)",
                field=f"items[{index}]",
            )
            self._outcomes[index] = ScoredItem(index, error=error)
        self.calls: list[BatchCall] = [
            BatchCall(
                number,
                tuple(indices),
                reward_pb2.ScoreBatchRequest(items=[requests[i] for i in indices]),
            )
            for number, indices in enumerate(batches)
        ]

    @classmethod
    def one_call(
        cls, items: Sequence[ItemLike], *, latency_budget_ms: int | None = None
    ) -> BatchRun:
        """All items in one call (`score_batch`); an item that cannot be sent (e.g. text that
        cannot be encoded) is an INVALID_ARGUMENT of its own and the others still go."""
        return cls(
            items,
            max_bytes=2**62,
            max_items=max(1, len(items)),
            latency_budget_ms=latency_budget_ms,
        )

    def record(self, call: BatchCall, reply: Sequence[BatchOutcome] | GrmError) -> None:
        """A call's per-item outcomes, or the error that failed the whole call."""
        if not isinstance(reply, GrmError) and len(reply) != len(call.indices):
            reply = GrmError(f"the server answered {len(reply)} items for {len(call.indices)}")
        for pos, index in enumerate(call.indices):
            outcome = reply if isinstance(reply, GrmError) else reply[pos]
            if isinstance(outcome, GrmError):
                self._outcomes[index] = ScoredItem(index, error=_renumber(outcome, index))
            else:
                self._outcomes[index] = ScoredItem(index, result=outcome)

    def retry(self, call: BatchCall, policy: RetryPolicy, attempt: int) -> BatchCall | None:
        """A call re-sending the items of `call` that failed with a status `policy` retries
        (None when there are none, or `attempt` was the last the policy allows)."""
        codes = {code.name for code in policy.codes}
        again = [
            index
            for index in call.indices
            if (outcome := self._outcomes[index]) is not None
            and outcome.error is not None
            and outcome.error.code in codes
        ]
        if not again or attempt + 1 >= policy.max_attempts:
            return None
        self._retries += len(again)
        items = [self._requests[i] for i in again]
        return BatchCall(call.number, tuple(again), reward_pb2.ScoreBatchRequest(items=items))

    @property
    def retried(self) -> int:
        """Item re-sends so far (each retried item counts once per retry)."""
        return self._retries

    def outcomes(self) -> list[BatchOutcome]:
        """`results()` as ScoreBatch outcomes: a ScoreResult or a GrmError per item."""
        out: list[BatchOutcome] = []
        for scored in self.results():
            assert scored.result is not None or scored.error is not None
            out.append(scored.error if scored.error is not None else scored.result)  # type: ignore[arg-type]
        return out

    def results(self) -> list[ScoredItem]:
        """One ScoredItem per input item, in input order (after every call was recorded)."""
        missing = [i for i, o in enumerate(self._outcomes) if o is None]
        if missing:
            raise RuntimeError(f"items {missing[:5]} were never recorded")
        return list(self._outcomes)  # type: ignore[arg-type]
