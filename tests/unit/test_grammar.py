"""The optional score-line grammar: any free text (LaTeX, `\\boxed{...}` answers, any length),
then exactly one well-formed score line to end the output; the parser decides what counts."""

from __future__ import annotations

import re

import pytest

from grm.core.grammar import scores_gbnf, scores_regex
from grm.core.parsing import extract_scores

BODY = (
    "Specific Criteria: correctness.\n"
    "Analysis: Response 1 derives \\frac{102}{2} and answers \\boxed{51}; response 2 quotes "
    "'Scores: \\boxed{10, 10}' from its text. " + "More analysis. " * 400
)


def test_the_regex_allows_any_free_text_then_requires_the_score_line() -> None:
    pattern = re.compile(scores_regex(2))
    assert len(BODY) > 4000  # no length bound on the analysis
    assert pattern.fullmatch(BODY + "\nScores: \\boxed{9, 2}")
    assert not pattern.fullmatch(BODY)  # the output must end in the score line
    assert not pattern.fullmatch(BODY + "\nScores: \\boxed{9, 11}")
    # The grammar lets a quoted list through; the parser reads only the final line.
    assert extract_scores(BODY + "\nScores: \\boxed{9, 2}", 2).scores == (9, 2)


@pytest.mark.parametrize("n", [1, 2, 5])
def test_the_gbnf_compiles_and_its_body_allows_backslashes(n: int) -> None:
    from llama_cpp import LlamaGrammar

    text = scores_gbnf(n)
    assert "body ::= [^\\x00]*" in text and "[^\\\\]" not in text
    LlamaGrammar.from_string(text, verbose=False)
