"""Score extraction from a model's output.

Only the model's own output is parsed, and only its final score line: the last non-empty line
must be a `Scores:` line (the paper's format; `**Scores: ...**`, `Final Scores:` and
`### Output:` are the same line in the variants real GRM checkpoints write) holding one closed
`\\boxed{...}` or `[[...]]` list, or a bare `Scores:` line followed by a line that is only the
list. Lists anywhere else — a list quoted in the analysis, one copied from a response, an
intermediate sub-score — never count, not even when the final line is malformed or missing:
that sample is invalid, with a reason, and the pipeline re-draws it with a new seed.
Anything but exactly n integers in [1, 10] is invalid too — never a guessed score.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SCORE_MIN, SCORE_MAX = 1, 10

# The score line's label, after leading markdown (`#`, `*`, `>`, `-`, `_`) is dropped.
_LABEL = re.compile(r"(?:final\s+|overall\s+)?(?:scores?|output)\s*[:：]", re.IGNORECASE)
_LEAD = re.compile(r"^[\s#>*_`\-]+")
_TRAIL = re.compile(r"[\s*_`.]+$")
_OPEN = re.compile(r"\\boxed\s*\{|\[\[")
_INT = re.compile(r"[0-9]{1,3}")
_CRITERIA = re.compile(r"specific\s+criteria\s*[:：]", re.IGNORECASE)
_ANALYSIS = re.compile(r"analysis\s*[:：]", re.IGNORECASE)


@dataclass(frozen=True)
class Parsed:
    """Scores in the order the model saw the responses, or why there are none."""

    scores: tuple[int, ...] | None
    reason: str = ""
    principles: str = ""
    critique: str = ""


@dataclass(frozen=True)
class _ScoreLine:
    start: int  # offset of the score line (its label line) in the output
    content: str | None  # the list's content, None when the line holds no well-formed list
    reason: str = ""


def _strip_markup(line: str) -> str:
    return _TRAIL.sub("", _LEAD.sub("", line))


def _read_list(text: str) -> tuple[str | None, str]:
    """(content, "") of the list `text` starts with, or (None, why not)."""
    opened = _OPEN.match(text)
    if opened is None:
        return None, f"the final score line holds no \\boxed{{...}} or [[...]] list: {text[:80]!r}"
    close = "}" if opened.group(0) != "[[" else "]]"
    end = text.find(close, opened.end())
    if end == -1:
        return None, f"the final score line's list is not closed: {text[:80]!r}"
    return text[opened.end() : end], ""


def _last_filled(output: str) -> list[tuple[int, str]]:
    """(offset, line without markup) of the last two lines with content, last first — found
    from the end, so a long critique's lines are never stripped one by one."""
    lines = output.splitlines(keepends=True)
    found: list[tuple[int, str]] = []
    at = len(output)
    for line in reversed(lines):
        at -= len(line)
        core = _strip_markup(line)
        if core:
            found.append((at, core))
            if len(found) == 2:
                break
    return found


def _score_line(output: str) -> _ScoreLine | None:
    """The final score line, or None when the output does not end with one."""
    filled = _last_filled(output)
    if not filled:
        return None
    last, core = filled[0]
    label = _LABEL.match(core)
    if label is not None:
        rest = _LEAD.sub("", core[label.end() :])
        if not rest:
            return _ScoreLine(last, None, "the final Scores: line holds no list")
        content, reason = _read_list(rest)
        return _ScoreLine(last, content, reason)
    # A bare list on the last line, right below a bare `Scores:` label line.
    if _OPEN.match(core) and len(filled) >= 2:
        above_at, above = filled[1]
        label = _LABEL.fullmatch(above)
        if label is not None:
            content, reason = _read_list(core)
            return _ScoreLine(above_at, content, reason)
    return None


def extract_scores(output: str, n: int) -> Parsed:
    """Parse one model output that judged `n` responses."""
    line = _score_line(output)
    principles, critique = _sections(output, line)
    if line is None:
        return Parsed(
            None, "the output does not end with a Scores: \\boxed{...} line", principles, critique
        )
    if line.content is None:
        return Parsed(None, line.reason, principles, critique)
    content = line.content
    parts = [p.strip() for p in content.split(",")]
    if parts == [""]:
        return Parsed(None, "empty score list", principles, critique)
    if len(parts) != n:
        return Parsed(
            None,
            f"expected {n} score(s), found {len(parts)}: {content.strip()!r}",
            principles,
            critique,
        )
    scores: list[int] = []
    for part in parts:
        if not _INT.fullmatch(part):
            return Parsed(None, f"score {part!r} is not an integer", principles, critique)
        value = int(part)
        if not SCORE_MIN <= value <= SCORE_MAX:
            return Parsed(
                None, f"score {value} outside [{SCORE_MIN}, {SCORE_MAX}]", principles, critique
            )
        scores.append(value)
    return Parsed(tuple(scores), "", principles, critique)


def split_sections(output: str) -> tuple[str, str]:
    """Return (principles, critique): the 'Specific Criteria' and 'Analysis' parts, if present."""
    return _sections(output, _score_line(output))


def _sections(output: str, line: _ScoreLine | None) -> tuple[str, str]:
    end = line.start if line is not None else len(output)
    crit = _CRITERIA.search(output, 0, end)
    ana = _ANALYSIS.search(output, crit.end() if crit else 0, end)
    principles = ""
    if crit:
        principles = output[crit.end() : ana.start() if ana else end].strip()
    if ana:
        critique = output[ana.end() : end].strip()
    elif crit:
        critique = ""
    else:
        critique = output[:end].strip()
    return principles, critique
