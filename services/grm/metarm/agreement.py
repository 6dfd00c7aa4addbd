"""A model-free meta RM: agreement with the leave-one-out consensus (a heuristic)."""

from __future__ import annotations

from collections.abc import Sequence

from grm.core.types import Context, Sample
from grm.core.voting import agreement_scores
from grm.metarm.base import MetaRM


class AgreementMetaRM(MetaRM):
    """Ranks samples by how well their scores agree with the other samples' consensus."""

    name = "agreement"

    async def score(
        self,
        context: Context,
        responses: Sequence[str],
        samples: Sequence[Sample],
        *,
        reference: str = "",
    ) -> list[float]:
        return list(agreement_scores([s.scores or () for s in samples]))
