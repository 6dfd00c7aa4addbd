"""The TGI-compatible HTTP server: TGI's routes, validation, admission and metrics over an Engine.

Routes (as in `tests/contracts/tgi-openapi.json`): `POST /generate`, `POST /` (compat; non
streaming only), `POST /tokenize`, `POST /chat_tokenize`, `GET /info`, `GET /health`,
`GET /metrics` (Prometheus text, TGI's metric names). `/chat_tokenize` renders with the
engine's chat format, or with a chat template given in the settings (`--chat-template`); a
template that refuses the messages (e.g. a Gemma-2 template's `raise_exception('System role
not supported')`) is answered as TGI's router answers it: HTTP 422 with
`{"error": "Template error: ...", "error_type": "template_error"}`. Like TGI, a request beyond
`max_concurrent_requests` is refused at once with 429 `overloaded`; admitted requests wait
for the engine (`tgi_queue_size`). Errors are TGI's `{"error", "error_type"}` bodies.

Faults (for tests and benchmarks, any engine): per-request latency (fixed or lognormal around
a median), and rates — or a fixed leading sequence — of 429, 500, hangs ("timeout"), garbage
text, a wrong number of scores, and dropped connections. `prefix_cost_ms` adds prefill time
for the prompt tokens the server has not seen as a prefix before (grm_dev.devtgi.prefix).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from grm.backends.chat_template import compile_chat_template, render_chat
from grm.core.errors import ChatTemplateError
from grm_dev.devserver import Exchange, recording
from grm_dev.devtgi.engines import (
    Engine,
    GenerateCall,
    Generated,
    UnsupportedGrammar,
    parse_grammar,
    scripted_judgement,
    scripted_score,
    shown_responses,
)
from grm_dev.devtgi.metrics import Metrics
from grm_dev.devtgi.prefix import Prefill

log = logging.getLogger(__name__)

API_VERSION = "3.3.6-dev0"  # the TGI API version this server follows
FAULT_KINDS = ("ok", "429", "422", "500", "timeout", "garbage", "wrong-count", "disconnect")
GARBAGE_TEXT = "I would rather not rate these responses; both have merits and flaws."


@dataclass(frozen=True)
class FaultSettings:
    """Injected latency and failures (rates are per /generate request, in [0, 1])."""

    latency_ms: float = 0.0
    latency_dist: str = "fixed"  # "fixed" or "lognormal" (latency_ms is then the median)
    latency_sigma: float = 0.5
    rate_429: float = 0.0
    rate_422: float = 0.0
    rate_500: float = 0.0
    rate_timeout: float = 0.0
    rate_garbage: float = 0.0
    rate_wrong_count: float = 0.0
    rate_disconnect: float = 0.0
    sequence: tuple[str, ...] = ()  # faults of the first requests, in order, before the rates
    hang_s: float = 3600.0  # how long a "timeout" request hangs before failing
    seed: int | None = None
    # Extra latency per 1,000 prompt tokens not in the server's prefix cache (0: no model).
    prefix_cost_ms: float = 0.0
    prefix_cache_blocks: int = 65_536  # blocks of 16 tokens the prefix cache keeps (LRU)

    def __post_init__(self) -> None:
        rates = self.rates()
        if any(not 0.0 <= r <= 1.0 for r in rates.values()) or sum(rates.values()) > 1.0:
            raise ValueError(f"fault rates must lie in [0, 1] and sum to at most 1: {rates}")
        unknown = [f for f in self.sequence if f not in FAULT_KINDS]
        if unknown:
            raise ValueError(f"unknown fault(s) {unknown}; known: {', '.join(FAULT_KINDS)}")
        if self.latency_dist not in ("fixed", "lognormal"):
            raise ValueError(f"latency_dist must be fixed or lognormal, not {self.latency_dist!r}")
        if self.prefix_cost_ms < 0 or self.prefix_cache_blocks < 1:
            raise ValueError("prefix_cost_ms must be >= 0 and prefix_cache_blocks >= 1")

    def rates(self) -> dict[str, float]:
        return {
            "429": self.rate_429,
            "422": self.rate_422,
            "500": self.rate_500,
            "timeout": self.rate_timeout,
            "garbage": self.rate_garbage,
            "wrong-count": self.rate_wrong_count,
            "disconnect": self.rate_disconnect,
        }


@dataclass(frozen=True)
class DevTgiSettings:
    """What /info reports and enforces."""

    max_concurrent_requests: int = 128
    max_input_tokens: int | None = None  # default: max_total_tokens - 1
    max_total_tokens: int | None = None  # default: the engine's context
    max_best_of: int = 2
    max_stop_sequences: int = 4
    max_client_batch_size: int = 4
    model_id: str | None = None  # reported instead of the engine's
    record: bool = False  # keep every exchange (request and response bodies) in memory
    record_limit: int = 100_000
    faults: FaultSettings = field(default_factory=FaultSettings)
    # A chat template (Jinja source or file) served instead of the engine's own, applied as
    # TGI applies one (grm.backends.chat_template: sandbox, raise_exception, generation cue).
    chat_template: str | None = None
    bos_token: str = ""
    eos_token: str = ""


class ValidationFailure(Exception):
    """A request TGI would answer with 422 `validation`."""


class DevTgiState:
    """Live state of one server: admission counters, metrics, the exchange log."""

    def __init__(self, engine: Engine, settings: DevTgiSettings) -> None:
        self.engine = engine
        self.settings = settings
        self.max_total_tokens = settings.max_total_tokens or engine.max_total_tokens
        self.max_input_tokens = settings.max_input_tokens or self.max_total_tokens - 1
        if self.max_input_tokens >= self.max_total_tokens:
            raise ValueError("max_input_tokens must be below max_total_tokens")
        self.ready = False
        self.admitted = 0
        self.peak_admitted = 0
        self.running = 0
        self.engine_slots = asyncio.Semaphore(engine.capacity)
        self.metrics = Metrics()
        for name in ("tgi_request_count", "tgi_request_success"):
            self.metrics.inc(name, 0)  # exported from the start, as counters should be
        self.exchanges: deque[Exchange] = deque(maxlen=settings.record_limit)
        self.rng = random.Random(settings.faults.seed)
        self.fault_sequence = deque(settings.faults.sequence)
        self.generate_requests = 0
        f = settings.faults
        self.prefill = Prefill(f.prefix_cost_ms, f.prefix_cache_blocks)
        self.template: Any = (
            compile_chat_template(settings.chat_template) if settings.chat_template else None
        )

    def render_chat(self, messages: list[dict[str, str]]) -> str:
        """The served chat template applied to the messages (ChatTemplateError on refusal)."""
        if self.template is None:
            return self.engine.render_chat(messages)
        s = self.settings
        return render_chat(self.template, messages, bos_token=s.bos_token, eos_token=s.eos_token)

    def info(self) -> dict[str, Any]:
        s = self.settings
        return {
            "model_id": s.model_id or self.engine.model_id,
            "model_sha": self.engine.model_sha,
            "model_pipeline_tag": "text-generation",
            "max_concurrent_requests": s.max_concurrent_requests,
            "max_best_of": s.max_best_of,
            "max_stop_sequences": s.max_stop_sequences,
            "max_input_tokens": self.max_input_tokens,
            "max_total_tokens": self.max_total_tokens,
            "validation_workers": 1,
            "max_client_batch_size": s.max_client_batch_size,
            "router": "grm-devtgi",
            "version": API_VERSION,
            "sha": None,
            "docker_label": None,
        }

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


STATE = web.AppKey("devtgi_state", DevTgiState)


def error(status: int, message: str, error_type: str) -> web.Response:
    return web.json_response({"error": message, "error_type": error_type}, status=status)


def overloaded() -> web.Response:
    return error(429, "Model is overloaded", "overloaded")


def create_app(engine: Engine, settings: DevTgiSettings | None = None) -> web.Application:
    """The aiohttp application; `app[STATE]` exposes the live state (tests read it)."""
    state = DevTgiState(engine, settings or DevTgiSettings())
    app = web.Application(middlewares=[recording(STATE)], client_max_size=64 * 1024 * 1024)
    app[STATE] = state
    app.router.add_post("/generate", _generate)
    app.router.add_post("/", _compat_generate)
    app.router.add_post("/tokenize", _tokenize)
    app.router.add_post("/chat_tokenize", _chat_tokenize)
    app.router.add_get("/info", _info)
    app.router.add_get("/health", _health)
    app.router.add_get("/metrics", _metrics)
    return app


async def _read_json(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError as exc:
        raise ValidationFailure(f"Failed to deserialize the JSON body: {exc}") from None
    if not isinstance(body, dict):
        raise ValidationFailure("the JSON body must be an object")
    return body


async def _info(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE].info())


async def _health(request: web.Request) -> web.Response:
    if request.app[STATE].ready:
        return web.Response(status=200)
    return error(503, "unhealthy", "healthcheck")


async def _metrics(request: web.Request) -> web.Response:
    state = request.app[STATE]
    state.metrics.set_gauge("tgi_queue_size", state.admitted - state.running)
    state.metrics.set_gauge("tgi_batch_current_size", state.running)
    state.metrics.set_gauge("tgi_request_in_flight", state.admitted)
    return web.Response(text=state.metrics.render(), content_type="text/plain")


async def _tokenize(request: web.Request) -> web.Response:
    state = request.app[STATE]
    try:
        body = await _read_json(request)
        inputs = body.get("inputs")
        if not isinstance(inputs, str):
            raise ValidationFailure("`inputs` must be a string")
    except ValidationFailure as exc:
        return error(422, f"Input validation error: {exc}", "validation")
    return web.json_response(_simple_tokens(await state.engine.tokenize(inputs)))


async def _chat_tokenize(request: web.Request) -> web.Response:
    state = request.app[STATE]
    try:
        body = await _read_json(request)
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise ValidationFailure("`messages` must be a non-empty list")
        turns = []
        for m in messages:
            if not isinstance(m, dict) or not isinstance(m.get("content"), str):
                raise ValidationFailure("the dev server takes text messages only")
            turns.append({"role": str(m.get("role", "user")), "content": m["content"]})
    except ValidationFailure as exc:
        return error(422, f"Input validation error: {exc}", "validation")
    if not state.ready:
        return error(503, "model is loading", "unhealthy")
    try:
        text = state.render_chat(turns)
    except ChatTemplateError as exc:
        # TGI: InferError::TemplateError -> 422, its Display "Template error: {minijinja error}"
        detail = str(exc).removeprefix("chat template: ")
        return error(422, f"Template error: syntax error: {detail}", "template_error")
    tokens = await state.engine.tokenize(text)
    return web.json_response({"tokenize_response": _simple_tokens(tokens), "templated_text": text})


def _simple_tokens(tokens: list[tuple[int, str]]) -> list[dict[str, Any]]:
    out, at = [], 0
    for token_id, text in tokens:
        out.append({"id": token_id, "text": text, "start": at, "stop": at + len(text)})
        at += len(text)
    return out


async def _compat_generate(request: web.Request) -> web.Response:
    """`POST /`: the compat route; non-streaming only, the reply is a one-element list."""
    try:
        body = await _read_json(request)
    except ValidationFailure as exc:
        return error(422, f"Input validation error: {exc}", "validation")
    if body.get("stream"):
        return error(422, "Input validation error: the dev server does not stream", "validation")
    response = await _generate_body(request, body)
    if response.status != 200:
        return response
    payload = json.loads(bytes(response.body))  # type: ignore[arg-type]
    return web.json_response([payload], headers=_timing_headers(response))


async def _generate(request: web.Request) -> web.Response:
    try:
        body = await _read_json(request)
    except ValidationFailure as exc:
        return error(422, f"Input validation error: {exc}", "validation")
    return await _generate_body(request, body)


def _timing_headers(response: web.Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.lower().startswith("x-")}


async def _generate_body(request: web.Request, body: dict[str, Any]) -> web.Response:
    """Admission (429) → validation (422) → fault → queue for the engine → reply."""
    state = request.app[STATE]
    m = state.metrics
    m.inc("tgi_request_count")
    if not state.ready:
        m.inc("tgi_request_failure", err="unhealthy")
        return error(503, "model is loading", "unhealthy")
    if state.admitted >= state.settings.max_concurrent_requests:
        m.inc("tgi_request_failure", err="overloaded")
        return overloaded()
    state.admitted += 1
    state.peak_admitted = max(state.peak_admitted, state.admitted)
    started = time.perf_counter()
    try:
        try:
            call, input_tokens, want = await _validate(state, body)
        except ValidationFailure as exc:
            m.inc("tgi_request_failure", err="validation")
            return error(422, f"Input validation error: {exc}", "validation")
        validated = time.perf_counter()
        state.generate_requests += 1
        fault = state.next_fault()
        if fault == "429":
            m.inc("tgi_request_failure", err="overloaded")
            return overloaded()
        if fault == "422":
            m.inc("tgi_request_failure", err="validation")
            return error(422, "Input validation error: injected fault", "validation")
        if fault == "disconnect":
            m.inc("tgi_request_failure", err="disconnect")
            if request.transport is not None:
                request.transport.close()
            raise asyncio.CancelledError  # nothing more to say on a closed connection
        await state.prefill.run([token_id for token_id, _ in input_tokens])
        await asyncio.sleep(state.latency_s())
        if fault == "timeout":
            await asyncio.sleep(state.settings.faults.hang_s)
        if fault in ("500", "timeout"):
            m.inc("tgi_request_failure", err="incomplete_generation")
            return error(500, "Incomplete generation (injected fault)", "incomplete_generation")
        async with state.engine_slots:
            queued = time.perf_counter()
            state.running += 1
            try:
                generated = await state.engine.generate(call)
            finally:
                state.running -= 1
        if fault == "garbage":
            generated = await _rewrite(state, call, GARBAGE_TEXT)
        elif fault == "wrong-count":
            shown = shown_responses(call.inputs)
            wrong = [scripted_score(r) for r in shown] + [5]
            generated = await _rewrite(state, call, scripted_judgement(wrong, call.seed))
    finally:
        state.admitted -= 1
    done = time.perf_counter()
    m.inc("tgi_request_success")
    m.observe("tgi_request_duration", done - started)
    m.observe("tgi_request_validation_duration", validated - started)
    m.observe("tgi_request_queue_duration", queued - validated)
    m.observe("tgi_request_inference_duration", done - queued)
    m.observe("tgi_request_generated_tokens", generated.generated_tokens)
    m.observe("tgi_request_input_length", len(input_tokens))
    m.observe("tgi_request_max_new_tokens", call.max_new_tokens)
    payload: dict[str, Any] = {"generated_text": generated.text}
    if want["return_full_text"]:
        payload["generated_text"] = call.inputs + generated.text
    if want["details"]:
        tokens = await state.engine.tokenize(generated.text)
        payload["details"] = {
            "finish_reason": generated.finish_reason,
            "generated_tokens": generated.generated_tokens,
            "seed": call.seed if call.do_sample else None,
            "prefill": (
                [{"id": i, "text": t, "logprob": None} for i, t in input_tokens]
                if want["decoder_input_details"]
                else []
            ),
            "tokens": [{"id": i, "text": t, "logprob": None, "special": False} for i, t in tokens],
        }
    ms = 1000.0
    headers = {
        "x-compute-type": "devtgi",
        "x-total-time": str(round((done - started) * ms)),
        "x-validation-time": str(round((validated - started) * ms)),
        "x-queue-time": str(round((queued - validated) * ms)),
        "x-inference-time": str(round((done - queued) * ms)),
        "x-prompt-tokens": str(len(input_tokens)),
        "x-generated-tokens": str(generated.generated_tokens),
    }
    return web.json_response(payload, headers=headers, dumps=_compact)


def _compact(value: Any) -> str:
    """JSON as TGI's router writes it (serde_json: no spaces, UTF-8 as is)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


async def _rewrite(state: DevTgiState, call: GenerateCall, text: str) -> Generated:
    """A faulty output in place of the engine's, within the same token budget."""
    from grm_dev.devtgi.engines import ScriptedEngine

    return await ScriptedEngine.finish(ScriptedEngine(), text, call)  # type: ignore[arg-type]


def _number(params: dict[str, Any], name: str, *, integer: bool = False) -> float | None:
    value = params.get(name)
    if value is None:
        return None
    ok = isinstance(value, int) if integer else isinstance(value, int | float)
    if not ok or isinstance(value, bool):
        raise ValidationFailure(f"`{name}` must be {'an integer' if integer else 'a number'}")
    return value


async def _validate(
    state: DevTgiState, body: dict[str, Any]
) -> tuple[GenerateCall, list[tuple[int, str]], dict[str, bool]]:
    """TGI's request validation (router/src/validation.rs), for the fields the server uses."""
    s = state.settings
    inputs = body.get("inputs")
    if not isinstance(inputs, str):
        raise ValidationFailure("`inputs` must be a string")
    if not inputs:
        raise ValidationFailure("`inputs` cannot be empty")
    params = body.get("parameters") or {}
    if not isinstance(params, dict):
        raise ValidationFailure("`parameters` must be an object")
    best_of = _number(params, "best_of", integer=True)
    if best_of is not None and best_of != 1:
        if not 0 < best_of <= s.max_best_of:
            raise ValidationFailure(
                f"`best_of` must be > 0 and <= {s.max_best_of}. Given: {best_of}"
            )
        raise ValidationFailure("`best_of` > 1 is not implemented by the dev server")
    temperature = _number(params, "temperature")
    if temperature is not None and temperature <= 0:
        raise ValidationFailure("`temperature` must be strictly positive")
    for name in ("repetition_penalty", "frequency_penalty"):
        value = _number(params, name)
        if value is not None and value <= 0 and name == "repetition_penalty":
            raise ValidationFailure(f"`{name}` must be strictly positive")
    top_p = _number(params, "top_p")
    if top_p is not None and not 0 < top_p < 1:
        raise ValidationFailure("`top_p` must be > 0.0 and < 1.0")
    typical_p = _number(params, "typical_p")
    if typical_p is not None and not 0 < typical_p < 1:
        raise ValidationFailure("`typical_p` must be > 0.0 and < 1.0")
    top_k = _number(params, "top_k", integer=True)
    if top_k is not None and top_k <= 0:
        raise ValidationFailure("`top_k` must be strictly positive")
    if params.get("truncate") is not None:
        raise ValidationFailure("`truncate` is not implemented by the dev server")
    seed = _number(params, "seed", integer=True)
    if seed is not None and seed < 0:
        raise ValidationFailure("`seed` must be a non-negative integer")
    stop = params.get("stop") or []
    if not isinstance(stop, list) or not all(isinstance(x, str) for x in stop):
        raise ValidationFailure("`stop` must be a list of strings")
    if len(stop) > s.max_stop_sequences:
        raise ValidationFailure(
            f"`stop` supports up to {s.max_stop_sequences} stop sequences. Given: {len(stop)}"
        )
    try:
        grammar = parse_grammar(params.get("grammar"))
    except UnsupportedGrammar as exc:
        raise ValidationFailure(f"grammar: {exc}") from None
    input_tokens = await state.engine.tokenize(inputs)
    n_in = len(input_tokens)
    if n_in > state.max_input_tokens:
        raise ValidationFailure(
            f"`inputs` must have less than {state.max_input_tokens} tokens. Given: {n_in}"
        )
    max_new = _number(params, "max_new_tokens", integer=True)
    if max_new is None:
        max_new = state.max_total_tokens - n_in
    if max_new <= 0:
        raise ValidationFailure("`max_new_tokens` must be strictly positive")
    if n_in + max_new > state.max_total_tokens:
        raise ValidationFailure(
            f"`inputs` tokens + `max_new_tokens` must be <= {state.max_total_tokens}. "
            f"Given: {n_in} `inputs` tokens and {max_new} `max_new_tokens`"
        )
    # As TGI's token chooser: a warper that changes the distribution turns sampling on.
    do_sample = bool(params.get("do_sample")) or (
        (temperature is not None and temperature != 1.0)
        or (top_k is not None and top_k > 0)
        or (top_p is not None and top_p < 1.0)
        or (typical_p is not None and typical_p < 1.0)
    )
    call = GenerateCall(
        inputs=inputs,
        max_new_tokens=int(max_new),
        do_sample=do_sample,
        temperature=float(temperature or 1.0),
        top_p=float(top_p or 1.0),
        seed=int(seed) if seed is not None else state.rng.randrange(1, 2**63),
        stop=tuple(stop),
        grammar=grammar,
    )
    want = {
        "details": bool(params.get("details", True)),
        "decoder_input_details": bool(params.get("decoder_input_details", False)),
        "return_full_text": bool(params.get("return_full_text") or False),
    }
    return call, input_tokens, want
