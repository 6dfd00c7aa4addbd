"""A scripted generation backend: a test double of the model only.

It reads the rendered prompt (as a real model would) and answers by a rule, so the sampler,
pipeline and services around it run for real and their results can be checked exactly.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable

from grm.backends.base import GenerationBackend, GenerationRequest, GenerationResult
from grm.core.errors import BackendError
from grm.core.types import ModelInfo

_BLOCK = re.compile(r"\[The Begin of Response (\d+)\]\n(.*?)\n\[The End of Response \1\]", re.S)


def shown_responses(request: GenerationRequest) -> list[str]:
    """The responses in the order this request shows them."""
    return [m.group(2) for m in _BLOCK.finditer(request.messages[-1]["content"])]


def keyword_judge(request: GenerationRequest) -> str:
    """Scores 9 for a response containing 'good', 2 otherwise, in display order."""
    shown = shown_responses(request)
    scores = ", ".join("9" if "good" in r else "2" for r in shown)
    return (
        "Specific Criteria: correctness (100%).\nAnalysis: judged by keyword.\n"
        f"Scores: \\boxed{{{scores}}}"
    )


class ScriptedBackend(GenerationBackend):
    """Answers each request with `script(request)`; records every request it saw."""

    def __init__(
        self,
        script: Callable[[GenerationRequest], str] = keyword_judge,
        *,
        capacity: int = 4,
        delay: float = 0.0,
        model_id: str = "scripted",
    ) -> None:
        self.script = script
        self.capacity = capacity
        self.delay = delay
        self.info = ModelInfo(model_id=model_id, revision="r1", backend="scripted")
        self.requests: list[GenerationRequest] = []
        self.started = False

    async def start(self) -> None:
        self.started = True

    async def generate_one(self, request: GenerationRequest) -> GenerationResult:
        self.requests.append(request)
        if self.delay:
            await asyncio.sleep(self.delay)
        text = self.script(request)
        if text == "<error>":
            raise BackendError("scripted backend failure")
        return GenerationResult(
            text=text,
            tokens_generated=len(text.split()),
            finish_reason="stop",
            latency_ms=1.0,
            seed=request.seed,
        )
