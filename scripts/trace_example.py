"""Print the trace of one real k=4 Score as a tree with durations (issue note evidence).

Runs the aggregator, the principle generator and two samplers as gRPC servers on loopback in
one process (each sampler with its own embedded SmolLM2 model, one thread each), records spans
in memory, scores one item at k=4 in separate mode, and prints the span tree.

    .venv/bin/python scripts/trace_example.py [--max-new-tokens 64]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import grpc
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from grm import telemetry
from grm.services.aggregator.main import AggregatorSettings, build
from grm.backends.embedded import EmbeddedBackend, EmbeddedSettings
from grm.v1 import common_pb2, reward_pb2, reward_pb2_grpc
from tests.servers import LOOPBACK, start_principles, start_sampler


async def main(max_new_tokens: int) -> None:
    spans = InMemorySpanExporter()
    providers = telemetry.build_providers(
        "grm-trace-example", environ={}, span_processors=[SimpleSpanProcessor(spans)]
    )
    telemetry.install(providers)
    models = [EmbeddedBackend(EmbeddedSettings(n_threads=1)) for _ in range(3)]
    for m in models:
        await m.start()
    samplers = [await start_sampler(m) for m in models[:2]]  # type: ignore[arg-type]
    principles = await start_principles(models[2])  # type: ignore[arg-type]
    settings = AggregatorSettings(
        server=LOOPBACK,
        samplers=tuple(s.address for s in samplers),
        principles=(principles.address,),
    )
    aggregator = build(settings)
    await aggregator.server.start()
    await aggregator.warm_up()
    await aggregator.server.set_serving(True)
    try:
        async with grpc.aio.insecure_channel(aggregator.server.address) as channel:
            reply = await reward_pb2_grpc.RewardServiceStub(channel).Score(
                reward_pb2.ScoreRequest(
                    query="What is the capital of France?",
                    responses=["The capital of France is Paris.", "It is Berlin."],
                    k=4,
                    principle_mode=common_pb2.PRINCIPLE_MODE_SEPARATE,
                    sampling=common_pb2.SamplingParams(max_new_tokens=max_new_tokens),
                ),
                timeout=600,
            )
    finally:
        await aggregator.server.stop(0)
        for s in [*samplers, principles]:
            await s.server.stop(0)
    print(f"rewards={list(reply.rewards)} k_used={reply.k_used} status={reply.status}")
    finished = spans.get_finished_spans()
    print(f"{len(finished)} spans, trace ids: {len({s.context.trace_id for s in finished})}")
    children: dict[int | None, list] = {}
    ids = {s.context.span_id for s in finished}
    for s in finished:
        parent = s.parent.span_id if s.parent is not None and s.parent.span_id in ids else None
        children.setdefault(parent, []).append(s)

    def show(span, depth: int) -> None:
        ms = (span.end_time - span.start_time) / 1e6
        keep = ("grm.sample.seed", "grm.sample.valid", "grm.sample.tokens_generated", "grm.k_used")
        attrs = " ".join(f"{k.split('.')[-1]}={v}" for k, v in span.attributes.items() if k in keep)
        print(f"{'  ' * depth}{span.name} [{span.kind.name}] {ms:.1f} ms {attrs}".rstrip())
        for child in sorted(children.get(span.context.span_id, []), key=lambda c: c.start_time):
            show(child, depth + 1)

    for root in children.get(None, []):
        show(root, 0)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--max-new-tokens", type=int, default=64)
    asyncio.run(main(parser.parse_args().max_new_tokens))
