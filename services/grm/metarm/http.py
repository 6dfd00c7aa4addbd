"""The HTTP meta RM: a served scalar reward model scores each sample's (GRM prompt, output).

The input is the paper's meta RM input (grm.metarm.inputs.meta_messages: the GRM prompt as the
user turn, the GRM's raw output as the assistant reply), rendered in the meta RM's own chat
template. The endpoint's path says which API it speaks, as the engines serve reward models:

- vLLM `/pooling` (Pooling API, `vllm serve <reward model> --runner pooling`): one request per
  sample, `{"model", "messages"}` — the server applies the model's chat template — and the
  reply `{"data": [{"index", "data": ...}]}`, whose `data` is the reward (a list with one value
  per class; a token-level reward model returns one list per token, of which the last counts).
- vLLM `/classify` (Classification API, a sequence-classification reward model): the same
  `{"model", "messages"}` request; the reply's `data[0].probs[class_index]` is the score
  (default the last class: the only one of a one-logit reward model).
- TEI `/predict` (text-embeddings-inference, a sequence-classification model): TEI takes text,
  not messages, so the pair is rendered here with the meta RM's chat template
  (`chat_template`, from its tokenizer_config.json) and sent as `{"inputs": text}`; the reply
  `[{"label", "score"}, ...]` gives the score of `label`, or of the only label.

With `chat_template` set, `/pooling` and `/classify` also get the rendered text (`{"input":
text}`), for engines that take only text (SGLang's `/v1/classify`). vLLM's `/score` API pairs
two texts for cross-encoders; a pointwise reward model reads one conversation, so it is not
used. Standard library HTTP (urllib in worker threads): one POST per sample, concurrently.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlparse

from grm.backends.chat_template import compile_chat_template, render_chat
from grm.core.errors import BackendError
from grm.core.templates import TemplateSet
from grm.core.types import Context, Sample
from grm.metarm.base import MetaRM
from grm.metarm.inputs import meta_messages

APIS = ("pooling", "classify", "predict")


def _api_of(url: str) -> str:
    path = urlparse(url).path.rstrip("/")
    for api in APIS:
        if path.endswith(f"/{api}"):
            return api
    raise ValueError(
        f"meta RM URL {url!r} must end in /pooling or /classify (vLLM) or /predict (TEI)"
    )


class HttpMetaRM(MetaRM):
    """Meta score from a vLLM `/pooling` or `/classify`, or a TEI `/predict` endpoint."""

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
        chat_template: str | None = None,
        bos_token: str = "",
        eos_token: str = "",
    ) -> None:
        self.url = url
        self.api = _api_of(url)
        if self.api == "predict" and not chat_template:
            raise ValueError(
                "TEI /predict takes text: give the meta RM's chat template "
                "(--meta-rm-chat-template, from its tokenizer_config.json)"
            )
        self.templates = templates
        self.model = model
        self.label = label
        self.class_index = class_index
        self.timeout_s = timeout_s
        self._template = compile_chat_template(chat_template) if chat_template else None
        self._tokens = {"bos_token": bos_token, "eos_token": eos_token}

    def body(
        self, context: Context, responses: Sequence[str], sample: Sample, reference: str = ""
    ) -> dict[str, Any]:
        """The request body for one sample (what goes on the wire)."""
        messages = meta_messages(self.templates, context, responses, sample, reference)
        if self._template is not None:
            text = render_chat(
                self._template, messages, add_generation_prompt=False, **self._tokens
            )
            body: dict[str, Any] = {"inputs" if self.api == "predict" else "input": text}
        else:
            body = {"messages": messages}
        if self.model and self.api != "predict":
            body["model"] = self.model
        return body

    async def score(
        self,
        context: Context,
        responses: Sequence[str],
        samples: Sequence[Sample],
        *,
        reference: str = "",
    ) -> list[float]:
        bodies = [self.body(context, responses, s, reference) for s in samples]
        replies = await asyncio.gather(*(self._post(b) for b in bodies))
        read = {"pooling": self._from_pooling, "classify": self._from_classify}.get(
            self.api, self._from_predict
        )
        return [read(r) for r in replies]

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

    def _from_pooling(self, reply: Any) -> float:
        try:
            data = reply["data"][0]["data"]
            if isinstance(data, list) and data and isinstance(data[-1], list):
                data = data[-1]  # token-level rewards: the last token's
            value = data[self.class_index] if isinstance(data, list) else data
            return float(value)
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise BackendError(f"unexpected /pooling response: {str(reply)[:200]}") from exc

    def _from_classify(self, reply: Any) -> float:
        try:
            [first] = reply["data"]
            return float(first["probs"][self.class_index])
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise BackendError(f"unexpected /classify response: {str(reply)[:200]}") from exc

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
