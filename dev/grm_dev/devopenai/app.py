"""An OpenAI-compatible development server in the dialect of vLLM, SGLang, llama.cpp or TGI.

The same engines (the embedded model, or the scripted judge) and the same fault injection as
`grm dev-tgi` (grm_dev.devtgi), behind `POST /v1/chat/completions` and `GET /v1/models`,
plus each engine's own routes, spelled as that engine spells them:

- vllm: `structured_outputs.regex` (`guided_regex` only before 0.12, as vLLM ignores it
  since), `GET /version`, gauges `vllm:num_requests_running` / `vllm:num_requests_waiting`;
- sglang: `regex`, `GET /get_server_info`, `sglang:num_running_reqs` / `sglang:num_queue_reqs`;
- llamacpp: `grammar` (GBNF), `GET /props`, `llamacpp:requests_processing` /
  `llamacpp:requests_deferred` (501 without `--metrics`);
- tgi: `response_format {type: regex}`, `GET /info`, `tgi_batch_current_size` /
  `tgi_queue_size`.

Errors use each engine's body (`{"error": {...}}`, SGLang's flat `{"object": "error", ...}`,
TGI's `{"error", "error_type"}`). Requests beyond `max_concurrent` wait in the engine's queue
(TGI refuses them with 429, as TGI does). vLLM and SGLang continue a final assistant message
with `continue_final_message`. Like the real engines it is not: no batching, no streaming, and
only the grammars the suite sends (grm.core.grammar) are enforced — anything else is refused.
`extra_running` / `extra_waiting` add load from imaginary other clients to the gauges.
"""

from __future__ import annotations

import asyncio
import math
import random
import re
import time
import uuid
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from grm.core.grammar import FORCED_PREFIX, scores_gbnf, scores_suffix_gbnf
from grm_dev.devserver import Exchange, recording
from grm_dev.devtgi.app import FaultSettings
from grm_dev.devtgi.engines import (
    Engine,
    GenerateCall,
    Generated,
    ScoreGrammar,
    ScriptedEngine,
    UnsupportedGrammar,
    parse_grammar,
    scripted_judgement,
    scripted_score,
    shown_responses,
)
from grm_dev.devtgi.prefix import Prefill

DIALECTS = ("vllm", "sglang", "llamacpp", "tgi")
VERSIONS = {"vllm": "0.11.0", "sglang": "0.5.3", "llamacpp": "b6700", "tgi": "3.3.6-dev0"}
GARBAGE_TEXT = "I would rather not rate these responses; both have merits and flaws."
SYSTEM_ROLE_ERROR = "System role not supported"  # Gemma-2's chat template raises this


@dataclass(frozen=True)
class DevOpenAiSettings:
    """What the server reports and enforces."""

    dialect: str = "vllm"
    model_id: str | None = None  # default: the engine's
    version: str | None = None  # the engine version it claims (default: VERSIONS)
    max_concurrent: int = 128  # requests the engine runs at once; the rest wait (TGI: 429)
    context: int | None = None  # max_model_len / n_ctx / max_total_tokens (default: engine's)
    api_key: str | None = None  # require `Authorization: Bearer <key>`
    reject_system_role: bool = False  # the chat template refuses a system message
    metrics: bool = True  # llama.cpp serves /metrics only with --metrics
    record: bool = False  # keep every exchange in memory (contract tests)
    record_limit: int = 100_000
    faults: FaultSettings = field(default_factory=FaultSettings)

    def __post_init__(self) -> None:
        if self.dialect not in DIALECTS:
            raise ValueError(f"dialect must be one of {', '.join(DIALECTS)}, not {self.dialect!r}")


class RequestError(Exception):
    """A reply other than 200, in the dialect's error shape."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request") -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind  # invalid_request | template | overloaded | unavailable | server | auth


class DevOpenAiState:
    """Live state of one server: queue, load gauges, fault draws, the exchange log."""

    def __init__(self, engine: Engine, settings: DevOpenAiSettings) -> None:
        self.engine = engine
        self.settings = settings
        self.dialect = settings.dialect
        self.model_id = settings.model_id or engine.model_id
        self.version = settings.version or VERSIONS[settings.dialect]
        self.context = settings.context or engine.max_total_tokens
        self.ready = False
        self.admitted = 0
        self.running = 0
        self.extra_running = 0  # load from other clients, as the gauges report it
        self.extra_waiting = 0
        self.slots = asyncio.Semaphore(max(1, min(engine.capacity, settings.max_concurrent)))
        self.requests = 0
        self.exchanges: deque[Exchange] = deque(maxlen=settings.record_limit)
        self.rng = random.Random(settings.faults.seed)
        self.fault_sequence = deque(settings.faults.sequence)
        f = settings.faults
        self.prefill = Prefill(f.prefix_cost_ms, f.prefix_cache_blocks)

    @property
    def waiting(self) -> int:
        return self.admitted - self.running

    def next_fault(self) -> str:
        if self.fault_sequence:
            return self.fault_sequence.popleft()
        r = self.rng.random()
        for kind, rate in self.settings.faults.rates().items():
            if r < rate:
                return kind
            r -= rate
        return "ok"

    def latency_s(self) -> float:
        f = self.settings.faults
        if f.latency_ms <= 0:
            return 0.0
        if f.latency_dist == "lognormal":
            return self.rng.lognormvariate(math.log(f.latency_ms), f.latency_sigma) / 1000
        return f.latency_ms / 1000


STATE = web.AppKey("devopenai_state", DevOpenAiState)


# ------------------------------------------------------------------ error bodies


_OPENAI_TYPES = {
    "invalid_request": ("BadRequestError", 400),
    "template": ("BadRequestError", 400),
    "overloaded": ("TooManyRequestsError", 429),
    "unavailable": ("ServiceUnavailableError", 503),
    "server": ("InternalServerError", 500),
    "auth": ("Unauthorized", 401),
}
_LLAMACPP_TYPES = {
    "invalid_request": "invalid_request_error",
    "template": "server_error",
    "overloaded": "unavailable_error",
    "unavailable": "unavailable_error",
    "server": "server_error",
    "auth": "authentication_error",
}
_TGI_TYPES = {
    "invalid_request": "validation",
    "template": "template_error",
    "overloaded": "overloaded",
    "unavailable": "unhealthy",
    "server": "incomplete_generation",
    "auth": "authentication",
}


def error_reply(dialect: str, exc: RequestError) -> web.Response:
    """The error body each engine sends (see the module docstring)."""
    status, message = exc.status, str(exc)
    if dialect == "vllm":
        kind = _OPENAI_TYPES[exc.kind][0]
        body: Any = {"error": {"message": message, "type": kind, "param": None, "code": status}}
    elif dialect == "sglang":
        kind = _OPENAI_TYPES[exc.kind][0]
        body = {"object": "error", "message": message, "type": kind, "param": None, "code": status}
    elif dialect == "llamacpp":
        body = {"error": {"code": status, "message": message, "type": _LLAMACPP_TYPES[exc.kind]}}
    else:
        body = {"error": message, "error_type": _TGI_TYPES[exc.kind]}
    return web.json_response(body, status=status)


def template_error(dialect: str) -> RequestError:
    """What each engine answers when the chat template raises (Jinja `raise_exception`)."""
    if dialect == "tgi":
        return RequestError(422, f"Template error: {SYSTEM_ROLE_ERROR}", "template")
    if dialect == "llamacpp":
        return RequestError(500, SYSTEM_ROLE_ERROR, "template")
    return RequestError(400, f"jinja2.exceptions.TemplateError: {SYSTEM_ROLE_ERROR}", "template")


# ------------------------------------------------------------------ the app


def create_app(engine: Engine, settings: DevOpenAiSettings | None = None) -> web.Application:
    """The aiohttp application; `app[STATE]` exposes the live state (tests read it)."""
    state = DevOpenAiState(engine, settings or DevOpenAiSettings())
    app = web.Application(middlewares=[recording(STATE)], client_max_size=64 * 1024 * 1024)
    app[STATE] = state
    app.router.add_post("/v1/chat/completions", _chat)
    app.router.add_get("/v1/models", _models)
    app.router.add_get("/health", _health)
    app.router.add_get("/metrics", _metrics)
    route = {"vllm": "/version", "sglang": "/get_server_info", "llamacpp": "/props"}.get(
        state.dialect, "/info"
    )
    app.router.add_get(route, _server_info)
    return app


def _authorized(request: web.Request) -> bool:
    key = request.app[STATE].settings.api_key
    return key is None or request.headers.get("Authorization", "") == f"Bearer {key}"


async def _models(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if not _authorized(request):
        return error_reply(state.dialect, RequestError(401, "Invalid API key", "auth"))
    created = int(time.time())
    model: dict[str, Any] = {"id": state.model_id, "object": "model", "created": created}
    if state.dialect == "tgi":  # TGI answers one ModelInfo object, not a list
        return web.json_response({**model, "owned_by": state.model_id})
    if state.dialect == "vllm":
        model |= {"owned_by": "vllm", "root": state.model_id, "parent": None}
        model |= {"max_model_len": state.context, "permission": []}
    elif state.dialect == "sglang":
        model |= {"owned_by": "sglang", "root": state.model_id, "max_model_len": state.context}
    else:
        model |= {"owned_by": "llamacpp", "meta": {"n_ctx_train": state.context}}
    return web.json_response({"object": "list", "data": [model]})


async def _health(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if not state.ready:
        return error_reply(state.dialect, RequestError(503, "Loading model", "unavailable"))
    if state.dialect == "llamacpp":
        return web.json_response({"status": "ok"})
    return web.Response(status=200)


async def _server_info(request: web.Request) -> web.Response:
    state = request.app[STATE]
    s = state.settings
    if state.dialect == "vllm":
        return web.json_response({"version": state.version})
    if state.dialect == "sglang":
        return web.json_response(
            {
                "model_path": state.model_id,
                "max_running_requests": s.max_concurrent,
                "max_total_num_tokens": state.context * s.max_concurrent,
                "context_length": state.context,
                "version": state.version,
            }
        )
    if state.dialect == "llamacpp":
        return web.json_response(
            {
                "default_generation_settings": {"id": 0, "n_ctx": state.context},
                "total_slots": s.max_concurrent,
                "model_path": state.model_id,
                "build_info": state.version,
            }
        )
    return web.json_response(
        {
            "model_id": state.model_id,
            "model_sha": state.engine.model_sha,
            "model_pipeline_tag": "text-generation",
            "max_concurrent_requests": s.max_concurrent,
            "max_best_of": 2,
            "max_stop_sequences": 4,
            "max_input_tokens": state.context - 1,
            "max_total_tokens": state.context,
            "validation_workers": 1,
            "max_client_batch_size": 4,
            "router": "grm-devopenai",
            "version": state.version,
            "sha": None,
            "docker_label": None,
        }
    )


GAUGES = {
    "vllm": ("vllm:num_requests_running", "vllm:num_requests_waiting"),
    "sglang": ("sglang:num_running_reqs", "sglang:num_queue_reqs"),
    "llamacpp": ("llamacpp:requests_processing", "llamacpp:requests_deferred"),
    "tgi": ("tgi_batch_current_size", "tgi_queue_size"),
}


async def _metrics(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if state.dialect == "llamacpp" and not state.settings.metrics:
        message = "This server does not support metrics endpoint. Start it with `--metrics`"
        return error_reply(state.dialect, RequestError(501, message, "server"))
    running_name, waiting_name = GAUGES[state.dialect]
    labels = f'{{model_name="{state.model_id}"}}' if state.dialect in ("vllm", "sglang") else ""
    lines = []
    for name, value in (
        (running_name, state.running + state.extra_running),
        (waiting_name, state.waiting + state.extra_waiting),
    ):
        lines += [f"# HELP {name} {name}", f"# TYPE {name} gauge", f"{name}{labels} {value}"]
    lines += ["# TYPE grm_devopenai_requests_total counter"]
    lines += [f"grm_devopenai_requests_total {state.requests}"]
    return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")


# ------------------------------------------------------------------ chat completions


async def _chat(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    try:
        return await _complete(request, state)
    except RequestError as exc:
        return error_reply(state.dialect, exc)


async def _complete(request: web.Request, state: DevOpenAiState) -> web.StreamResponse:
    """Auth → readiness → validation → template → admission → fault → engine → reply."""
    if not _authorized(request):
        raise RequestError(401, "Invalid API key", "auth")
    if not state.ready:
        raise RequestError(503, "Loading model", "unavailable")
    try:
        body = await request.json()
    except ValueError as exc:
        raise RequestError(400, f"invalid JSON body: {exc}") from None
    if not isinstance(body, dict):
        raise RequestError(400, "the JSON body must be an object")
    state.requests += 1
    messages = _messages(body)
    if state.settings.reject_system_role and any(m["role"] == "system" for m in messages):
        raise template_error(state.dialect)
    continuing = bool(body.get("continue_final_message")) and state.dialect in ("vllm", "sglang")
    if continuing and messages[-1]["role"] != "assistant":
        raise RequestError(400, "continue_final_message needs a final assistant message")
    call = await _call(state, body, messages, continuing)
    if state.dialect == "tgi" and state.admitted >= state.settings.max_concurrent:
        raise RequestError(429, "Model is overloaded", "overloaded")
    fault = state.next_fault()
    if fault == "429":
        raise RequestError(429, "Model is overloaded", "overloaded")
    if fault == "422":
        raise RequestError(_invalid(state.dialect), "injected validation fault")
    if fault == "disconnect":
        if request.transport is not None:
            request.transport.close()
        raise asyncio.CancelledError
    state.admitted += 1
    try:
        if state.prefill.cost_ms > 0:
            tokens = await state.engine.tokenize(call.inputs)
            await state.prefill.run([token_id for token_id, _ in tokens])
        await asyncio.sleep(state.latency_s())
        if fault == "timeout":
            await asyncio.sleep(state.settings.faults.hang_s)
        if fault in ("500", "timeout"):
            raise RequestError(500, "injected server fault", "server")
        async with state.slots:
            state.running += 1
            try:
                generated = await state.engine.generate(call)
                generated = await _bound_body(state.engine, call, generated)
            finally:
                state.running -= 1
    finally:
        state.admitted -= 1
    if fault == "garbage":
        generated = await _rewrite(call, GARBAGE_TEXT)
    elif fault == "wrong-count":
        wrong = [scripted_score(r) for r in shown_responses(call.inputs)] + [5]
        generated = await _rewrite(call, scripted_judgement(wrong, call.seed))
    prompt_tokens = len(await state.engine.tokenize(call.inputs))
    return web.json_response(_reply(state, generated, prompt_tokens))


def _invalid(dialect: str) -> int:
    """The status of a request the engine refuses: TGI validates with 422, the others 400."""
    return 422 if dialect == "tgi" else 400


def _messages(body: dict[str, Any]) -> list[dict[str, str]]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError(400, "`messages` must be a non-empty list")
    out = []
    for m in messages:
        if not isinstance(m, dict) or not isinstance(m.get("content"), str):
            raise RequestError(400, "the dev server takes text messages only")
        role = m.get("role")
        if role not in ("system", "user", "assistant"):
            raise RequestError(400, f"unsupported role {role!r}")
        out.append({"role": role, "content": m["content"]})
    return out


def _number(body: dict[str, Any], name: str, default: float, *, integer: bool = False) -> float:
    value = body.get(name, default)
    if value is None:
        return default
    ok = isinstance(value, int) if integer else isinstance(value, int | float)
    if not ok or isinstance(value, bool):
        raise RequestError(400, f"`{name}` must be {'an integer' if integer else 'a number'}")
    return value


async def _call(
    state: DevOpenAiState, body: dict[str, Any], messages: list[dict[str, str]], continuing: bool
) -> GenerateCall:
    """The engine call of a validated request (the prompt rendered by the chat template)."""
    temperature = _number(body, "temperature", 1.0)
    top_p = _number(body, "top_p", 1.0)
    tgi_top_p = state.dialect == "tgi" and body.get("top_p") is not None and top_p >= 1
    if temperature < 0 or not 0 < top_p <= 1 or tgi_top_p:  # TGI: top_p < 1.0
        raise RequestError(400, "temperature must be >= 0 and top_p in (0, 1]")
    seed = int(_number(body, "seed", state.rng.randrange(1, 2**31), integer=True))
    stop = body.get("stop") or []
    stop = [stop] if isinstance(stop, str) else stop
    if not isinstance(stop, list) or not all(isinstance(x, str) for x in stop):
        raise RequestError(400, "`stop` must be a string or a list of strings")
    grammar = _grammar(state.dialect, state.version, body)
    if continuing:
        prompt = state.engine.render_chat(messages[:-1]) + messages[-1]["content"]
    else:
        prompt = state.engine.render_chat(messages)
    n_in = len(await state.engine.tokenize(prompt))
    max_tokens = int(_number(body, "max_tokens", state.context - n_in, integer=True))
    if max_tokens <= 0:
        raise RequestError(400, "`max_tokens` must be at least 1")
    if n_in + max_tokens > state.context:
        raise RequestError(
            _invalid(state.dialect),
            f"This model's maximum context length is {state.context} tokens. However, you "
            f"requested {n_in + max_tokens} tokens ({n_in} in the messages, {max_tokens} in "
            "the completion).",
        )
    return GenerateCall(
        inputs=prompt,
        max_new_tokens=max_tokens,
        do_sample=temperature > 0,
        temperature=float(temperature or 1.0),
        top_p=float(top_p),
        seed=seed,
        stop=tuple(stop),
        grammar=grammar,
    )


@dataclass(frozen=True)
class GbnfGrammar(ScoreGrammar):
    """A score grammar that arrived as GBNF (llama.cpp): passed on exactly as sent."""

    text: str = ""
    bounded: bool = False  # the free text has a `{0,N}` bound (max_body_chars)

    @property
    def gbnf(self) -> str:
        return self.text


_GBNF_BOUND = re.compile(r"body ::= \[\^\\x00\]\{0,(\d+)\}")


def _gbnf(text: Any) -> ScoreGrammar:
    """The suite's GBNF score grammars (exact matches only)."""
    if not isinstance(text, str):
        raise UnsupportedGrammar("`grammar` must be a string")
    n = text.count('score ::= ("10" | [1-9])') and (text.count('", " score') + 1)
    if n:
        if text == scores_gbnf(n):
            return GbnfGrammar("full", n, 0, text)
        if text == scores_suffix_gbnf(n):
            return GbnfGrammar("suffix", n, 0, text)
        bound = _GBNF_BOUND.search(text)
        if bound and text == scores_gbnf(n, int(bound.group(1))):
            return GbnfGrammar("full", n, int(bound.group(1)), text, bounded=True)
    raise UnsupportedGrammar("the dev server enforces only the GRM score-line grammars")


def _grammar(dialect: str, version: str, body: dict[str, Any]) -> ScoreGrammar | None:
    """The constraint in the dialect's field; other spellings are ignored, as engines do."""
    try:
        if dialect == "vllm":
            structured = body.get("structured_outputs")
            if isinstance(structured, dict) and structured.get("regex") is not None:
                return parse_grammar({"type": "regex", "value": structured["regex"]})
            if body.get("guided_regex") is not None and _before(version, (0, 12)):
                return parse_grammar({"type": "regex", "value": body["guided_regex"]})
            return None
        if dialect == "sglang":
            regex = body.get("regex")
            return None if regex is None else parse_grammar({"type": "regex", "value": regex})
        if dialect == "llamacpp":
            return None if body.get("grammar") is None else _gbnf(body["grammar"])
        fmt = body.get("response_format")
        return None if fmt is None else parse_grammar(fmt)
    except UnsupportedGrammar as exc:
        raise RequestError(422 if dialect == "tgi" else 400, f"grammar: {exc}") from None


def _before(version: str, limit: tuple[int, ...]) -> bool:
    parts = tuple(int(x) for x in re.findall(r"\d+", version)[:3])
    return parts < limit


def _reply(state: DevOpenAiState, generated: Generated, prompt_tokens: int) -> dict[str, Any]:
    """A chat.completion object; TGI's finish reasons mapped to OpenAI's."""
    finish = "length" if generated.finish_reason == "length" else "stop"
    choice: dict[str, Any] = {
        "index": 0,
        "message": {"role": "assistant", "content": generated.text, "refusal": None},
        "logprobs": None,
        "finish_reason": finish,
    }
    reply: dict[str, Any] = {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": state.model_id,
        "choices": [choice],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": generated.generated_tokens,
            "total_tokens": prompt_tokens + generated.generated_tokens,
        },
    }
    if state.dialect == "tgi":
        reply["system_fingerprint"] = f"{state.version}-devopenai"
    return reply


async def _bound_body(engine: Engine, call: GenerateCall, generated: Generated) -> Generated:
    """The scripted judge writes what it writes; a grammar that bounds the free text before
    the score line (llama.cpp GBNF `{0,N}`) is applied to its output here, as the model's
    sampler would have. The embedded model enforces the GBNF itself."""
    g = call.grammar
    if not isinstance(engine, ScriptedEngine) or g is None or g.kind != "full":
        return generated
    if (isinstance(g, GbnfGrammar) and not g.bounded) or g.max_body_chars is None:
        return generated
    cut = generated.text.rfind(FORCED_PREFIX)
    if 0 <= cut <= g.max_body_chars:
        return generated
    scores = [scripted_score(r) for r in shown_responses(call.inputs)] or [5] * g.n
    line = FORCED_PREFIX + ", ".join(str(s) for s in scores[: g.n]) + "}"
    body = generated.text if cut < 0 else generated.text[:cut]
    text = body[: g.max_body_chars].rstrip() + "\n" + line  # the line on its own, as the grammar
    tokens = len(await engine.tokenize(text))
    if tokens > call.max_new_tokens:
        return generated  # the line does not fit in the budget either: cut, as a model would be
    return Generated(text, tokens, "eos_token")


async def _rewrite(call: GenerateCall, text: str) -> Generated:
    """A faulty output in place of the engine's, within the same token budget."""
    return await ScriptedEngine.finish(ScriptedEngine(), text, call)  # type: ignore[arg-type]


def dialect_names() -> Sequence[str]:
    return DIALECTS
