"""What a meta RM reads for one sample: the paper's input, rendered by one function.

The paper's meta RM is a pointwise scalar RM over (GRM prompt, GRM output): the prompt the
sample was generated from — its response order, its principles in separate mode, the reference
answer — as the user turn, and the GRM's raw output as the assistant reply. Every meta RM that
takes text reads `meta_messages`, and `grm spct-data` writes the meta-RM training file with it,
so training and serving see the same input and cannot drift.
"""

from __future__ import annotations

from collections.abc import Sequence

from grm.core.sampling import apply_order
from grm.core.templates import Message, TemplateSet
from grm.core.types import Context, Sample


def judgement_text(sample: Sample) -> str:
    """A sample's judgement rebuilt from its parts (criteria, analysis, scores in shown order),
    for a sample that carries no raw text."""
    shown = [sample.scores[i] for i in sample.spec.order] if sample.scores else []
    scores = ", ".join(str(s) for s in shown)
    return (
        f"Specific Criteria: {sample.principles.strip()}\n"
        f"Analysis: {sample.critique.strip()}\n"
        f"Scores: \\boxed{{{scores}}}"
    )


def meta_messages(
    templates: TemplateSet,
    context: Context,
    responses: Sequence[str],
    sample: Sample,
    reference: str = "",
) -> list[Message]:
    """[user: the GRM prompt this sample saw, assistant: its raw output] (responses in caller
    order; the prompt shows them in the sample's own order)."""
    shown = apply_order(responses, sample.spec.order)
    prompt = templates.sample_prompt(context, shown, sample.spec.principles, reference)
    return templates.meta_rm(prompt, sample.text or judgement_text(sample))
