"""Meta reward models by name (the services' and the CLI's `--meta-rm`)."""

from __future__ import annotations

from grm.backends.base import GenerationBackend
from grm.core.templates import TemplateSet, load_templates
from grm.metarm.agreement import AgreementMetaRM
from grm.metarm.base import MetaRM

META_RMS = ("agreement", "llm", "http")


def make_meta_rm(
    name: str | None,
    *,
    backend: GenerationBackend | None = None,
    templates: TemplateSet | None = None,
    url: str | None = None,
    model: str = "",
    label: str | None = None,
    chat_template: str | None = None,
) -> MetaRM | None:
    """A meta RM by name; None disables meta-vote.

    `http` is the paper's meta RM: a trained pointwise scalar RM (e.g. trained on `grm
    spct-data`'s meta_rm.jsonl) served by vLLM (/pooling, /classify) or TEI (/predict, with
    its `chat_template`). `llm` asks `backend` for P("Yes") (a zero-shot stand-in).
    `agreement` — the services' default — needs no model: the suite ships no trained meta RM,
    and a heuristic that keeps the samples agreeing with the consensus is the one choice that
    needs no extra model; set `http` once a trained meta RM is served.
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

        return HttpMetaRM(url, templates, model=model, label=label, chat_template=chat_template)
    raise ValueError(f"unknown meta RM {name!r}; choose from {', '.join(META_RMS)} or none")
