"""The SPCT correctness rule (paper Eq. 10) and its rule-based RL reward.

For n ≥ 2 responses a sample is correct iff the labeled best response scores strictly higher
than every other (ties are incorrect). With per-response 0/1 labels, every response labeled 1
must score strictly higher than every response labeled 0. For n = 1 the score must equal the
label: a 1-10 label is compared exactly; a 0/1 label is compared with the score mapped to
1 when it is at least `BINARY_THRESHOLD` (6: "meets only some parts" in the paper's prompt,
the lowest score that still credits the response) and to 0 below it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

BINARY_THRESHOLD = 6


@dataclass(frozen=True)
class Label:
    """Exactly one of: best index, per-response 0/1 labels, or (n = 1) a 1-10 score."""

    best: int | None = None
    binary: tuple[int, ...] | None = None
    score: int | None = None

    def check(self, n: int) -> None:
        """Raise ValueError when the label does not fit n responses."""
        given = sum(x is not None for x in (self.best, self.binary, self.score))
        if given != 1:
            raise ValueError("give exactly one of best, labels or score")
        if self.best is not None and not 0 <= self.best < n:
            raise ValueError(f"best={self.best} is not a response index (n={n})")
        if self.binary is not None:
            if len(self.binary) != n or any(b not in (0, 1) for b in self.binary):
                raise ValueError(f"labels must be {n} values of 0 or 1")
            if n >= 2 and len(set(self.binary)) != 2:
                raise ValueError("labels must mark at least one response 1 and one 0")
        if self.score is not None and (n != 1 or not 1 <= self.score <= 10):
            raise ValueError("score labels are for one response, in [1, 10]")
        if n == 1 and self.best is not None:
            raise ValueError("a single response needs labels=[0|1] or a score, not best")

    def best_index(self) -> int | None:
        """The one labeled-best response, when there is exactly one."""
        if self.best is not None:
            return self.best
        if self.binary is not None and len(self.binary) >= 2 and sum(self.binary) == 1:
            return self.binary.index(1)
        return None


def is_correct(scores: Sequence[int], label: Label) -> bool:
    """Does a sample's scores (caller order) agree with the label? Ties are incorrect."""
    n = len(scores)
    if n == 1:
        if label.score is not None:
            return scores[0] == label.score
        assert label.binary is not None
        return int(scores[0] >= BINARY_THRESHOLD) == label.binary[0]
    if label.best is not None:
        best = scores[label.best]
        return all(best > s for i, s in enumerate(scores) if i != label.best)
    assert label.binary is not None
    good = [s for s, b in zip(scores, label.binary, strict=True) if b == 1]
    bad = [s for s, b in zip(scores, label.binary, strict=True) if b == 0]
    return min(good) > max(bad)


def rl_reward(scores: Sequence[int] | None, label: Label) -> int:
    """+1 for a correct sample, -1 for a wrong or invalid one."""
    return 1 if scores is not None and is_correct(scores, label) else -1
