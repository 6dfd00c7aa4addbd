"""Meta RM backends: llm (P("Yes") from a backend), http (vLLM /pooling and /classify, TEI
/predict against a real HTTP server on loopback), their registration, the paper's meta RM
input (GRM prompt as the user turn, raw GRM output as the reply) and meta-vote through them."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest

from grm.backends.base import Message
from grm.client import AsyncGrmClient
from grm.core.errors import BackendError
from grm.core.templates import load_templates
from grm.core.types import Aggregation, Context, Sample, SampleSpec, ScoreStatus
from grm.core.validation import build_item
from grm.metarm import make_meta_rm
from grm.metarm.agreement import AgreementMetaRM
from grm.metarm.http import HttpMetaRM
from grm.metarm.llm import LlmMetaRM, judgement_text
from grm.scoring.critique import CritiqueSampler
from grm.scoring.pipeline import ScoringPipeline
from tests.support.scripted import ScriptedBackend, shown_responses
from tests.support.servers import running_suite

RESPONSES = ("bad one", "good one")
CONTEXT = Context.from_query("Which is good?")


def sample(index: int, order: tuple[int, ...], scores: tuple[int, int]) -> Sample:
    return Sample(
        SampleSpec(index, 0, 100 + index, order),
        text="",
        principles=f"criteria {index}",
        critique=f"analysis {index}",
        scores=scores,
    )


class YesBackend(ScriptedBackend):
    """P("Yes") = 0.9 when the judgement ranks the 'good' response higher, else 0.2."""

    def __init__(self) -> None:
        super().__init__()
        self.meta_prompts: list[Sequence[Message]] = []

    async def yes_probability(self, messages: Sequence[Message]) -> float:
        self.meta_prompts.append(messages)
        return 0.9 if _favours_good(messages[0]["content"], messages[1]["content"]) else 0.2


def _favours_good(prompt: str, output: str) -> bool:
    """Whether a judgement (its raw output) scores 'good one' above 'bad one', reading the
    order from the GRM prompt the sample saw."""
    order = sorted((m for m in RESPONSES if m in prompt), key=prompt.index)
    boxed = output.rsplit("\\boxed{", 1)[1].split("}")[0]
    scores = dict(zip(order, (int(s) for s in boxed.split(",")), strict=True))
    return scores["good one"] > scores["bad one"]


def test_judgement_shows_scores_in_the_order_the_sample_saw_the_responses() -> None:
    s = sample(0, (1, 0), (3, 8))  # caller order: bad=3, good=8; shown: good first
    assert judgement_text(s).endswith("Scores: \\boxed{8, 3}")
    assert "criteria 0" in judgement_text(s) and "analysis 0" in judgement_text(s)


async def test_llm_meta_rm_asks_the_backend_per_sample_in_the_samples_order() -> None:
    backend = YesBackend()
    meta = LlmMetaRM(backend, load_templates())
    samples = [sample(0, (0, 1), (2, 9)), sample(1, (1, 0), (9, 2)), sample(2, (1, 0), (3, 8))]
    scores = await meta.score(CONTEXT, RESPONSES, samples)
    assert scores == [0.9, 0.2, 0.9]
    first, second = backend.meta_prompts[0][0]["content"], backend.meta_prompts[1][0]["content"]
    assert first.index("bad one") < first.index("good one")
    assert second.index("good one") < second.index("bad one")  # that sample's own order
    # the paper's pair (GRM prompt as the user turn, the judgement as the reply), then the
    # stand-in's Yes/No question
    assert [m["role"] for m in backend.meta_prompts[0]] == ["user", "assistant", "user"]
    assert "Which is good?" in first and "[The Begin of Response 1]" in first
    assert backend.meta_prompts[0][1]["content"].endswith("Scores: \\boxed{2, 9}")
    assert "Yes or No" in backend.meta_prompts[0][2]["content"]


async def test_meta_vote_with_the_llm_meta_rm_keeps_the_trusted_samples() -> None:
    def judge(request: Any) -> str:  # seed-dependent verdicts: some samples get it wrong
        shown = shown_responses(request)
        right = request.seed % 3 != 0
        scores = [9 if ("good" in r) == right else 2 for r in shown]
        return f"Analysis: x.\nScores: \\boxed{{{scores[0]}, {scores[1]}}}"

    backend = YesBackend()
    backend.script = judge
    templates = load_templates()
    pipeline = ScoringPipeline(
        CritiqueSampler(backend, templates), meta_rm=make_meta_rm("llm", backend=backend)
    )
    item = build_item(query="q", responses=RESPONSES, k=8, aggregation=Aggregation.META_VOTE)
    result = await pipeline.score(item)
    kept = [s for s, u in zip(result.samples, result.used, strict=True) if u]
    assert len(kept) == 4 and all(s.scores == (2, 9) for s in kept)
    assert result.rewards == (2.0, 9.0)
    assert set(result.meta_scores) <= {0.9, 0.2}


class Endpoint(BaseHTTPRequestHandler):
    """A tiny reward-model server: /pooling and /classify (vLLM shapes), /predict (TEI)."""

    bodies: ClassVar[list[dict]] = []
    mode: ClassVar[str] = "ok"

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).bodies.append(body)
        if self.mode == "error":
            self._send(500, b'{"error": "model crashed"}')
        elif self.mode == "garbage":
            self._send(200, b"not json")
        elif self.path == "/classify":
            [p] = _probs([_text(body)])
            data = [{"index": 0, "label": "x", "probs": [1 - p, p], "num_classes": 2}]
            self._send(200, json.dumps({"object": "list", "data": data}).encode())
        elif self.path == "/pooling":
            [p] = _probs([_text(body)])
            data = [[0.0], [0.5], [p]] if self.mode == "tokens" else [p]
            reply = {"object": "list", "data": [{"index": 0, "object": "pooling", "data": data}]}
            self._send(200, json.dumps(reply).encode())
        elif self.path == "/predict":
            [p] = _probs([body["inputs"]])
            if self.mode == "multi":
                reply = [{"label": "good", "score": p}, {"label": "bad", "score": 1 - p}]
            else:
                reply = [{"label": "LABEL_0", "score": p}]
            self._send(200, json.dumps(reply).encode())
        else:
            self._send(404, b"{}")

    def _send(self, code: int, payload: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


def _text(body: dict) -> str:
    """What a chat request's messages say (or the rendered text input)."""
    if "messages" in body:
        return "\n".join(m["content"] for m in body["messages"])
    return body["input"]


def _probs(texts: Sequence[str]) -> list[float]:
    """The score a 'classifier' gives: high when the judgement's boxed scores favour 'good'."""
    out = []
    for text in texts:
        boxed = text.rsplit("\\boxed{", 1)[1].split("}")[0]
        first, second = (int(s) for s in boxed.split(","))
        good_first = text.index("good one") < text.index("bad one")
        out.append(0.8 if (first > second) == good_first else 0.1)
    return out


@contextlib.contextmanager
def http_endpoint(mode: str = "ok") -> Iterator[str]:
    Endpoint.bodies = []
    Endpoint.mode = mode
    server = ThreadingHTTPServer(("127.0.0.1", 0), Endpoint)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


SAMPLES = [sample(0, (0, 1), (2, 9)), sample(1, (1, 0), (9, 2)), sample(2, (1, 0), (2, 9))]


CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.mark.parametrize("api", ["classify", "pooling"])
async def test_http_meta_rm_sends_the_papers_pair_to_vllm(api: str) -> None:
    """vLLM's /classify and /pooling take chat messages and apply the reward model's own chat
    template: the body is [GRM prompt as user, raw GRM output as assistant], per sample."""
    with http_endpoint() as base:
        meta = HttpMetaRM(f"{base}/{api}", load_templates(), model="rm-1")
        scores = await meta.score(CONTEXT, RESPONSES, SAMPLES, reference="42")
    assert scores == [0.8, 0.1, 0.8]
    assert len(Endpoint.bodies) == 3  # one per sample, sent concurrently
    [body] = [
        b
        for b in Endpoint.bodies
        if b["messages"][1]["content"].startswith("Specific Criteria: criteria 0")
    ]
    assert body["model"] == "rm-1"
    prompt = load_templates().joint(CONTEXT, list(RESPONSES), reference="42")
    assert body["messages"] == [
        *prompt,
        {"role": "assistant", "content": judgement_text(SAMPLES[0])},
    ]


async def test_http_meta_rm_reads_token_level_pooling_rewards() -> None:
    with http_endpoint("tokens") as base:
        meta = HttpMetaRM(f"{base}/pooling", load_templates())
        assert await meta.score(CONTEXT, RESPONSES, SAMPLES) == [0.8, 0.1, 0.8]


async def test_http_meta_rm_reads_tei_predict_with_its_chat_template() -> None:
    with pytest.raises(ValueError, match="chat template"):
        HttpMetaRM("http://127.0.0.1:1/predict", load_templates())
    with http_endpoint() as base:
        scores = await HttpMetaRM(f"{base}/predict", load_templates(), chat_template=CHATML).score(
            CONTEXT, RESPONSES, SAMPLES
        )
    assert scores == [0.8, 0.1, 0.8]
    assert len(Endpoint.bodies) == 3
    [text] = [b["inputs"] for b in Endpoint.bodies if "criteria 0" in b["inputs"]]
    assert text.startswith("<|im_start|>user\nYou are a skilled little expert")
    assert text.endswith(f"<|im_start|>assistant\n{judgement_text(SAMPLES[0])}<|im_end|>\n")
    with http_endpoint("multi") as base:
        meta = HttpMetaRM(f"{base}/predict", load_templates(), label="good", chat_template=CHATML)
        assert await meta.score(CONTEXT, RESPONSES, SAMPLES) == [0.8, 0.1, 0.8]
        with pytest.raises(BackendError, match="name the one to use"):
            await HttpMetaRM(f"{base}/predict", load_templates(), chat_template=CHATML).score(
                CONTEXT, RESPONSES, SAMPLES
            )


@pytest.mark.parametrize("mode", ["error", "garbage"])
async def test_http_meta_rm_failures_are_backend_errors_and_meta_vote_degrades(mode: str) -> None:
    with http_endpoint(mode) as base:
        meta = HttpMetaRM(f"{base}/classify", load_templates())
        with pytest.raises(BackendError):
            await meta.score(CONTEXT, RESPONSES, SAMPLES)
        pipeline = ScoringPipeline(
            CritiqueSampler(ScriptedBackend(), load_templates()), meta_rm=meta
        )
        result = await pipeline.score(
            build_item(query="q", responses=["good", "bad"], k=4, aggregation=Aggregation.META_VOTE)
        )
    assert result.status is ScoreStatus.DEGRADED and "meta RM failed" in result.status_detail
    assert result.k_used == 4 and result.rewards == (9.0, 2.0)  # plain vote, never a zero


async def test_unreachable_http_meta_rm_is_a_backend_error() -> None:
    with http_endpoint() as base:
        url = f"{base}/classify"
    with pytest.raises(BackendError, match="unreachable"):
        await HttpMetaRM(url, load_templates(), timeout_s=2).score(CONTEXT, RESPONSES, SAMPLES)


async def test_the_aggregator_can_use_the_http_meta_rm() -> None:
    with http_endpoint() as base:
        async with (
            running_suite(meta_rm="http", meta_rm_url=f"{base}/classify") as suite,
            AsyncGrmClient(suite.address, timeout=10) as client,
        ):
            result = await client.score(
                "q", RESPONSES, k=4, k_meta=2, aggregation="meta-vote", include_samples=True
            )
    assert result.status is ScoreStatus.COMPLETE and result.k_used == 2
    assert sorted(m for m in result.meta_scores if m is not None) == [0.8] * 4
    assert len(Endpoint.bodies) == 4  # one per sample, each its raw output
    outputs = sorted(b["messages"][-1]["content"] for b in Endpoint.bodies)
    assert outputs == sorted(s.text for s in result.samples)


def test_meta_rms_are_registered_by_name() -> None:
    backend = ScriptedBackend()
    assert make_meta_rm(None) is None and make_meta_rm("none") is None
    assert isinstance(make_meta_rm("agreement"), AgreementMetaRM)
    assert isinstance(make_meta_rm("llm", backend=backend), LlmMetaRM)
    assert isinstance(make_meta_rm("http", url="http://127.0.0.1:1/pooling"), HttpMetaRM)
    assert isinstance(
        make_meta_rm("http", url="http://127.0.0.1:1/predict", chat_template=CHATML), HttpMetaRM
    )
    with pytest.raises(ValueError, match="backend"):
        make_meta_rm("llm")
    with pytest.raises(ValueError, match="URL"):
        make_meta_rm("http")
    with pytest.raises(ValueError, match="/classify"):
        make_meta_rm("http", url="http://127.0.0.1:1/score")
    with pytest.raises(ValueError, match="unknown meta RM"):
        make_meta_rm("oracle")


async def test_a_backend_without_yes_no_probabilities_degrades_meta_vote() -> None:
    backend = ScriptedBackend()  # the base class cannot score yes/no
    pipeline = ScoringPipeline(
        CritiqueSampler(backend, load_templates()), meta_rm=LlmMetaRM(backend, load_templates())
    )
    result = await pipeline.score(
        build_item(query="q", responses=["good", "bad"], k=2, aggregation=Aggregation.META_VOTE)
    )
    assert result.status is ScoreStatus.DEGRADED and result.rewards == (9.0, 2.0)


@pytest.mark.model
async def test_embedded_yes_probability_on_the_real_model() -> None:
    from grm.backends.embedded import EmbeddedBackend, EmbeddedSettings

    backend = EmbeddedBackend(EmbeddedSettings(n_ctx=2048, n_threads=1))
    meta = LlmMetaRM(backend, load_templates())
    a = meta.messages(CONTEXT, RESPONSES, sample(0, (0, 1), (2, 9)))
    b = meta.messages(CONTEXT, RESPONSES, sample(1, (0, 1), (9, 2)))  # same prefix
    try:
        first = await backend.yes_probability(a)
        other = await backend.yes_probability(b)  # reuses the shared prefix of the KV cache
        again = await backend.yes_probability(a)
    finally:
        await backend.close()
    assert 0.0 < first < 1.0 and 0.0 < other < 1.0
    assert again == pytest.approx(first, abs=1e-4)  # the cache reuse changed nothing
    assert first != pytest.approx(other, abs=1e-6)  # the judgement text matters
