"""Grammars that force the final score line, so even a weak model yields parseable samples.

Two dialects of the same constraint: llama.cpp GBNF (embedded backend) and a regex (TGI's
`grammar` parameter). Free text first (no backslash, so the body cannot hold a score list of
its own), then exactly `Scores: \\boxed{a, b, ...}` with n integers in [1, 10].
"""

from __future__ import annotations

_SCORE_GBNF = '("10" | [1-9])'
_SCORE_REGEX = "(10|[1-9])"

# The score line's fixed prefix: forced when a sample runs out of tokens before writing it.
FORCED_PREFIX = "Scores: \\boxed{"


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
    scores = ", ".join([_SCORE_REGEX] * n)
    return rf"[^\\]{{0,{max_body_chars}}}Scores: \\boxed\{{{scores}\}}"


def scores_suffix_regex(n: int) -> str:
    """Regex (TGI) for only the numbers and the closing brace, after a forced prefix."""
    return ", ".join([_SCORE_REGEX] * n) + r"\}"


def strip_partial_scores(text: str) -> str:
    """Drop a score line cut off mid-way, so a forced one is the only one."""
    cut = text.rfind("Scores:")
    if cut != -1 and "}" not in text[cut:]:
        return text[:cut]
    for i in range(len(FORCED_PREFIX) - 1, 0, -1):
        if text.endswith(FORCED_PREFIX[:i]):
            return text[:-i]
    return text
