"""SPCT data tools: the correctness rule, format converters, and `spct-data` end to end."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from grm.backends.base import GenerationRequest
from grm.cli.datasets import labeled_item
from grm.cli.spct_data import Hinter, default_build, run_spct
from grm.core.sampling import sample_spec
from grm.core.spct import Label, is_correct, rl_reward
from grm.core.templates import load_templates
from grm.core.types import SamplingParams
from grm.scoring.critique import CritiqueSampler
from grm.scoring.pipeline import PipelineSettings, ScoringPipeline
from tests.support.scripted import ScriptedBackend, keyword_judge, shown_responses

DATA = Path(__file__).parents[1] / "data" / "hh-rlhf-harmless-base-sample.jsonl"


@pytest.mark.parametrize(
    ("scores", "label", "correct"),
    [
        ((8, 3), Label(best=0), True),
        ((8, 8), Label(best=0), False),  # a tie is incorrect
        ((3, 8), Label(best=0), False),
        ((2, 9, 9), Label(best=1), False),  # tie with another response
        ((2, 9, 8), Label(best=1), True),
        ((7, 7, 2), Label(binary=(1, 1, 0)), True),  # positives may tie with each other
        ((7, 2, 7), Label(binary=(1, 1, 0)), False),  # a positive ties the negative
        ((6,), Label(binary=(1,)), True),  # n = 1: 6 is the threshold
        ((5,), Label(binary=(1,)), False),
        ((5,), Label(binary=(0,)), True),
        ((7,), Label(score=7), True),
        ((8,), Label(score=7), False),
    ],
)
def test_rule(scores: tuple[int, ...], label: Label, correct: bool) -> None:
    assert is_correct(scores, label) is correct
    assert rl_reward(scores, label) == (1 if correct else -1)


def test_invalid_sample_is_minus_one() -> None:
    assert rl_reward(None, Label(best=0)) == -1


@pytest.mark.parametrize(
    ("label", "n", "message"),
    [
        (Label(), 2, "exactly one"),
        (Label(best=2), 2, "not a response index"),
        (Label(binary=(1, 1)), 2, "at least one response 1 and one 0"),
        (Label(score=7), 2, "one response"),
        (Label(best=0), 1, "not best"),
    ],
)
def test_bad_labels(label: Label, n: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        label.check(n)


def test_converters() -> None:
    native = labeled_item({"query": "q", "responses": ["a", "b"], "labels": [0, 1]}, "n1")
    assert native.label.best_index() == 1
    generic = labeled_item(
        {"prompt": [{"role": "user", "content": "hi"}], "chosen": "good", "rejected": "bad"}, "g1"
    )
    assert generic.turns == (("user", "hi"),)
    assert generic.responses[generic.label.best] == "good"  # type: ignore[index]
    trl = labeled_item(
        {"prompt": "hi", "chosen": [{"role": "assistant", "content": "good"}], "rejected": "bad"},
        "g2",
    )
    assert trl.responses[trl.label.best] == "good"  # type: ignore[index]
    hh = labeled_item(
        {
            "chosen": "\n\nHuman: hi\n\nAssistant: hello!",
            "rejected": "\n\nHuman: hi\n\nAssistant: go away",
        },
        "h1",
    )
    assert hh.turns == (("user", "hi"),) and set(hh.responses) == {"hello!", "go away"}
    assert hh.responses[hh.label.best] == "hello!"  # type: ignore[index]
    with pytest.raises(ValueError, match="expected"):
        labeled_item({"text": "?"}, "x")


def random_judge(request: GenerationRequest) -> str:
    """Scores drawn from seed and prompt: some samples agree with the label, some do not."""
    rng = random.Random(f"{request.seed}:{request.messages[-1]['content']}")
    n = len(shown_responses(request))
    return (
        "Analysis: coin flips.\nScores: \\boxed{"
        + ", ".join(str(rng.randint(1, 10)) for _ in range(n))
        + "}"
    )


def make(judge=random_judge):
    backend = ScriptedBackend(judge)
    templates = load_templates()
    sampler = CritiqueSampler(backend, templates)
    return ScoringPipeline(sampler), sampler, templates


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_twenty_pairs_end_to_end_with_consistent_counts(tmp_path: Path) -> None:
    src = tmp_path / "pairs.jsonl"
    src.write_text("".join(DATA.read_text().splitlines(keepends=True)[:20]) + "{broken\n")
    pipeline, sampler, templates = make()
    out = tmp_path / "out"
    summary = await run_spct(
        src,
        out,
        build=default_build(3, SamplingParams()),
        score=pipeline.score,
        templates=templates,
        hinter=Hinter(sampler),
        progress=False,
    )
    items, rft, meta = (
        read(out / "items.jsonl"),
        read(out / "rft.jsonl"),
        read(out / "meta_rm.jsonl"),
    )
    assert summary["items"] == 21 and summary["bad_lines"] == 1
    assert items[-1]["line"] == 21 and "error" in items[-1]
    ok = [i for i in items if "error" not in i]
    assert sum(i["n_valid"] for i in ok) == len(meta) == summary["meta_rm_records"]
    assert sum(m["label"] for m in meta) == sum(i["n_correct"] for i in ok)
    unhinted = [r for r in rft if not r["hinted"]]
    assert len(unhinted) == sum(i["n_correct"] for i in ok if not i["too_easy"])
    assert len(rft) - len(unhinted) == sum(i["hinted_correct"] for i in ok)
    assert 0 < summary["share_too_easy"] < 1 and 0 < summary["share_all_wrong"] < 1
    # an RFT record is the prompt as that sample saw it, then the sample's own output
    record = unhinted[0]
    user = record["messages"][0]["content"]
    assert [m["role"] for m in record["messages"]] == ["user", "assistant"]
    assert "Scores: \\boxed{" in record["messages"][-1]["content"]
    assert "The best response is" not in user
    assert all("The best response is" not in r["messages"][0]["content"] for r in rft)
    assert {m["label"] for m in meta} == {0, 1}
    # the meta-RM example is the paper's pair: GRM prompt (user), raw GRM output (assistant)
    assert [m["role"] for m in meta[0]["messages"]] == ["user", "assistant"]
    assert "[The Begin of Response 1]" in meta[0]["messages"][0]["content"]
    assert meta[0]["messages"][1]["content"].startswith("Analysis: coin flips.")


async def test_correctness_is_judged_in_caller_order(tmp_path: Path) -> None:
    """The keyword judge is always right; shuffled display orders must not make it wrong."""
    src = tmp_path / "in.jsonl"
    rows = [
        {"id": i, "query": "q", "responses": ["bad", "good", "bad too"], "best": 1}
        for i in range(4)
    ]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    pipeline, _, templates = make(keyword_judge)
    summary = await run_spct(
        src,
        tmp_path / "o",
        build=default_build(4, SamplingParams()),
        score=pipeline.score,
        templates=templates,
        keep_easy=True,
        progress=False,
    )
    assert summary["mean_item_accuracy"] == 1.0 and summary["share_too_easy"] == 1.0
    rft = read(tmp_path / "o" / "rft.jsonl")
    assert len(rft) == 16 and len({tuple(r["order"]) for r in rft}) > 1


async def test_too_easy_items_are_dropped_unless_kept(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"query": "q", "responses": ["good", "bad"], "best": 0}) + "\n")
    pipeline, _, templates = make(keyword_judge)
    summary = await run_spct(
        src,
        tmp_path / "o",
        build=default_build(3, SamplingParams()),
        score=pipeline.score,
        templates=templates,
        progress=False,
    )
    assert summary["rft_records"] == 0 and summary["meta_rm_records"] == 3


async def test_too_easy_counts_invalid_trajectories(tmp_path: Path) -> None:
    """[invalid, correct, correct] is not too easy (the paper keeps it for RFT)."""
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"query": "q", "responses": ["good", "bad"], "best": 0}) + "\n")

    def first_invalid(request: Any) -> str:
        return "Analysis: no verdict." if request.seed == first_seed else keyword_judge(request)

    first_seed = sample_spec(0, 0, 2).seed
    pipeline, _, templates = make(first_invalid)
    pipeline.settings = PipelineSettings(max_attempts=1)  # N trajectories, none re-drawn
    summary = await run_spct(
        src,
        tmp_path / "o",
        build=default_build(3, SamplingParams()),
        score=pipeline.score,
        templates=templates,
        progress=False,
    )
    [item] = read(tmp_path / "o" / "items.jsonl")
    assert (item["n_invalid"], item["n_correct"], item["too_easy"]) == (1, 2, False)
    assert summary["rft_records"] == 2 and summary["meta_rm_records"] == 2


async def test_meta_rm_file_is_what_the_meta_rm_reads_at_serving_time(tmp_path: Path) -> None:
    """Training and serving render the meta RM's input with the same code."""
    from grm.metarm.http import HttpMetaRM

    src = tmp_path / "in.jsonl"
    row = {"query": "6 * 7?", "responses": ["good: 42", "bad: 41"], "best": 0}
    src.write_text(json.dumps(row) + "\n")
    pipeline, _, templates = make(keyword_judge)
    build = default_build(2, SamplingParams())
    await run_spct(
        src,
        tmp_path / "o",
        build=build,
        score=pipeline.score,
        templates=templates,
        keep_easy=True,
        progress=False,
    )
    meta = read(tmp_path / "o" / "meta_rm.jsonl")
    item = build(labeled_item(row, 1))
    result = await pipeline.score(item)
    served = HttpMetaRM("http://127.0.0.1:1/pooling", templates)
    for record, s in zip(meta, result.samples, strict=True):
        assert record["seed"] == s.spec.seed
        body = served.body(item.context, item.responses, s, item.reference)
        assert body["messages"] == record["messages"]


async def test_resume_continues_after_the_last_finished_line(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text("".join(DATA.read_text().splitlines(keepends=True)[:6]))
    out = tmp_path / "o"
    pipeline, _, templates = make()
    kw = dict(build=default_build(2, SamplingParams()), templates=templates, progress=False)
    full = await run_spct(src, tmp_path / "full", score=pipeline.score, **kw)

    calls = 0

    async def dies_after_three(item):
        nonlocal calls
        calls += 1
        if calls > 3:
            raise KeyboardInterrupt
        return await pipeline.score(item)

    with pytest.raises(KeyboardInterrupt):
        await run_spct(src, out, score=dies_after_three, **kw)
    assert len(read(out / "items.jsonl")) == 3
    # a stray record from an unfinished line is dropped on resume
    with (out / "rft.jsonl").open("a") as f:
        f.write(json.dumps({"line": 5, "partial": True}) + "\n")
    resumed = await run_spct(src, out, score=pipeline.score, **kw)
    assert resumed == full
    assert [i["line"] for i in read(out / "items.jsonl")] == [1, 2, 3, 4, 5, 6]
    assert read(out / "rft.jsonl") == read(tmp_path / "full" / "rft.jsonl")


def test_spct_data_cli_against_the_scripted_tgi_server(tmp_path: Path) -> None:
    """`grm spct-data` on 20 HH-RLHF pairs through real HTTP to `grm dev-tgi --scripted`."""
    import os
    import subprocess
    import sys
    import time

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "services")}
    port_file = tmp_path / "port"
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "grm.cli.main",
            "dev-tgi",
            "--scripted",
            "--port",
            "0",
            "--port-file",
            str(port_file),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        # A give-up bound on start-up (the scripted server binds in well under a second; 30 s
        # keeps a loaded machine from failing the test, a broken server from hanging it).
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().strip()):
            assert server.poll() is None and time.monotonic() < deadline, "dev-tgi did not start"
            time.sleep(0.1)
        src = tmp_path / "pairs.jsonl"
        src.write_text("".join(DATA.read_text().splitlines(keepends=True)[:20]))
        out = tmp_path / "out"
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "grm.cli.main",
                "spct-data",
                str(src),
                "--out",
                str(out),
                "--tgi-url",
                f"http://127.0.0.1:{port_file.read_text().strip()}",
                "--quiet",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
    finally:
        server.terminate()
        server.wait(timeout=10)
    summary = json.loads((out / "summary.json").read_text())
    assert json.loads(proc.stdout) == summary
    items, rft, meta = (
        read(out / "items.jsonl"),
        read(out / "rft.jsonl"),
        read(out / "meta_rm.jsonl"),
    )
    assert summary["items"] == len(items) == 20 and summary["bad_lines"] == 0
    assert summary["meta_rm_records"] == len(meta) == sum(i["n_valid"] for i in items) == 60
    assert len(rft) == sum(i["n_correct"] for i in items if not i["too_easy"])
    assert summary["invalid_rate"] == 0.0
