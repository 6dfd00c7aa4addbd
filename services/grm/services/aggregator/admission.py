"""Admission control for the aggregator: bounded in-flight work, rejected at once beyond it.

A reward service in a training loop must shed load with a fast RESOURCE_EXHAUSTED (which the
client SDK retries with jittered backoff), never by queueing until callers time out. Two
limits apply together: scoring requests in flight (a ScoreBatch counts each of its items)
and samples queued for them (each item counts its k). No await happens between the check
and the reservation, so the counters are exact on the event loop.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

from grm.core.errors import ResourceExhaustedError


@dataclass(frozen=True)
class AdmissionLimits:
    """0 = unlimited."""

    max_inflight_requests: int = field(
        default=512,
        metadata={
            "help": "scoring requests in flight (a batch counts its items); "
            "beyond: RESOURCE_EXHAUSTED"
        },
    )
    max_queued_samples: int = field(
        default=8192,
        metadata={
            "help": "samples (k per item) in flight; beyond: RESOURCE_EXHAUSTED (0 = unlimited)"
        },
    )


class Admission:
    """Counts admitted requests and their samples; `admit` reserves or raises at once."""

    def __init__(self, limits: AdmissionLimits | None = None) -> None:
        self.limits = limits or AdmissionLimits()
        self.inflight = 0
        self.samples = 0
        self.rejected = 0

    def fits(self, requests: int, samples: int) -> bool:
        if self.inflight == 0:
            return True  # an idle server takes any one valid request (no permanent refusal)
        lim = self.limits
        if lim.max_inflight_requests and self.inflight + requests > lim.max_inflight_requests:
            return False
        return not (lim.max_queued_samples and self.samples + samples > lim.max_queued_samples)

    def reserve(self, requests: int, samples: int) -> None:
        """Take the capacity (or raise ResourceExhaustedError) without waiting."""
        if not self.fits(requests, samples):
            self.rejected += 1
            raise ResourceExhaustedError(
                f"overloaded: {self.inflight} requests / {self.samples} samples in flight "
                f"(limits {self.limits.max_inflight_requests} / "
                f"{self.limits.max_queued_samples}); retry with backoff"
            )
        self.inflight += requests
        self.samples += samples

    def release(self, requests: int, samples: int) -> None:
        self.inflight -= requests
        self.samples -= samples

    @contextlib.contextmanager
    def admit(self, requests: int = 1, samples: int = 0) -> Iterator[None]:
        self.reserve(requests, samples)
        try:
            yield
        finally:
            self.release(requests, samples)
