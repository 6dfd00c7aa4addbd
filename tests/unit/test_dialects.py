"""Engine dialects and the openai backend's pure rules: replies replayed from each engine's
documentation (error bodies, /v1/models, /metrics), mapped to what the suite does with them."""

from __future__ import annotations

import asyncio

import pytest

from grm.backends.dialects import (
    DIALECTS,
    detect,
    dialect,
    error_fields,
    is_template_error,
    metric_sum,
    model_entries,
    parse_version,
)
from grm.backends.http_pool import Retry
from grm.backends.openai import _base_url, _fitting_body_chars, _root, classify, load_limit
from grm.core.errors import (
    BackendError,
    ChatTemplateError,
    FailedPreconditionError,
    InvalidArgumentError,
)
from grm.core.grammar import scores_gbnf, scores_regex, scores_suffix_regex
from grm.scoring.slots import SampleSlots

# --- documented replies (docs/engines.md names each source) ---------------------------------

VLLM_MODELS = {
    "object": "list",
    "data": [
        {
            "id": "Qwen/Qwen2.5-7B-Instruct",
            "object": "model",
            "created": 1735142223,
            "owned_by": "vllm",
            "root": "Qwen/Qwen2.5-7B-Instruct",
            "parent": None,
            "max_model_len": 32768,
        }
    ],
}
LLAMACPP_MODELS = {  # tools/server/README.md, GET /v1/models
    "object": "list",
    "data": [
        {
            "id": "../models/Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf",
            "object": "model",
            "created": 1735142223,
            "owned_by": "llamacpp",
            "meta": {"n_ctx_train": 131072, "n_vocab": 128256},
        }
    ],
}
LLAMA_CPP_PYTHON_MODELS = {  # llama_cpp/server/app.py get_models
    "object": "list",
    "data": [{"id": "model.gguf", "object": "model", "owned_by": "me", "permissions": []}],
}
TGI_MODEL = {"id": "google/gemma-2-27b-it", "object": "model", "created": 0, "owned_by": "x"}
VLLM_METRICS = """# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="Qwen/Qwen2.5-7B-Instruct"} 5.0
vllm:num_requests_running{engine="1",model_name="Qwen/Qwen2.5-7B-Instruct"} 2.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="Qwen/Qwen2.5-7B-Instruct"} 3.0
vllm:num_requests_waiting_by_reason{reason="capacity"} 9.0
"""
LLAMACPP_METRICS = """# HELP llamacpp:requests_processing Number of requests processing.
# TYPE llamacpp:requests_processing gauge
llamacpp:requests_processing 4
# HELP llamacpp:requests_deferred Number of requests deferred.
# TYPE llamacpp:requests_deferred gauge
llamacpp:requests_deferred 46
"""


def test_every_engine_has_a_dialect_with_its_own_gauges() -> None:
    assert set(DIALECTS) == {"vllm", "sglang", "llamacpp", "tgi"}
    assert dialect("vLLM").name == "vllm" and dialect("llama.cpp").name == "llamacpp"
    assert dialect("SGLang").waiting_metric == "sglang:num_queue_reqs"
    with pytest.raises(ValueError, match="unknown engine"):
        dialect("ollama")


@pytest.mark.parametrize(
    ("name", "field"),
    [("vllm", "structured_outputs"), ("sglang", "regex"), ("llamacpp", "grammar")],
)
def test_each_engine_gets_the_constraint_in_its_own_field(name: str, field: str) -> None:
    fields = dialect(name).constraint(2, 100)
    assert list(fields) == [field]
    if name == "vllm":
        assert fields[field] == {"regex": scores_regex(2, 100)}
    elif name == "sglang":
        assert fields[field] == scores_regex(2, 100)
    else:
        assert fields[field] == scores_gbnf(2, 100) != scores_gbnf(2)
        assert "body ::= [^\\x00]{0,100}" in fields[field]


def test_tgi_takes_a_regex_response_format_and_suffixes_are_numbers_only() -> None:
    assert dialect("tgi").constraint(3, 50) == {
        "response_format": {"type": "regex", "value": scores_regex(3, 50)}
    }
    assert dialect("sglang").constraint(3, 50, suffix=True) == {"regex": scores_suffix_regex(3)}


def test_vllm_before_0_10_2_gets_guided_regex() -> None:
    old = dialect("vllm").constraint(2, 10, parse_version("0.9.2"))
    new = dialect("vllm").constraint(2, 10, parse_version("0.11.0rc1"))
    assert list(old) == ["guided_regex"] and list(new) == ["structured_outputs"]
    assert parse_version("v0.10.2") == (0, 10, 2) and parse_version("b6700") is None


def test_metrics_are_summed_over_label_sets_and_prefixes_do_not_match() -> None:
    assert metric_sum(VLLM_METRICS, "vllm:num_requests_running") == 7.0
    assert metric_sum(VLLM_METRICS, "vllm:num_requests_waiting") == 3.0  # not *_by_reason
    assert metric_sum(LLAMACPP_METRICS, "llamacpp:requests_deferred") == 46.0
    assert metric_sum(LLAMACPP_METRICS, "sglang:num_queue_reqs") is None


def test_engines_are_detected_from_what_they_serve() -> None:
    assert detect(VLLM_MODELS, "uvicorn", {}) == "vllm"
    assert detect(LLAMACPP_MODELS, "llama.cpp", {}) == "llamacpp"
    assert detect({"object": "list", "data": []}, "", {"/get_server_info": {}}) == "sglang"
    assert detect(TGI_MODEL, "", {"/info": {"model_sha": "abc"}}) == "tgi"
    assert detect(LLAMA_CPP_PYTHON_MODELS, "uvicorn", {}) is None  # owned_by "me": set --engine
    assert model_entries(TGI_MODEL) == [TGI_MODEL]  # TGI answers one object, not a list


def test_urls_take_the_v1_base_and_the_root_serves_metrics() -> None:
    assert _base_url("http://h:8000/") == "http://h:8000/v1"
    assert _base_url(" http://h:8000/v1 ") == "http://h:8000/v1"
    assert _root("http://h:8000/v1") == "http://h:8000"


# --- errors: each engine's documented body → retry, caller's fault, or template fallback ----


def test_error_bodies_of_every_engine_are_read() -> None:
    assert error_fields({"error": {"code": 503, "message": "Loading model", "type": "x"}}) == (
        "x",
        "Loading model",
    )
    assert error_fields({"object": "error", "message": "m", "type": "BadRequestError"}) == (
        "BadRequestError",
        "m",
    )
    assert error_fields({"error": "Model is overloaded", "error_type": "overloaded"}) == (
        "overloaded",
        "Model is overloaded",
    )
    assert error_fields({"detail": "Not Found"})[1] == "Not Found"


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (429, {"error": "Model is overloaded", "error_type": "overloaded"}, "overloaded"),
        (503, {"error": {"code": 503, "message": "Loading model", "type": "u"}}, "unavailable"),
        (503, {"object": "error", "message": "server is overloaded", "code": 503}, "overloaded"),
        (500, {"error": "Incomplete generation", "error_type": "incomplete_generation"}, "unav"),
        (424, {"error": "Request failed during generation", "error_type": "generation"}, "unav"),
    ],
)
def test_overloads_and_outages_are_retried(status: int, body: object, expected: str) -> None:
    out = classify(status, body, "vLLM")
    assert isinstance(out, Retry) and out.kind.startswith(expected[:4])


def test_the_requests_own_faults_are_not_retried() -> None:
    context = {
        "error": {
            "code": 400,
            "message": "request (4170 tokens) exceeds the available context size (4096 tokens)",
            "type": "exceed_context_size_error",
        }
    }
    out = classify(400, context, "llama.cpp")
    assert isinstance(out, InvalidArgumentError) and out.field == "responses"
    bad = classify(422, {"error": "Input validation error", "error_type": "validation"}, "TGI")
    assert type(bad) is InvalidArgumentError
    # llama-cpp-python answers its request validation errors with 500 internal_server_error
    lcp = {"error": {"message": "1 validation error: ...", "type": "internal_server_error"}}
    assert type(classify(500, lcp, "llama.cpp")) is InvalidArgumentError
    assert isinstance(
        classify(401, {"error": {"message": "Invalid API key"}}, "x"), FailedPreconditionError
    )
    assert isinstance(classify(404, {"detail": "Not Found"}, "x"), BackendError)


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (
            422,
            {"error": "Template error: System role not supported", "error_type": "template_error"},
        ),
        (400, {"error": {"message": "jinja2.exceptions.TemplateError: System role not supported"}}),
        (
            500,
            {
                "error": {
                    "code": 500,
                    "message": "System role not supported",
                    "type": "server_error",
                }
            },
        ),
        (400, {"object": "error", "message": "Conversation roles must alternate user/assistant"}),
    ],
)
def test_refused_chat_templates_are_template_errors(status: int, body: object) -> None:
    assert isinstance(classify(status, body, "x"), ChatTemplateError)


def test_only_template_messages_count_as_template_errors() -> None:
    assert not is_template_error(400, "BadRequestError", "max_tokens must be at least 1")
    assert not is_template_error(503, "", "chat template loading")  # a 503 is an outage


# --- load and capacity --------------------------------------------------------------------


def test_load_from_other_clients_takes_slots_and_a_queueing_engine_is_full() -> None:
    assert load_limit(256, running=0, waiting=0, ours=0) == 256
    assert load_limit(256, running=10, waiting=0, ours=4) == 250  # 6 from others
    assert load_limit(256, running=8, waiting=2, ours=10) == 8  # queueing: it runs 8 at most
    assert load_limit(4, running=4, waiting=6, ours=0) == 1  # never below one slot


def test_the_bounded_grammar_leaves_room_for_the_score_line() -> None:
    assert _fitting_body_chars(64, 2) == 64 - len("Scores: \\boxed{10, 10}") - 4
    assert _fitting_body_chars(10, 4) == 0


async def test_slots_grow_at_once_and_shrink_as_slots_are_released() -> None:
    slots = SampleSlots(1)
    await slots.acquire(0)
    waiters = [asyncio.ensure_future(slots.acquire(i)) for i in range(3)]
    await asyncio.sleep(0)
    slots.resize(3)  # two more slots go to the most urgent waiters now
    await asyncio.sleep(0)
    assert [w.done() for w in waiters] == [True, True, False]
    slots.resize(1)  # three are held; two releases pay the shrink back first
    slots.release()
    slots.release()
    await asyncio.sleep(0)
    assert not waiters[2].done()
    slots.release()  # the third release hands the only slot on
    await asyncio.sleep(0)
    assert waiters[2].done() and slots.capacity == 1
