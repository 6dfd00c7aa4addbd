"""`grm bench overhead`: Score latency through the suite vs the same k requests sent directly.

`--backend tgi` (default) starts `grm dev-tgi --scripted` (fixed per-request latency) and
`grm up --backend tgi` against it; `--backend openai` starts `grm dev-openai --scripted
--dialect D` and `grm up --backend openai`; `--backend both` measures the two one after the
other in the same run, so their overheads compare. All are child processes on free loopback
ports. For each k and repetition it times one `Score` through the suite (the gRPC client,
front door, samplers, backend) and the direct baselines on the same dev server, in an order
that rotates every repetition:
- TGI, **direct** (pooled): the best client a user could write — one pooled aiohttp session,
  the k sample prompts rendered exactly as the sampler renders them (same templates, seeds,
  response orders; `/chat_tokenize`, cached), k concurrent `/generate` posts with the
  sampler's parameters as plain JSON;
- TGI, **stock**: the same prompts, each generated with the stock
  `text_generation.AsyncClient` (a new HTTP session per call, as its users write it);
- openai, **direct**: the k chat-completion bodies the OpenAiBackend would send (same
  messages, seeds and constraint field), posted on one pooled aiohttp session.
All parse and vote in the caller with grm.core.voting. Every repetition uses a new seed, so
the suite's result and sample caches never hit. Ratios are suite/direct (and suite/stock) of
this run's numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
from text_generation import AsyncClient
from text_generation.types import ChatRequest, Grammar, GrammarType
from text_generation.types import Message as TgiMessage

from grm.backends.openai import OpenAiBackend, OpenAiSettings
from grm.backends.tgi import TgiBackend, TgiSettings
from grm.client import AsyncGrmClient
from grm.core.grammar import scores_regex
from grm.core.parsing import extract_scores
from grm.core.plan import SamplingJob
from grm.core.sampling import sample_spec, to_caller_order
from grm.core.templates import load_templates
from grm.core.types import ScoreStatus
from grm.core.validation import build_item
from grm.core.voting import VoteOutcome, vote
from grm.scoring.critique import CritiqueSampler
from grm_dev.bench import suite
from grm_dev.bench.report import Panel, plot, table, write_json


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ks", default="1,4,8,16,32", help="comma-separated k values")
    p.add_argument("--reps", type=int, default=50, help="timed repetitions per k and path")
    p.add_argument("--warmup", type=int, default=3, help="untimed repetitions per k and path")
    p.add_argument("--latency-ms", type=float, default=50.0, help="scripted server latency")
    p.add_argument("--samplers", type=int, default=2, help="sampler processes in the suite")
    p.add_argument(
        "--backend", choices=["tgi", "openai", "both"], default="tgi", help="the suite's backend"
    )
    p.add_argument(
        "--dialect", default="vllm", help="--backend openai: the dev server's engine dialect"
    )
    p.add_argument("--out", default="bench-results")


class Direct:
    """The baseline: what a caller does without the suite, with the stock AsyncClient."""

    def __init__(self, url: str) -> None:
        self.url = url
        # Only used for request_for()/parameters(): the exact prompts and wire parameters.
        self.backend = TgiBackend(TgiSettings(urls=(url,)))
        self.sampler = CritiqueSampler(self.backend, load_templates())
        self.session: aiohttp.ClientSession | None = None
        self.prompts: dict[tuple[tuple[str, str], ...], str] = {}

    async def __aenter__(self) -> Direct:
        self.session = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.session is not None:
            await self.session.close()

    async def render(self, messages: Sequence[Any]) -> str:
        """The served model's chat template applied by the server, cached per message list."""
        key = tuple((m["role"], m["content"]) for m in messages)
        cached = self.prompts.get(key)
        if cached is not None:
            return cached
        assert self.session is not None
        body = ChatRequest(
            model="tgi",
            messages=[TgiMessage(role=m["role"], content=m["content"]) for m in messages],
        ).model_dump(mode="json", exclude_none=True)
        async with self.session.post(f"{self.url}/chat_tokenize", json=body) as resp:
            resp.raise_for_status()
            prompt = str((await resp.json())["templated_text"])
        self.prompts[key] = prompt
        return prompt

    async def score(
        self, query: str, responses: Sequence[str], *, k: int, seed: int
    ) -> VoteOutcome:
        item = build_item(query=query, responses=responses, k=k, seed=seed)
        n = len(item.responses)
        specs = [sample_spec(item.seed, j, n, shuffle=k > 1) for j in range(k)]

        async def one(spec: Any) -> tuple[int, ...] | None:
            request = self.sampler.request_for(SamplingJob.of(item), spec)
            grammar = (
                Grammar(type=GrammarType.Regex, value=scores_regex(n)) if request.grammar else None
            )
            params = self.backend.parameters(request, request.max_new_tokens, grammar)
            prompt = await self.render(request.messages)
            reply = await AsyncClient(self.url, timeout=60).generate(
                prompt,
                do_sample=params.do_sample,
                max_new_tokens=params.max_new_tokens,
                seed=params.seed,
                stop_sequences=params.stop,
                temperature=params.temperature,
                top_p=params.top_p,
                grammar=params.grammar,
            )
            parsed = extract_scores(reply.generated_text, n)
            return None if parsed.scores is None else to_caller_order(parsed.scores, spec.order)

        vectors = await asyncio.gather(*(one(s) for s in specs))
        valid = [v for v in vectors if v is not None]
        if not valid:
            raise RuntimeError("direct baseline: no valid sample")
        return vote(valid, n)


def generate_body(prompt: str, request: Any, n: int, stop: Sequence[str] = ()) -> dict[str, Any]:
    """TGI `/generate` JSON for one sample, written by hand as a user would (the sampler's
    parameters: sampling switch, seed, temperature, top_p, the score-line regex, details)."""
    sample = request.temperature > 0
    params: dict[str, Any] = {
        "do_sample": sample,
        "max_new_tokens": request.max_new_tokens,
        "stop": list(stop),
        "details": True,
    }
    if sample:
        params["temperature"] = request.temperature
        params["seed"] = request.seed if request.seed > 0 else 1 << 31
        if 0 < request.top_p < 1:
            params["top_p"] = request.top_p
    if request.grammar:
        params["grammar"] = {"type": "regex", "value": scores_regex(n)}
    return {"inputs": prompt, "parameters": params}


class DirectPooled(Direct):
    """The strongest baseline: one pooled session, k concurrent `/generate` posts, caller-side
    parse and vote (what a user writes once the stock client's per-call session shows)."""

    async def score(
        self, query: str, responses: Sequence[str], *, k: int, seed: int
    ) -> VoteOutcome:
        item = build_item(query=query, responses=responses, k=k, seed=seed)
        n = len(item.responses)
        specs = [sample_spec(item.seed, j, n, shuffle=k > 1) for j in range(k)]
        job = SamplingJob.of(item)

        async def one(spec: Any) -> tuple[int, ...] | None:
            assert self.session is not None
            request = self.sampler.request_for(job, spec)
            body = generate_body(await self.render(request.messages), request, n)
            async with self.session.post(f"{self.url}/generate", json=body) as resp:
                resp.raise_for_status()
                reply = await resp.json()
            parsed = extract_scores(str(reply["generated_text"]), n)
            return None if parsed.scores is None else to_caller_order(parsed.scores, spec.order)

        vectors = await asyncio.gather(*(one(s) for s in specs))
        valid = [v for v in vectors if v is not None]
        if not valid:
            raise RuntimeError("direct baseline: no valid sample")
        return vote(valid, n)


class DirectOpenAi:
    """The openai baseline: the backend's own request bodies, posted on one pooled session."""

    def __init__(self, url: str, dialect: str) -> None:
        self.url = url
        # Only used for request_for()/body(): the exact messages and wire fields.
        self.backend = OpenAiBackend(
            OpenAiSettings(urls=(url,), engine=dialect, metrics_interval_s=0)
        )
        self.sampler = CritiqueSampler(self.backend, load_templates())
        self.session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> DirectOpenAi:
        await self.backend.start()
        self.session = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.session is not None:
            await self.session.close()
        await self.backend.close()

    async def score(
        self, query: str, responses: Sequence[str], *, k: int, seed: int
    ) -> VoteOutcome:
        item = build_item(query=query, responses=responses, k=k, seed=seed)
        n = len(item.responses)
        specs = [sample_spec(item.seed, j, n, shuffle=k > 1) for j in range(k)]
        endpoint = self.backend.endpoints[0]

        async def one(spec: Any) -> tuple[int, ...] | None:
            assert self.session is not None
            request = self.sampler.request_for(SamplingJob.of(item), spec)
            forced = request.grammar and request.score_count > 0
            body = self.backend.body(endpoint, request, request.messages, forced)
            async with self.session.post(f"{self.url}/chat/completions", json=body) as resp:
                resp.raise_for_status()
                reply = await resp.json()
            parsed = extract_scores(str(reply["choices"][0]["message"]["content"]), n)
            return None if parsed.scores is None else to_caller_order(parsed.scores, spec.order)

        vectors = await asyncio.gather(*(one(s) for s in specs))
        valid = [v for v in vectors if v is not None]
        if not valid:
            raise RuntimeError("direct baseline: no valid sample")
        return vote(valid, n)


async def score_suite(client: AsyncGrmClient, *, k: int, seed: int) -> float:
    """Seconds for one Score through the suite (checked complete, all k samples used)."""
    t0 = time.perf_counter()
    result = await client.score(suite.QUERY, list(suite.RESPONSES), k=k, seed=seed)
    elapsed = time.perf_counter() - t0
    if result.status is not ScoreStatus.COMPLETE or result.k_used != k:
        raise RuntimeError(f"suite Score k={k}: {result.status} with k_used={result.k_used}")
    return elapsed


Baseline = Direct | DirectOpenAi


async def _direct_timed(direct: Baseline, *, k: int, seed: int) -> float:
    t0 = time.perf_counter()
    await direct.score(suite.QUERY, suite.RESPONSES, k=k, seed=seed)
    return time.perf_counter() - t0


async def measure(
    baselines: dict[str, Baseline], address: str, ks: Sequence[int], reps: int, warmup: int
) -> dict[str, dict[str, list[float]]]:
    """Per k: the suite and each baseline, interleaved; the order rotates every repetition
    (drift and the machine's other load hit every path alike)."""
    times: dict[str, dict[str, list[float]]] = {}
    names = ["suite", *baselines]
    async with AsyncGrmClient(address, timeout=120) as client:
        for k in ks:
            times[str(k)] = {name: [] for name in names}
            for rep in range(warmup + reps):
                seed = 1 + k * 1_000_000 + rep
                shift = rep % len(names)
                for name in names[shift:] + names[:shift]:
                    if name == "suite":
                        elapsed = await score_suite(client, k=k, seed=seed)
                    else:
                        elapsed = await _direct_timed(baselines[name], k=k, seed=seed)
                    if rep >= warmup:
                        times[str(k)][name].append(elapsed)
    return times


async def measure_backend(
    backend: str, args: argparse.Namespace, ks: Sequence[int]
) -> dict[str, dict[str, list[float]]]:
    """Start the dev server and `grm up` for `backend`, then time every path."""
    concurrent = max(256, 4 * max(ks))
    with tempfile.TemporaryDirectory() as tmp:
        if backend == "tgi":
            async with (
                suite.dev_tgi(
                    Path(tmp), latency_ms=args.latency_ms, max_concurrent=concurrent
                ) as url,
                suite.suite(Path(tmp), url, samplers=args.samplers) as address,
                DirectPooled(url) as pooled,
                Direct(url) as stock,
            ):
                paths: dict[str, Baseline] = {"direct": pooled, "stock": stock}
                return await measure(paths, address, ks, args.reps, args.warmup)
        async with (
            suite.dev_openai(
                Path(tmp),
                latency_ms=args.latency_ms,
                max_concurrent=concurrent,
                dialect=args.dialect,
            ) as url,
            suite.suite(Path(tmp), url, samplers=args.samplers, backend="openai") as address,
            DirectOpenAi(url, args.dialect) as openai_direct,
        ):
            return await measure({"direct": openai_direct}, address, ks, args.reps, args.warmup)


def summarize(times: dict[str, dict[str, list[float]]], ks: Sequence[int]) -> dict[str, Any]:
    """Per k: each path's summary, suite/direct ratios and, with a stock path, suite/stock."""
    results: dict[str, Any] = {}
    for k in ks:
        paths = {name: suite.summary_ms(ts) for name, ts in times[str(k)].items()}
        s, d = paths["suite"], paths["direct"]
        r: dict[str, Any] = {
            **paths,
            "ratio_p50": s["p50_ms"] / d["p50_ms"],
            "ratio_p99": s["p99_ms"] / d["p99_ms"],
            "ratio_mean": s["mean_ms"] / d["mean_ms"],
        }
        if "stock" in paths:
            r["ratio_p50_stock"] = s["p50_ms"] / paths["stock"]["p50_ms"]
            r["ratio_p99_stock"] = s["p99_ms"] / paths["stock"]["p99_ms"]
        results[str(k)] = r
    return results


TARGETS = {"8": 1.10, "32": 1.15}  # suite / direct (pooled) p50


async def run(args: argparse.Namespace) -> dict[str, Any]:
    ks = suite.parse_ks(args.ks)
    backends = ["tgi", "openai"] if args.backend == "both" else [args.backend]
    all_times = {b: await measure_backend(b, args, ks) for b in backends}
    by_backend = {b: summarize(all_times[b], ks) for b in backends}
    rows = []
    for b in backends:
        for k in ks:
            r = by_backend[b][str(k)]
            s, d = r["suite"], r["direct"]
            label = b if b == "tgi" else f"openai ({args.dialect})"
            stock = r.get("stock")
            rows.append(
                [label, k, s["p50_ms"], d["p50_ms"], r["ratio_p50"],
                 stock["p50_ms"] if stock else "-", r.get("ratio_p50_stock", "-"),
                 s["p99_ms"], d["p99_ms"], r["ratio_p99"]]
            )  # fmt: skip
    print(
        f"Score latency, suite (grm up, {args.samplers} samplers) vs direct (one pooled HTTP "
        f"session, k concurrent requests, voting in the caller) and stock (TGI: "
        f"text_generation.AsyncClient, a session per call); scripted engine at "
        f"{args.latency_ms} ms; {args.reps} repetitions per k and path, interleaved "
        f"(p99 = nearest rank)"
    )
    print(
        table(
            ["backend", "k", "suite p50", "direct p50", "suite/direct", "stock p50",
             "suite/stock", "suite p99", "direct p99", "p99 ratio"],
            rows,
        )
    )  # fmt: skip
    for b in backends:
        for k, bound in TARGETS.items():
            target = by_backend[b].get(k)
            if target is not None:
                verdict = "met" if target["ratio_p50"] <= bound else "missed"
                print(
                    f"{b}: target suite/direct p50 <= {bound:.2f} at k={k}: "
                    f"{target['ratio_p50']:.3f} ({verdict})"
                )
    first = backends[0]
    results, times = by_backend[first], all_times[first]
    png = plot(
        args.out,
        "overhead",
        [
            Panel(
                f"Score latency, suite vs direct (engine at {args.latency_ms:g} ms)",
                ks,
                {
                    f"{b} {path} {q}": [by_backend[b][str(k)][path][f"{q}_ms"] for k in ks]
                    for b in backends
                    for path in ("suite", "direct", "stock")
                    if path in by_backend[b][str(ks[0])]
                    for q in ("p50", "p99")
                },
                xlabel="k (samples per Score)",
                ylabel="latency (ms)",
                log2_x=True,
            ),
            Panel(
                "Suite / direct (same run)",
                ks,
                {
                    **{
                        f"{b} suite/direct {q}": [by_backend[b][str(k)][f"ratio_{q}"] for k in ks]
                        for b in backends
                        for q in ("p50", "p99")
                    },
                    **{
                        f"{b} suite/stock p50": [
                            by_backend[b][str(k)]["ratio_p50_stock"] for k in ks
                        ]
                        for b in backends
                        if "ratio_p50_stock" in by_backend[b][str(ks[0])]
                    },
                },
                xlabel="k (samples per Score)",
                ylabel="suite / baseline",
                targets={"target 1.10 (k=8)": 1.10, "target 1.15 (k=32)": 1.15},
                log2_x=True,
            ),
        ],
    )
    payload = {
        "backend": args.backend,
        "dialect": args.dialect,
        "by_backend": by_backend,
        "ks": ks,
        "reps": args.reps,
        "warmup": args.warmup,
        "latency_ms": args.latency_ms,
        "samplers": args.samplers,
        "results": results,
        "times_s": times,
        "plot": png.name if png else None,
    }
    path = write_json(args.out, "overhead", payload)
    print(f"wrote {path}")
    return payload
