"""The LLM meta RM: ask a generation model whether a sampled judgement is correct.

The meta score is P("Yes") against "No" for the next token after the meta prompt
(`TemplateSet.meta`), which shows the conversation, the responses in the order that sample
saw them, and the sample's principles, analysis and scores (in that same order). With a
general instruct model this is a zero-shot stand-in for the paper's trained meta RM.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from grm.backends.base import GenerationBackend
from grm.core.sampling import apply_order
from grm.core.templates import TemplateSet
from grm.core.types import Context, Sample
from grm.metarm.base import MetaRM


def judgement_text(sample: Sample) -> str:
    """A sample's judgement as the model wrote it: criteria, analysis, scores in shown order."""
    shown = [sample.scores[i] for i in sample.spec.order] if sample.scores else []
    scores = ", ".join(str(s) for s in shown)
    return (
        f"Specific Criteria: {sample.principles.strip()}\n"
        f"Analysis: {sample.critique.strip()}\n"
        f"Scores: \\boxed{{{scores}}}"
    )


def meta_messages(
    templates: TemplateSet, context: Context, responses: Sequence[str], sample: Sample
) -> list[dict[str, str]]:
    """The meta prompt for one sample (responses in the order that sample saw them)."""
    shown = apply_order(responses, sample.spec.order)
    return templates.meta(context, shown, judgement_text(sample))


class LlmMetaRM(MetaRM):
    """Meta score = P(Yes) from a backend's next-token distribution."""

    name = "llm"

    def __init__(self, backend: GenerationBackend, templates: TemplateSet) -> None:
        self.backend = backend
        self.templates = templates

    async def score(
        self, context: Context, responses: Sequence[str], samples: Sequence[Sample]
    ) -> list[float]:
        prompts = [meta_messages(self.templates, context, responses, s) for s in samples]
        return list(await asyncio.gather(*(self.backend.yes_probability(p) for p in prompts)))
