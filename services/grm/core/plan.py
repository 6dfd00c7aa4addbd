"""The request plan: what the aggregator decides for one request, made once and read everywhere.

A request carries a k, maybe a latency budget, and a gRPC deadline. The aggregator turns them
into one immutable `RequestPlan` (how many samples to draw, when to vote, when sampling must
end) before any work starts; the pipeline, the sampler pool and the caches read the plan and
never re-derive k or trim a deadline themselves. `Margins` is the one margin policy of the
whole suite: every hop keeps the same share of its time for its reply.

Times are `time.monotonic()` seconds inside one process. They cross process boundaries as
relative values (the gRPC timeout, `CritiqueRequest.vote_in_ms`) and become monotonic times
again on the other side (`SamplingJob.from_relative`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from grm.core.types import Aggregation, Context, ModelInfo, PrincipleMode, SamplingParams, ScoreItem


@dataclass(frozen=True)
class Margins:
    """How much of a span each step keeps for itself (the whole suite uses one instance)."""

    # Every hop (aggregator, sampler, principle generator) stops its own work this share of
    # its remaining time before its deadline, capped, so its answer still reaches its caller.
    reply_fraction: float = 0.05
    reply_max_s: float = 0.25
    # Anytime voting: with a latency budget, the vote happens at budget - clamp(fraction * budget).
    vote_fraction: float = 0.1
    vote_min_ms: float = 20.0
    vote_max_ms: float = 250.0
    # With less time than this left, a remote sampler call cannot return a sample.
    min_call_s: float = 0.02

    def reply_reserve_s(self, left_s: float) -> float:
        """The part of `left_s` seconds a hop keeps for sending its reply."""
        return min(self.reply_max_s, max(0.0, left_s) * self.reply_fraction)

    def work_deadline(self, deadline: float | None, now: float) -> float | None:
        """When this hop's own work must end, given the deadline its caller set (None: none)."""
        if deadline is None:
            return None
        return deadline - self.reply_reserve_s(deadline - now)

    def vote_margin_ms(self, budget_ms: float) -> float:
        """The part of a latency budget kept for voting and the reply."""
        return min(self.vote_max_ms, max(self.vote_min_ms, budget_ms * self.vote_fraction))

    def vote_cutoff_ms(self, budget_ms: float) -> float:
        """When, from the request's start, an anytime vote happens under `budget_ms`."""
        return budget_ms - self.vote_margin_ms(budget_ms)


MARGINS = Margins()


@dataclass(frozen=True)
class SamplingJob:
    """What every sample of one request shares, and when they are due (a sample source's input).

    `deadline`: the samples must be back by then. `vote_at`: the caller votes then (it has a
    latency budget); a sampler serves queued samples earliest vote first, the others share
    what is left fairly. `model`: the model every sample must come from (the aggregator pins
    it per request, so samplers serving different models are never mixed in one vote; None:
    whatever the source serves).
    """

    context: Context
    responses: tuple[str, ...]
    params: SamplingParams
    deadline: float | None = None
    vote_at: float | None = None
    model: ModelInfo | None = None
    reference: str = ""  # a reference answer the prompts show ("" = none)

    @classmethod
    def of(cls, item: ScoreItem) -> SamplingJob:
        """The job of an item with no deadline (local tools, benchmarks)."""
        return cls(item.context, item.responses, item.sampling, reference=item.reference)

    @classmethod
    def from_relative(
        cls,
        context: Context,
        responses: tuple[str, ...],
        params: SamplingParams,
        *,
        now: float,
        time_left_s: float | None,
        vote_in_s: float | None = None,
        margins: Margins = MARGINS,
        reference: str = "",
    ) -> SamplingJob:
        """A job received over the wire: this hop's work ends a reply reserve before the
        caller's deadline (`time_left_s` from now)."""
        deadline = None if time_left_s is None else now + time_left_s
        return cls(
            context,
            responses,
            params,
            deadline=margins.work_deadline(deadline, now),
            vote_at=None if vote_in_s is None else now + vote_in_s,
            reference=reference,
        )

    def time_left(self, now: float) -> float | None:
        """Seconds until the deadline (may be <= 0), or None without one."""
        return None if self.deadline is None else self.deadline - now

    def vote_in(self, now: float) -> float | None:
        """Seconds until the caller votes (may be <= 0: it waits past its budget), or None."""
        return None if self.vote_at is None else self.vote_at - now

    @property
    def urgency(self) -> float:
        """The sort key of queued work (lower first): the vote, else the deadline, else never."""
        return min((t for t in (self.vote_at, self.deadline) if t is not None), default=math.inf)

    @property
    def budgeted(self) -> bool:
        """Whether the caller votes at a latency budget (such work is served earliest vote
        first; work without a budget shares the slots fairly between requests)."""
        return self.vote_at is not None


@dataclass(frozen=True)
class RequestPlan:
    """One request as the aggregator will run it.

    `k_planned` ≤ `item.k` samples are drawn (the k planner's pick under the latency budget);
    sample indices, seeds and orders depend only on the item, never on the plan, so a cut k
    reuses the same cached samples as a full one. `deadline` is when sampling must end (the
    caller's deadline minus the aggregator's reply reserve); `vote_at` is the anytime vote
    (latency budget minus the vote margin), None without a budget. `model` is the model the
    sample source served when the plan was made: every sample and cache key of the request
    uses it (None: not known, e.g. local scoring before the model is loaded).
    """

    item: ScoreItem
    k_planned: int
    started: float
    deadline: float | None = None
    vote_at: float | None = None
    margins: Margins = MARGINS
    model: ModelInfo | None = None

    @property
    def k_requested(self) -> int:
        return self.item.k

    @property
    def budget_ms(self) -> int:
        return self.item.latency_budget_ms

    @property
    def shuffle(self) -> bool:
        """Each sample sees its own response order, except greedy (one sample, T=0) and
        single-sample requests, which see the caller's order."""
        return self.item.aggregation is not Aggregation.GREEDY and self.item.k > 1

    @property
    def resample_invalid(self) -> bool:
        """Whether a new seed can change an invalid sample (not at T=0 in a fixed order)."""
        return self.item.sampling.temperature > 0 or self.shuffle

    def k_meta(self, k_valid: int) -> int:
        """How many samples meta-vote keeps: the caller's k_meta (at most the valid ones), else
        half of the valid samples actually drawn (at least one)."""
        if self.item.k_meta is not None:
            return max(1, min(self.item.k_meta, k_valid))
        return max(1, k_valid // 2)

    def job(self, *, responses: tuple[str, ...] | None = None) -> SamplingJob:
        """The sampling job of this request (`responses=()` for query-only principles)."""
        item = self.item
        return SamplingJob(
            item.context,
            item.responses if responses is None else responses,
            item.sampling,
            deadline=self.deadline,
            vote_at=self.vote_at,
            model=self.model,
            reference=item.reference,
        )

    def principles_job(self) -> SamplingJob:
        """The principle generator's job: the query and the responses (the paper's
        conditioning), or the query alone in `separate-query` mode (reusable sets)."""
        if self.item.principle_mode is PrincipleMode.SEPARATE_QUERY:
            return self.job(responses=())
        return self.job()

    def time_left(self, now: float) -> float | None:
        return None if self.deadline is None else self.deadline - now

    def out_of_time(self, now: float) -> bool:
        """Whether too little time is left for a remote call to return a sample."""
        left = self.time_left(now)
        return left is not None and left <= self.margins.min_call_s


def plan_request(
    item: ScoreItem,
    *,
    now: float,
    caller_deadline: float | None,
    k_planned: int | None = None,
    margins: Margins = MARGINS,
    model: ModelInfo | None = None,
) -> RequestPlan:
    """The plan of one validated item: `caller_deadline` is the gRPC deadline (monotonic, None
    without one); `k_planned` the k planner's pick (None: all of item.k); `model` the model
    the request is pinned to."""
    k = item.k if k_planned is None else max(1, min(item.k, k_planned))
    vote_at = (
        now + margins.vote_cutoff_ms(item.latency_budget_ms) / 1000
        if item.latency_budget_ms
        else None
    )
    return RequestPlan(
        item=item,
        k_planned=k,
        started=now,
        deadline=margins.work_deadline(caller_deadline, now),
        vote_at=vote_at,
        margins=margins,
        model=model,
    )


def with_k(plan: RequestPlan, k_planned: int) -> RequestPlan:
    """The same plan drawing `k_planned` samples (clamped to 1..item.k)."""
    return replace(plan, k_planned=max(1, min(plan.item.k, k_planned)))
