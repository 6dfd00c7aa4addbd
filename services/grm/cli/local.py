"""Builds the in-process scoring stack (embedded backend → sampler → pipeline)."""

from __future__ import annotations

from dataclasses import dataclass

from grm.backends import make_backend
from grm.backends.base import GenerationBackend
from grm.backends.embedded import EmbeddedBackend, EmbeddedSettings
from grm.core.templates import DEFAULT_TEMPLATE, load_templates
from grm.metarm import make_meta_rm
from grm.scoring.critique import CritiqueSampler
from grm.scoring.pipeline import PipelineSettings, ScoringPipeline
from grm.scoring.principles import PrincipleGenerator


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
    meta_rm_url: str | None = None,
    max_attempts: int = 3,
    tgi_url: str | None = None,
) -> LocalStack:
    """A model (embedded, or TGI at `tgi_url`) with the sampler, principles and pipeline."""
    backend: GenerationBackend
    if tgi_url:
        backend = make_backend("tgi", tgi_url=tgi_url)
    else:
        backend = EmbeddedBackend(EmbeddedSettings(model_path=model_path, n_ctx=n_ctx))
    templates = load_templates(template)
    sampler = CritiqueSampler(backend, templates)
    pipeline = ScoringPipeline(
        sampler,
        principles=PrincipleGenerator(backend, templates),
        meta_rm=make_meta_rm(meta_rm, backend=backend, templates=templates, url=meta_rm_url),
        settings=PipelineSettings(max_attempts=max_attempts),
    )
    return LocalStack(backend, sampler, pipeline)
