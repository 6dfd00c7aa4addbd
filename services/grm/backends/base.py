"""The generation backend interface: async, many requests at once, errors per request.

Backends (embedded llama.cpp, TGI) know nothing of GRM: they turn chat messages into text,
optionally forcing the final score line with a grammar.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from grm.core.errors import BackendError, GrmError
from grm.core.types import ModelInfo

Message = dict[str, str]


@dataclass(frozen=True)
class GenerationRequest:
    messages: tuple[Message, ...]
    seed: int
    temperature: float
    top_p: float
    max_new_tokens: int
    score_count: int = 0  # > 0: the output ends in a `Scores: \boxed{...}` of this many
    grammar: bool = False  # constrain the output to end in that score line
    force_scores: bool = False  # a generation cut at max_new_tokens gets a forced score line
    # time.monotonic() by which the caller needs the result (None: the backend's own cap).
    deadline: float | None = None
    # Requests with the same key share a long prompt prefix (one item's samples): an HTTP
    # backend sends them to the same engine endpoint while it has room ("": no preference).
    prefix_key: str = ""


@dataclass(frozen=True)
class GenerationResult:
    text: str
    tokens_generated: int
    # "stop", "length" (cut at max_new_tokens: an invalid sample), or "forced_scores" (a score
    # line forced after the cut, only when the request set force_scores)
    finish_reason: str
    latency_ms: float
    seed: int | None = None


class GenerationBackend(abc.ABC):
    """One model behind one interface. `capacity` = generations it runs at the same time."""

    info: ModelInfo
    capacity: int = 1

    @abc.abstractmethod
    async def generate_one(self, request: GenerationRequest) -> GenerationResult:
        """Generate for one request; raise a GrmError subclass on failure."""

    async def generate(
        self, requests: Sequence[GenerationRequest]
    ) -> list[GenerationResult | GrmError]:
        """Run many requests concurrently (up to `capacity`); one failure fails only itself."""
        limit = asyncio.Semaphore(max(1, self.capacity))

        async def run(request: GenerationRequest) -> GenerationResult | GrmError:
            async with limit:
                return await self.generate_safe(request)

        return list(await asyncio.gather(*(run(r) for r in requests)))

    async def generate_safe(self, request: GenerationRequest) -> GenerationResult | GrmError:
        """One request in the caller's task (no task or semaphore of its own: the sampler's
        slots bound concurrency); a failure is returned as a GrmError, not raised."""
        try:
            return await self.generate_one(request)
        except GrmError as exc:
            return exc
        except (OSError, RuntimeError, ValueError) as exc:
            return BackendError(f"{type(exc).__name__}: {exc}")

    async def yes_probability(self, messages: Sequence[Message]) -> float:
        """P("Yes") as the next answer to `messages` (the LLM meta RM); optional."""
        raise BackendError(f"backend {self.info.backend!r} cannot score yes/no probabilities")

    async def start(self) -> None:
        """Load and warm up; health turns SERVING after this returns."""

    async def close(self) -> None:
        """Release the model or the HTTP sessions."""
