"""The OpenAI-compatible backend: vLLM, SGLang, llama.cpp's server (and TGI) over chat completions.

Every sample is one `POST {url}/chat/completions` with the model's own chat template applied
by the engine, its own `seed`, `temperature`, `top_p` and `max_tokens` (capped by the context
length the engine advertises), and — with grammar on — the engine's own constrained-decoding
field (`backends.dialects`). The reply gives the text, `finish_reason` and token `usage`;
no engine echoes the seed in a chat completion, so a sample's seed is the one it was sent.

**Start-up.** For each URL (`http://host:port/v1`): `GET /v1/models` (the model id; every
endpoint must serve the same one, as the cache keys assume), the engine (`--engine`, or
detected from `owned_by`, the server header and the root routes `/version`,
`/get_server_info`, `/props`, `/info`), then the engine's limits: the in-flight bound per
endpoint (SGLang `max_running_requests`, llama.cpp `total_slots`, TGI
`max_concurrent_requests`; vLLM does not say, 256) and the context length (`max_model_len`,
`n_ctx`, `max_total_tokens`); TGI's `model_sha` is the revision. Endpoints down at start are
configured as they come up.

**Load.** Every `metrics_interval_s` the backend reads each engine's `/metrics` (running and
waiting requests under the dialect's names). Requests that other clients keep in the engine
(running + waiting − ours) take slots from this backend, and an engine that queues requests
runs no more than it is running: `capacity` follows, and with it the sampler's reported
capacity and the autoscaling gauges.

**Forcing the score line** (the request's `force_scores`, grammar on): on vLLM and SGLang a
sample cut by `max_tokens` gets a second request that continues its own assistant message
(`continue_final_message`) with only the numbers constrained, as the TGI backend does; on
llama.cpp and TGI, which cannot continue a message, the free text before the line is bounded
so the line always fits in `max_tokens` (one request; `forced_scores` when the bound was hit).

**Errors** (one place, `classify`): 429 → retried with jitter inside the deadline, then
RESOURCE_EXHAUSTED; 503, 5xx and connection errors → another endpoint, then UNAVAILABLE;
400/422 → InvalidArgumentError at once (the request's fault; a prompt over the context is
`responses`). A chat template that refuses the messages (e.g. "System role not supported")
is ChatTemplateError: the request is sent again at once as one user turn
(`core.templates.single_user_turn`), and that endpoint gets one-turn prompts from then on.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from grm.backends import jsonbody
from grm.backends.base import GenerationBackend, GenerationRequest, GenerationResult, Message
from grm.backends.dialects import (
    DIALECTS,
    Dialect,
    detect,
    dialect,
    error_fields,
    is_template_error,
    metric_sum,
    model_entries,
    parse_version,
)
from grm.backends.http_pool import Endpoint, EndpointPool, Retry, RetryPolicy, call_deadline
from grm.core.errors import (
    BackendError,
    ChatTemplateError,
    FailedPreconditionError,
    InvalidArgumentError,
)
from grm.core.grammar import FORCED_PREFIX, strip_partial_scores
from grm.core.templates import single_user_turn
from grm.core.types import ModelInfo

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 5.0
_CONTEXT = re.compile(r"context length|context window|context size|maximum context", re.I)


@dataclass(frozen=True)
class OpenAiSettings:
    """How to reach and treat a set of OpenAI-compatible endpoints serving the same model."""

    urls: tuple[str, ...]
    engine: str | None = None  # vllm | sglang | llamacpp | tgi (None: detect at start-up)
    api_key: str | None = None  # sent as `Authorization: Bearer` (never logged)
    model: str | None = None  # the served model name to ask for (default: /v1/models' first)
    request_timeout_s: float = 300.0  # per call, when the caller's deadline is later or unset
    startup_timeout_s: float = 120.0
    max_in_flight: int | None = None  # per endpoint, below what the engine advertises
    stop: tuple[str, ...] = ()
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    probe_interval_s: float = 2.0  # endpoints not yet configured are probed this often
    metrics_interval_s: float = 2.0  # how often /metrics is read (0 = never)
    prefix_locality: bool = True  # one item's samples on one engine while it has room


@dataclass
class EngineInfo:
    """What one endpoint's engine reported at start-up."""

    dialect: Dialect
    model: str
    revision: str = ""
    version: tuple[int, ...] | None = None
    context: int | None = None  # tokens (prompt + output) the engine takes, where it says
    base_limit: int = 1  # in-flight bound before load from other clients is counted
    running: float | None = None  # last /metrics reading
    waiting: float | None = None


class OpenAiBackend(GenerationBackend):
    """Generation on one or more OpenAI-compatible endpoints serving the same model."""

    def __init__(self, settings: OpenAiSettings) -> None:
        urls = tuple(_base_url(u) for u in settings.urls if u.strip())
        if not urls:
            raise InvalidArgumentError("at least one OpenAI URL is required", field="openai_url")
        if settings.engine is not None:
            dialect(settings.engine)  # a mistyped engine fails here, not at start-up
        self.settings = settings
        headers = {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else None
        first = dialect(settings.engine) if settings.engine else None
        self.pool = EndpointPool(
            urls,
            engine=first.title if first else "OpenAI-compatible engine",
            default_limit=settings.max_in_flight or (first.default_limit if first else 1),
            retry=settings.retry,
            headers=headers,
            locality=settings.prefix_locality,
        )
        self.info = ModelInfo(model_id=f"openai:{','.join(urls)}", revision="", backend="openai")
        self.engines: dict[str, EngineInfo] = {}
        self._single_turn: set[str] = set()  # endpoints whose template refused a system role
        self._metrics_task: asyncio.Task[None] | None = None
        self._started = False

    @property
    def endpoints(self) -> list[Endpoint]:
        return self.pool.endpoints

    @property
    def stats(self) -> collections.Counter[str]:
        """Retries, slot waits, forced score lines, one-turn fallbacks (tests, benchmarks)."""
        return self.pool.stats

    @property
    def capacity(self) -> int:  # type: ignore[override]
        """Generations at once: the endpoints' in-flight bounds, as the engines' load allows."""
        return max(1, sum(e.limit for e in self.endpoints if e.ready))

    # ---------------------------------------------------------------- configuration

    async def start(self) -> None:
        """Open the sessions, configure from each engine's routes, start the metrics reader."""
        if self._started:
            return
        await self.pool.start(
            self._configure,
            timeout_s=self.settings.startup_timeout_s,
            poll_s=self.settings.probe_interval_s,
        )
        self._started = True
        if self.settings.metrics_interval_s > 0:
            self._metrics_task = asyncio.create_task(self._metrics_loop())

    async def _get_json(self, e: Endpoint, url: str) -> tuple[int, Any, str]:
        """(status, parsed JSON or None, Server header) of a GET."""
        assert e.session is not None
        timeout = aiohttp.ClientTimeout(total=PROBE_TIMEOUT_S)
        async with e.session.get(url, timeout=timeout) as resp:
            raw = await resp.read()
            try:
                payload = jsonbody.loads(raw) if raw else None
            except ValueError:
                payload = None
            return resp.status, payload, resp.headers.get("Server", "")

    async def _configure(self, e: Endpoint) -> None:
        """Model, engine, limits of one endpoint; an endpoint with another model is refused."""
        root = _root(e.url)
        try:
            status, models, server = await self._get_json(e, f"{e.url}/models")
            if status != 200:
                _, message = error_fields(models)
                e.error = f"/v1/models answered {status}: {message[:200]}"
                return
            probes: dict[str, Any] = {}
            wanted = (
                [dialect(self.settings.engine).info_path]
                if self.settings.engine
                else [d.info_path for d in DIALECTS.values()]
            )
            for path in dict.fromkeys(p for p in wanted if p):
                code, payload, _ = await self._get_json(e, f"{root}{path}")
                if code == 200 and payload is not None:
                    probes[path] = payload
        except (aiohttp.ClientError, TimeoutError) as exc:
            e.error = f"{type(exc).__name__}: {exc}"
            return
        name = self.settings.engine or detect(models, server, probes)
        if name is None:
            e.error = "the engine could not be detected; set --engine vllm|sglang|llamacpp|tgi"
            log.error("OpenAI endpoint %s: %s", e.url, e.error)
            return
        entries = model_entries(models)
        ids = [str(m.get("id")) for m in entries if m.get("id")]
        model = self.settings.model or (ids[0] if ids else "")
        if not model or (self.settings.model and ids and self.settings.model not in ids):
            e.error = f"/v1/models lists {ids or 'no model'}, not {self.settings.model!r}"
            return
        entry = next((m for m in entries if str(m.get("id")) == model), {})
        info = _engine_info(dialect(name), model, entry, probes, self.settings.max_in_flight)
        configured = [x for x in self.endpoints if x.ready]
        if configured and (info.model, info.revision) != (
            self.info.model_id,
            self.info.revision,
        ):
            e.error = (
                f"serves {info.model}@{info.revision}, not {self.info.model_id}@"
                f"{self.info.revision}; endpoint refused (mixed models would corrupt cache keys)"
            )
            log.error("OpenAI endpoint %s %s", e.url, e.error)
            return
        if not info.revision:
            log.info("%s endpoint %s reports no model revision", info.dialect.title, e.url)
        self.engines[e.url] = info
        e.limit = info.base_limit
        e.info = {"engine": name, "model": model}
        e.error = ""
        self.info = ModelInfo(model_id=info.model, revision=info.revision, backend="openai")
        self.pool.engine = info.dialect.title
        log.info(
            "%s endpoint %s: %s, %d in flight at most, context %s",
            info.dialect.title,
            e.url,
            model,
            e.limit,
            info.context or "not reported",
        )

    async def _metrics_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.metrics_interval_s)
            await self.refresh_load()

    async def refresh_load(self) -> None:
        """Read every engine's /metrics once and set each endpoint's in-flight bound."""

        async def one(e: Endpoint) -> None:
            info = self.engines.get(e.url)
            if info is None or e.session is None:
                return
            try:
                timeout = aiohttp.ClientTimeout(total=PROBE_TIMEOUT_S)
                async with e.session.get(f"{_root(e.url)}/metrics", timeout=timeout) as resp:
                    if resp.status != 200:
                        return
                    text = await resp.text()
            except (aiohttp.ClientError, TimeoutError, UnicodeDecodeError):
                return
            running = metric_sum(text, info.dialect.running_metric)
            waiting = metric_sum(text, info.dialect.waiting_metric)
            if running is None and waiting is None:
                return
            info.running, info.waiting = running, waiting
            old = e.limit
            e.limit = load_limit(info.base_limit, running or 0.0, waiting or 0.0, e.in_flight)
            if e.limit > old:
                self.pool.slots_changed().set()

        await asyncio.gather(*(one(e) for e in self.endpoints if e.ready))

    async def healthy(self) -> bool:
        """Whether any endpoint answers `/v1/models` now (every engine serves it)."""
        return self._started and await self.pool.probe("/models")

    async def close(self) -> None:
        if self._metrics_task is not None:
            self._metrics_task.cancel()
            await asyncio.gather(self._metrics_task, return_exceptions=True)
            self._metrics_task = None
        await self.pool.close()
        self._started = False

    # ---------------------------------------------------------------- generation

    async def generate_one(self, request: GenerationRequest) -> GenerationResult:
        """One sample: a chat completion; a cut-off score line completed where asked."""
        if not self._started:
            raise FailedPreconditionError("the OpenAI backend is not started")
        started = time.perf_counter()
        deadline, caller_bound = call_deadline(request.deadline, self.settings.request_timeout_s)
        forced = request.grammar and request.score_count > 0
        used: dict[str, Any] = {}

        async def attempt(e: Endpoint, budget_s: float) -> dict[str, Any]:
            used["endpoint"] = e.url
            return await self._complete(e, request, request.messages, budget_s, forced)

        reply = await self.pool.call(
            attempt, deadline, caller_bound, slot=True, affinity=request.prefix_key
        )
        text, finish, tokens, seed = _read_reply(reply, request.seed)
        info = self.engines.get(used.get("endpoint", ""))
        if forced and request.force_scores and info is not None:
            if info.dialect.continuation and finish == "length":
                head = f"{strip_partial_scores(text).rstrip()}\n{FORCED_PREFIX}"
                tail = await self._force_scores(request, head, deadline, caller_bound)
                if tail is not None:
                    text, finish = head + tail[0], "forced_scores"
                    tokens += tail[1]
            elif not info.dialect.continuation and finish == "stop":
                cut, bound = text.rfind(FORCED_PREFIX), self._body_chars(info, request)
                if bound is not None and cut >= bound:
                    finish = "forced_scores"  # the grammar ended the free text at its bound
        return GenerationResult(
            text=text,
            tokens_generated=tokens,
            finish_reason=finish,
            latency_ms=(time.perf_counter() - started) * 1000,
            seed=seed,
        )

    @staticmethod
    def _max_tokens(info: EngineInfo, request: GenerationRequest) -> int:
        """max_new_tokens, capped by the context the engine advertises."""
        if info.context is None:
            return request.max_new_tokens
        return max(1, min(request.max_new_tokens, info.context - 1))

    def _body_chars(self, info: EngineInfo, request: GenerationRequest) -> int | None:
        """Characters of free text the grammar allows before the score line: unbounded, except
        with `force_scores` where the engine cannot continue a cut-off message (then bounded to
        fit `max_tokens`, so the line always fits)."""
        if request.force_scores and not info.dialect.continuation:
            return _fitting_body_chars(self._max_tokens(info, request), request.score_count)
        return None

    def body(
        self,
        e: Endpoint,
        request: GenerationRequest,
        messages: Sequence[Message],
        forced: bool,
    ) -> dict[str, Any]:
        """The JSON body of one chat completion on endpoint `e` (what goes on the wire)."""
        info = self.engines[e.url]
        max_tokens = self._max_tokens(info, request)
        body: dict[str, Any] = {
            "model": info.model,
            "messages": [{"role": m["role"], "content": m["content"]} for m in messages],
            "max_tokens": max_tokens,
            "temperature": request.temperature,
            "seed": request.seed,
            "n": 1,
            "stream": False,
        }
        if 0 < request.top_p < 1:  # 1.0 means no nucleus filtering; TGI refuses top_p >= 1
            body["top_p"] = request.top_p
        if self.settings.stop:
            body["stop"] = list(self.settings.stop)
        if forced:
            chars = self._body_chars(info, request)
            body.update(info.dialect.constraint(request.score_count, chars, info.version))
        return body

    async def _complete(
        self,
        e: Endpoint,
        request: GenerationRequest,
        messages: Sequence[Message],
        budget_s: float,
        forced: bool,
    ) -> dict[str, Any]:
        """POST one chat completion; a refused chat template is retried once as one turn."""
        one_turn = e.url in self._single_turn
        chosen = single_user_turn(messages) if one_turn else messages
        try:
            return await self._post(e, self.body(e, request, chosen, forced), budget_s)
        except ChatTemplateError as exc:
            if one_turn or tuple(single_user_turn(messages)) == tuple(messages):
                raise
            self._single_turn.add(e.url)
            self.stats["single_turn_fallbacks"] += 1
            log.warning(
                "%s endpoint %s: the chat template refused the prompt roles (%s); sending "
                "every prompt to it as one user turn from now on",
                self.engines[e.url].dialect.title,
                e.url,
                exc,
            )
            body = self.body(e, request, single_user_turn(messages), forced)
            return await self._post(e, body, budget_s)

    async def _force_scores(
        self, request: GenerationRequest, head: str, deadline: float, caller_bound: bool
    ) -> tuple[str, int] | None:
        """Continue the assistant message `head` with only the score numbers constrained."""
        n = request.score_count

        async def attempt(e: Endpoint, budget_s: float) -> dict[str, Any]:
            info = self.engines[e.url]
            if not info.dialect.continuation:
                raise InvalidArgumentError(f"{info.dialect.title} cannot continue a message")
            messages = list(request.messages)
            if e.url in self._single_turn:
                messages = list(single_user_turn(messages))
            body = self.body(e, request, messages, forced=False)
            body["messages"].append({"role": "assistant", "content": head})
            body["max_tokens"] = 8 * n + 4
            body["continue_final_message"] = True
            body["add_generation_prompt"] = False
            body.update(info.dialect.constraint(n, 0, info.version, suffix=True))
            return await self._post(e, body, budget_s)

        self.stats["forced_scores"] += 1
        try:
            reply = await self.pool.call(
                attempt, deadline, caller_bound, slot=True, affinity=request.prefix_key
            )
        except InvalidArgumentError:
            return None
        text, _, tokens, _ = _read_reply(reply, request.seed)
        return text, tokens

    async def _post(self, e: Endpoint, body: dict[str, Any], budget_s: float) -> dict[str, Any]:
        """POST /chat/completions; a non-200 reply raises what `classify` makes of it."""
        assert e.http is not None
        async with asyncio.timeout(budget_s):
            reply = await e.http.post("/chat/completions", jsonbody.dumps(body))
        status, raw = reply.status, reply.body
        try:
            payload = jsonbody.loads(raw) if raw else None
        except ValueError:
            payload = raw[:200].decode("utf-8", "replace")
        if status == 200:
            if not isinstance(payload, dict) or not payload.get("choices"):
                raise Retry("unavailable", "the reply holds no choices")
            return payload
        raise classify(status, payload, self.pool.engine)


def classify(status: int, payload: Any, engine: str) -> Exception:
    """A non-200 reply → what the retry loop (Retry) or the caller (GrmError) gets."""
    kind, message = error_fields(payload)
    what = f"{engine} answered {status}: {message[:300]}"
    if is_template_error(status, kind, message):
        return ChatTemplateError(f"the chat template refused the messages: {what}")
    if status == 429:
        return Retry("overloaded", what)
    if status == 503:
        busy = re.search(r"overload|busy|too many|queue", message, re.I)
        return Retry("overloaded" if busy else "unavailable", what)
    if status in (400, 422) or (status == 500 and "validation error" in message.lower()):
        # llama-cpp-python answers its own request-validation errors with 500
        if _CONTEXT.search(message) or kind == "exceed_context_size_error":
            return InvalidArgumentError(
                f"the prompt and max_new_tokens exceed the model's context ({what})",
                field="responses",
            )
        return InvalidArgumentError(f"{engine} refused the request: {message[:300]}")
    if status >= 500 or status == 424:
        return Retry("unavailable", what)
    if status in (401, 403):
        return FailedPreconditionError(f"{what} (check --openai-api-key-file)")
    return BackendError(what)


def load_limit(base: int, running: float, waiting: float, ours: int) -> int:
    """In-flight bound of one endpoint under load: what others run or queue there takes
    slots from us, and an engine that queues runs no more than it is running now."""
    cap = base
    if waiting > 0 and running > 0:
        cap = min(cap, int(running))
    others = max(0, int(running + waiting) - ours)
    return max(1, cap - others)


def _read_reply(payload: dict[str, Any], sent_seed: int) -> tuple[str, str, int, int]:
    """(text, finish reason, completion tokens, seed) of a chat completion."""
    try:
        choice = payload["choices"][0]
        text = str((choice.get("message") or {}).get("content") or "")
        reason = str(choice.get("finish_reason") or "stop")
    except (KeyError, IndexError, TypeError, AttributeError) as exc:
        raise BackendError(f"not a chat completion: {exc}") from None
    usage = payload.get("usage") or {}
    tokens = int(usage.get("completion_tokens") or 0)
    seed = payload.get("seed")
    return (
        text,
        "length" if reason == "length" else "stop",
        tokens,
        int(seed) if isinstance(seed, int) else sent_seed,
    )


def _fitting_body_chars(max_tokens: int, n: int) -> int:
    """Free-text characters that leave room for the score line in `max_tokens` (a token
    carries at least one character of ASCII text)."""
    line = len(FORCED_PREFIX) + 2 * n + 2 * (n - 1) + 1
    return max(0, max_tokens - line - 4)


def _engine_info(
    d: Dialect, model: str, entry: dict[str, Any], probes: dict[str, Any], cap: int | None
) -> EngineInfo:
    """Limits, revision and version from the routes the engine answered."""
    info = EngineInfo(dialect=d, model=model, base_limit=d.default_limit)
    data = probes.get(d.info_path)
    data = data if isinstance(data, dict) else {}
    context = entry.get("max_model_len")
    limit: Any = None
    if d.name == "vllm":
        info.version = parse_version(data.get("version"))
    elif d.name == "sglang":
        limit = data.get("max_running_requests")
        context = context or data.get("context_length")
        info.version = parse_version(data.get("version"))
    elif d.name == "llamacpp":
        limit = data.get("total_slots")
        settings = data.get("default_generation_settings")
        if isinstance(settings, dict):
            context = settings.get("n_ctx") or context
    elif d.name == "tgi":
        limit = data.get("max_concurrent_requests")
        context = data.get("max_total_tokens") or context
        info.revision = str(data.get("model_sha") or "")
        info.version = parse_version(data.get("version"))
    if isinstance(limit, int) and limit > 0:
        info.base_limit = limit
    if cap:
        info.base_limit = min(info.base_limit, cap) if limit else cap
    if isinstance(context, int) and context > 0:
        info.context = context
    return info


def _base_url(url: str) -> str:
    """`http://host:port` or `.../v1` → the `/v1` base every route hangs off."""
    base = url.strip().rstrip("/")
    return base if base.endswith("/v1") else f"{base}/v1"


def _root(base: str) -> str:
    """The server root of a `/v1` base (where /metrics, /health, /props ... live)."""
    return base[: -len("/v1")] if base.endswith("/v1") else base


__all__ = ["OpenAiBackend", "OpenAiSettings", "classify", "load_limit"]
