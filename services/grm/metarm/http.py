"""The HTTP meta RM: a scalar classifier behind an HTTP endpoint.

Two response shapes are understood, chosen by the URL's path:
- vLLM `/classify` (also SGLang `/v1/classify`): request `{"model", "input": [texts]}`,
  response `{"data": [{"index", "label", "probs": [...], "num_classes"}]}`; the meta score is
  `probs[class_index]` (default the last class: the only one of a one-logit reward model,
  the positive one of a binary classifier).
- text-embeddings-inference `/predict`: request `{"inputs": text}` (one call per sample),
  response `[{"label", "score"}, ...]`; the meta score is the score of `label`, or of the
  only label.

The text sent is the meta prompt (system + user) for the sample. Uses the standard library
(urllib in a worker thread): no extra HTTP dependency for one POST per scoring.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlparse

from grm.core.errors import BackendError
from grm.core.templates import TemplateSet
from grm.core.types import Context, Sample
from grm.metarm.base import MetaRM
from grm.metarm.llm import meta_messages


def _api_of(url: str) -> str:
    path = urlparse(url).path.rstrip("/")
    if path.endswith("/classify"):
        return "classify"
    if path.endswith("/predict"):
        return "predict"
    raise ValueError(f"meta RM URL {url!r} must end in /classify (vLLM) or /predict (TEI)")


class HttpMetaRM(MetaRM):
    """Meta score from a vLLM `/classify` or TEI `/predict` endpoint."""

    name = "http"

    def __init__(
        self,
        url: str,
        templates: TemplateSet,
        *,
        model: str = "",
        label: str | None = None,
        class_index: int = -1,
        timeout_s: float = 30.0,
    ) -> None:
        self.url = url
        self.api = _api_of(url)
        self.templates = templates
        self.model = model
        self.label = label
        self.class_index = class_index
        self.timeout_s = timeout_s

    def _text(self, context: Context, responses: Sequence[str], sample: Sample) -> str:
        return "\n\n".join(
            m["content"] for m in meta_messages(self.templates, context, responses, sample)
        )

    async def score(
        self, context: Context, responses: Sequence[str], samples: Sequence[Sample]
    ) -> list[float]:
        texts = [self._text(context, responses, s) for s in samples]
        if self.api == "classify":
            body: dict[str, Any] = {"input": texts}
            if self.model:
                body["model"] = self.model
            return self._from_classify(await self._post(body), len(texts))
        replies = await asyncio.gather(*(self._post({"inputs": t}) for t in texts))
        return [self._from_predict(r) for r in replies]

    async def _post(self, body: dict[str, Any]) -> Any:
        return await asyncio.to_thread(self._post_sync, body)

    def _post_sync(self, body: dict[str, Any]) -> Any:
        request = urllib.request.Request(
            self.url,
            data=json.dumps(body).encode("utf-8"),
            headers={"Content-Type": "application/json", "Accept": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as reply:
                return json.loads(reply.read().decode("utf-8"))
        except urllib.error.HTTPError as exc:
            detail = exc.read(300).decode("utf-8", "replace")
            raise BackendError(f"meta RM endpoint answered HTTP {exc.code}: {detail}") from exc
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            raise BackendError(f"meta RM endpoint unreachable: {exc}") from exc
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BackendError(f"meta RM endpoint returned invalid JSON: {exc}") from exc

    def _from_classify(self, reply: Any, n: int) -> list[float]:
        try:
            data = sorted(reply["data"], key=lambda d: d["index"])
            out = [float(d["probs"][self.class_index]) for d in data]
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise BackendError(f"unexpected /classify response: {str(reply)[:200]}") from exc
        if len(out) != n:
            raise BackendError(f"/classify returned {len(out)} results for {n} inputs")
        return out

    def _from_predict(self, reply: Any) -> float:
        try:
            if reply and isinstance(reply[0], list):
                reply = reply[0]  # a batch of one
            scores = {str(d["label"]): float(d["score"]) for d in reply}
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise BackendError(f"unexpected /predict response: {str(reply)[:200]}") from exc
        if self.label is not None:
            if self.label not in scores:
                raise BackendError(f"/predict returned no label {self.label!r}: {sorted(scores)}")
            return scores[self.label]
        if len(scores) != 1:
            raise BackendError(
                f"/predict returned labels {sorted(scores)}: name the one to use (label)"
            )
        return next(iter(scores.values()))
