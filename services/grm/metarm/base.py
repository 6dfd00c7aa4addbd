"""The meta reward model interface: a scalar per sampled judgement."""

from __future__ import annotations

import abc
from collections.abc import Sequence

from grm.core.types import Context, Sample


class MetaRM(abc.ABC):
    """Rates each valid sample's principles + critique; higher = more trustworthy."""

    name: str = "meta-rm"

    @abc.abstractmethod
    async def score(
        self,
        context: Context,
        responses: Sequence[str],
        samples: Sequence[Sample],
        *,
        reference: str = "",
    ) -> list[float]:
        """One real number per sample (samples are valid; responses in caller order;
        `reference`: the reference answer the samples' prompts showed, "" for none)."""
