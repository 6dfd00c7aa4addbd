"""The stock `text_generation.AsyncClient` as a TGI backend: the baseline of the benchmarks.

The stock client opens a new HTTP session (hence a TCP connection) per call and posts to TGI's
compat route `/`. The suite's TgiBackend keeps one pooled session per endpoint; this subclass
swaps only the generation call, so a benchmark compares exactly that difference.
"""

from __future__ import annotations

from typing import Any

import aiohttp
from text_generation import AsyncClient
from text_generation import errors as tgi_errors
from text_generation.types import Grammar

from grm.backends.http_pool import Endpoint, Retry
from grm.backends.tgi import TGI_ERRORS, Generated, TgiBackend, classify


class StockTgiBackend(TgiBackend):
    """TgiBackend whose generation calls go through a new stock AsyncClient each time."""

    async def post_generate(self, e: Endpoint, body: dict[str, Any], budget_s: float) -> Generated:
        client = AsyncClient(e.url, timeout=budget_s)  # type: ignore[arg-type]
        params = body["parameters"]
        grammar = params["grammar"]
        try:
            reply = await client.generate(
                body["inputs"],
                do_sample=params["do_sample"],
                max_new_tokens=params["max_new_tokens"],
                seed=params["seed"],
                stop_sequences=params["stop"],
                temperature=params["temperature"],
                top_p=params["top_p"],
                grammar=Grammar(**grammar) if grammar else None,
            )
        except aiohttp.ContentTypeError as exc:
            raise Retry("unavailable", f"HTTP {exc.status}: not JSON") from exc
        except (KeyError, TypeError) as exc:  # an error body without "error"
            raise Retry("unavailable", f"malformed error body: {exc}") from exc
        except tgi_errors.UnknownError as exc:  # status unknown here; 5xx is the likely case
            raise Retry("unavailable", exc) from exc
        except TGI_ERRORS as exc:
            raise classify(exc, None) from exc
        details = reply.details
        return Generated(
            reply.generated_text,
            details.generated_tokens,
            details.finish_reason.value,
            details.seed,
        )
