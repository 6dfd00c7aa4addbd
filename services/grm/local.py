"""Builds the in-process scoring stack (embedded backend → sampler → pipeline)."""

from __future__ import annotations

from dataclasses import dataclass

from grm.backends import make_backend
from grm.backends.base import GenerationBackend
from grm.backends.embedded import EmbeddedBackend, EmbeddedSettings
from grm.core.templates import DEFAULT_TEMPLATE, TemplateSet, load_templates
from grm.metarm.agreement import AgreementMetaRM
from grm.metarm.base import MetaRM
from grm.pipeline import PipelineSettings, ScoringPipeline
from grm.principles.logic import PrincipleGenerator
from grm.sampler.logic import CritiqueSampler

META_RMS = ("agreement", "llm", "http")


def make_meta_rm(
    name: str | None,
    *,
    backend: GenerationBackend | None = None,
    templates: TemplateSet | None = None,
    url: str | None = None,
    model: str = "",
    label: str | None = None,
) -> MetaRM | None:
    """A meta RM by name; None disables meta-vote.

    `llm` asks `backend` for P("Yes"); `http` posts to `url` (vLLM /classify or TEI
    /predict); `agreement` needs neither (a heuristic, not the paper's trained meta RM).
    """
    if not name or name == "none":
        return None
    if name == "agreement":
        return AgreementMetaRM()
    templates = templates or load_templates()
    if name == "llm":
        if backend is None:
            raise ValueError("the llm meta RM needs a generation backend")
        from grm.metarm.llm import LlmMetaRM

        return LlmMetaRM(backend, templates)
    if name == "http":
        if not url:
            raise ValueError("the http meta RM needs a URL (--meta-rm-url)")
        from grm.metarm.http import HttpMetaRM

        return HttpMetaRM(url, templates, model=model, label=label)
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
