"""Builds the in-process scoring stack (embedded backend → sampler → pipeline)."""

from __future__ import annotations

from dataclasses import dataclass

from grm.backends.base import GenerationBackend
from grm.backends.embedded import EmbeddedBackend, EmbeddedSettings
from grm.core.templates import DEFAULT_TEMPLATE, load_templates
from grm.metarm.agreement import AgreementMetaRM
from grm.metarm.base import MetaRM
from grm.pipeline import PipelineSettings, ScoringPipeline
from grm.principles.logic import PrincipleGenerator
from grm.sampler.logic import CritiqueSampler

META_RMS = ("agreement",)


def make_meta_rm(name: str | None) -> MetaRM | None:
    """A meta RM by name; None disables meta-vote."""
    if not name or name == "none":
        return None
    if name == "agreement":
        return AgreementMetaRM()
    raise ValueError(f"unknown meta RM {name!r}; choose from {', '.join(META_RMS)} or none")


@dataclass
class LocalStack:
    backend: GenerationBackend
    sampler: CritiqueSampler
    pipeline: ScoringPipeline

    async def start(self) -> None:
        await self.backend.start()

    async def close(self) -> None:
        await self.backend.close()


def build_local_stack(
    *,
    model_path: str | None = None,
    n_ctx: int = 4096,
    template: str = DEFAULT_TEMPLATE,
    meta_rm: str | None = "agreement",
    max_attempts: int = 3,
) -> LocalStack:
    """An embedded model with the sampler, principle generator and pipeline around it."""
    backend = EmbeddedBackend(EmbeddedSettings(model_path=model_path, n_ctx=n_ctx))
    templates = load_templates(template)
    sampler = CritiqueSampler(backend, templates)
    pipeline = ScoringPipeline(
        sampler,
        principles=PrincipleGenerator(backend, templates),
        meta_rm=make_meta_rm(meta_rm),
        settings=PipelineSettings(max_attempts=max_attempts),
    )
    return LocalStack(backend, sampler, pipeline)
