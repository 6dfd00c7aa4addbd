"""Grammars that force the final score line, so even a weak model yields parseable samples.

Two dialects of the same constraint: llama.cpp GBNF (embedded backend) and a regex (TGI's
`grammar` parameter). Free text first (no backslash, so the body cannot hold a score list of
its own), then exactly `Scores: \\boxed{a, b, ...}` with n integers in [1, 10].
"""

from __future__ import annotations

_SCORE_GBNF = '("10" | [1-9])'


def scores_gbnf(n: int) -> str:
    """GBNF: free text, then the boxed list of n scores."""
    tail = ' ", " score' * (n - 1)
    return (
        f'root ::= body "Scores: \\\\boxed{{" score{tail} "}}"\n'
        "body ::= [^\\\\]*\n"
        f"score ::= {_SCORE_GBNF}\n"
    )


def scores_suffix_gbnf(n: int) -> str:
    """GBNF for only the numbers and the closing brace, after a forced `Scores: \\boxed{`."""
    tail = ' ", " score' * (n - 1)
    return f'root ::= score{tail} "}}"\nscore ::= {_SCORE_GBNF}\n'


def scores_regex(n: int, max_body_chars: int = 4000) -> str:
    """Regex for TGI's `grammar` (type "regex"): bounded free text, then the score line."""
    score = "(10|[1-9])"
    scores = ", ".join([score] * n)
    return rf"[^\\]{{0,{max_body_chars}}}Scores: \\boxed\{{{scores}\}}"
