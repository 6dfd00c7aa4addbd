"""Principle generation: query-specific criteria, reusable across samples (separate mode)."""

from __future__ import annotations

from dataclasses import dataclass

from grm.backends.base import GenerationBackend, GenerationRequest
from grm.core.errors import GrmError, InvalidArgumentError, UnavailableError
from grm.core.parsing import split_sections
from grm.core.plan import SamplingJob
from grm.core.sampling import derive_seed
from grm.core.templates import TemplateSet


@dataclass(frozen=True)
class PrincipleSet:
    text: str
    seed: int
    tokens_generated: int
    latency_ms: float


class PrincipleGenerator:
    """Writes principle sets for a query with a generation backend."""

    def __init__(self, backend: GenerationBackend, templates: TemplateSet) -> None:
        self.backend = backend
        self.templates = templates

    async def generate(self, job: SamplingJob, n: int, seed: int) -> list[PrincipleSet]:
        """n principle sets; set i uses the seed derived from (seed, i)."""
        params = job.params
        messages = tuple(self.templates.principles(job.context, job.responses, job.reference))
        seeds = [derive_seed(seed, i, purpose="principles") for i in range(n)]
        requests = [
            GenerationRequest(
                messages=messages,
                seed=s,
                temperature=params.temperature,
                top_p=params.top_p,
                max_new_tokens=params.max_new_tokens,
                score_count=0,
                grammar=False,
                deadline=job.deadline,
            )
            for s in seeds
        ]
        results = await self.backend.generate(requests)
        sets = []
        for s, result in zip(seeds, results, strict=True):
            if isinstance(result, InvalidArgumentError):
                raise result  # e.g. the prompt is over the model's input limit: no retry fixes it
            if isinstance(result, GrmError):
                raise UnavailableError(f"principle generation failed: {result}")
            principles, _ = split_sections(result.text)
            text = (principles or result.text).strip()
            if not text:
                raise UnavailableError("principle generation returned empty text")
            sets.append(PrincipleSet(text, s, result.tokens_generated, result.latency_ms))
        return sets
