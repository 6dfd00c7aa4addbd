"""`grm bench chaos`: steady load while services die and engines misbehave; every reward checked.

The suite runs as child processes on loopback ports: `--engines` scripted TGI stand-ins
(`grm dev-tgi --scripted`, injecting 500s, hangs, garbage, wrong score counts and 429s at the
given rates, seeded), a principle generator and `--samplers` samplers on them, a
`redis-server`, and the aggregator (the front door, never killed: it is what is measured).

1. warm-up: `--concurrency` callers send Score requests (a seeded mix of queries, responses,
   k, seeds, joint and separate mode; repeats hit the cache) for `--warmup-s`; then the
   aggregator's descriptors and memory are read ("before").
2. chaos: the load goes on for `--duration-s` while, every `--chaos-interval-s` (on average,
   seeded), one of the samplers, the principle generator, Redis or an engine is killed
   (SIGKILL) or stopped (SIGTERM), left down for a while and restarted on its port.
3. after: everything is back up, the load stops, descriptors and memory are read again.
4. replay: the chaos suite stops, a fault-free one starts (no injected faults, empty Redis)
   and every request that came back COMPLETE is scored again with the same fields and seeds.
   The scripted judge scores each response the same whatever the seed or order, so a COMPLETE
   reward that differs from the replay's is a wrong reward, full stop.

Reported: requests, outcomes by status, wrong rewards, zero rewards (a failure must be an
error, never 0), failures without a typed status, latency p50/p99, the chaos actions, and the
aggregator's descriptors and memory before and after. Needs `redis-server` on the PATH.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import shutil
import socket
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grm.cli.launcher import ChildProcess
from grm.client import AsyncGrmClient
from grm.core.errors import GrmError
from grm_dev import procinfo
from grm_dev.bench.report import table, write_json
from grm_dev.bench.suite import percentile

QUESTIONS = [f"Question {i}: which answer is right?" for i in range(40)]
ANSWERS = [f"Answer {i}: " + ("a good one." if i % 3 == 0 else "not so sure.") for i in range(24)]
KILLABLE = ("sampler", "principles", "redis", "engine")


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--duration-s", type=float, default=300.0, help="chaos phase seconds")
    p.add_argument("--warmup-s", type=float, default=10.0, help="load before the chaos")
    p.add_argument("--concurrency", type=int, default=4, help="Score calls in flight")
    p.add_argument("--samplers", type=int, default=2)
    p.add_argument("--engines", type=int, default=2, help="scripted TGI endpoints")
    p.add_argument("--chaos-interval-s", type=float, default=8.0, help="mean time between kills")
    p.add_argument("--down-s", type=float, default=3.0, help="longest time a service stays down")
    p.add_argument("--latency-ms", type=float, default=30.0, help="scripted engine latency")
    p.add_argument("--error-rate", type=float, default=0.02, help="engine 500s (each kind)")
    p.add_argument("--hang-rate", type=float, default=0.01, help="engine requests that hang")
    p.add_argument("--hang-s", type=float, default=3.0, help="how long a hang lasts")
    p.add_argument("--garbage-rate", type=float, default=0.02, help="no score line")
    p.add_argument("--wrong-count-rate", type=float, default=0.02, help="n+1 scores")
    p.add_argument("--overload-rate", type=float, default=0.01, help="engine 429s")
    p.add_argument("--timeout-s", type=float, default=15.0, help="deadline of each Score")
    p.add_argument("--seed", type=int, default=0, help="the load, the chaos and the faults")
    p.add_argument("--out", default="bench-results")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisChild:
    """`redis-server` on a fixed loopback port, nothing on disk; killed and restarted here."""

    def __init__(self, tmp: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("grm bench chaos needs redis-server on the PATH")
        self.binary = binary
        self.tmp = tmp
        self.port = free_port()
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        argv = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        argv += ["--appendonly", "no", "--dir", str(self.tmp), "--loglevel", "warning"]
        self.proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
        )
        for _ in range(200):
            with contextlib.suppress(OSError):
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.write(b"PING\r\n")
                await writer.drain()
                pong = await reader.readline()
                writer.close()
                if pong.startswith(b"+PONG"):
                    return
            await asyncio.sleep(0.05)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    async def stop(self, *, kill: bool = False) -> None:
        if self.proc is not None and self.proc.returncode is None:
            if kill:
                self.proc.kill()
            else:
                self.proc.terminate()
            await self.proc.wait()


@dataclass
class Service:
    """One `python -m ...` child that can be killed and restarted on the same port."""

    name: str
    argv: list[str]
    proc: ChildProcess
    port: int = 0

    async def start(self) -> None:
        await self.proc.spawn(["--port", str(self.port)])
        self.port = await self.proc.wait_port(60)

    async def stop(self, *, kill: bool = False) -> None:
        if kill:
            await self.proc.kill()
        else:
            await self.proc.stop(grace_s=10)


@dataclass
class ChaosSuite:
    """Engines, principle generator, samplers, Redis and the aggregator as child processes."""

    tmp: Path
    args: argparse.Namespace
    faults: bool
    services: dict[str, Service] = field(default_factory=dict)
    redis: RedisChild | None = None

    def _child(self, name: str, argv: Sequence[str]) -> Service:
        proc = ChildProcess(name, list(argv), self.tmp)
        service = Service(name, list(argv), proc)
        self.services[name] = service
        return service

    def _engine_argv(self, i: int) -> list[str]:
        a = self.args
        argv = ["-m", "grm_dev.devtgi", "--scripted", "--latency-ms", str(a.latency_ms)]
        argv += ["--max-concurrent-requests", "512", "--log-level", "WARNING"]
        if self.faults:
            argv += ["--error-500-rate", str(a.error_rate), "--timeout-rate", str(a.hang_rate)]
            argv += ["--garbage-rate", str(a.garbage_rate)]
            argv += ["--wrong-count-rate", str(a.wrong_count_rate)]
            argv += ["--error-429-rate", str(a.overload_rate), "--hang-s", str(a.hang_s)]
            argv += ["--fault-seed", str(a.seed * 1000 + i)]
        return argv

    async def start(self) -> str:
        """Start everything; returns the front door's address once it is SERVING."""
        a = self.args
        self.redis = RedisChild(self.tmp)
        await self.redis.start()
        urls = []
        for i in range(a.engines):
            engine = self._child(f"engine-{i}", self._engine_argv(i))
            await engine.start()
            urls.append(f"http://127.0.0.1:{engine.port}")
        serve = ["-m", "grm.cli", "serve"]
        backend = ["--backend", "tgi", "--tgi-url", ",".join(urls), "--health-interval-s", "1"]
        common = ["--host", "127.0.0.1", "--log-level", "WARNING", "--grace-s", "2"]
        principles = self._child("principles", [*serve, "principles", *backend, *common])
        await principles.start()
        samplers = []
        for i in range(a.samplers):
            sampler = self._child(f"sampler-{i}", [*serve, "sampler", *backend, *common])
            await sampler.start()
            samplers.append(f"127.0.0.1:{sampler.port}")
        agg = [*serve, "aggregator", *common, "--samplers", ",".join(samplers)]
        agg += ["--principles", f"127.0.0.1:{principles.port}", "--redis-url", self.redis.url]
        agg += ["--readiness-interval-s", "0.5"]
        aggregator = self._child("aggregator", agg)
        await aggregator.start()
        await aggregator.proc.wait_serving("127.0.0.1", 60)
        return f"127.0.0.1:{aggregator.port}"

    @property
    def aggregator_pid(self) -> int:
        return self.services["aggregator"].proc.pid

    def targets(self) -> list[str]:
        """What the chaos may take down (never the aggregator: it is what is measured)."""
        return [n for n in self.services if n != "aggregator"] + ["redis"]

    async def take_down(self, name: str, *, kill: bool) -> None:
        if name == "redis":
            assert self.redis is not None
            await self.redis.stop(kill=kill)
        else:
            await self.services[name].stop(kill=kill)

    async def bring_up(self, name: str) -> None:
        if name == "redis":
            assert self.redis is not None
            await self.redis.start()
        else:
            await self.services[name].start()

    async def close(self) -> None:
        order = ["aggregator", *(n for n in self.services if n != "aggregator")]
        for name in order:
            if name in self.services:
                with contextlib.suppress(Exception):
                    await self.services[name].stop()
        if self.redis is not None:
            await self.redis.stop()


@dataclass
class Record:
    """One Score call: what was asked and what came back."""

    fields: dict[str, Any]
    status: str  # complete / partial / degraded, an error code, or UNTYPED:<exception>
    seconds: float
    rewards: tuple[float, ...] | None = None


def request_mix(rng: random.Random) -> dict[str, Any]:
    """A seeded request: few enough distinct ones that repeats hit the cache."""
    n = rng.choice((2, 2, 3))
    return {
        "query": rng.choice(QUESTIONS),
        "responses": rng.sample(ANSWERS, n),
        "k": rng.choice((2, 4)),
        "seed": rng.randrange(4),
        "principle_mode": "separate" if rng.random() < 0.3 else "joint",
    }


async def drive(
    address: str, args: argparse.Namespace, stop: asyncio.Event, records: list[Record]
) -> None:
    """`--concurrency` callers, each sending its next Score when the last one ends."""
    async with AsyncGrmClient(address, timeout=args.timeout_s) as client:

        async def caller(i: int) -> None:
            rng = random.Random(args.seed * 7919 + i)
            while not stop.is_set():
                fields = request_mix(rng)
                started = time.perf_counter()
                try:
                    result = await client.score(**fields)
                except GrmError as exc:
                    records.append(Record(fields, exc.code, time.perf_counter() - started))
                except Exception as exc:  # an untyped failure: exactly what must not happen
                    status = f"UNTYPED:{type(exc).__name__}"
                    records.append(Record(fields, status, time.perf_counter() - started))
                else:
                    elapsed = time.perf_counter() - started
                    records.append(Record(fields, str(result.status), elapsed, result.rewards))

        await asyncio.gather(*(caller(i) for i in range(args.concurrency)))


async def chaos(
    suite: ChaosSuite, args: argparse.Namespace, stop: asyncio.Event, actions: list[dict[str, Any]]
) -> None:
    """Take one service down at a time, at seeded random moments, and bring it back."""
    rng = random.Random(args.seed)
    started = time.perf_counter()
    while True:
        pause = rng.uniform(0.5, 1.5) * args.chaos_interval_s
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), pause)
        if stop.is_set():
            return
        name = rng.choice(suite.targets())
        kill = rng.random() < 0.5
        down = rng.uniform(0.2, args.down_s)
        at = time.perf_counter() - started
        await suite.take_down(name, kill=kill)
        await asyncio.sleep(down)
        await suite.bring_up(name)
        kind = next(k for k in KILLABLE if name.startswith(k))
        signal = "KILL" if kill else "TERM"
        actions.append(
            {"t_s": round(at, 2), "target": name, "kind": kind, "signal": signal,
             "down_s": round(down, 2)}
        )  # fmt: skip


def footprint(pid: int) -> dict[str, int]:
    fds = procinfo.open_fds(pid)
    return {"fds": fds.total, "sockets": fds.sockets, "rss_kib": procinfo.rss_kib(pid)}


def _key(fields: dict[str, Any]) -> str:
    return json.dumps(fields, sort_keys=True)


async def replay(address: str, records: Sequence[Record], args: argparse.Namespace) -> list[Any]:
    """The COMPLETE requests again on the fault-free suite: their rewards (or, if the replay
    itself could not score one after a few rounds, its status), in the records' order.

    Identical requests are replayed once; calls stay well inside the admission limits (one
    batch of 32 at a time), and items refused anyway are sent again in the next round.
    """
    unique = {_key(r.fields): r.fields for r in records}
    outcome: dict[str, Any] = {}
    pending = list(unique)
    async with AsyncGrmClient(address, timeout=max(60.0, args.timeout_s)) as client:
        for _ in range(5):
            if not pending:
                break
            scored = await client.score_many(
                [unique[key] for key in pending], max_batch_items=32, concurrency=1
            )
            for key, s in zip(pending, scored, strict=True):
                outcome[key] = s.rewards if s.ok else s.status
            pending = [key for key in pending if not isinstance(outcome[key], tuple)]
    return [outcome[_key(r.fields)] for r in records]


def summarize(
    records: Sequence[Record], again: Sequence[Any], complete: Sequence[Record]
) -> dict[str, Any]:
    statuses = Counter(r.status for r in records)
    pairs = list(zip(complete, again, strict=True))
    unreplayed = [a for _, a in pairs if not isinstance(a, tuple)]
    wrong = [
        {"fields": r.fields, "rewards": r.rewards, "replay": a}
        for r, a in pairs
        if isinstance(a, tuple) and not _same(r.rewards, a)
    ]
    zero = sum(1 for r in records if r.rewards is not None and any(x <= 0 for x in r.rewards))
    seconds = [r.seconds * 1000 for r in records]
    return {
        "requests": len(records),
        "by_status": dict(sorted(statuses.items())),
        "complete_replayed": len(pairs) - len(unreplayed),
        "replay_failed": dict(Counter(unreplayed)),  # the clean suite could not score these
        "wrong_rewards": len(wrong),
        "wrong_examples": wrong[:5],
        "zero_rewards": zero,
        "untyped_failures": sum(n for s, n in statuses.items() if s.startswith("UNTYPED")),
        "p50_ms": percentile(seconds, 50) if seconds else None,
        "p99_ms": percentile(seconds, 99) if seconds else None,
    }


def _same(a: tuple[float, ...] | None, b: tuple[float, ...]) -> bool:
    if a is None or len(a) != len(b):
        return False
    return all(abs(x - y) < 1e-9 for x, y in zip(a, b, strict=True))


async def run(args: argparse.Namespace) -> dict[str, Any]:
    records: list[Record] = []
    actions: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="grm-chaos-") as tmp_dir:
        tmp = Path(tmp_dir)
        suite = ChaosSuite(tmp / "chaos", args, faults=True)
        suite.tmp.mkdir()
        try:
            address = await suite.start()
            stop = asyncio.Event()
            load = asyncio.ensure_future(drive(address, args, stop, records))
            await asyncio.sleep(args.warmup_s)
            before = footprint(suite.aggregator_pid)
            warm = len(records)
            chaos_stop = asyncio.Event()
            monkey = asyncio.ensure_future(chaos(suite, args, chaos_stop, actions))
            await asyncio.sleep(args.duration_s)
            chaos_stop.set()
            await monkey  # the last service taken down is back up
            stop.set()
            await load
            await asyncio.sleep(1.0)  # closed calls release their buffers
            after = footprint(suite.aggregator_pid)
        finally:
            await suite.close()
        complete = [r for r in records if r.status == "complete"]
        clean = ChaosSuite(tmp / "replay", args, faults=False)
        clean.tmp.mkdir()
        try:
            again = await replay(await clean.start(), complete, args)
        finally:
            await clean.close()
    summary = summarize(records, again, complete)
    payload: dict[str, Any] = {
        **summary,
        "warmup_requests": warm,
        "aggregator_before": before,
        "aggregator_after": after,
        "chaos_actions": len(actions),
        "actions_by_kind": dict(Counter(a["kind"] for a in actions)),
        "actions": actions,
    }
    print(
        table(
            ["requests", *summary["by_status"], "replayed", "wrong", "zero", "untyped",
             "p50 ms", "p99 ms"],
            [[summary["requests"], *summary["by_status"].values(), summary["complete_replayed"],
              summary["wrong_rewards"], summary["zero_rewards"], summary["untyped_failures"],
              summary["p50_ms"], summary["p99_ms"]]],
        )
    )  # fmt: skip
    if summary["replay_failed"]:
        print(f"not replayed (the fault-free suite failed them): {summary['replay_failed']}")
    print(
        f"chaos: {len(actions)} actions {payload['actions_by_kind']}; aggregator fds "
        f"{before['fds']} -> {after['fds']}, sockets {before['sockets']} -> {after['sockets']}, "
        f"RSS {before['rss_kib']} -> {after['rss_kib']} KiB"
    )
    print(f"wrote {write_json(args.out, 'chaos', payload)}")
    return payload
