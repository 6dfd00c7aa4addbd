"""`grm bench all`: every scenario with small settings, into one folder, with one summary.

The settings are sized to finish in well under 15 minutes on a 2-core machine (the embedded
model judges a few pairs with short generations). Scenarios are looked up by name at run
time, so one added later runs too when `SMALL` lists it; options a scenario does not have are
left out. Each scenario writes its own JSON (with its exact command) and plot; `all.json` and
`summary.md` collect the headline numbers, wall times and each scenario's printed tables.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import time
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TextIO

from grm_dev.bench import report
from grm_dev.bench.embedded import BUNDLED

# Order: the quick suite scenarios first, the embedded model (the slowest) last.
SMALL: dict[str, list[str]] = {
    "overhead": ["--ks", "1,4,8,16,32", "--reps", "20", "--warmup", "3"],
    "fanout": ["--ks", "1,2,4,8,16,32", "--reps", "20", "--warmup", "3"],
    "throughput": ["--k", "4", "--concurrency", "16", "--duration-s", "5", "--warmup-s", "1"],
    "cache": ["--reps", "10", "--prompts", "8", "--group", "8", "--epochs", "2"],
    "tgi-client": ["--k", "8", "--reps", "10", "--warmup", "2"],
    "planner": ["--requests", "40", "--warmup", "4", "--budgets", "300,1000,5000"],
    "autoscale": ["--seeds", "1"],  # a simulation: 12 simulated hours in seconds
    "load": ["--duration-s", "3", "--overload-s", "3", "--soak-s", "10", "--soak-warmup-s", "2"],
    "embedded": ["--pairs", "3", "--k", "8", "--max-new-tokens", "64", "--grammar", "both"],
    "injection": [
        "--pairs",
        "1",
        "--k",
        "1",
        "--max-new-tokens",
        "64",
        "--attacks",
        "fake_score_line,judge_instruction",
    ],
}
DATA_SCENARIOS = ("embedded", "injection")  # the ones that read labeled pairs (--data)


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="bench-results", help="folder for every JSON, PNG and summary")
    p.add_argument(
        "--data",
        default=str(BUNDLED),
        help="labeled pairs for the model scenarios (.jsonl or .jsonl.gz; default: the "
        "bundled sample)",
    )
    p.add_argument("--only", default="", help="comma-separated scenario names (default: all)")
    p.add_argument(
        "--tiny", action="store_true", help="smoke settings (seconds per scenario; tests)"
    )


TINY: dict[str, list[str]] = {
    "overhead": ["--ks", "1,2", "--reps", "2", "--warmup", "1"],
    "fanout": ["--ks", "1,2", "--reps", "2", "--warmup", "1"],
    "throughput": ["--k", "2", "--concurrency", "2", "--duration-s", "0.5", "--warmup-s", "0.2"],
    "cache": [
        "--k",
        "2",
        "--reps",
        "2",
        "--prompts",
        "2",
        "--group",
        "2",
        "--epochs",
        "2",
        "--parallel",
        "4",
        "--k-incremental",
        "2,4",
    ],
    "tgi-client": ["--k", "2", "--reps", "2", "--warmup", "1"],
    "planner": ["--requests", "4", "--warmup", "1", "--budgets", "1000", "--ks", "4"],
    "autoscale": "--before-s 60 --ramp-s 60 --peak-s 60 --after-s 60 --warmup-s 60 --seeds 1 "
    "--candidates chart".split(),
    "load": [
        "--duration-s",
        "0.5",
        "--overload-s",
        "0.5",
        "--soak-s",
        "1",
        "--soak-warmup-s",
        "0.2",
        "--rss-interval-s",
        "0.2",
    ],
    "embedded": ["--pairs", "1", "--k", "2", "--max-new-tokens", "16", "--grammar", "on"],
    "injection": ["--pairs", "1", "--k", "1", "--max-new-tokens", "16"],
}


def scenario_argv(
    name: str, add: Callable[[argparse.ArgumentParser], None], args: argparse.Namespace
) -> list[str]:
    """The small settings of `name`, keeping only the options its parser knows."""
    parser = argparse.ArgumentParser(add_help=False)
    add(parser)
    known = {s for a in parser._actions for s in a.option_strings}
    wanted = (TINY if args.tiny else SMALL).get(name, [])
    argv: list[str] = []
    i = 0
    while i < len(wanted):
        flag = wanted[i]
        takes_value = i + 1 < len(wanted) and not wanted[i + 1].startswith("--")
        if flag in known:
            argv += wanted[i : i + 2] if takes_value else [flag]
        i += 2 if takes_value else 1
    if name in DATA_SCENARIOS and "--data" in known:
        argv += ["--data", args.data]
    if "--out" in known:
        argv += ["--out", args.out]
    return argv


def headline(name: str, payload: Mapping[str, Any]) -> str:
    """One line of the numbers that matter per scenario (the rest is in its JSON)."""
    try:
        if name == "overhead":
            r = payload["results"]
            parts = [f"k={k}: p50 x{r[k]['ratio_p50']:.2f}" for k in ("8", "32") if k in r]
            return "suite/direct " + ", ".join(parts) + " (target <= 1.10 at k=8)"
        if name == "fanout":
            r = payload["results"]
            top = str(max(int(k) for k in r))
            return f"p50(k={top})/p50(k=1) = {r[top]['ratio_p50']:.2f} (target <= 1.2 at k=32)"
        if name == "throughput":
            r = payload["results"]
            return "; ".join(
                f"{n} sampler(s): {v['calls_per_s']:.1f} calls/s" for n, v in r.items()
            )
        if name == "cache":
            return (
                f"hit/miss p50 {payload['hit_miss']['hit_over_miss_p50']:.3f}; GRPO same "
                f"responses saved {payload['grpo']['saved_share']:.0%} of backend samples"
            )
        if name == "tgi-client":
            s = payload["summary"]
            pooled, stock = s["pooled"]["median_ms"], s["stock"]["median_ms"]
            return f"median pooled {pooled:.1f} ms, stock {stock:.1f} ms"
        if name == "embedded":
            on = payload["runs"].get("grammar_on") or next(iter(payload["runs"].values()))
            acc = ", ".join(f"k={k}: {a['accuracy']:.2f}" for k, a in on["accuracy"].items())
            return (
                f"{payload['pairs']} pairs; accuracy {acc}; invalid {on['invalid_share']:.0%}; "
                f"{on['s_per_sample']:.2f} s/sample"
            )
    except (KeyError, TypeError, ValueError, StopIteration):
        pass
    return f"see {name}.json"


class _Tee(io.TextIOBase):
    """Writes to the console and keeps a copy (each scenario's tables go into summary.md)."""

    def __init__(self, console: TextIO) -> None:
        self.console = console
        self.copy = io.StringIO()

    def write(self, text: str) -> int:
        self.console.write(text)
        self.copy.write(text)
        return len(text)

    def text(self) -> str:
        """What was printed, without progress lines (those rewritten in place with \\r)."""
        lines = self.copy.getvalue().split("\n")
        return "\n".join(x.rsplit("\r", 1)[-1] for x in lines if "\r" not in x or x[-1] != "\r")

    def flush(self) -> None:
        self.console.flush()


async def run(args: argparse.Namespace, scenarios: Mapping[str, Any]) -> dict[str, Any]:
    """Run the scenarios in SMALL's order (then any other registered one is noted as skipped)."""
    only = {n.strip() for n in args.only.split(",") if n.strip()}
    names = [n for n in SMALL if n in scenarios and (not only or n in only)]
    skipped = [n for n in scenarios if n not in SMALL and (not only or n in only)]
    out = Path(args.out)
    load_before = list(os.getloadavg())
    started = time.perf_counter()
    done: dict[str, Any] = {}
    sections: list[str] = []
    for name in names:
        module = scenarios[name]
        argv = scenario_argv(name, module.add_args, args)
        parser = argparse.ArgumentParser(prog=f"grm bench {name}")
        module.add_args(parser)
        sub_args = parser.parse_args(argv)
        report.set_invocation(name, sub_args, module.add_args)
        command = report.command_line(name, sub_args, module.add_args)
        print(f"\n=== {command}", flush=True)
        tee = _Tee(sys.stdout)
        t0 = time.perf_counter()
        entry: dict[str, Any] = {"command": command}
        try:
            with contextlib.redirect_stdout(tee):
                payload = await module.run(sub_args)
            entry.update(status="ok", headline=headline(name, payload or {}))
        except Exception as exc:  # one broken scenario must not lose the others' results
            traceback.print_exc()
            entry.update(status="failed", headline=f"{type(exc).__name__}: {exc}"[:300])
        entry["wall_s"] = round(time.perf_counter() - t0, 1)
        done[name] = entry
        sections.append(f"### {name}\n\n`{command}` ({entry['wall_s']} s)\n\n```\n"
                        f"{tee.text().strip()}\n```\n")  # fmt: skip
    for name in skipped:
        done[name] = {"status": "skipped", "headline": "no small settings in `grm bench all`"}
    total = time.perf_counter() - started
    rows = [
        [n, e["status"], f"{e['wall_s']:.1f}" if "wall_s" in e else "", e["headline"]]
        for n, e in done.items()
    ]
    summary = report.table(["scenario", "status", "wall s", "headline"], rows)
    print(f"\ngrm bench all: {total:.0f} s; load average before {load_before[0]:.2f}, "
          f"after {os.getloadavg()[0]:.2f}")  # fmt: skip
    print(summary)
    doc = {
        "command": report.command_line("all", args, add_args),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - total)),
        "wall_s": round(total, 1),
        "cpus": os.cpu_count(),
        "load_average_before": load_before,
        "load_average_after": list(os.getloadavg()),
        "scenarios": done,
    }
    out.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - once, after the runs
    (out / "all.json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    md = [
        f"# grm bench all\n\n`{doc['command']}`: {total:.0f} s on {os.cpu_count()} CPU cores; "
        f"load average {load_before[0]:.2f} before, {doc['load_average_after'][0]:.2f} after.\n",
        f"```\n{summary}\n```\n",
        *sections,
    ]
    (out / "summary.md").write_text("\n".join(md), encoding="utf-8")
    print(f"wrote {out / 'all.json'} and {out / 'summary.md'}")
    return doc
