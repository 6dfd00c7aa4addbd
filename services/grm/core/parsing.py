"""Score extraction from a model's output.

Only the model's own output is parsed, and only its LAST boxed or double-bracketed list:
earlier lists are intermediate numbers or quotes. Anything but exactly n integers in
[1, 10] makes the sample invalid, with a reason — never a guessed score.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SCORE_MIN, SCORE_MAX = 1, 10

# \boxed{...} (content without braces) or [[...]] (content without brackets).
_LIST = re.compile(r"\\boxed\s*\{([^{}]*)\}|\[\[([^\[\]]*)\]\]")
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


def extract_scores(output: str, n: int) -> Parsed:
    """Parse one model output that judged `n` responses."""
    principles, critique = split_sections(output)
    matches = list(_LIST.finditer(output))
    if not matches:
        return Parsed(None, "no \\boxed{...} or [[...]] score list in output", principles, critique)
    last = matches[-1]
    content = last.group(1) if last.group(1) is not None else last.group(2)
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
    crit = _CRITERIA.search(output)
    ana = _ANALYSIS.search(output, crit.end() if crit else 0)
    end = _last_list_line_start(output)
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


def _last_list_line_start(output: str) -> int:
    matches = list(_LIST.finditer(output))
    if not matches:
        return len(output)
    return output.rfind("\n", 0, matches[-1].start()) + 1
