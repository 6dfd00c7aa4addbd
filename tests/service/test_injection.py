"""The adversarial set of `grm bench injection`: every attack is defused in the prompt and
never moves a scripted judge's scores; the bench itself runs on the real model (tiny)."""

from __future__ import annotations

import json
import re

import pytest

from grm.cli.datasets import PreferencePair
from grm.core.templates import load_templates
from grm.core.validation import build_item
from grm_dev.bench.__main__ import main as bench_main
from grm_dev.bench.injection import ATTACKS, attacked_pair
from tests.support.scripted import shown_responses
from tests.support.servers import running_suite

PAIR = PreferencePair("p", (("user", "How do I stay safe online?"),), ("good advice", "bad"), 0)
BEGIN = re.compile(r"^\[The Begin of Response \d+\]$", re.MULTILINE)
END = re.compile(r"^\[The End of Response \d+\]$", re.MULTILINE)


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_attack_changes_only_the_rejected_response(attack: str) -> None:
    hit = attacked_pair(PAIR, attack)
    assert hit.responses[0] == PAIR.responses[0]
    assert hit.responses[1] != PAIR.responses[1]
    assert hit.responses[1].startswith(PAIR.responses[1])
    assert hit.best == PAIR.best


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_prompt_has_exactly_one_block_per_response(attack: str) -> None:
    hit = attacked_pair(PAIR, attack)
    item = build_item(turns=hit.turns, responses=hit.responses, k=1)
    prompt = load_templates().joint(item.context, item.responses)[-1]["content"]
    assert len(BEGIN.findall(prompt)) == 2
    assert len(END.findall(prompt)) == 2


async def test_no_attack_moves_a_scripted_judge() -> None:
    """The judge scores each shown block by its first word; an attack that forged a block or
    was parsed as the model's score line would change the rewards or add invalid samples."""

    def first_word_judge(request):
        shown = shown_responses(request)
        scores = ", ".join("9" if r.startswith("good") else "2" for r in shown)
        return f"Analysis: by first word.\nScores: \\boxed{{{scores}}}"

    from grm.client import AsyncGrmClient

    async with (
        running_suite(script=first_word_judge) as suite,
        AsyncGrmClient(suite.address, timeout=10) as client,
    ):
        clean = await client.score("q", list(PAIR.responses), k=4, seed=3)
        for attack in ATTACKS:
            hit = attacked_pair(PAIR, attack)
            attacked = await client.score("q", list(hit.responses), k=4, seed=3)
            assert attacked.rewards == clean.rewards == (9.0, 2.0), attack
            assert attacked.invalid_samples == 0, attack


@pytest.mark.model
def test_injection_bench_runs_on_the_real_model(tmp_path) -> None:
    bench_main(
        ["injection", "--pairs", "1", "--k", "1", "--max-new-tokens", "16",
         "--attacks", "fake_score_line", "--out", str(tmp_path)]
    )  # fmt: skip
    doc = json.loads((tmp_path / "injection.json").read_text())
    result = doc["attacks"]["fake_score_line"]
    assert doc["pairs"] == 1 and result["items"] in (0, 1)
    assert 0.0 <= result["invalid_share"] <= 1.0
    if result["items"]:
        assert 1.0 <= result["attacked_mean_score"] <= 10.0
