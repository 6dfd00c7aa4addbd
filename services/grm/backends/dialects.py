"""What differs between OpenAI-compatible engines: one `Dialect` per engine, all data.

Every engine serves `POST /v1/chat/completions` with the model's own chat template and a
per-request `seed`; they differ in the field that constrains decoding, the routes that say
what the server is and how much it runs at once, the Prometheus gauges of its load, and a few
error shapes. `docs/engines.md` lists each fact with its source:

- **vLLM**: `structured_outputs: {regex}` (from 0.10.2; the older top-level `guided_regex`
  was removed in 0.12 and is silently ignored there, so the version from `GET /version`
  picks the spelling); `/v1/models` reports `max_model_len` and `owned_by: "vllm"`;
  `vllm:num_requests_running` / `vllm:num_requests_waiting`; `continue_final_message`.
- **SGLang**: top-level `regex`; `GET /get_server_info` (`max_running_requests`);
  `/v1/models` `owned_by: "sglang"`, `max_model_len`; `sglang:num_running_reqs` /
  `sglang:num_queue_reqs` (with `--enable-metrics`); `continue_final_message`.
- **llama.cpp server** (and llama-cpp-python's server): `grammar` (GBNF); `GET /props`
  (`total_slots` = `--parallel`, `default_generation_settings.n_ctx`); `/v1/models`
  `owned_by: "llamacpp"`; `llamacpp:requests_processing` / `llamacpp:requests_deferred`
  (with `--metrics`). Errors are `{"error": {"code", "message", "type"}}`.
- **TGI**: `response_format: {"type": "regex", "value"}`; `GET /info` (`model_sha`,
  `max_concurrent_requests`, `max_total_tokens`); `tgi_batch_current_size` /
  `tgi_queue_size`; errors `{"error", "error_type"}` (422 `template_error` for templates).

May import core only (it is data and pure functions).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from grm.core.grammar import scores_gbnf, scores_regex, scores_suffix_gbnf, scores_suffix_regex

ENGINES = ("vllm", "sglang", "llamacpp", "tgi")

# vLLM took `structured_outputs` in 0.10.2 and dropped `guided_*` in 0.12 (ignored since).
VLLM_STRUCTURED_OUTPUTS_SINCE = (0, 10, 2)


Body = int | None  # a bound on the free text before the score line (None: none)
Version = tuple[int, ...] | None
Constrain = Callable[[int, Body, Version, bool], dict[str, Any]]


def _regex(n: int, body: Body, suffix: bool) -> str:
    return scores_suffix_regex(n) if suffix else scores_regex(n, body)


def _vllm(
    n: int, body: int | None, version: tuple[int, ...] | None, suffix: bool
) -> dict[str, Any]:
    if version is not None and version < VLLM_STRUCTURED_OUTPUTS_SINCE:
        return {"guided_regex": _regex(n, body, suffix)}
    return {"structured_outputs": {"regex": _regex(n, body, suffix)}}


def _sglang(
    n: int, body: int | None, version: tuple[int, ...] | None, suffix: bool
) -> dict[str, Any]:
    return {"regex": _regex(n, body, suffix)}


def _llamacpp(
    n: int, body: int | None, version: tuple[int, ...] | None, suffix: bool
) -> dict[str, Any]:
    return {"grammar": scores_suffix_gbnf(n) if suffix else scores_gbnf(n, body)}


def _tgi(n: int, body: Body, version: Version, suffix: bool) -> dict[str, Any]:
    return {"response_format": {"type": "regex", "value": _regex(n, body, suffix)}}


@dataclass(frozen=True)
class Dialect:
    """One engine's spelling of the things the suite needs beyond plain chat completions."""

    name: str
    title: str  # for messages and logs
    running_metric: str  # Prometheus gauge: requests the engine runs now
    waiting_metric: str  # Prometheus gauge: requests queued in the engine
    default_limit: int  # in-flight bound per endpoint when the engine advertises none
    continuation: bool  # continues a final assistant message (`continue_final_message`)
    info_path: str  # root-relative route with the server's limits ("" = none)
    constrain: Constrain

    def constraint(
        self,
        n: int,
        max_body_chars: int | None,
        version: tuple[int, ...] | None = None,
        *,
        suffix: bool = False,
    ) -> dict[str, Any]:
        """Request fields that force the final `Scores: \\boxed{...}` line of n scores (with
        `suffix`: only its numbers and closing brace, after a forced prefix)."""
        return self.constrain(n, max_body_chars, version, suffix)


DIALECTS: dict[str, Dialect] = {
    "vllm": Dialect(
        "vllm",
        "vLLM",
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        256,  # vLLM's --max-num-seqs default (the engine does not advertise it)
        True,
        "/version",
        _vllm,
    ),
    "sglang": Dialect(
        "sglang",
        "SGLang",
        "sglang:num_running_reqs",
        "sglang:num_queue_reqs",
        256,
        True,
        "/get_server_info",
        _sglang,
    ),
    "llamacpp": Dialect(
        "llamacpp",
        "llama.cpp",
        "llamacpp:requests_processing",
        "llamacpp:requests_deferred",
        1,  # --parallel's default; /props total_slots says the real value
        False,
        "/props",
        _llamacpp,
    ),
    "tgi": Dialect(
        "tgi",
        "TGI",
        "tgi_batch_current_size",
        "tgi_queue_size",
        128,  # TGI's --max-concurrent-requests default; /info says the real value
        False,
        "/info",
        _tgi,
    ),
}


def dialect(name: str) -> Dialect:
    """The dialect of `name` (vllm | sglang | llamacpp | tgi)."""
    key = name.strip().lower().replace(".", "").replace("-", "").replace("_", "")
    key = {"llamacppserver": "llamacpp", "llama": "llamacpp"}.get(key, key)
    try:
        return DIALECTS[key]
    except KeyError:
        raise ValueError(f"unknown engine {name!r}; choose one of {', '.join(ENGINES)}") from None


def detect(models: Any, server_header: str, probes: dict[str, Any]) -> str | None:
    """The engine behind a server, from `/v1/models` (`owned_by`), its `Server` header and
    which root routes answered (`probes`: path → parsed JSON of a 200 reply)."""
    owners = {str(m.get("owned_by", "")).lower() for m in model_entries(models)}
    for name in ("vllm", "sglang", "llamacpp"):
        if name in owners:
            return name
    if "/info" in probes and isinstance(probes["/info"], dict) and "model_sha" in probes["/info"]:
        return "tgi"
    if "/get_server_info" in probes:
        return "sglang"
    if "/props" in probes and isinstance(probes["/props"], dict):
        return "llamacpp"
    if "/version" in probes and isinstance(probes["/version"], dict):
        return "vllm"
    if "llama" in server_header.lower():
        return "llamacpp"
    return None


def model_entries(models: Any) -> list[dict[str, Any]]:
    """The model objects of a `/v1/models` reply: OpenAI's list, or TGI's single object."""
    if isinstance(models, dict) and isinstance(models.get("data"), list):
        return [m for m in models["data"] if isinstance(m, dict)]
    if isinstance(models, dict) and "id" in models:
        return [models]
    return []


def parse_version(text: Any) -> tuple[int, ...] | None:
    """'0.11.0rc2.dev5' → (0, 11, 0); None when there is no leading number."""
    match = re.match(r"v?(\d+)(?:\.(\d+))?(?:\.(\d+))?", str(text or "").strip())
    if not match:
        return None
    return tuple(int(g) for g in match.groups() if g is not None)


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")


def metric_sum(text: str, name: str) -> float | None:
    """The sum of a gauge's samples over all label sets (vLLM labels by model_name,
    SGLang by model and engine), or None when the exposition has no such metric."""
    total, seen = 0.0, False
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if m and m.group(1) == name:
            try:
                total += float(m.group(3))
            except ValueError:
                continue
            seen = True
    return total if seen else None


# Messages chat templates raise when they refuse a conversation (Jinja `raise_exception` in
# Gemma-2, Mistral and Llama templates; the engines pass the text through in their errors).
_TEMPLATE_ERROR = re.compile(
    r"template|jinja|system role|roles must alternate|conversation roles", re.IGNORECASE
)


def is_template_error(status: int, error_type: str, message: str) -> bool:
    """Whether an error reply says the chat template refused the messages."""
    if error_type == "template_error":  # TGI
        return True
    return status in (400, 422, 500) and bool(_TEMPLATE_ERROR.search(message))


def error_fields(payload: Any) -> tuple[str, str]:
    """(type, message) of an error body in any engine's shape: OpenAI/llama.cpp/vLLM
    `{"error": {"message", "type"}}`, older vLLM `{"object": "error", "message", "type"}`,
    TGI `{"error", "error_type"}`, FastAPI `{"detail": ...}`."""
    if not isinstance(payload, dict):
        return "", str(payload)[:500]
    err = payload.get("error")
    if isinstance(err, dict):
        return str(err.get("type") or err.get("code") or ""), str(err.get("message") or err)
    if isinstance(err, str):
        return str(payload.get("error_type") or ""), err
    if "message" in payload:
        return str(payload.get("type") or ""), str(payload["message"])
    if "detail" in payload:
        return "validation", str(payload["detail"])
    return "", str(payload)[:500]
