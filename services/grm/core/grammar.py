"""Grammars that make the output end in the score line (an option: the paper uses none).

Two dialects of the same constraint: llama.cpp GBNF (embedded backend) and a regex (TGI's
`grammar` parameter). Free text first — any character, LaTeX and `\\boxed{...}` answers of
math responses included, with no length bound unless the caller sets one — then, on a line of
its own (the parser reads only the final line), exactly `Scores: \\boxed{a, b, ...}` with n
integers in [1, 10] to end the output. A bound on the free text is for engines that cannot
continue a cut-off sample (llama.cpp's server, TGI's chat route): it keeps the score line
inside the token budget. The grammar only guarantees a well-formed last line; the parser
(grm.core.parsing), not the grammar, decides which list counts: the final line's.
"""

from __future__ import annotations

_SCORE_GBNF = '("10" | [1-9])'
_SCORE_REGEX = "(10|[1-9])"
_ANY_REGEX = r"[\s\S]*"

# The score line's fixed prefix: forced when a sample runs out of tokens before writing it.
FORCED_PREFIX = "Scores: \\boxed{"


def scores_gbnf(n: int, max_body_chars: int | None = None) -> str:
    """GBNF: free text (any character, at most `max_body_chars` when set), then the boxed
    list of n scores."""
    tail = ' ", " score' * (n - 1)
    repeat = "*" if max_body_chars is None else f"{{0,{max_body_chars}}}"
    return (
        f'root ::= body "\\nScores: \\\\boxed{{" score{tail} "}}"\n'
        f"body ::= [^\\x00]{repeat}\n"
        f"score ::= {_SCORE_GBNF}\n"
    )


def scores_suffix_gbnf(n: int) -> str:
    """GBNF for only the numbers and the closing brace, after a forced `Scores: \\boxed{`."""
    tail = ' ", " score' * (n - 1)
    return f'root ::= score{tail} "}}"\nscore ::= {_SCORE_GBNF}\n'


def scores_regex(n: int, max_body_chars: int | None = None) -> str:
    """Regex (TGI's `grammar` of type "regex", the engines' structured outputs): free text
    (at most `max_body_chars` characters when set), then the score line."""
    scores = ", ".join([_SCORE_REGEX] * n)
    body = _ANY_REGEX if max_body_chars is None else rf"[\s\S]{{0,{max_body_chars}}}"
    return rf"{body}\nScores: \\boxed\{{{scores}\}}"


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
