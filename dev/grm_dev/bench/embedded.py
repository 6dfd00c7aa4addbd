"""`grm bench embedded`: the embedded model's speed and its judging quality on labeled pairs.

Samples are drawn straight from the sampler (no re-sampling), so invalid shares are raw. One
k-sample draw per pair; the accuracy at smaller k is read from the first samples of the
same requests (sample j's seed and order depend only on the request seed and j, so the first 4
samples of a k=8 request are exactly a k=4 request; "k=1" is the first sample alone, in its
shuffled order). Accuracy counts a pair correct when the chosen response gets strictly the
highest vote; ties are reported apart, and also scored 1/2 (the paper breaks ties at random).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from grm.cli.datasets import PreferencePair, load_pairs
from grm.cli.local import build_local_stack
from grm.core.decoding import EMBEDDED
from grm.core.plan import SamplingJob
from grm.core.sampling import sample_spec
from grm.core.types import Sample
from grm.core.validation import Defaults, build_item
from grm.core.voting import vote
from grm_dev.bench.report import Panel, plot, table, write_json

BUNDLED = (
    Path(__file__).resolve().parents[3] / "tests" / "data" / "hh-rlhf-harmless-base-sample.jsonl"
)


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=str(BUNDLED), help="HH-RLHF style .jsonl or .jsonl.gz")
    p.add_argument("--pairs", type=int, default=50)
    p.add_argument("--k", type=int, default=8, help="samples per pair (accuracy also at 1 and 4)")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument(
        "--grammar",
        choices=["on", "off", "both"],
        default="both",
        help="both: the k-sample run with grammar plus one sample per pair without",
    )
    p.add_argument("--model-path", default=None)
    p.add_argument("--out", default="bench-results")


def _accuracy(samples: list[Sample], pair: PreferencePair, k: int) -> str | None:
    """'correct', 'tie', 'wrong', or None when none of the first k samples is valid."""
    first = [s.scores for s in samples if s.spec.index < k and s.valid and s.scores]
    if not first:
        return None
    outcome = vote(first, 2)
    if len(outcome.best) > 1:
        return "tie"
    return "correct" if outcome.best == (pair.best,) else "wrong"


async def run(args: argparse.Namespace) -> dict[str, Any]:
    pairs = list(load_pairs(args.data, limit=args.pairs))
    stack = build_local_stack(model_path=args.model_path, meta_rm=None)
    t0 = time.perf_counter()
    await stack.start()
    load_s = time.perf_counter() - t0
    ks = sorted({1, min(4, args.k), args.k})
    runs: dict[str, Any] = {}
    modes = {"on": [True], "off": [False], "both": [True, False]}[args.grammar]
    try:
        for grammar in modes:
            # Without grammar one raw sample per pair is enough to measure the invalid share.
            k = args.k if grammar or args.grammar == "off" else 1
            tally = {
                kk: {"correct": 0, "tie": 0, "wrong": 0, "no_valid": 0} for kk in ks if kk <= k
            }
            samples_all: list[Sample] = []
            started = time.perf_counter()
            for i, pair in enumerate(pairs, 1):
                item = build_item(
                    turns=pair.turns,
                    responses=pair.responses,
                    k=k,
                    max_new_tokens=args.max_new_tokens,
                    grammar=grammar,
                    seed=0,
                    defaults=Defaults.for_profile(EMBEDDED),
                )
                specs = [sample_spec(item.seed, j, 2, shuffle=k > 1) for j in range(k)]
                samples = await stack.sampler.sample(SamplingJob.of(item), specs)
                samples_all.extend(samples)
                for kk in tally:
                    verdict = _accuracy(samples, pair, kk)
                    tally[kk]["no_valid" if verdict is None else verdict] += 1
                print(
                    f"  grammar={'on' if grammar else 'off'} pair {i}/{len(pairs)}",
                    end="\r",
                    flush=True,
                )
            wall = time.perf_counter() - started
            n_samples = max(1, len(samples_all))
            tokens = sum(s.tokens_generated for s in samples_all)
            gen_s = sum(s.latency_ms for s in samples_all) / 1000
            invalid = sum(1 for s in samples_all if not s.valid)
            forced = sum(1 for s in samples_all if s.finish_reason == "forced_scores")
            runs["grammar_on" if grammar else "grammar_off"] = {
                "k": k,
                "samples": n_samples,
                "invalid_share": invalid / n_samples,
                "forced_score_line_share": forced / n_samples,
                "tokens_per_s": tokens / gen_s if gen_s else 0.0,
                "s_per_sample": gen_s / n_samples,
                "mean_tokens_per_sample": tokens / n_samples,
                "wall_s": wall,
                "accuracy": {
                    str(kk): {
                        **t,
                        "accuracy": t["correct"] / len(pairs),
                        "accuracy_ties_half": (t["correct"] + 0.5 * t["tie"]) / len(pairs),
                        "tie_rate": t["tie"] / len(pairs),
                    }
                    for kk, t in tally.items()
                },
            }
    finally:
        await stack.close()
    print()
    rows = []
    for name, r in runs.items():
        for kk, a in r["accuracy"].items():
            rows.append(
                [
                    name,
                    kk,
                    a["accuracy"],
                    a["accuracy_ties_half"],
                    a["tie_rate"],
                    r["invalid_share"],
                    r["s_per_sample"],
                    r["tokens_per_s"],
                ]
            )
    print(
        f"model: {stack.backend.info.model_id}; load {load_s:.2f} s; "
        f"{len(pairs)} pairs from {args.data}"
    )
    print(
        table(
            ["run", "k", "acc", "acc(ties=1/2)", "tie rate", "invalid", "s/sample", "tok/s"], rows
        )
    )
    panels = [
        Panel(
            f"Accuracy on {len(pairs)} pairs ({name})",
            [int(kk) for kk in r["accuracy"]],
            {
                "accuracy": [a["accuracy"] for a in r["accuracy"].values()],
                "ties = 1/2": [a["accuracy_ties_half"] for a in r["accuracy"].values()],
                "tie rate": [a["tie_rate"] for a in r["accuracy"].values()],
            },
            xlabel="k (samples voted)",
            ylabel="share of pairs",
            kind="bar",
        )
        for name, r in runs.items()
    ]
    panels.append(
        Panel(
            "Speed and validity",
            list(runs),
            {
                "s/sample": [r["s_per_sample"] for r in runs.values()],
                "invalid share": [r["invalid_share"] for r in runs.values()],
            },
            kind="bar",
        )
    )
    png = plot(args.out, "embedded", panels, title=f"{stack.backend.info.model_id}")
    payload = {
        "plot": png.name if png else None,
        "pairs": len(pairs),
        "data": str(args.data),
        "max_new_tokens": args.max_new_tokens,
        "model": stack.backend.info.model_id,
        "load_s": load_s,
        "runs": runs,
    }
    path = write_json(args.out, "embedded", payload)
    print(f"wrote {path}")
    return payload
