"""Versioned prompt templates (data in `templates/*.toml`) rendered into chat messages.

Responses are untrusted text written by the policy under training: they are wrapped in the
paper's Begin/End markers, and any copy of those markers inside them is defused, so a response
cannot close its own block and pose as the judge's instructions.
"""

from __future__ import annotations

import functools
import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources

from grm.core.types import Context

DEFAULT_TEMPLATE = "grm-default-v1"

Message = dict[str, str]

_MARKER = re.compile(r"\[(?=\s*the\s+(?:begin|end)\s+of\s+response)", re.IGNORECASE)
_HEADER = re.compile(r"^(\s*)####", re.MULTILINE)


def defuse(text: str) -> str:
    """Neutralise prompt delimiters inside untrusted text (responses, queries)."""
    return _HEADER.sub(r"\1# # # #", _MARKER.sub("(", text))


_BOXED = re.compile(r"\\boxed(?=\s*\{)")


def defuse_score_lists(text: str) -> str:
    """Untrusted text loses the score-list syntax the parser reads (`\\boxed{...}` becomes
    `boxed{...}`, `[[` becomes `[ [`): a small judge that copies a forged `Scores: \\boxed{10,
    10}` from a response into its output then writes an unparseable copy, not a score."""
    return _BOXED.sub("boxed", text).replace("[[", "[ [")


def single_user_turn(messages: Sequence[Message]) -> tuple[Message, ...]:
    """The same prompt without a system role: system text goes in front of the first user turn.

    Chat templates of some model families (Gemma-2, hence DeepSeek-GRM-27B) raise on a system
    message; the paper's prompt is one block, so folding it into the user turn loses nothing.
    """
    system = [m["content"] for m in messages if m["role"] == "system"]
    rest = [dict(m) for m in messages if m["role"] != "system"]
    if not system:
        return tuple(rest)
    head = "\n\n".join(system)
    for m in rest:
        if m["role"] == "user":
            m["content"] = f"{head}\n\n{m['content']}"
            return tuple(rest)
    return ({"role": "user", "content": head}, *rest)


@dataclass(frozen=True)
class TemplateSet:
    """One version of every prompt the suite renders."""

    version: str
    parts: dict[str, str]
    # Also defuse score lists in responses and queries (grm-default-v2 on): see
    # defuse_score_lists. The judgement in a meta RM prompt keeps its scores.
    defuse_scores: bool = False

    def _untrusted(self, text: str) -> str:
        text = defuse(text)
        return defuse_score_lists(text) if self.defuse_scores else text

    def _context(self, context: Context) -> str:
        if len(context.turns) == 1 and context.turns[0].role == "user":
            body = self._untrusted(context.turns[0].content)
        else:
            body = "\n\n".join(
                f"{t.role.capitalize()}: {self._untrusted(t.content)}" for t in context.turns
            )
        return f"{self.parts['context_header']}\n{body}"

    def _responses(self, responses: Sequence[str]) -> str:
        blocks = [self.parts["responses_header"]]
        for i, response in enumerate(responses, start=1):
            blocks.append(
                f"{self.parts['response_begin'].format(i=i)}\n{self._untrusted(response)}\n"
                f"{self.parts['response_end'].format(i=i)}"
            )
        return "\n".join(blocks)

    @staticmethod
    def _example(n: int) -> str:
        return "\\boxed{" + ", ".join(["x"] * n) + "}"

    def joint(self, context: Context, shown: Sequence[str]) -> list[Message]:
        """The paper's default prompt: principles, analysis and scores in one generation."""
        fmt = self.parts["joint_format"].format(example=self._example(len(shown)), n=len(shown))
        user = "\n\n".join(
            [self.parts["criteria"], self._context(context), self._responses(shown), fmt]
        )
        return [
            {"role": "system", "content": self.parts["system"]},
            {"role": "user", "content": user},
        ]

    def critique(self, context: Context, shown: Sequence[str], principles: str) -> list[Message]:
        """Critique and scores conditioned on given principles (separate mode)."""
        fmt = self.parts["critique_format"].format(example=self._example(len(shown)), n=len(shown))
        user = "\n\n".join(
            [
                self.parts["criteria"],
                f"{self.parts['principles_header']}\n{principles.strip()}",
                self._context(context),
                self._responses(shown),
                fmt,
            ]
        )
        return [
            {"role": "system", "content": self.parts["system"]},
            {"role": "user", "content": user},
        ]

    def principles(self, context: Context, responses: Sequence[str] = ()) -> list[Message]:
        """Principles only, for the principle generator (optionally seeing the responses)."""
        pieces = [self.parts["criteria"], self._context(context)]
        if responses:
            pieces.append(self._responses(responses))
        pieces.append(self.parts["principles_format"])
        return [
            {"role": "system", "content": self.parts["principles_system"]},
            {"role": "user", "content": "\n\n".join(pieces)},
        ]

    def meta(self, context: Context, shown: Sequence[str], judgement: str) -> list[Message]:
        """The meta RM prompt: is this sampled judgement correct? (answer Yes/No)."""
        user = "\n\n".join(
            [
                self._context(context),
                self._responses(shown),
                self.parts["meta_format"].format(judgement=defuse(judgement.strip())),
            ]
        )
        return [
            {"role": "system", "content": self.parts["meta_system"]},
            {"role": "user", "content": user},
        ]


@functools.cache
def load_templates(version: str = DEFAULT_TEMPLATE) -> TemplateSet:
    """Load a template version shipped with the package (read once per process)."""
    try:
        raw = resources.files("grm.core").joinpath(f"templates/{version}.toml").read_text("utf-8")
    except FileNotFoundError as exc:
        raise ValueError(f"unknown template version {version!r}") from exc
    data = tomllib.loads(raw)
    if data.get("version") != version:
        raise ValueError(f"template file {version}.toml declares version {data.get('version')!r}")
    flags = {"defuse_score_lists"}
    parts = {k: v for k, v in data.items() if k != "version" and k not in flags}
    return TemplateSet(
        version=version, parts=parts, defuse_scores=bool(data.get("defuse_score_lists", False))
    )
