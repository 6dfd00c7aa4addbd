"""The LLM meta RM: a generation model's P("Yes") that a sampled judgement is correct.

It reads the paper's meta RM input (grm.metarm.inputs: the GRM prompt as the user turn, the
GRM's raw output as the assistant reply) followed by one user turn asking whether that
judgement is correct (`TemplateSet.meta_question`); the meta score is P("Yes") against "No"
for the next token. With a general instruct model this is a zero-shot stand-in for the
paper's trained scalar meta RM (which the `http` meta RM serves).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from grm.backends.base import GenerationBackend
from grm.core.templates import TemplateSet
from grm.core.types import Context, Sample
from grm.metarm.base import MetaRM
from grm.metarm.inputs import judgement_text, meta_messages

__all__ = ["LlmMetaRM", "judgement_text", "meta_messages"]


class LlmMetaRM(MetaRM):
    """Meta score = P(Yes) from a backend's next-token distribution."""

    name = "llm"

    def __init__(self, backend: GenerationBackend, templates: TemplateSet) -> None:
        self.backend = backend
        self.templates = templates

    def messages(
        self, context: Context, responses: Sequence[str], sample: Sample, reference: str = ""
    ) -> list[dict[str, str]]:
        """The paper's pair, then the Yes/No question."""
        pair = meta_messages(self.templates, context, responses, sample, reference)
        return [*pair, {"role": "user", "content": self.templates.meta_question}]

    async def score(
        self,
        context: Context,
        responses: Sequence[str],
        samples: Sequence[Sample],
        *,
        reference: str = "",
    ) -> list[float]:
        prompts = [self.messages(context, responses, s, reference) for s in samples]
        return list(await asyncio.gather(*(self.backend.yes_probability(p) for p in prompts)))
