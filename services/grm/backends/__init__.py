"""Generation backends behind one interface (`base.GenerationBackend`).

`make_backend(kind, **settings)` builds one from the services' `--backend embedded|tgi|openai`
flags, importing only what that kind needs (llama.cpp, the `text-generation` client, or plain
aiohttp for the OpenAI-compatible engines, whose differences live in `dialects`). HTTP
engines share `http_pool` (pooled sessions, least-loaded choice, retries); prompts rendered
outside the engine use `chat_template`.

May import core and telemetry only.
"""

from __future__ import annotations

from typing import Any

from grm.backends.base import GenerationBackend

BACKEND_KINDS = ("embedded", "tgi", "openai")


def make_backend(kind: str, **settings: Any) -> GenerationBackend:
    """An unstarted backend of `kind` ("embedded", "tgi" or "openai").

    embedded: model_path, n_ctx, n_threads, n_batch (EmbeddedSettings); None means default.
    tgi: tgi_url (or urls) — "URL[,URL...]" or a sequence — plus any TgiSettings field.
    openai: openai_url (or urls) the same way, plus any OpenAiSettings field (engine, api_key).
    Unknown or misplaced settings are an error, not silently dropped.
    """
    if kind == "embedded":
        from grm.backends.embedded import EmbeddedBackend, EmbeddedSettings

        given = {k: v for k, v in settings.items() if v is not None}
        return EmbeddedBackend(EmbeddedSettings(**given))
    if kind == "tgi":
        from grm.backends.tgi import TgiBackend, TgiSettings

        given = {k: v for k, v in settings.items() if v is not None}
        urls = given.pop("tgi_url", None) or given.pop("urls", None)
        if not urls:
            raise ValueError("the tgi backend needs tgi_url (URL[,URL...])")
        if isinstance(urls, str):
            urls = urls.split(",")
        if "stop" in given:
            given["stop"] = tuple(given["stop"])
        return TgiBackend(TgiSettings(urls=tuple(urls), **given))
    if kind == "openai":
        from grm.backends.openai import OpenAiBackend, OpenAiSettings

        given = {k: v for k, v in settings.items() if v is not None}
        urls = given.pop("openai_url", None) or given.pop("urls", None)
        if not urls:
            raise ValueError("the openai backend needs openai_url (URL[,URL...])")
        if isinstance(urls, str):
            urls = urls.split(",")
        if "stop" in given:
            given["stop"] = tuple(given["stop"])
        return OpenAiBackend(OpenAiSettings(urls=tuple(urls), **given))
    raise ValueError(f"unknown backend {kind!r}; choose one of {', '.join(BACKEND_KINDS)}")


__all__ = ["BACKEND_KINDS", "GenerationBackend", "make_backend"]
