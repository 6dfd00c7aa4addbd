"""OpenRLHF's remote reward model protocol over HTTP: `POST /get_reward`.

OpenRLHF (`--remote_rm_url http://host:5000/get_reward`) posts

    {"query": ["<prompt><response>", ...], "prompts": ["<prompt>", ...], "labels": [...]}

and reads `{"rewards": [...], "scores": [...], "extra_logs": {...}}` (the shape of its
`openrlhf.cli.serve_rm`): one float per query, `extra_logs` values one per query too.

Translation: each query is prompt + response, so the response is what follows the prompt
(found as a prefix, after dropping the `strip` tokens, e.g. pad/eos, from both ends; else the
first occurrence of the prompt). With `group` on, the responses of the same prompt in one
request are scored together (one multi-response Score per `group_size` of them), else one by
one. `labels` are accepted and ignored: the GRM judges without a reference.

Failures: OpenRLHF has no per-item error slot, and a reward of 0 would be a silent lie, so if
any item fails the whole request fails — HTTP 503 (retryable: OpenRLHF's client retries) or
400 when every failure is the request's own fault — with a JSON body
`{"error": "...", "failed": [{"index": i, "code": "UNAVAILABLE", "message": "..."}]}`.

The endpoint calls the aggregator's own RewardService through the SDK over loopback, so limits,
validation, deadlines, tracing and the result cache apply exactly as for gRPC callers.

Security follows the gRPC port's: with `--tls-cert` it serves HTTPS with the same certificate
(and requires client certificates with `--tls-client-ca`), re-read when the files change; with
a bearer token, `/get_reward` answers 401 without `Authorization: Bearer <token>` (`/health`
stays open for probes). Text that cannot be encoded as UTF-8 (a lone surrogate, which JSON
can carry as an escape) is the request's fault: 400 naming the field.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from grm.client import AsyncGrmClient
from grm.core.errors import GrmError, InvalidArgumentError
from grm.core.types import ScoreResult
from grm.core.validation import check_encodable
from grm.integrations.groups import (
    DEFAULT_BATCH_ITEMS,
    DEFAULT_GROUP_SIZE,
    Group,
    as_reference,
    plan_groups,
    score_groups_async,
)
from grm.rpc.security import ServerTls, TokenSource, bearer_ok

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HttpRmSettings:
    host: str = "127.0.0.1"
    port: int = 0  # in the aggregator 0 means off; start() binds any free port
    group: bool = True
    group_size: int = DEFAULT_GROUP_SIZE
    k: int | None = None  # None: the aggregator's default k
    batch_items: int = DEFAULT_BATCH_ITEMS
    timeout_s: float = 600.0
    strip: tuple[str, ...] = ()  # tokens removed from the ends of queries and prompts
    tls: ServerTls | None = None  # HTTPS with the gRPC port's certificate (None: plain HTTP)
    token: TokenSource | None = None  # the bearer token /get_reward requires (None: none)
    labels_as_reference: bool = False  # show each query's label to the judge as its reference


def split_query(query: str, prompt: str, strip: Sequence[str] = ()) -> str:
    """The response part of `query` = prompt + response."""
    query, prompt = _strip(query, strip), _strip(prompt, strip)
    if query.startswith(prompt):
        return query[len(prompt) :]
    at = query.find(prompt) if prompt else -1
    if at < 0:
        raise InvalidArgumentError("the prompt is not part of the query", field="prompts")
    return query[at + len(prompt) :]


def _strip(text: str, tokens: Sequence[str]) -> str:
    changed = True
    while changed and tokens:
        changed = False
        for tok in tokens:
            if tok and text.startswith(tok):
                text, changed = text[len(tok) :], True
            if tok and text.endswith(tok):
                text, changed = text[: -len(tok)], True
    return text


def parse_body(body: Any, strip: Sequence[str] = ()) -> tuple[list[str], list[str]]:
    """(prompts, responses) from a /get_reward body; InvalidArgumentError if malformed."""
    if not isinstance(body, dict):
        raise InvalidArgumentError("the body must be a JSON object")
    queries, prompts = body.get("query"), body.get("prompts")
    if not isinstance(queries, list) or not all(isinstance(q, str) for q in queries):
        raise InvalidArgumentError("must be a list of strings", field="query")
    if not isinstance(prompts, list) or not all(isinstance(p, str) for p in prompts):
        raise InvalidArgumentError(
            "must be a list of strings (the GRM needs each query's prompt)", field="prompts"
        )
    if len(prompts) != len(queries):
        raise InvalidArgumentError(
            f"has {len(prompts)} items for {len(queries)} queries", field="prompts"
        )
    for name, texts in (("query", queries), ("prompts", prompts)):
        for i, text in enumerate(texts):
            check_encodable(text, f"{name}[{i}]")
    responses = []
    for i, (q, p) in enumerate(zip(queries, prompts, strict=True)):
        try:
            responses.append(split_query(q, p, strip))
        except InvalidArgumentError as exc:
            raise InvalidArgumentError(f"prompts[{i}] is not part of query[{i}]") from exc
    return [_strip(p, strip) for p in prompts], responses


def parse_labels(body: Any, n: int) -> list[str]:
    """One reference answer per query from a /get_reward body's `labels`."""
    labels = body.get("labels") if isinstance(body, dict) else None
    if not isinstance(labels, list) or len(labels) != n:
        raise InvalidArgumentError(
            f"must be a list with one reference per query ({n}) when labels are references",
            field="labels",
        )
    return [as_reference(label) for label in labels]


def reply_body(groups: Sequence[Group], results: Sequence[ScoreResult], n: int) -> dict[str, Any]:
    """The OpenRLHF reply for fully scored groups."""
    rewards = [0.0] * n
    k_used = [0.0] * n
    votes = [0.0] * n
    degraded = [0.0] * n
    for g, r in zip(groups, results, strict=True):
        for pos, i in enumerate(g.indices):
            rewards[i] = float(r.rewards[pos])
            votes[i] = float(r.votes[pos]) if r.votes else 0.0
            k_used[i] = float(r.k_used)
            degraded[i] = 0.0 if r.status == "complete" else 1.0
    return {
        "rewards": rewards,
        "scores": list(rewards),
        "extra_logs": {"grm_k_used": k_used, "grm_votes": votes, "grm_degraded": degraded},
    }


def failure_body(
    groups: Sequence[Group], outcomes: Sequence[ScoreResult | GrmError]
) -> tuple[int, dict[str, Any]]:
    """(HTTP status, body) when some groups failed."""
    failed = []
    for g, o in zip(groups, outcomes, strict=True):
        if isinstance(o, GrmError):
            failed += [{"index": i, "code": o.code, "message": str(o)} for i in g.indices]
    failed.sort(key=lambda f: f["index"])
    invalid = all(f["code"] == "INVALID_ARGUMENT" for f in failed)
    first = failed[0]
    return (400 if invalid else 503), {
        "error": f"{len(failed)} item(s) could not be scored; first: query[{first['index']}] "
        f"{first['code']}: {first['message']}",
        "failed": failed,
    }


class RewardHttpApp:
    """The aiohttp application serving /get_reward (and /health) over an AsyncGrmClient."""

    def __init__(self, client: AsyncGrmClient, settings: HttpRmSettings | None = None) -> None:
        self.client = client
        self.settings = settings or HttpRmSettings()
        self.app = web.Application(client_max_size=256 * 1024 * 1024)
        self.app.router.add_post("/get_reward", self.get_reward)
        self.app.router.add_get("/health", self.health)
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def get_reward(self, request: web.Request) -> web.Response:
        s = self.settings
        token = s.token() if s.token is not None else None
        if token and not bearer_ok(_authorization(request), token):
            log.info("/get_reward -> 401: missing or wrong bearer token")
            return _error(401, "missing or invalid bearer token")
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "the body is not JSON")
        try:
            prompts, responses = parse_body(body, s.strip)
            refs = parse_labels(body, len(responses)) if s.labels_as_reference else None
            groups = plan_groups(
                prompts, responses, group=s.group, group_size=s.group_size, references=refs
            )
        except InvalidArgumentError as exc:
            return _error(400, str(exc))
        if not groups:
            return web.json_response({"rewards": [], "scores": [], "extra_logs": {}})
        fields = {} if s.k is None else {"k": s.k}

        async def batch(items: Sequence[Any]) -> list[ScoreResult | GrmError]:
            return await self.client.score_batch(items, timeout=s.timeout_s)

        outcomes = await score_groups_async(batch, groups, fields, batch_items=s.batch_items)
        if any(isinstance(o, GrmError) for o in outcomes):
            status, payload = failure_body(groups, outcomes)
            log.warning("/get_reward -> %d: %s", status, payload["error"])
            return web.json_response(payload, status=status)
        results = [o for o in outcomes if isinstance(o, ScoreResult)]
        return web.json_response(reply_body(groups, results, len(responses)))

    async def start(self) -> int:
        """Listen on settings.host:settings.port (0 = any free port); returns the port."""
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        tls = self.settings.tls
        site = web.TCPSite(
            self._runner,
            self.settings.host,
            self.settings.port,
            ssl_context=tls.ssl_context() if tls is not None else None,
        )
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self.settings.port
        scheme = "https" if tls is not None else "http"
        log.info("OpenRLHF /get_reward on %s://%s:%d", scheme, self.settings.host, self.port)
        return self.port

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.client.close()


def _authorization(request: web.Request) -> list[tuple[str, str]]:
    return [("authorization", v) for v in request.headers.getall("Authorization", [])]


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)
